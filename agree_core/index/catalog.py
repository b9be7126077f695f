"""The document catalog: one SQLite row per indexed file, the index's source of truth.

A document moves ``indexing -> ready``; deletion and replacement go through ``deleting``.
The vector shard is written between those steps, so after a crash the catalog says what
to finish: ``indexing`` documents resume, ``deleting`` ones are purged, and search only
sees ``ready`` documents.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATALOG_FILE = "catalog.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id   TEXT PRIMARY KEY,
    source   TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    pages    INTEGER NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('indexing', 'ready', 'deleting')),
    meta     TEXT NOT NULL DEFAULT '{}',
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_source ON documents (source);
-- how many pages of each document contain each term (encoders with a vocabulary only)
CREATE TABLE IF NOT EXISTS doc_terms (
    doc_id TEXT NOT NULL,
    term   INTEGER NOT NULL,
    pages  INTEGER NOT NULL,
    PRIMARY KEY (doc_id, term)
);
-- pages of a document that could not be indexed, and why; retried by the next add
CREATE TABLE IF NOT EXISTS failed_pages (
    doc_id  TEXT NOT NULL,
    page    INTEGER NOT NULL,
    code    TEXT NOT NULL,
    message TEXT NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (doc_id, page)
);
"""


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    sha256: str
    pages: int
    state: str
    meta: dict[str, Any]
    added_at: float


class Catalog:
    def __init__(self, directory: Path):
        self._db = sqlite3.connect(directory / CATALOG_FILE, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def documents(self, state: str | None = None, source: str | None = None) -> list[Document]:
        sql, args = "SELECT * FROM documents", []
        where = []
        if state:
            where.append("state = ?")
            args.append(state)
        if source:
            where.append("source = ?")
            args.append(source)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_row(r) for r in self._db.execute(sql + " ORDER BY source, added_at", args)]

    def get(self, doc_id: str) -> Document | None:
        r = self._db.execute("SELECT * FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return _row(r) if r else None

    def begin(self, doc_id: str, source: str, sha256: str, pages: int, meta: dict[str, Any]) -> None:
        """Record a document as being indexed; earlier versions of its source go to ``deleting``."""
        with self._tx():
            self._db.execute(
                "UPDATE documents SET state = 'deleting' WHERE source = ? AND doc_id != ?",
                (source, doc_id),
            )
            self._db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, 'indexing', ?, ?) "
                "ON CONFLICT (doc_id) DO UPDATE SET state = 'indexing', meta = excluded.meta",
                (doc_id, source, sha256, pages, json.dumps(meta, sort_keys=True), time.time()),
            )

    def set_state(self, doc_id: str, state: str) -> None:
        self._db.execute("UPDATE documents SET state = ? WHERE doc_id = ?", (state, doc_id))

    def set_meta(self, doc_id: str, meta: dict[str, Any]) -> None:
        self._db.execute("UPDATE documents SET meta = ? WHERE doc_id = ?",
                         (json.dumps(meta, sort_keys=True), doc_id))

    def set_ready(self, doc_id: str, term_pages: dict[int, int]) -> None:
        """Mark a document ready together with its term counts, in one transaction: term
        statistics always describe exactly the ready documents."""
        with self._tx():
            self._db.execute("DELETE FROM doc_terms WHERE doc_id = ?", (doc_id,))
            self._db.executemany("INSERT INTO doc_terms VALUES (?, ?, ?)",
                                 [(doc_id, int(t), int(n)) for t, n in term_pages.items()])
            self._db.execute("UPDATE documents SET state = 'ready' WHERE doc_id = ?", (doc_id,))

    def term_stats(self) -> tuple[int, dict[int, int]]:
        """(pages of ready documents, pages containing each term) over ready documents."""
        (n,) = self._db.execute(
            "SELECT COALESCE(SUM(pages), 0) FROM documents WHERE state = 'ready'").fetchone()
        rows = self._db.execute(
            "SELECT term, SUM(t.pages) FROM doc_terms t JOIN documents d USING (doc_id) "
            "WHERE d.state = 'ready' GROUP BY term")
        return int(n), {int(t): int(c) for t, c in rows}

    # -- failed pages (additive: the documents table does not change) ----------------------
    def set_failed(self, doc_id: str, failures: list[tuple[int, str, str]]) -> None:
        """Record ``(page, code, message)`` failures of a document (replacing earlier ones
        of the same pages)."""
        self._db.executemany(
            "INSERT INTO failed_pages VALUES (?, ?, ?, ?, ?) ON CONFLICT (doc_id, page) "
            "DO UPDATE SET code = excluded.code, message = excluded.message, at = excluded.at",
            [(doc_id, int(p), c, m, time.time()) for p, c, m in failures])

    def clear_failed(self, doc_id: str, pages: list[int]) -> None:
        """Forget failures of pages that are now indexed."""
        self._db.executemany("DELETE FROM failed_pages WHERE doc_id = ? AND page = ?",
                             [(doc_id, int(p)) for p in pages])

    def failed_pages(self, doc_id: str | None = None) -> list[FailedPage]:
        """Failed pages of ``doc_id``, or of every document, in source and page order."""
        sql = ("SELECT f.doc_id, d.source, f.page, f.code, f.message FROM failed_pages f "
               "JOIN documents d USING (doc_id)")
        args: tuple = ()
        if doc_id is not None:
            sql += " WHERE f.doc_id = ?"
            args = (doc_id,)
        return [FailedPage(*r) for r in self._db.execute(sql + " ORDER BY d.source, f.page", args)]

    def remove(self, doc_id: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM failed_pages WHERE doc_id = ?", (doc_id,))
            self._db.execute("DELETE FROM doc_terms WHERE doc_id = ?", (doc_id,))
            self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def _tx(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


@dataclass(frozen=True)
class FailedPage:
    doc_id: str
    source: str
    page: int
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "page": self.page, "code": self.code,
                "message": self.message}


def _row(r: tuple) -> Document:
    doc_id, source, sha256, pages, state, meta, added_at = r
    return Document(doc_id, source, sha256, pages, state, json.loads(meta), added_at)
