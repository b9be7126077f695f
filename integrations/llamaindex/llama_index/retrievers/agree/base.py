"""AgreeVisualRetriever: an agree page index as a LlamaIndex retriever."""

from __future__ import annotations

import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Sequence

import torch
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import MetadataFilters

from agree_core.encoders import MultiVectorEncoder
from agree_core.index import AddReport, PageIndex
from agree_core.index.filters import compile_filter
from agree_core.index.node_fields import resolve_node_fields
from agree_core.index.shared import SharedIndex, require_index
from agree_core.index.storage import is_url, resolve_location
from llama_index.retrievers.agree.filters import to_agree_filters
from llama_index.retrievers.agree.nodes import page_nodes, search_nodes

PERSIST_FILE = "agree-retriever.json"


class AgreeVisualRetriever(BaseRetriever):
    """Pages of an agree index ranked by MaxSim, as ``ImageNode``s: the page image
    (``image_path``; ``image_url`` on an index that ``agree serve`` holds, signed so that
    ``resolve_image`` needs no token), the page's text (text layer or OCR), and metadata ``source`` (also
    ``file_path``), ``page`` (the physical page, 1-based), ``page_label`` (the PDF's printed
    label, as LlamaIndex's PDFReader gives it), ``file_name``, ``doc_id``, ``index_dir`` and
    the document's own metadata, and ``evidence``: the places of the page that matched, as
    ``agree search --json`` gives them (:mod:`agree_core.evidence`). Node id: the page id, stable for a file's content at its
    path (:func:`page_nodes` gives other retrievers the same ids); ``ref_doc_id``: the
    document id.

    Args:
        index_dir: an agree index (``agree index ... --index DIR``, or :meth:`from_pdfs`);
            a folder with no index is an error naming it (this retriever only reads).
        similarity_top_k: pages per query (``top_k`` is an alias); settable between queries.
        filters: LlamaIndex ``MetadataFilters``: AND / OR / NOT, on any metadata key a
            returned node carries (see :func:`to_agree_filters`); settable between queries.
        encoder: a registry spec or an encoder object; default: the index's own.
        encoder_options: runtime options of the encoder (device, dtype, batch sizes).
        candidates: pages kept by the pooled first stage (``PageIndex.search_batch``).
        wait: seconds to wait while another process holds the index.

    The query is ``QueryBundle.query_str``; ``custom_embedding_strs`` (e.g. from a query
    transform) are searched as one query instead; ``QueryBundle.embedding`` is used when it
    holds the query's token vectors (a list of vectors) from the index's encoder. A single
    dense vector (another retriever's embedding, set on a shared bundle) is not ours and is
    left alone: the text is searched.

    The index opens at the first query (:attr:`shared`) and is shared by every component of
    this process that names the directory (a process holds an index exclusively). Its calls
    run one at a time in its own thread; ``aretrieve`` awaits them without blocking the event
    loop. :meth:`close` (or ``with``, or garbage collection) gives the index back.
    """

    def __init__(self, index_dir: str | Path, *, similarity_top_k: int | None = None,
                 top_k: int | None = None, filters: MetadataFilters | None = None,
                 encoder: str | MultiVectorEncoder | None = None,
                 encoder_options: dict[str, Any] | None = None, candidates: int | None = None,
                 wait: float = 0.0, callback_manager: CallbackManager | None = None,
                 verbose: bool = False) -> None:
        if similarity_top_k is not None and top_k is not None and similarity_top_k != top_k:
            raise ValueError(f"give similarity_top_k or its alias top_k, not both ({similarity_top_k} and {top_k})")
        # a folder (a typo is an error now, not an empty index), qdrant:// or qdrant-local: URL
        self.index_dir = resolve_location(index_dir) if is_url(index_dir) else require_index(index_dir)
        self.similarity_top_k = similarity_top_k if similarity_top_k is not None else top_k if top_k is not None else 5
        self.filters = filters
        self.encoder = encoder
        self.encoder_options = encoder_options
        self.candidates = candidates
        self.wait = wait
        self._shared: SharedIndex | None = None
        self._release: weakref.finalize | None = None
        self._open_lock = threading.Lock()
        self.add_report: AddReport | None = None  # set by from_pdfs
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        _LIVE.add(self)

    @classmethod
    def from_pdfs(cls, paths: Sequence[str | Path], index_dir: str | Path, *,
                  encoder: str | MultiVectorEncoder | None = None,
                  metadata: dict[str, Any] | None = None, batch_size: int = 16,
                  progress: bool = False, **kwargs: Any) -> "AgreeVisualRetriever":
        """Index PDF files and folders (recursive) into ``index_dir`` and return a retriever
        over it. The index is created when missing; indexing is idempotent
        (``PageIndex.add``). Files that cannot be indexed are logged and listed in
        ``retriever.add_report.skipped``; ``kwargs`` go to the constructor. One path alone
        is one source."""
        if isinstance(paths, (str, Path)):
            paths = [paths]  # never walked character by character
        shared = SharedIndex.acquire(index_dir, encoder, create=True, wait=kwargs.get("wait", 0.0),
                                     encoder_options=kwargs.get("encoder_options"))
        try:
            report = shared.run(PageIndex.add, list(paths), metadata=metadata,
                                batch_size=batch_size, progress=progress)
            retriever = cls(index_dir, encoder=encoder, **kwargs)
        except BaseException:
            shared.release()
            raise
        retriever._attach(shared)
        retriever.add_report = report
        return retriever

    # -- persistence -----------------------------------------------------------------------
    def persist(self, persist_dir: str | Path | None = None) -> None:
        """Write this retriever's settings to ``persist_dir/agree-retriever.json`` (default
        ``persist_dir``: the index directory). The pages are in the index already: the file
        names the index by its path relative to ``persist_dir``, it does not copy it."""
        if persist_dir is None and is_url(self.index_dir):
            raise ValueError(f"give a persist_dir: the index {self.index_dir} is not a folder")
        root = Path(persist_dir).absolute() if persist_dir is not None else self.index_dir
        root.mkdir(parents=True, exist_ok=True)
        settings = {
            "index_dir": self.index_dir if is_url(self.index_dir) else os.path.relpath(self.index_dir, root),
            "similarity_top_k": self.similarity_top_k,
            "filters": self.filters.model_dump(mode="json") if self.filters else None,
            "encoder": self.encoder if isinstance(self.encoder, str) else None,
            "encoder_options": self.encoder_options,
            "candidates": self.candidates,
        }
        (root / PERSIST_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def from_persist_dir(cls, persist_dir: str | Path, **kwargs: Any) -> "AgreeVisualRetriever":
        """The retriever that :meth:`persist` wrote to ``persist_dir``; ``kwargs`` override
        its settings. An index directory with no saved settings gives the defaults."""
        root = Path(persist_dir).absolute()
        path = root / PERSIST_FILE
        settings = json.loads(path.read_text()) if path.is_file() else {}
        if "top_k" in settings:  # written by an earlier version
            settings["similarity_top_k"] = settings.pop("top_k")
        index_dir = settings.pop("index_dir", ".")
        index_dir = index_dir if is_url(index_dir) else root / index_dir
        if "top_k" in kwargs:
            kwargs["similarity_top_k"] = kwargs.pop("top_k")
        if settings.get("filters"):
            settings["filters"] = MetadataFilters.model_validate(settings["filters"])
        return cls(index_dir, **{**settings, **kwargs})

    # -- settings ----------------------------------------------------------------------------
    @property
    def similarity_top_k(self) -> int:
        return self._similarity_top_k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"similarity_top_k must be an integer >= 1, got {value!r}")
        self._similarity_top_k = value

    top_k = similarity_top_k  # the alias

    @property
    def filters(self) -> MetadataFilters | None:
        return self._filters

    @filters.setter
    def filters(self, value: MetadataFilters | None) -> None:
        if value is not None and not isinstance(value, MetadataFilters):
            raise TypeError(f"filters must be LlamaIndex MetadataFilters, got {type(value).__name__}")
        tree = to_agree_filters(value)
        compile_filter(resolve_node_fields(tree, [], ""))  # malformed values now, not at the first query
        self._filters, self._agree_filters = value, tree

    # -- the index ---------------------------------------------------------------------------
    @property
    def shared(self) -> SharedIndex:
        """The open index (on first use): ``retriever.shared.run(PageIndex.info)``."""
        with self._open_lock:
            if self._shared is None:
                self._attach(SharedIndex.acquire(self.index_dir, self.encoder, create=False,
                                                 wait=self.wait, encoder_options=self.encoder_options))
            return self._shared

    def close(self) -> None:
        """Give the index back (the last user closes it); the next query reopens it."""
        with self._open_lock:
            if self._release is not None:
                self._release()
            self._shared = self._release = None

    def __enter__(self) -> "AgreeVisualRetriever":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _attach(self, shared: SharedIndex) -> None:
        self._shared = shared
        self._release = weakref.finalize(self, shared.release)

    # -- retrieval ---------------------------------------------------------------------------
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.shared.run(search_nodes, query_of(query_bundle), *self._search_args())

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await self.shared.arun(search_nodes, query_of(query_bundle), *self._search_args())

    def page_nodes(self) -> list[TextNode]:
        """Every page of the index (within ``filters``) as the very nodes retrieval returns:
        the same ids, text, image and metadata, hence the same node hash. Build other
        retrievers on them (``BM25Retriever.from_defaults(nodes=retriever.page_nodes())``)
        and ``QueryFusionRetriever``, which merges results by node hash, merges the same page
        from both instead of returning it twice."""
        return self.shared.run(page_nodes, self._agree_filters, self.index_dir)

    def _search_args(self) -> tuple:  # plain values: the index's thread keeps no reference to self
        return self.similarity_top_k, self._agree_filters, self.candidates, self.index_dir


