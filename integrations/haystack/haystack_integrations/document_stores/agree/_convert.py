"""Haystack types <-> agree_core types, and serialisation generated from ``__init__``.

Multi-vector embeddings travel under Haystack's name, ``multivector_embedding``
(``list[list[float]]``, one vector per token): on the Document field when the installed
Haystack has it (announced for 3.5), else in ``Document.meta["multivector_embedding"]``
(Haystack 3.4). ``meta["multivector_grid"]`` and ``meta["multivector_cells"]`` place the
vectors on the page grid (agree's own keys, used for similarity maps).
"""

from __future__ import annotations

import dataclasses
import inspect
from enum import Enum
from typing import Any

import torch
from haystack import Document, default_to_dict
from haystack.dataclasses import ByteStream, SparseEmbedding

from agree_core.encoders import PageEmbedding
from agree_core.index.records import Record
from agree_core.rerank import PageRef

MULTIVECTOR = "multivector_embedding"
GRID, CELLS = "multivector_grid", "multivector_cells"
HAS_MULTIVECTOR_FIELD = MULTIVECTOR in {f.name for f in dataclasses.fields(Document)}
_VECTOR_KEYS = (MULTIVECTOR, GRID, CELLS)


def get_multivector(doc: Document) -> list[list[float]] | None:
    if HAS_MULTIVECTOR_FIELD and getattr(doc, MULTIVECTOR, None) is not None:
        return getattr(doc, MULTIVECTOR)
    return doc.meta.get(MULTIVECTOR)


def with_multivector(doc: Document, emb: PageEmbedding) -> Document:
    """A copy of ``doc`` carrying ``emb``."""
    vectors = emb.vectors.float().tolist()
    meta = {**doc.meta, GRID: list(emb.grid), CELLS: emb.cells.tolist()}
    if HAS_MULTIVECTOR_FIELD:
        return dataclasses.replace(doc, meta=meta, **{MULTIVECTOR: vectors})
    return dataclasses.replace(doc, meta={**meta, MULTIVECTOR: vectors})


def document_to_record(doc: Any) -> Record:
    if not isinstance(doc, Document):
        raise ValueError(f"expected a haystack Document, got {type(doc).__name__}: {doc!r:.80}")
    vectors = get_multivector(doc)
    extra: dict[str, Any] = {}
    if doc.embedding is not None:
        extra["embedding"] = list(doc.embedding)
    if doc.sparse_embedding is not None:
        extra["sparse_embedding"] = doc.sparse_embedding.to_dict()
    if doc.blob is not None:
        extra["blob_meta"] = doc.blob.meta
    return Record(
        id=doc.id, text=doc.content, meta={k: v for k, v in doc.meta.items() if k not in _VECTOR_KEYS},
        blob=doc.blob.data if doc.blob is not None else None,
        mime_type=doc.blob.mime_type if doc.blob is not None else None,
        vectors=torch.tensor(vectors, dtype=torch.float32) if vectors else None,
        grid=doc.meta.get(GRID), cells=doc.meta.get(CELLS), extra=extra,
    )


def document_ref(doc: Any) -> PageRef:
    """What a Document gives the scorer: its own vectors, its id (vectors stored in the
    index), the PDF page its meta names in any reader's keys (``source`` / ``file_path``,
    ``page`` / ``page_number``), and itself (its content) when it names no PDF."""
    record = document_to_record(doc)
    return PageRef.from_meta(doc.meta, key=doc.id, vectors=record.vectors, record=record, record_id=doc.id)


def record_to_document(r: Record) -> Document:
    """The Document for a stored record, as it was written; a page of an indexed PDF comes
    with ``meta`` source and page (and Haystack's names for them, ``file_path`` and
    ``page_number``), and its image with the image's ``file_path``, or, from an index that
    ``agree serve`` holds (the file is on the server's disk), its ``url`` (as Haystack's
    ``LinkContentFetcher`` names a fetched blob's origin; signed: it opens without the token)."""
    blob = None
    if r.blob is not None:
        origin = {"url": r.image_url} if r.image_url else {"file_path": r.image_path}
        blob_meta = r.extra.get("blob_meta", origin if r.kind == "page" else {})
        blob = ByteStream(r.blob, meta=blob_meta, mime_type=r.mime_type)
    sparse = r.extra.get("sparse_embedding")
    meta = dict(r.meta)
    if r.kind == "page":
        meta.setdefault("file_path", meta.get("source"))
        meta.setdefault("page_number", meta.get("page"))
    return Document(id=r.id, content=r.text, blob=blob, meta=meta, score=r.score,
                    embedding=r.extra.get("embedding"),
                    sparse_embedding=SparseEmbedding.from_dict(sparse) if sparse else None)


def query_vectors(query: str | None, query_multivector_embedding: list[list[float]] | None) -> str | torch.Tensor:
    """What to search with: the embedding when given, else the query text."""
    if query_multivector_embedding is not None:
        if not query_multivector_embedding:
            raise ValueError("query_multivector_embedding is empty: give one vector per query token")
        return torch.tensor(query_multivector_embedding, dtype=torch.float32)
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"give a non-empty query or a query_multivector_embedding, got query={query!r}")
    return query


def init_to_dict(obj: Any) -> dict[str, Any]:
    """``default_to_dict`` of ``obj`` with every ``__init__`` parameter, read from the
    attribute of the same name (enums by value, objects with ``to_dict`` by it)."""
    params = {}
    for name, p in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(obj, name)
        params[name] = value.value if isinstance(value, Enum) else value
    return default_to_dict(obj, **params)


def check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
