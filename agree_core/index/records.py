"""Pages written by callers (a framework's documents), side by side with the pages of PDFs.

A record is one point of the shard: the caller's id (mapped to a UUID point id), its text,
an optional file kept byte for byte (the page image, usually), JSON metadata, and vectors,
given by the caller or encoded with the index's encoder (see :mod:`record_pages`).
Reads, counts, filters and search see records and the pages of ready PDF documents alike;
filters use the nested-dict syntax of :mod:`agree_core.index.filters`.

Records live outside the catalog, which tracks PDF files, and need no state of their own:
a batch of records is one engine update, whole or absent after a crash (write-ahead log).
Each record's file is written first, atomically, and removed after its point, so a crash
leaves at most an orphan file, never a record without its file. Records can be rewritten,
updated and deleted one by one; the pages of a PDF only go with their file
(:meth:`PageIndex.add` / :meth:`PageIndex.delete`), so a change that would touch them is
refused with a :class:`ValueError` before anything is changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from agree_core.encoders import PageEmbedding
from agree_core.index.filters import RECORD_KIND, check_types, compile_filter
from agree_core.index.images import IMAGES_DIR
from agree_core.index.record_pages import embed_records
from agree_core.index.shard import PageRecord
from agree_core.pooling import pool_vectors

if TYPE_CHECKING:
    from agree_core.index import PageIndex

log = logging.getLogger(__name__)

__all__ = ["Record", "PageRecords", "DuplicateRecordError", "record_point_id"]

RECORD_NAMESPACE = uuid.UUID("3c8f2b6e-9d41-4f7a-b0e5-7a2d91c4e6f0")
RECORDS_DIR = "_records"  # images/_records/<point id>-<content hash>.<ext>
_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "BMP": "bmp"}
_MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_CONFLICT = ("replace", "skip", "error")


class DuplicateRecordError(ValueError):
    """Records with these ids exist already (``on_conflict="error"``); nothing was written."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        super().__init__(f"{len(ids)} record(s) exist already: {ids[:5]}; write them with "
                         "on_conflict='replace' or 'skip'")


@dataclass
class Record:
    """A page as a caller gives it, or as the index returns it.

    ``meta["source"]`` (a PDF path) and ``meta["page"]`` (1-based) say where the page comes
    from, when it does. ``vectors`` ``(n, dim)`` are encoded by the index when not given;
    ``grid`` and ``cells`` place them on the page (see :class:`PageEmbedding`). ``extra`` is
    the caller's own JSON, stored and returned as given.
    """

    id: str
    text: str | None = None
    blob: bytes | None = None
    mime_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    vectors: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    cells: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = RECORD_KIND  # read back: "record", or "page" for a page of an indexed PDF
    score: float | None = None  # read back from a search
    image_path: str | None = None  # read back: the stored file


def record_point_id(record_id: str) -> str:
    """The shard's point id of the record ``record_id``."""
    return str(uuid.uuid5(RECORD_NAMESPACE, record_id))


def _qe():
    import qdrant_edge

    return qdrant_edge


