"""AgreeDocumentStore: Haystack's DocumentStore protocol over an agree page index."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import torch
from haystack import Document, default_from_dict, logging
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.errors import FilterError

from agree_core.index.filters import FilterError as IndexFilterError
from agree_core.index.record_pages import score_records
from agree_core.index.records import DuplicateRecordError, Record
from agree_core.index.shared import SharedIndex

from ._convert import check_positive, document_to_record, init_to_dict, record_to_document
from ._metadata import MetadataQueries

logger = logging.getLogger(__name__)

_ON_CONFLICT = {DuplicatePolicy.NONE: "error", DuplicatePolicy.FAIL: "error",
                DuplicatePolicy.SKIP: "skip", DuplicatePolicy.OVERWRITE: "replace"}


class AgreeDocumentStore(MetadataQueries):
    """Page Documents in an agree index (multi-vector, MaxSim), on disk at ``index_dir``.

    The index is created there on first use if the folder is new or empty, else opened; it
    holds the pages Haystack writes and the pages of PDFs indexed with ``agree index``. Every
    component of this process that names the same ``index_dir`` shares one open index (one
    process at a time can hold it).

    Documents carry their text (``content``), their page image (``blob``) and ``meta``;
    ``meta["source"]`` and ``meta["page"]`` name the PDF page they come from. Multi-vector
    embeddings are read from ``multivector_embedding`` (see the embedders) or computed with
    the index's encoder when missing. ``write_documents`` with ``DuplicatePolicy.NONE`` fails
    on duplicates, as ``FAIL`` does. Pages of PDFs indexed as files are read-only here.

    :param index_dir: the index folder.
    :param encoder: encoder of a new index (default ``text-layer``); for an existing index,
        ``None`` or the encoder it was built with.
    :param encoder_options: runtime options of the encoder (``device``, ``dtype``...).
    :param wait: seconds to wait for another process that holds the index.
    :param include_images: return page images (``Document.blob``) from reads and searches.
    :param batch_size: pages encoded per forward pass when writing.
    """

    def __init__(self, index_dir: str | Path, *, encoder: str | None = None,
                 encoder_options: dict[str, Any] | None = None, wait: float = 0.0,
                 include_images: bool = True, batch_size: int = 16):
        if not isinstance(index_dir, (str, Path)) or not str(index_dir).strip():
            raise ValueError(f"index_dir must be a folder path, got {index_dir!r}")
        if encoder is not None and (not isinstance(encoder, str) or not encoder):
            raise ValueError(f"encoder must be an encoder name such as 'text-layer', got {encoder!r}")
        if encoder_options is not None and not isinstance(encoder_options, dict):
            raise ValueError(f"encoder_options must be a dict, got {encoder_options!r}")
        if not isinstance(wait, (int, float)) or wait < 0:
            raise ValueError(f"wait must be a number of seconds >= 0, got {wait!r}")
        check_positive("batch_size", batch_size)
        self.index_dir = str(index_dir)
        self.encoder = encoder
        self.encoder_options = encoder_options
        self.wait = wait
        self.include_images = include_images
        self.batch_size = batch_size
        self._shared: SharedIndex | None = None
        self._opening = threading.Lock()

    # -- lifecycle and serialisation -----------------------------------------------------------
    @property
    def shared(self) -> SharedIndex:
        """The open index (opened on first use)."""
        with self._opening:
            if self._shared is None:
                self._shared = SharedIndex.acquire(self.index_dir, self.encoder, wait=self.wait,
                                                   encoder_options=self.encoder_options)
            return self._shared

    def warm_up(self) -> None:
        """Open the index and load its encoder."""
        self._run(lambda ix: ix.encoder.dim)

    def close(self) -> None:
        with self._opening:
            if self._shared is not None:
                self._shared.release()
                self._shared = None

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeDocumentStore":
        return default_from_dict(cls, data)

    # -- the DocumentStore protocol, and the extended operations ---------------------------------
    def count_documents(self) -> int:
        return self._run(lambda ix: ix.records.count())

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        return self._run(lambda ix: ix.records.count(filters))

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        return self._documents(self._run(lambda ix: ix.records.find(filters, with_blobs=self.include_images)))

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        return self._run(self._writer(documents, policy))

    def delete_documents(self, document_ids: list[str]) -> None:
        self._run(lambda ix: ix.records.delete(list(document_ids)))

    def delete_all_documents(self) -> None:
        """Delete every Document, and every PDF indexed as a file."""
        self._run(lambda ix: ix.records.delete_all())

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        return self._run(lambda ix: ix.records.delete(where=_required(filters)))

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        return self._run(lambda ix: ix.records.update_meta(_required(filters), meta))

    async def count_documents_async(self) -> int:
        return await self._arun(lambda ix: ix.records.count())

    async def count_documents_by_filter_async(self, filters: dict[str, Any]) -> int:
        return await self._arun(lambda ix: ix.records.count(filters))

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        found = await self._arun(lambda ix: ix.records.find(filters, with_blobs=self.include_images))
        return self._documents(found)

    async def write_documents_async(self, documents: list[Document],
                                    policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        return await self._arun(self._writer(documents, policy))

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        await self._arun(lambda ix: ix.records.delete(list(document_ids)))

    async def delete_all_documents_async(self) -> None:
        await self._arun(lambda ix: ix.records.delete_all())

    async def delete_by_filter_async(self, filters: dict[str, Any]) -> int:
        return await self._arun(lambda ix: ix.records.delete(where=_required(filters)))

    async def update_by_filter_async(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        return await self._arun(lambda ix: ix.records.update_meta(_required(filters), meta))

    # -- for the retriever and the ranker ------------------------------------------------------
    def _search_op(self, query: str | torch.Tensor, top_k: int, filters: dict[str, Any] | None,
                   candidates: int | None) -> Callable:
        return lambda ix: ix.records.search(query, top_k, filters, candidates=candidates,
                                            with_blobs=self.include_images)

    def _score_op(self, query: str | torch.Tensor, records: list[Record]) -> Callable:
        return lambda ix: score_records(query, records, index=ix, batch_size=self.batch_size)

    # -- internals ----------------------------------------------------------------------------
    def _writer(self, documents: list[Document], policy: DuplicatePolicy) -> Callable:
        if not isinstance(documents, list):
            raise ValueError(f"documents must be a list of Documents, got {type(documents).__name__}")
        records = [document_to_record(d) for d in documents]
        on_conflict = _ON_CONFLICT[DuplicatePolicy(policy)]
        return lambda ix: ix.records.write(records, on_conflict, self.batch_size)

    def _documents(self, records: list[Record]) -> list[Document]:
        return [record_to_document(r) for r in records]

    def _run(self, op: Callable) -> Any:
        try:
            return self.shared.run(op)
        except (IndexFilterError, DuplicateRecordError) as e:
            raise _haystack_error(e) from e

    async def _arun(self, op: Callable) -> Any:
        try:
            return await self.shared.arun(op)
        except (IndexFilterError, DuplicateRecordError) as e:
            raise _haystack_error(e) from e


def _haystack_error(e: Exception) -> Exception:
    if isinstance(e, DuplicateRecordError):
        return DuplicateDocumentError(str(e))
    return FilterError(str(e))


def _required(filters: Any) -> dict[str, Any]:
    if not filters:
        raise FilterError("give a filter; to delete or update everything use delete_all_documents()")
    return filters
