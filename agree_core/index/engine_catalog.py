"""The catalog of a server index, kept in the engine where every client sees it.

A payload-only companion collection ``<collection>-catalog`` holds one point per document
(its id is the document id) with the same fields and states as the embedded index's SQLite
catalog (:mod:`agree_core.index.catalog`), its term counts (``term_ids``/``term_pages``: how
many pages of the document contain each term, for IDF weighting), and one point holding
the index config.

Consistency model: a document id is a hash of its source path and its sha256, so writing
the same file twice is idempotent, and each document is one point, updated in one request:
several clients indexing different documents at once never touch each other's entries;
two clients writing the same document race per document and the last writer wins (both
write the same pages, so either result is complete). State changes are single point
updates, so a reader sees a document either before or after each step, never half of one.
Term statistics are the sum over ``ready`` documents, computed when a client reads them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from agree_core.index import filters as F
from agree_core.index.catalog import Document
from agree_core.index.engines.base import Engine, Point

__all__ = ["EngineCatalog", "CONFIG_POINT"]

CONFIG_POINT = str(uuid.uuid5(uuid.UUID("6f1d3c2a-8b47-4e0f-9a6d-2c5e7b9f1a3d"), "agree-index-config"))
_DOC = F.Match("kind", "document")
_FIELDS = ["doc_id", "source", "sha256", "pages", "state", "meta", "added_at"]


class EngineCatalog:
    """The :class:`~agree_core.index.catalog.Catalog` interface over an engine's points."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def close(self) -> None:
        self.engine.close()

    # -- the index config -------------------------------------------------------------------
    def load_config(self) -> dict[str, Any] | None:
        got = self.engine.retrieve([CONFIG_POINT])
        return got[CONFIG_POINT].payload.get("config") if CONFIG_POINT in got else None

    def save_config(self, config: dict[str, Any]) -> None:
        self.engine.upsert([Point(CONFIG_POINT, {}, {"kind": "config", "config": config})])

    # -- documents --------------------------------------------------------------------------
    def documents(self, state: str | None = None, source: str | None = None) -> list[Document]:
        where = F.all_of(_DOC, F.Match("state", state) if state else None,
                         F.Match("source", source) if source else None)
        docs = [_document(p.payload) for p in self.engine.scroll(where, payload=_FIELDS)]
        return sorted(docs, key=lambda d: (d.source, d.added_at))

    def get(self, doc_id: str) -> Document | None:
        got = self.engine.retrieve([doc_id], payload=_FIELDS + ["kind"])
        p = got.get(doc_id)
        return _document(p.payload) if p is not None and p.payload.get("kind") == "document" else None

    def begin(self, doc_id: str, source: str, sha256: str, pages: int, meta: dict[str, Any]) -> None:
        """Record a document as being indexed; earlier versions of its source go to ``deleting``."""
        older = F.all_of(_DOC, F.Match("source", source), F.Not(F.HasId((doc_id,))))
        self.engine.set_payload({"state": "deleting"}, where=older)
        old = self.get(doc_id)
        self.engine.upsert([Point(doc_id, {}, {
            "kind": "document", "doc_id": doc_id, "source": source, "sha256": sha256,
            "pages": pages, "state": "indexing", "meta": meta,
            "added_at": old.added_at if old else time.time(), "term_ids": [], "term_pages": []})])

    def set_state(self, doc_id: str, state: str) -> None:
        self.engine.set_payload({"state": state}, ids=[doc_id])

    def set_meta(self, doc_id: str, meta: dict[str, Any]) -> None:
        self.engine.delete_payload(["meta"], ids=[doc_id])  # replace, never merge, nested keys
        self.engine.set_payload({"meta": meta}, ids=[doc_id])

    def set_ready(self, doc_id: str, term_pages: dict[int, int]) -> None:
        """Term counts and the ``ready`` state in one point update."""
        terms = sorted(term_pages.items())
        self.engine.set_payload({"term_ids": [int(t) for t, _ in terms],
                                 "term_pages": [int(n) for _, n in terms], "state": "ready"},
                                ids=[doc_id])

    def term_stats(self) -> tuple[int, dict[int, int]]:
        """(pages of ready documents, pages containing each term) over ready documents."""
        n, df = 0, {}
        for p in self.engine.scroll(F.all_of(_DOC, F.Match("state", "ready")),
                                    payload=["pages", "term_ids", "term_pages"]):
            n += int(p.payload.get("pages", 0))
            for t, c in zip(p.payload.get("term_ids") or (), p.payload.get("term_pages") or ()):
                df[int(t)] = df.get(int(t), 0) + int(c)
        return n, df

    # -- failed pages: kept in the document's point, ``failed`` = [{page, code, message, at}]
    def set_failed(self, doc_id: str, failures: list[tuple[int, str, str]]) -> None:
        """Record ``(page, code, message)`` failures of a document (replacing earlier ones
        of the same pages)."""
        now = time.time()
        failed = {f["page"]: f for f in self._failed(doc_id)}
        failed.update({int(p): {"page": int(p), "code": c, "message": m, "at": now} for p, c, m in failures})
        self.engine.set_payload({"failed": sorted(failed.values(), key=lambda f: f["page"])}, ids=[doc_id])

    def clear_failed(self, doc_id: str, pages: list[int]) -> None:
        """Forget failures of pages that are now indexed."""
        gone = {int(p) for p in pages}
        failed = self._failed(doc_id)
        if any(f["page"] in gone for f in failed):
            self.engine.set_payload({"failed": [f for f in failed if f["page"] not in gone]}, ids=[doc_id])

    def failed_pages(self, doc_id: str | None = None) -> list:
        """Failed pages of ``doc_id``, or of every document, in source and page order."""
        from agree_core.index.catalog import FailedPage

        where = F.all_of(_DOC, F.HasId((doc_id,)) if doc_id else None, F.Not(F.IsEmpty("failed")))
        out = [FailedPage(p.payload["doc_id"], p.payload["source"], int(f["page"]), f["code"], f["message"])
               for p in self.engine.scroll(where, payload=["doc_id", "source", "failed"])
               for f in p.payload.get("failed") or ()]
        return sorted(out, key=lambda f: (f.source, f.page))

    def _failed(self, doc_id: str) -> list[dict[str, Any]]:
        got = self.engine.retrieve([doc_id], payload=["failed"])
        return list(got[doc_id].payload.get("failed") or ()) if doc_id in got else []

    def remove(self, doc_id: str) -> None:
        self.engine.delete([doc_id])


def _document(p: dict[str, Any]) -> Document:
    return Document(p["doc_id"], p["source"], p["sha256"], int(p["pages"]), p["state"],
                    p.get("meta") or {}, float(p.get("added_at", 0.0)))
