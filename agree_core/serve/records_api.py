"""The routes behind the framework components (LlamaIndex, Haystack) on an ``http://`` index:
``index.records`` (:mod:`agree_core.index.records`) and what the components read beside it.

Routes (bodies in :mod:`agree_core.serve.schemas`, vectors and records as
:mod:`agree_core.serve.wire` writes them)::

    GET    /config                      the index config (encoder, encoder_config, dim, ...)
    GET    /documents                   ?state=ready&source=PATH -> {"documents": [...]}
    POST   /queries/vectors             {"queries": [str]} -> {"vectors": [V, ...]}
    POST   /records/search              {"query" | "vectors", "k", "filters", ...} -> {"records"}
                                        (with "node_fields": each with doc_id, page_label, evidence)
    POST   /records/find                {"filters", "with_blobs", "node_fields"} -> {"records"}
    POST   /records/get                 {"ids", "with_blobs"} -> {"records"}
    POST   /records/count               {"filters"} -> {"count"}
    POST   /records/metas               {"filters"} -> {"metas": [meta, ...]}
    POST   /records/vectors             {"ids"} -> {"vectors": {id: V}}
    GET    /records/{ID}/embedding      vectors, grid, cells and place of a page or record
    POST   /records/write               {"records", "on_conflict", "batch_size"} -> {"written"}
    POST   /records/delete              {"ids"} | {"filters"} -> {"deleted"}
    POST   /records/delete_all          -> {"deleted"} (every record and every PDF)
    POST   /records/update_meta         {"filters", "meta"} -> {"updated"}
    POST   /filters/resolve             {"filters", "index_dir"} -> {"filters"}: keys nodes carry
                                        (file_name, page_label, index_dir...) as stored ones
    POST   /pages/labels                {"pages": [[source, page]]} -> {"labels"} (indexed PDFs)

Reads run in the host's reader thread (they never wait for a job), writes in its writer
thread between two batches of a running job. A duplicate id with ``on_conflict="error"`` is
a 409 ``{"error", "code": "duplicate", "ids"}``; a filter the index cannot evaluate a 400
``{"error", "code": "filter"}``: the client raises the same exceptions as a local index.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, replace
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from agree_core.index.filters import RECORD_KIND, FilterError
from agree_core.index.images import is_image_name
from agree_core.index.records import DuplicateRecordError, Record, record_point_id
from agree_core.serve.host import Conflict, IndexHost
from agree_core.serve.schemas import (IdsBody, PageLabelsBody, QueryVectorsBody, RecordsCountBody,
                                      RecordsDeleteBody, RecordsFindBody, RecordsGetBody, RecordsSearchBody,
                                      RecordsUpdateBody, RecordsWriteBody, ResolveFiltersBody)
from agree_core.serve.wire import document_to_json, record_from_json, record_to_json, vectors_from_json, vectors_to_json

__all__ = ["add_record_routes", "WRITE_PATHS"]

WRITE_PATHS = ("/records/write",)  # bodies that carry page images: the upload limit applies


def add_record_routes(api: APIRouter, app: FastAPI, host: IndexHost) -> None:
    """Add the routes to ``api`` (which carries the token guard) and their errors to ``app``."""

    async def read(fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(host.read(fn, *args))

    async def write(fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(host.write(fn, *args))

    @api.get("/config")
    async def config() -> dict[str, Any]:
        return await read(lambda view: asdict(view.config))

    @api.get("/documents")
    async def documents(state: str | None = Query(None, pattern="^(indexing|ready|deleting)$"),
                        source: str | None = Query(None, min_length=1, max_length=4096)) -> dict[str, Any]:
        found = await read(lambda view: view.catalog.documents(state=state, source=source))
        return {"documents": [document_to_json(d) for d in found]}

    @api.post("/queries/vectors")
    async def query_vectors(body: QueryVectorsBody) -> dict[str, Any]:
        found = await read(lambda view: view.encode_queries(body.queries))
        return {"vectors": [vectors_to_json(v) for v in found]}

    @api.post("/records/search")
    async def search(body: RecordsSearchBody) -> dict[str, Any]:
        query = body.query if body.query is not None else vectors_from_json(body.vectors)
        found = await read(lambda view: view.records.search(query, body.k, body.filters,
                                                            candidates=body.candidates,
                                                            with_blobs=body.with_blobs,
                                                            node_fields=body.node_fields,
                                                            location=body.index_dir))
        return {"records": [_record_json(r) for r in found]}

    @api.post("/records/find")
    async def find(body: RecordsFindBody) -> dict[str, Any]:
        found = await read(lambda view: view.records.find(body.filters, with_blobs=body.with_blobs,
                                                          node_fields=body.node_fields,
                                                          location=body.index_dir))
        return {"records": [_record_json(r) for r in found]}

    @api.post("/records/metas")
    async def metas(body: RecordsCountBody) -> dict[str, Any]:
        return {"metas": await read(lambda view: view.records.metas(body.filters))}

    @api.post("/records/get")
    async def get(body: RecordsGetBody) -> dict[str, Any]:
        found = await read(lambda view: view.records.get(body.ids, with_blobs=body.with_blobs))
        return {"records": [_record_json(r) for r in found]}

    @api.post("/records/count")
    async def count(body: RecordsCountBody) -> dict[str, int]:
        return {"count": await read(lambda view: view.records.count(body.filters))}

    @api.post("/records/vectors")
    async def vectors(body: IdsBody) -> dict[str, Any]:
        found = await read(lambda view: view.records.vectors(body.ids))
        return {"vectors": {i: vectors_to_json(v) for i, v in found.items()}}

    @api.get("/records/{record_id}/embedding")
    async def embedding(record_id: str) -> dict[str, Any]:
        emb, payload = await read(_embedding, record_id)
        return {"id": record_id, "vectors": vectors_to_json(emb.vectors), "grid": list(emb.grid),
                "cells": [int(c) for c in emb.cells.tolist()], "text": emb.text,
                "payload": {k: payload.get(k) for k in ("source", "page", "sha256", "doc_id", "kind", "words",
                                                        "pool_of")}}

    @api.post("/filters/resolve")
    async def resolve_filters(body: ResolveFiltersBody) -> dict[str, Any]:
        return {"filters": await read(lambda view: view.node_filters(body.filters, body.index_dir))}

    @api.post("/pages/labels")
    async def page_labels(body: PageLabelsBody) -> dict[str, Any]:
        return {"labels": await read(lambda view: view.page_labels([tuple(p) for p in body.pages]))}

    @api.post("/records/write")
    async def write_records(body: RecordsWriteBody) -> dict[str, int]:
        records = [record_from_json(r) for r in body.records]
        written = await write(lambda ix: ix.records.write(records, body.on_conflict, body.batch_size))
        return {"written": written}

    @api.post("/records/delete")
    async def delete(body: RecordsDeleteBody) -> dict[str, int]:
        if body.ids is not None:
            n = await write(lambda ix: ix.records.delete(list(body.ids)))
        else:
            n = await write(lambda ix: ix.records.delete(where=body.filters))
        return {"deleted": n}

    @api.post("/records/delete_all")
    async def delete_all() -> dict[str, int]:
        return {"deleted": await write(_delete_all, host)}

    @api.post("/records/update_meta")
    async def update_meta(body: RecordsUpdateBody) -> dict[str, int]:
        return {"updated": await write(lambda ix: ix.records.update_meta(body.filters, body.meta))}

    @app.exception_handler(DuplicateRecordError)
    async def duplicate(request: Request, exc: DuplicateRecordError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "code": "duplicate", "ids": exc.ids}, status_code=409)

    @app.exception_handler(RecordNotFound)
    async def not_found(request: Request, exc: RecordNotFound) -> JSONResponse:
        return JSONResponse({"error": exc.args[0]}, status_code=404)

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "code": "filter"}, status_code=400)


def _record_json(r: Record) -> dict[str, Any]:
    """A record as the routes send it: with ``image_url``, the path of its image here (``GET
    /pages/ID/image``: a page by its id, a record's image by its point id)."""
    url = None
    if r.kind != RECORD_KIND:
        url = f"/pages/{r.id}/image"
    elif r.image_path and is_image_name(r.image_path):
        url = f"/pages/{record_point_id(r.id)}/image"
    return record_to_json(replace(r, image_url=url))


class RecordNotFound(LookupError):
    """No visible page or record with that id."""


def _embedding(view: Any, record_id: str) -> Any:
    """The stored embedding of a visible PDF page (by page id) or of a record (by its id)."""
    candidates = [record_point_id(record_id)]
    try:
        candidates.insert(0, str(uuid.UUID(record_id)))
    except ValueError:
        pass
    unfinished = set(view.unfinished())
    for pid in candidates:
        try:
            emb, payload = view.page_embedding(pid)
        except KeyError:
            continue
        if payload.get("kind") == RECORD_KIND and payload.get("record_id") == record_id:
            return emb, payload
        if payload.get("kind") != RECORD_KIND and payload.get("doc_id") not in unfinished and pid == record_id:
            return emb, payload
    raise RecordNotFound(f"no page or record {record_id!r} in the index")


def _delete_all(index: Any, host: IndexHost) -> int:
    if host.job_running:
        raise Conflict("a job is indexing PDFs: delete everything when it ends (GET /jobs/ID)")
    return index.records.delete_all()
