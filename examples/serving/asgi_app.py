"""Serving agree from your own ASGI app (uvicorn): open the index once per process.

An embedded index is held by one process at a time, and opening it costs a model load. So
the app opens it once, at startup (the lifespan), shares it between all requests (calls on
it run one at a time in the index's own thread; ``aretrieve`` awaits them without blocking
the event loop), and gives it back at shutdown. Run ONE worker process per index:

    AGREE_INDEX=agree-index uvicorn examples.serving.asgi_app:app --workers 1

A second worker process could not open the index (it is busy) and uvicorn would stop. For
several processes, serve the index from one (``agree serve``) or use a Qdrant server index.
``AGREE_WAIT`` (seconds) waits at startup for another process that still holds the index.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agree_core.index.shared import open_indexes
from llama_index.retrievers.agree import AgreeVisualRetriever


@asynccontextmanager
async def lifespan(app: Starlette):
    retriever = AgreeVisualRetriever(os.environ.get("AGREE_INDEX", "agree-index"), similarity_top_k=5,
                                     wait=float(os.environ.get("AGREE_WAIT", "0")))
    retriever.shared  # open it now: a missing or busy index fails the startup, with its reason
    app.state.retriever = retriever
    try:
        yield
    finally:
        retriever.close()


async def search(request: Request) -> JSONResponse:
    query = request.query_params.get("q", "")
    if not query.strip():
        return JSONResponse({"error": "give a query: /search?q=..."}, status_code=400)
    nodes = await request.app.state.retriever.aretrieve(query)
    return JSONResponse({"hits": [{"source": n.node.metadata["source"], "page": n.node.metadata["page"],
                                   "page_label": n.node.metadata["page_label"], "score": n.score}
                                  for n in nodes]})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid(), "open_indexes": open_indexes()})


app = Starlette(routes=[Route("/search", search), Route("/health", health)], lifespan=lifespan)
