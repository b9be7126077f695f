"""AgreeDocumentStore: Haystack's DocumentStore protocol over an agree page index."""

from __future__ import annotations

import dataclasses
import json
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from haystack import Document, default_from_dict, logging
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.errors import FilterError

from agree_core.index.config import CONFIG_FILE
from agree_core.index.filters import FilterError as IndexFilterError
from agree_core.index.records import DuplicateRecordError, Record
from agree_core.index.shared import SharedIndex
from agree_core.index.storage import is_served
from agree_core.rerank import PageRef, PageScorer

from ._convert import check_positive, document_to_record, init_to_dict, record_to_document
from ._metadata import MetadataQueries

logger = logging.getLogger(__name__)

_ON_CONFLICT = {DuplicatePolicy.NONE: "error", DuplicatePolicy.FAIL: "error",
                DuplicatePolicy.SKIP: "skip", DuplicatePolicy.OVERWRITE: "replace"}


class AgreeDocumentStore(MetadataQueries):
    """Page Documents in an agree index (multi-vector, MaxSim), on disk at ``index_dir``.

    The index holds the pages Haystack writes and the pages of PDFs indexed with ``agree
    index``. It is created by the first write (a writer, an indexing pipeline) when the
    folder is new or empty; reads and searches (a query pipeline) refuse a folder with no
    index, naming it, so that a mistyped path is an error rather than an empty answer.
    ``create=True`` creates it on any first use, ``create=False`` never. Every component of
    this process that names the same ``index_dir`` shares one open index (one process at a
    time can hold it), and one pipeline file loads one store per index: components that
    name the same store get the same instance. ``close()``, and ``Pipeline.close()`` through
    the components that use the store, give it back.

    Documents carry their text (``content``), their page image (``blob``) and ``meta``;
    ``meta["source"]`` and ``meta["page"]`` name the PDF page they come from (also as
    Haystack's converters name them, ``file_path`` and ``page_number``; filters on either
    name match). Filters follow ``InMemoryDocumentStore``: comparing a field with a value it
    cannot be ordered against (``>`` with a number on a text field) raises ``FilterError``. Multi-vector
    embeddings are read from ``multivector_embedding`` (see the embedders) or computed with
    the index's encoder when missing. ``write_documents`` with ``DuplicatePolicy.NONE`` fails
    on duplicates, as ``FAIL`` does. Pages of PDFs indexed as files are read-only here.

    :param index_dir: the index folder.
    :param encoder: encoder of a new index (default ``text-layer``); for an existing index,
        ``None`` or the encoder it was built with.
    :param encoder_options: runtime options of the encoder (``device``, ``dtype``...).
    :param wait: seconds to wait for another process that holds the index.
    :param create: ``None`` (default): the first write creates a missing index, reads refuse
        it; ``True``: any first use creates it; ``False``: never create.
    :param include_images: return page images (``Document.blob``) from reads and searches.
    :param batch_size: pages encoded per forward pass when writing.
    """

    def __init__(self, index_dir: str | Path, *, encoder: str | None = None,
                 encoder_options: dict[str, Any] | None = None, wait: float = 0.0,
                 include_images: bool = True, batch_size: int = 16, create: bool | None = None):
        if not isinstance(index_dir, (str, Path)) or not str(index_dir).strip():
            raise ValueError(f"index_dir must be a folder path, got {index_dir!r}")
        if encoder is not None and (not isinstance(encoder, str) or not encoder):
            raise ValueError(f"encoder must be an encoder name such as 'text-layer', got {encoder!r}")
        if encoder_options is not None and not isinstance(encoder_options, dict):
            raise ValueError(f"encoder_options must be a dict, got {encoder_options!r}")
        if not isinstance(wait, (int, float)) or wait < 0:
            raise ValueError(f"wait must be a number of seconds >= 0, got {wait!r}")
        check_positive("batch_size", batch_size)
        if create not in (None, True, False):
            raise ValueError(f"create must be None, True or False, got {create!r}")
        self.create = create
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
        """The open index (opened on first use; see ``create``)."""
        return self._open(write=False)

    def _open(self, write: bool) -> SharedIndex:
        with self._opening:
            if self._shared is None:
                create = self.create if self.create is not None else write
                self._shared = SharedIndex.acquire(self.index_dir, self.encoder, wait=self.wait,
                                                   encoder_options=self.encoder_options, create=create)
            return self._shared

    def warm_up(self) -> None:
        """Open the index and load its encoder (a served index: check that the server
        answers; the model is the server's); a missing index is left to the first write to
        create (or the first read to refuse), unless ``create`` says otherwise."""
        if (self.create is not None or is_served(self.index_dir)  # agree serve holds an index, always
                or Path(self.index_dir, CONFIG_FILE).is_file()):
            self._run(lambda ix: ix.warm_up())

    def _warm_up(self, write: bool) -> None:
        """:meth:`warm_up` for a component that writes (may create) or only reads (refuses)."""
        self._run(lambda ix: ix.warm_up(), write=write)

    def close(self) -> None:
        """Give the index back (the last user in this process closes it); the next call
        reopens it. Safe to call more than once."""
        with self._opening:
            if self._shared is not None:
                self._shared.release()
                self._shared = None

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeDocumentStore":
        """The store ``data`` describes; while one loaded from the same description is in
        use, that one (a pipeline file names its store in every component that uses it)."""
        index_dir = data.get("init_parameters", {}).get("index_dir")
        where = str(Path(index_dir).absolute()) if isinstance(index_dir, str) else None  # relative: from here
        key = json.dumps([data, where], sort_keys=True, default=str)
        with _LOADED_GUARD:
            store = _LOADED.get(key)
            if store is None:
                store = default_from_dict(cls, data)
                _LOADED[key] = store
            return store

    # -- the DocumentStore protocol, and the extended operations ---------------------------------
    def count_documents(self) -> int:
        return self._run(lambda ix: ix.records.count())

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        return self._run(lambda ix: ix.records.count(_resolved(ix, filters)))

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        return self._documents(self._run(lambda ix: ix.records.find(_resolved(ix, filters), with_blobs=self.include_images)))

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        return self._run(self._writer(documents, policy), write=True)

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
        return await self._arun(lambda ix: ix.records.count(_resolved(ix, filters)))

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        found = await self._arun(lambda ix: ix.records.find(_resolved(ix, filters), with_blobs=self.include_images))
        return self._documents(found)

    async def write_documents_async(self, documents: list[Document],
                                    policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        return await self._arun(self._writer(documents, policy), write=True)

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
        with_blobs = self.include_images
        # filters on the keys Documents carry resolved, and the evidence found, where the index
        # is: one request to a served index
        return lambda ix: _with_evidence(ix.records.search(query, top_k, filters, candidates=candidates,
                                                           with_blobs=with_blobs, node_fields=True))

    def _score_op(self, query: str | torch.Tensor, refs: list[PageRef]) -> Callable:
        batch_size = self.batch_size
        return lambda ix: PageScorer(ix, batch_size=batch_size).scores_and_reasons(query, refs)

    # -- internals ----------------------------------------------------------------------------
    def _writer(self, documents: list[Document], policy: DuplicatePolicy) -> Callable:
        if not isinstance(documents, list):
            raise ValueError(f"documents must be a list of Documents, got {type(documents).__name__}")
        records = [document_to_record(d) for d in documents]
        on_conflict = _ON_CONFLICT[DuplicatePolicy(policy)]
        return lambda ix: ix.records.write(records, on_conflict, self.batch_size)

    def _documents(self, records: list[Record]) -> list[Document]:
        return [record_to_document(r) for r in records]

    def _run(self, op: Callable, write: bool = False) -> Any:
        try:
            return self._open(write).run(op)
        except (IndexFilterError, DuplicateRecordError) as e:
            raise _haystack_error(e) from e

    async def _arun(self, op: Callable, write: bool = False) -> Any:
        try:
            return await self._open(write).arun(op)
        except (IndexFilterError, DuplicateRecordError) as e:
            raise _haystack_error(e) from e


_LOADED: "weakref.WeakValueDictionary[str, AgreeDocumentStore]" = weakref.WeakValueDictionary()
_LOADED_GUARD = threading.Lock()


def _resolved(ix: Any, filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """``filters`` with the keys Documents carry but the index does not store resolved, where
    the index is (a served index: by the server, :meth:`PageIndex.node_filters`)."""
    return ix.node_filters(filters)


def _haystack_error(e: Exception) -> Exception:
    if isinstance(e, DuplicateRecordError):
        return DuplicateDocumentError(str(e))
    return FilterError(str(e))


def _required(filters: Any) -> dict[str, Any]:
    if not filters:
        raise FilterError("give a filter; to delete or update everything use delete_all_documents()")
    return filters


def _with_evidence(found: list[Record]) -> list[Record]:
    """Each record with ``meta["evidence"]``: the places that matched, as ``agree search
    --json`` gives them (:mod:`agree_core.evidence`), found by the search (``node_fields``)."""
    return [dataclasses.replace(r, meta={**r.meta, "evidence": r.evidence or []}) for r in found]