class PageRecords:
    """The records of one open :class:`PageIndex` (``index.records``)."""

    def __init__(self, index: "PageIndex"):
        self.index = index
        self._seq = 0
        self._prepared = False

    # -- writing ----------------------------------------------------------------------------
    def write(self, records: Iterable[Record], on_conflict: str = "replace", batch_size: int = 16) -> int:
        """Write records; returns how many were written.

        ``on_conflict`` for an id that exists (or repeats in ``records``): ``"replace"`` it,
        ``"skip"`` it, or ``"error"``: raise :class:`DuplicateRecordError`, writing nothing.
        """
        if on_conflict not in _CONFLICT:
            raise ValueError(f"on_conflict must be one of {_CONFLICT}, got {on_conflict!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        unique: dict[str, Record] = {}
        repeated: list[str] = []
        for r in records:
            _check(r)
            if r.id in unique and on_conflict != "replace":
                repeated.append(r.id)
                continue
            unique[r.id] = r
        pids = {rid: record_point_id(rid) for rid in unique}
        old = {pid: payload for pid, (payload, _) in self.index.shard.retrieve(pids.values()).items()}
        if on_conflict == "error" and (repeated or any(pid in old for pid in pids.values())):
            raise DuplicateRecordError(repeated + [rid for rid, pid in pids.items() if pid in old])
        todo = [r for rid, r in unique.items() if on_conflict == "replace" or pids[rid] not in old]
        self._prepare()
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            points = [self._point(r, e, old.get(pids[r.id])) for r, e in zip(batch, self._embed(batch))]
            self.index.shard.upsert(points)
            for r, p in zip(batch, points):
                stale = (old.get(p.id) or {}).get("image")
                if stale and stale != p.payload["image"]:
                    (self.index.directory / stale).unlink(missing_ok=True)
        return len(todo)

    def update_meta(self, where: dict[str, Any] | None, meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the metadata of the records matching ``where``; returns how many."""
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        self._refuse_pages(where, "update")
        found = list(self.index.shard.scroll(self._scope(where, records_only=True), payload=["meta_json"]))
        for pid, payload, _ in found:
            merged = {**json.loads(payload["meta_json"]), **meta}
            self.index.shard.set_payload([pid], {"meta": merged, "meta_json": json.dumps(merged),
                                                 **_located(merged)})
        return len(found)

    def delete(self, ids: Iterable[str] | None = None, *, where: dict[str, Any] | None = None) -> int:
        """Delete the records with these ids (absent ids are ignored), or those matching
        ``where``; returns how many were deleted."""
        if (ids is None) == (where is None):
            raise ValueError("give ids or where (exactly one); delete_all() empties the index")
        if ids is not None:
            found = self._lookup(list(ids))
            pages = [rid for rid, (_, payload) in found.items() if payload.get("kind") != RECORD_KIND]
            if pages:
                raise ValueError(_PAGES_MESSAGE.format(n=len(pages), what="delete"))
            victims = {pid: payload for pid, payload in found.values()}
        else:
            self._refuse_pages(where, "delete")
            victims = {pid: payload for pid, payload, _ in
                       self.index.shard.scroll(self._scope(where, records_only=True), payload=["image"])}
        self.index.shard.delete_points(victims)
        for payload in victims.values():
            if payload.get("image"):
                (self.index.directory / payload["image"]).unlink(missing_ok=True)
        return len(victims)

    def delete_all(self) -> int:
        """Delete every record and every PDF document; returns the number of pages removed."""
        qe = _qe()
        is_record = qe.Filter(must=[qe.FieldCondition("kind", match=qe.MatchValue(RECORD_KIND))])
        n = self.index.shard.count(is_record)
        if n:
            self.index.shard.delete_matching(is_record)
        shutil.rmtree(self.index.directory / IMAGES_DIR / RECORDS_DIR, ignore_errors=True)
        for source in sorted({d.source for d in self.index.catalog.documents()}):
            n += self.index.delete(source)
        return n

    # -- reading ----------------------------------------------------------------------------
    def count(self, where: dict[str, Any] | None = None) -> int:
        """Records and pages of ready PDF documents matching ``where``."""
        return self.index.shard.count(self._scope(where))

    def find(self, where: dict[str, Any] | None = None, *, with_blobs: bool = True) -> list[Record]:
        """Everything matching ``where``: PDF pages by source and page, then records in the
        order they were first written."""
        found = sorted(self.index.shard.scroll(self._scope(where)), key=lambda item: _order(item[1]))
        return [self._record(pid, payload, with_blobs) for pid, payload, _ in found]

    def get(self, ids: Sequence[str], *, with_blobs: bool = True) -> list[Record]:
        """The records (or PDF pages, by page id) with these ids that exist, in that order."""
        found = self._lookup(list(ids))
        return [self._record(found[i][0], found[i][1], with_blobs) for i in ids if i in found]

    def vectors(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Stored vectors ``(n, dim)`` by record or page id, for the ids found."""
        found = self._lookup(list(ids))
        got = self.index.shard.retrieve([pid for pid, _ in found.values()], vectors=True)
        return {rid: torch.from_numpy(got[pid][1]) for rid, (pid, _) in found.items() if pid in got}

    def search(self, query: str | torch.Tensor, k: int = 10, where: dict[str, Any] | None = None, *,
               candidates: int | None = None, with_blobs: bool = True) -> list[Record]:
        """The ``k`` best records and PDF pages by MaxSim for a query (text, or its vectors
        ``(n_tokens, dim)``), with their ``score``."""
        from agree_core.index.page_index import DEFAULT_CANDIDATES, EXACT_SEARCH_MAX_PAGES

        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        # text is weighted as PageIndex.search weights it (IDF, when the index does); vectors are used as given
        q = self.index.encode_queries([query])[0] if isinstance(query, str) else torch.as_tensor(query)
        if q.dim() != 2 or q.shape[0] == 0 or q.shape[1] != self.index.config.dim:
            raise ValueError(f"query vectors must be (n_tokens >= 1, {self.index.config.dim}), got "
                             f"{tuple(q.shape)}: embed queries with the index's encoder "
                             f"({self.index.config.encoder})")
        flt = self._scope(where)
        if candidates is None and self.index.shard.count() > EXACT_SEARCH_MAX_PAGES:
            candidates = DEFAULT_CANDIDATES
        scored = self.index.shard.search(q.float().numpy(), k, flt, candidates)
        full = self.index.shard.retrieve([s.id for s in scored])
        return [replace(self._record(s.id, full[s.id][0], with_blobs), score=s.score)
                for s in scored if s.id in full]

    # -- internals --------------------------------------------------------------------------
    def _scope(self, where: dict[str, Any] | None, records_only: bool = False) -> Any:
        """``where`` as an engine filter, over records (only) and ready documents."""
        qe = _qe()
        check_types(where, self._stored_types)
        flt = compile_filter(where)
        must = ([flt] if flt is not None else []) + (
            [qe.FieldCondition("kind", match=qe.MatchValue(RECORD_KIND))] if records_only else [])
        unfinished = [d.doc_id for d in self.index.catalog.documents() if d.state != "ready"]
        must_not = [qe.FieldCondition("doc_id", match=qe.MatchAny(unfinished))] if unfinished else []
        if not must and not must_not:
            return None
        return qe.Filter(must=must or None, must_not=must_not or None)

    def _stored_types(self, key: str) -> set[type]:
        """The types of the values of metadata ``key`` in records and PDF pages."""
        return {type(m[key]) for _, payload, _ in self.index.shard.scroll(
            None, payload=["kind", "meta", "meta_json", "source", "page"])
            if key in (m := payload_meta(payload))}

    def _refuse_pages(self, where: dict[str, Any] | None, what: str) -> None:
        qe = _qe()
        scope = self._scope(where)
        pdf_pages = qe.Filter(must=[scope] if scope is not None else None,
                              must_not=[qe.FieldCondition("kind", match=qe.MatchValue(RECORD_KIND))])
        n = self.index.shard.count(pdf_pages)
        if n:
            raise ValueError(_PAGES_MESSAGE.format(n=n, what=what))

    def _lookup(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        """id -> (point id, payload) for the records and visible PDF pages with these ids."""
        candidates = {record_point_id(i): i for i in ids}
        candidates.update({i: i for i in ids if _is_uuid(i)})  # page ids are point ids
        unfinished = {d.doc_id for d in self.index.catalog.documents() if d.state != "ready"}
        out = {}
        for pid, (payload, _) in self.index.shard.retrieve(list(candidates)).items():
            is_record = payload.get("kind") == RECORD_KIND
            if (is_record and payload.get("record_id") == candidates[pid]) or (
                    not is_record and pid == candidates[pid] and payload.get("doc_id") not in unfinished):
                out[candidates[pid]] = (pid, payload)
        return out

    def _record(self, pid: str, payload: dict[str, Any], with_blob: bool) -> Record:
        image = payload.get("image") or ""
        path = self.index.directory / image if image else None
        blob = path.read_bytes() if with_blob and path is not None and path.is_file() else None
        meta = payload_meta(payload)
        if payload.get("kind") == RECORD_KIND:
            text = payload.get("text") if payload.get("text_given", True) else None
            return Record(payload["record_id"], text, blob, payload.get("mime_type"), meta,
                          extra=json.loads(payload.get("extra") or "{}"), image_path=str(path) if path else None)
        mime = _MIME.get(Path(image).suffix.lstrip("."))
        return Record(pid, payload.get("text", ""), blob, mime, meta, kind="page",
                      image_path=str(path) if path else None)

    def _embed(self, batch: list[Record]) -> list[PageEmbedding]:
        dim = self.index.config.dim
        out: list[PageEmbedding | None] = [None] * len(batch)
        for i, r in enumerate(batch):
            if r.vectors is None:
                continue
            v = torch.as_tensor(r.vectors).float()
            if v.dim() != 2 or v.shape[0] == 0 or v.shape[1] != dim:
                raise ValueError(f"record {r.id!r}: vectors must be (n >= 1, {dim}) for this index "
                                 f"(encoder {self.index.config.encoder}), got {tuple(v.shape)}; "
                                 "embed pages with the index's encoder, or give no vectors")
            cells = torch.as_tensor(r.cells, dtype=torch.long) if r.cells is not None \
                else torch.full((v.shape[0],), -1, dtype=torch.long)
            out[i] = PageEmbedding(v, tuple(r.grid) if r.grid else (1, 1), cells)
        todo = [i for i, e in enumerate(out) if e is None]
        if todo:
            for i, emb in zip(todo, embed_records(self.index.encoder, [batch[i] for i in todo], len(todo))):
                out[i] = emb
        return out  # type: ignore[return-value]

    def _point(self, r: Record, emb: PageEmbedding, old: dict | None) -> PageRecord:
        pid = record_point_id(r.id)
        image = self._save_blob(pid, r.blob) if r.blob else ""
        vectors = emb.vectors.float()  # (n, dim)
        k = self.index.config.pooled_vectors
        pooled = pool_vectors(vectors, k).numpy() if k > 0 else None
        payload = {
            "kind": RECORD_KIND, "record_id": r.id, "doc_id": pid, **_located(r.meta),
            "image": image, "mime_type": r.mime_type,
            "text": r.text if r.text is not None else (emb.text or ""), "text_given": r.text is not None,
            "grid": list(emb.grid), "cells": emb.cells.tolist(), "meta": r.meta,
            "terms": emb.terms.tolist() if emb.terms is not None else None,
            # exact copies: the engine reads JSON floats to within one unit in the last place
            "meta_json": json.dumps(r.meta), "extra": json.dumps(r.extra),
            "seq": old["seq"] if old and "seq" in old else self._next_seq(),
        }
        return PageRecord(pid, vectors.numpy().astype(np.float32), pooled, payload)

    def _save_blob(self, pid: str, blob: bytes) -> str:
        """Write the record's file atomically, under a name of its own (a new version never
        overwrites the file the stored point names); its path relative to the index."""
        try:
            ext = _EXT.get(Image.open(io.BytesIO(blob)).format or "", "img")
        except (OSError, ValueError):
            ext = "bin"
        digest = hashlib.sha256(blob).hexdigest()[:16]
        path = self.index.directory / IMAGES_DIR / RECORDS_DIR / f"{pid}-{digest}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        return str(path.relative_to(self.index.directory))

    def _prepare(self) -> None:
        if not self._prepared:
            for name, kind in (("kind", "keyword"), ("record_id", "keyword"), ("seq", "integer")):
                self.index.shard.ensure_field_index(name, kind)
            self._prepared = True

    def _next_seq(self) -> int:
        self._seq = max(time.time_ns(), self._seq + 1)
        return self._seq


_PAGES_MESSAGE = ("{n} of the pages matched belong to indexed PDF files, which cannot {what} "
                  "pages one by one: remove the whole file with PageIndex.delete(source) "
                  "(`agree delete`), or narrow the ids or filter to records")


def _check(r: Record) -> None:
    if not isinstance(r.id, str) or not r.id:
        raise ValueError(f"a record id must be a non-empty string, got {r.id!r}")
    if r.text is not None and not isinstance(r.text, str):
        raise ValueError(f"record {r.id!r}: text must be a string or None, got {type(r.text).__name__}")
    if r.blob is not None and not isinstance(r.blob, (bytes, bytearray)):
        raise ValueError(f"record {r.id!r}: blob must be bytes, got {type(r.blob).__name__}")
    if not isinstance(r.meta, dict):
        raise ValueError(f"record {r.id!r}: meta must be a dict, got {type(r.meta).__name__}")
    try:
        json.dumps(r.meta), json.dumps(r.extra)
    except (TypeError, ValueError) as e:
        raise ValueError(f"record {r.id!r}: meta must hold JSON values only ({e})") from None


def _located(meta: dict[str, Any]) -> dict[str, Any]:
    """The top-level ``source`` and ``page`` (what search hits report) from metadata."""
    source, page = meta.get("source"), meta.get("page")
    return {"source": source if isinstance(source, str) else "",
            "page": page if isinstance(page, int) and not isinstance(page, bool) else 0}


def payload_meta(payload: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a stored record, or of a PDF page (its document's, with source and page)."""
    if payload.get("kind") == RECORD_KIND:
        return json.loads(payload["meta_json"]) if "meta_json" in payload else payload.get("meta", {})
    return {**payload.get("meta", {}), "source": payload.get("source", ""), "page": payload.get("page", 0)}


def _order(payload: dict[str, Any]) -> tuple:
    if payload.get("kind") == RECORD_KIND:
        return (1, payload.get("seq", 0))
    return (0, payload.get("source", ""), payload.get("page", 0))


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
