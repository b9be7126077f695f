"""Pages written by callers (a framework's documents), side by side with the pages of PDFs.

Names: a :class:`Record` is one such page as a caller gives it (or gets it back); the
:class:`RecordStore` (``index.records``) reads and writes them; a
:class:`~agree_core.index.engines.base.Point` is what any page, PDF or record, is stored as
(:func:`~agree_core.index.schema.build_point`).

A record is one point of the index: the caller's id (mapped to a UUID point id), its text,
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

import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from agree_core.encoders import PageEmbedding
from agree_core.index import filters as F
from agree_core.index.engines.base import Point
from agree_core.index.filters import RECORD_KIND, check_types
from agree_core.index.images import IMAGE_DATA
from agree_core.index.record_pages import embed_records
from agree_core.index.schema import IS_RECORD, build_point

if TYPE_CHECKING:
    from agree_core.index import PageIndex

log = logging.getLogger(__name__)

__all__ = ["Record", "RecordStore", "DuplicateRecordError", "record_point_id"]

RECORD_NAMESPACE = uuid.UUID("3c8f2b6e-9d41-4f7a-b0e5-7a2d91c4e6f0")
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

    A search or find asked for ``node_fields`` (:meth:`RecordStore.search`) fills in what
    framework nodes and Documents carry beside the record (:mod:`agree_core.index.framework_nodes`):
    ``doc_id``, ``page_label`` and, from a search, ``evidence``.
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
    image_path: str | None = None  # read back: the stored file, on this machine
    image_url: str | None = None  # read back from ``agree serve``: where it serves the file (no image_path)
    doc_id: str | None = None  # read back (node_fields): a PDF page's document id, a record's own id
    page_label: str | None = None  # read back (node_fields): the printed label of the page it names
    evidence: list[dict[str, Any]] | None = None  # read back (node_fields, search): where the page matched


def record_point_id(record_id: str) -> str:
    """The point id of the record ``record_id``."""
    return str(uuid.uuid5(RECORD_NAMESPACE, record_id))


class RecordStore:
    """The records of one open :class:`PageIndex` (``index.records``)."""

    def __init__(self, index: "PageIndex"):
        self.index = index
        self._seq = 0

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
        old = {pid: p.payload for pid, p in
               self.index.engine.retrieve(pids.values(), payload=["seq", "image"]).items()}
        if on_conflict == "error" and (repeated or any(pid in old for pid in pids.values())):
            raise DuplicateRecordError(repeated + [rid for rid, pid in pids.items() if pid in old])
        todo = [r for rid, r in unique.items() if on_conflict == "replace" or pids[rid] not in old]
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            points = [self._point(r, e, old.get(pids[r.id])) for r, e in zip(batch, self._embed(batch))]
            self.index.engine.upsert(points)
            self.index.images.discard(old[p.id] for p in points
                                      if p.id in old and old[p.id].get("image") != p.payload["image"])
        return len(todo)

    def update_meta(self, where: dict[str, Any] | None, meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the metadata of the records matching ``where``; returns how many."""
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        self._refuse_pages(where, "update")
        found = list(self.index.engine.scroll(self.scope(where, records_only=True), payload=["meta_json"]))
        for p in found:
            merged = {**json.loads(p.payload["meta_json"]), **meta}
            self.index.engine.delete_payload(["meta"], ids=[p.id])
            self.index.engine.set_payload({"meta": merged, "meta_json": json.dumps(merged),
                                           **_located(merged)}, ids=[p.id])
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
            victims = {p.id: p.payload for p in
                       self.index.engine.scroll(self.scope(where, records_only=True), payload=["image"])}
        self.index.engine.delete(victims)
        self.index.images.discard(victims.values())
        return len(victims)

    def delete_all(self) -> int:
        """Delete every record and every PDF document; returns the number of pages removed."""
        n = self.index.engine.count(IS_RECORD)
        if n:
            self.index.engine.delete_where(IS_RECORD)
        self.index.images.delete_records()
        for source in sorted({d.source for d in self.index.catalog.documents()}):
            n += self.index.delete(source)
        return n

    # -- reading ----------------------------------------------------------------------------
    def count(self, where: dict[str, Any] | None = None) -> int:
        """Records and pages of ready PDF documents matching ``where``."""
        return self.index.engine.count(self.scope(where))

    def find(self, where: dict[str, Any] | None = None, *, with_blobs: bool = True,
             node_fields: bool = False, location: str | Path | None = None) -> list[Record]:
        """Everything matching ``where``: PDF pages by source and page, then records in the
        order they were first written (``node_fields``, ``location``: :meth:`search`)."""
        if node_fields:
            where = self.index.node_filters(where, location)
        found = sorted(self.index.engine.scroll(self.scope(where), exclude=_UNREAD),
                       key=lambda p: _order(p.payload))
        records = [self._record(p.id, p.payload, with_blobs) for p in found]
        if not node_fields:
            return records
        from agree_core.index.framework_nodes import add_node_fields

        return add_node_fields(self.index, records, [p.payload.get("doc_id") for p in found])

    def metas(self, where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The metadata of everything matching ``where`` (as :attr:`Record.meta`), nothing else read."""
        return [payload_meta(p.payload) for p in self.index.engine.scroll(
            self.scope(where), payload=["kind", "meta", "meta_json", "source", "page"])]

    def get(self, ids: Sequence[str], *, with_blobs: bool = True) -> list[Record]:
        """The records (or PDF pages, by page id) with these ids that exist, in that order."""
        found = self._lookup(list(ids))
        return [self._record(found[i][0], found[i][1], with_blobs) for i in ids if i in found]

    def vectors(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Stored vectors ``(n, dim)`` by record or page id, for the ids found (one per vector
        written: on a pooled index, each its pooled vector)."""
        found = self._lookup(list(ids))
        stored = self.index.page_vectors([pid for pid, _ in found.values()])
        return {rid: stored[pid] for rid, (pid, _) in found.items() if pid in stored}

    def search(self, query: str | torch.Tensor, k: int = 10, where: dict[str, Any] | None = None, *,
               candidates: int | None = None, with_blobs: bool = True, node_fields: bool = False,
               location: str | Path | None = None) -> list[Record]:
        """The ``k`` best records and PDF pages by MaxSim for a query (text, or its vectors
        ``(n_tokens, dim)``), with their ``score``.

        ``node_fields``: for a framework's nodes and Documents, ``where`` may name the keys
        they carry but the index does not store (``file_name``, ``page_label``, ``doc_id``,
        ``index_dir`` compared with ``location``, default the name the index was opened by:
        :meth:`PageIndex.node_filters`), and each record comes with ``doc_id``,
        ``page_label`` and ``evidence`` (:mod:`~agree_core.index.framework_nodes`). A served
        index computes them in the same request as the search."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        # text is weighted as PageIndex.search weights it (IDF, when the index does); vectors are used as given
        q = self.index.encode_queries([query])[0] if isinstance(query, str) else torch.as_tensor(query)
        if q.dim() != 2 or q.shape[0] == 0 or q.shape[1] != self.index.config.dim:
            raise ValueError(f"query vectors must be (n_tokens >= 1, {self.index.config.dim}), got "
                             f"{tuple(q.shape)}: embed queries with the index's encoder "
                             f"({self.index.config.encoder})")
        if node_fields:
            where = self.index.node_filters(where, location)
        (scored,) = self.index.search_vectors([q.float().numpy()], k, self.scope(where), candidates)
        full = self.index.engine.retrieve([s.id for s in scored], exclude=_UNREAD)
        scored = [s for s in scored if s.id in full]
        found = [replace(self._record(s.id, full[s.id].payload, with_blobs), score=s.score) for s in scored]
        if not node_fields:
            return found
        from agree_core.index.framework_nodes import add_node_fields

        return add_node_fields(self.index, found, [full[s.id].payload.get("doc_id") for s in scored],
                               query=q, asked=query if isinstance(query, str) else None)

    # -- internals --------------------------------------------------------------------------
    def scope(self, where: dict[str, Any] | None, records_only: bool = False) -> Any:
        """``where`` as an engine filter, over records (only) and ready documents."""
        check_types(where, self._stored_types)
        return F.all_of(self.index.scope(where), IS_RECORD if records_only else None)

    def _stored_types(self, key: str) -> set[type]:
        """The types of the values of metadata ``key`` in records and PDF pages."""
        return {type(m[key]) for point in self.index.engine.scroll(
            None, payload=["kind", "meta", "meta_json", "source", "page"])
            if key in (m := payload_meta(point.payload))}

    def _refuse_pages(self, where: dict[str, Any] | None, what: str) -> None:
        n = self.index.engine.count(F.all_of(self.scope(where), F.Not(IS_RECORD)))
        if n:
            raise ValueError(_PAGES_MESSAGE.format(n=n, what=what))

    def _lookup(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        """id -> (point id, payload) for the records and visible PDF pages with these ids."""
        candidates = {record_point_id(i): i for i in ids}
        candidates.update({i: i for i in ids if F.is_uuid(i)})  # page ids are point ids
        unfinished = set(self.index.unfinished())
        out = {}
        for pid, point in self.index.engine.retrieve(list(candidates), exclude=_UNREAD).items():
            payload = point.payload
            is_record = payload.get("kind") == RECORD_KIND
            if (is_record and payload.get("record_id") == candidates[pid]) or (
                    not is_record and pid == candidates[pid] and payload.get("doc_id") not in unfinished):
                out[candidates[pid]] = (pid, payload)
        return out

    def _record(self, pid: str, payload: dict[str, Any], with_blob: bool) -> Record:
        image = payload.get("image") or ""
        # a server index's file is fetched (and cached) only when asked for
        path = self.index.images.local_paths({pid: payload})[pid] if image and (
            with_blob or not self.index.images.in_payload) else ""
        blob = Path(path).read_bytes() if with_blob and path and Path(path).is_file() else None
        meta = payload_meta(payload)
        if payload.get("kind") == RECORD_KIND:
            text = payload.get("text") if payload.get("text_given", True) else None
            return Record(payload["record_id"], text, blob, payload.get("mime_type"), meta,
                          extra=json.loads(payload.get("extra") or "{}"), image_path=path or None)
        mime = _MIME.get(Path(image).suffix.lstrip("."))
        return Record(pid, payload.get("text", ""), blob, mime, meta, kind="page",
                      image_path=path or None)

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
            out[i] = PageEmbedding(v, tuple(r.grid) if r.grid else (1, 1), cells, unpooled=self._sentence_rows(v))
        todo = [i for i, e in enumerate(out) if e is None]
        if todo:
            for i, emb in zip(todo, embed_records(self.index.encoder, [batch[i] for i in todo], len(todo))):
                out[i] = emb
        return out  # type: ignore[return-value]

    def _sentence_rows(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """Given vectors of a window-fused text-layer index: its sentence vectors, which
        pooling stores as they are (None for other encoders)."""
        config = self.index.config
        if not config.encoder.startswith("text-layer") or not config.encoder_config.get("sentence_weight"):
            return None
        from agree_core.encoders.text_layer import sentence_rows

        return sentence_rows(vectors)

    def _point(self, r: Record, emb: PageEmbedding, old: dict | None) -> Point:
        pid = record_point_id(r.id)
        return build_point(
            pid, emb, pooled=self.index.config.pooled_vectors, pool_factor=self.index.config.pool_factor,
            first_stage=self.index.config.first_stage,
            text=r.text, doc_id=pid,
            **_located(r.meta), meta=r.meta,
            image=self.index.images.blob_fields(pid, r.blob) if r.blob else {"image": ""},
            kind=RECORD_KIND, record_id=r.id, mime_type=r.mime_type, text_given=r.text is not None,
            # exact copies: the engine reads JSON floats to within one unit in the last place
            meta_json=json.dumps(r.meta), extra=json.dumps(r.extra),
            seq=old["seq"] if old and "seq" in old else self._next_seq())

    def _next_seq(self) -> int:
        self._seq = max(time.time_ns(), self._seq + 1)
        return self._seq


_UNREAD = (IMAGE_DATA,)  # files are read through the image store, when asked for

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

