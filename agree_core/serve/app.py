"""The ``agree serve`` application: the JSON API over one :class:`IndexHost`, and the web page.

Routes (a contract: clients and checks rely on them)::

    GET    /health                      {"status": "ok"}
    GET    /info                        the `agree info --json` object
    POST   /search                      {"query": str} | {"queries": [str]}, "k", "filters"
                                        -> {"results": [{"qid", "query", "hits": [...]}]}
    POST   /documents                   {"paths": [...]} (under --allow-dir) or a multipart
                                        upload of PDFs ("files") -> {"job": ID}
    GET    /jobs/ID                     state, pages_done / pages_total, added, skipped (kept
                                        across restarts: agree_core.serve.jobs)
    DELETE /documents                   {"source": PATH} -> {"source", "pages"} (a relative PATH
                                        is under the first --allow-dir, as POST /documents takes it)
    GET    /pages/PAGE_ID               its document id, source, page, metadata and text
    GET    /pages/PAGE_ID/image         the stored page image (or a record's, by its point id);
                                        with a token, ?sig= (agree_core.serve.tokens) opens it too
    GET    /pages/PAGE_ID/heatmap       ?query=...[&mode=maxsim|mean][&width=N] -> PNG: maxsim
                                        draws the hit's evidence boxes (as agree show), mean
                                        the mean similarity of each cell
    GET    /pages/PAGE_ID/evidence      ?query=...[&mode=...] -> score, grid, map, best cells
    GET    /                            the web page; /docs the OpenAPI page

    and the routes of :mod:`agree_core.serve.records_api` (``/records/...``, ``/config``,
    ``GET /documents``, ``/queries/vectors``) behind the framework components.

Every error is ``{"error": message}`` with a 4xx status that says what was wrong; an
unexpected failure is a 500 with no details (they go to the server log).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from agree_core.serve.host import Conflict, HostStopping, IndexHost
from agree_core.serve.records_api import WRITE_PATHS, add_record_routes
from agree_core.serve.safety import (
    BodyLimit,
    BodyTooLarge,
    PathRefused,
    Unauthorized,
    bearer_guard,
    resolve_server_path,
    unauthorized,
)
from agree_core.serve.schemas import DeleteBody, DocumentsBody, SearchBody
from agree_core.serve.uploads import NotAPdf, save_uploads

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


class _NotFound(LookupError):
    pass


def create_app(host: IndexHost, *, token: str | None = None, allow_dirs: list[Path] | None = None,
               upload_dir: Path | None = None, max_upload_bytes: int = 100 << 20,
               close_host: bool = True) -> FastAPI:
    """The application serving ``host`` (started). ``token``: bearer token every API request
    must carry; ``allow_dirs``: the folders ``POST /documents`` may read paths from;
    ``upload_dir``: where uploaded PDFs are kept (they are the documents' sources).
    ``close_host``: close the host when the application shuts down (SIGTERM)."""
    roots = [Path(d).resolve() for d in allow_dirs or []]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_host:
            await asyncio.to_thread(host.close)

    app = FastAPI(title="agree serve", lifespan=lifespan,
                  description="Search an agree page index: MaxSim over page images, with the "
                              "evidence of why each page matched.")
    app.add_middleware(BodyLimit, upload_limit=max_upload_bytes, large_paths=WRITE_PATHS)
    _error_handlers(app)
    api = APIRouter(dependencies=[Depends(bearer_guard(token))])

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/info")
    async def info() -> dict[str, Any]:
        return await _read(host, lambda ix: ix.info())

    @api.post("/search", response_class=JSONResponse,
              responses={200: {"description": '{"results": [one line of agree search --json per query, '
                                              'each hit with "image_url", "doc_id" and "meta"]}'}})
    async def search(body: SearchBody) -> Response:
        queries = body.query_list()
        hits, lines = await asyncio.wrap_future(host.search(queries, body.k, body.filters, body.candidates))
        # each hit's document id and metadata too: a client reads them without a request per hit
        results = [{**line, "hits": [{**h, "image_url": f"/pages/{hit.page_id}/image",
                                      "doc_id": hit.doc_id, "meta": hit.meta}
                                     for h, hit in zip(line["hits"], found)]}
                   for line, found in zip(lines, hits)]
        # plain JSON values already: encoded once, without FastAPI's walk over every evidence entry
        return Response(_json_bytes({"results": results}), media_type="application/json")

    @api.post("/documents")
    async def add_documents(request: Request) -> dict[str, str]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            if upload_dir is None:
                raise PermissionError("uploads are disabled: this index has no upload folder "
                                      "(start agree serve with --upload-dir DIR)")
            form = await request.form(max_files=100, max_fields=10)
            paths, metadata = await asyncio.to_thread(save_uploads, form, upload_dir)
            batch_size = 16
        else:
            body = DocumentsBody.model_validate(await _json_body(request))
            paths = [str(resolve_server_path(p, roots)) for p in body.paths]
            metadata, batch_size = body.metadata, body.batch_size
        return {"job": host.submit_job(paths, metadata, batch_size).job}

    @api.get("/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        found = host.jobs.get(job_id)
        if found is None:
            raise _NotFound(f"no job {job_id!r} (the last 1,000 jobs are kept; a server index keeps them until the server stops)")
        return found.to_json()

    @api.delete("/documents")
    async def delete_document(request: Request) -> dict[str, Any]:
        body = DeleteBody.model_validate(await _json_body(request))
        source = _server_source(body.source, roots)
        removed = await asyncio.wrap_future(host.write(_delete, source, host.job_running))
        return {"source": body.source, "pages": removed}

    @api.get("/pages/{page_id}")
    async def page_record(page_id: str) -> dict[str, Any]:
        pid = _page_uuid(page_id)
        _, payload = await _read(host, _page_file, pid)
        return {"page_id": pid, "doc_id": payload["doc_id"], "source": payload["source"],
                "page": int(payload["page"]), "meta": payload.get("meta") or {},
                "text": payload.get("text") or "", "image_url": f"/pages/{pid}/image"}

    @api.get("/pages/{page_id}/image")
    async def page_image(page_id: str) -> FileResponse:
        path, _ = await _read(host, _page_file, _page_uuid(page_id), True)
        return FileResponse(path)

    @api.get("/pages/{page_id}/heatmap", responses={200: {"content": {"image/png": {}}}})
    async def heatmap(page_id: str, query: str = Query(min_length=1, max_length=2000),
                      mode: str = Query("maxsim", pattern="^(maxsim|mean)$"),
                      width: int | None = Query(None, ge=16, le=4000)) -> Response:
        from agree_core.heatmaps import draw_evidence, overlay_heatmap

        if mode == "maxsim":  # the hit's evidence boxes, as agree show draws them
            path, found = await _read(host, _page_evidence, _page_uuid(page_id), query)
            png = await asyncio.to_thread(_page_png, path, width, lambda image: draw_evidence(image, found))
        else:  # the mean similarity of each cell, as a heatmap
            path, sim_map, _ = await _read(host, _page_map, _page_uuid(page_id), query, mode)
            png = await asyncio.to_thread(_page_png, path, width, lambda image: overlay_heatmap(image, sim_map))
        return Response(png, media_type="image/png")

    @api.get("/pages/{page_id}/evidence")
    async def evidence(page_id: str, query: str = Query(min_length=1, max_length=2000),
                       mode: str = Query("maxsim", pattern="^(maxsim|mean)$")) -> dict[str, Any]:
        pid = _page_uuid(page_id)
        _, sim_map, payload = await _read(host, _page_map, pid, query, mode)
        return _evidence(pid, payload, query, mode, sim_map)

    add_record_routes(api, app, host)  # index.records for the framework components
    app.include_router(api)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _json_bytes(value: Any) -> bytes:
    """``value`` as JSONResponse would encode it (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _server_source(raw: str, roots: list[Path]) -> str:
    """The source a client names for removal: an absolute path as given (an upload lives
    outside the roots), a relative one under the first ``--allow-dir`` root, as ``POST
    /documents`` reads it; never against the server's working directory."""
    if os.path.isabs(raw):
        return raw
    if not roots:
        raise ValueError(f"{raw!r} is a relative path and this server has no --allow-dir to take it "
                         "under: give the absolute path of the document, as GET /info lists it")
    return os.path.normpath(roots[0] / raw)


# -- what runs in the host's threads -----------------------------------------------------------
def _delete(index: Any, source: str, job_running: bool) -> int:
    info = index.info()
    if job_running and any(d["source"] == source and d["state"] == "indexing" for d in info["incomplete"]):
        raise Conflict(f"{source} is being indexed by a running job; delete it when the job ends")
    if not any(d["source"] == source for d in info["documents"] + info["incomplete"]):
        raise _NotFound(f"{source} is not in the index")
    return index.delete(source)


def _page_file(view: Any, page_id: str, records: bool = False) -> tuple[Path, dict[str, Any]]:
    """The image file of a page of a finished document (with ``records``, or of a record
    whose file is an image, by its point id), and its payload: never a file outside the
    index's images."""
    from agree_core.index.filters import RECORD_KIND
    from agree_core.index.images import is_image_name

    got = view.engine.retrieve([page_id], exclude=["image_data"])
    payload = got[page_id].payload if page_id in got else None
    if records and payload is not None and payload.get("kind") == RECORD_KIND:
        if not is_image_name(str(payload.get("image") or "")):
            raise _NotFound(f"no page {page_id} in the index")
    else:
        doc = view.catalog.get(payload["doc_id"]) if payload and payload.get("doc_id") else None
        if payload is None or doc is None or doc.state != "ready" or not payload.get("image"):
            raise _NotFound(f"no page {page_id} in the index")
    images = view.images.root.resolve()  # the index's images (a server index: its local cache)
    path = Path(view.images.local_paths({page_id: payload})[page_id]).resolve()
    if images not in path.parents or not path.is_file():
        raise _NotFound(f"no page {page_id} in the index")
    return path, payload


def _page_map(view: Any, page_id: str, query: str, mode: str) -> tuple[Path, Any, dict[str, Any]]:
    from agree_core.index import Hit

    path, payload = _page_file(view, page_id)
    hit = Hit(payload["source"], int(payload["page"]), 0.0, str(path), page_id, payload["doc_id"])
    return path, view.similarity_maps(query, [hit], mode)[0], payload


def _page_evidence(view: Any, page_id: str, query: str) -> tuple[Path, list[dict[str, Any]]]:
    """A page's image file and the evidence of ``query`` on it (as its hit carries it)."""
    from agree_core.evidence import evidence_by_id

    path, _ = _page_file(view, page_id)
    return path, evidence_by_id(view, query, [page_id]).get(page_id, [])


def _page_png(path: Path, width: int | None, draw: Any) -> bytes:
    """The page image (at most ``width`` pixels wide) with ``draw(image)`` over it, as PNG."""
    from PIL import Image

    with Image.open(path) as image:
        if width is not None and width < image.width:
            image = image.resize((width, max(1, round(image.height * width / image.width))))
        out = draw(image)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _evidence(page_id: str, payload: dict[str, Any], query: str, mode: str, sim_map: Any) -> dict[str, Any]:
    values = sim_map.float()
    rows, cols = values.shape
    order = values.flatten().argsort(descending=True)[:5].tolist()
    best = [{"row": i // cols, "col": i % cols, "value": float(values.flatten()[i])} for i in order
            if float(values.flatten()[i]) > 0]
    return {"page_id": page_id, "source": payload["source"], "page": int(payload["page"]),
            "query": query, "mode": mode,
            "score": float(values.sum()) if mode == "maxsim" else None,
            "grid": [rows, cols], "map": values.tolist(), "best_cells": best,
            "image_url": f"/pages/{page_id}/image"}


# -- helpers ---------------------------------------------------------------------------------
async def _read(host: IndexHost, fn: Any, *args: Any) -> Any:
    return await asyncio.wrap_future(host.read(fn, *args))


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _BadRequest(f"the body is not valid JSON ({e}); send a JSON object with "
                          "Content-Type: application/json") from None


def _page_uuid(page_id: str) -> str:
    try:
        return str(uuid.UUID(page_id))
    except ValueError:
        raise _NotFound(f"no page {page_id!r} in the index (page ids are UUIDs, as in image_url)") from None


class _BadRequest(ValueError):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        loc = list(e.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path"):  # where the value came from
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        given = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], (dict, list)) else ""
        parts.append(f"{where or 'body'}: {e['msg']}{given}")
    return "; ".join(parts)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "the body is not valid JSON; send a JSON object with "
                               "Content-Type: application/json")
        return _error(422, _describe(list(errors)))

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, _describe(exc.errors()))

    handlers: list[tuple[type[BaseException], int]] = [
        (_NotFound, 404), (PathRefused, 403), (PermissionError, 403), (BodyTooLarge, 413),
        (NotAPdf, 415), (Conflict, 409), (HostStopping, 503), (ValueError, 400),
    ]
    for cls, status in handlers:
        app.add_exception_handler(cls, _handler(status))
    app.add_exception_handler(Unauthorized, unauthorized)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error; the server log has the details")


def _handler(status: int) -> Any:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        return _error(status, message)

    return handle