def query_of(query_bundle: QueryBundle | None, missing: str = "a query is needed") -> str | torch.Tensor:
    """What a LlamaIndex query bundle asks agree to search with: its token vectors when
    ``embedding`` is a list of vectors, else ``custom_embedding_strs`` joined, else
    ``query_str``. (A flat ``embedding`` is one dense vector from another model.)"""
    if query_bundle is None:
        raise ValueError(missing)
    emb = query_bundle.embedding
    if emb is not None and len(emb) and isinstance(emb[0], (list, tuple, torch.Tensor)):
        try:
            return torch.as_tensor(emb, dtype=torch.float32)
        except (ValueError, TypeError) as e:
            raise ValueError(f"QueryBundle.embedding must be the query's token vectors, one list of "
                             f"floats per token, all of one length: {e}") from None
    strs = query_bundle.custom_embedding_strs
    if strs:
        return " ".join(strs)
    return query_bundle.query_str


_LIVE: "weakref.WeakSet[AgreeVisualRetriever]" = weakref.WeakSet()


def open_index(index_dir: str | Path) -> SharedIndex | None:
    """The index a retriever of this process holds open at ``index_dir``, acquired for the
    caller (who releases it), else ``None``: never opens an index nobody holds."""
    path = resolve_location(index_dir, must_exist=False)
    if any(r.index_dir == path and r._shared is not None for r in list(_LIVE)):
        return SharedIndex.acquire(path, create=False)
    return None
