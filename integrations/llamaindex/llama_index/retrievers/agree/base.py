"""AgreeVisualRetriever: an agree page index as a LlamaIndex retriever."""

from __future__ import annotations

import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Sequence

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from agree_core.encoders import MultiVectorEncoder
from agree_core.index import AddReport, IndexConfig, PageIndex
from agree_core.index.shard import build_filter
from agree_core.index.shared import SharedIndex
from llama_index.retrievers.agree.filters import to_agree_filters
from llama_index.retrievers.agree.nodes import search_nodes

PERSIST_FILE = "agree-retriever.json"


class AgreeVisualRetriever(BaseRetriever):
    """Pages of an agree index ranked by MaxSim, as ``ImageNode``s: the page image
    (``image_path``), the page's text (text layer or OCR), and metadata ``source`` (also
    ``file_path``), ``page`` (also ``page_label``), ``file_name``, ``doc_id``, ``index_dir``
    and the document's own metadata. Node id: the page id; ``ref_doc_id``: the document id.

    Args:
        index_dir: an agree index (``agree index ... --index DIR``, or :meth:`from_pdfs`).
        top_k: pages per query.
        filters: LlamaIndex ``MetadataFilters`` (see :func:`to_agree_filters`).
        encoder: a registry spec or an encoder object; default: the index's own.
        encoder_options: runtime options of the encoder (device, dtype, batch sizes).
        candidates: pages kept by the pooled first stage (``PageIndex.search_batch``).
        wait: seconds to wait while another process holds the index.

    The index opens at the first query (:attr:`shared`) and is shared by every component of
    this process that names the directory (a process holds an index exclusively). Its calls
    run one at a time in its own thread; ``aretrieve`` awaits them without blocking the event
    loop. :meth:`close` (or ``with``, or garbage collection) gives the index back.
    """

    def __init__(self, index_dir: str | Path, *, top_k: int = 5,
                 filters: MetadataFilters | None = None,
                 encoder: str | MultiVectorEncoder | None = None,
                 encoder_options: dict[str, Any] | None = None, candidates: int | None = None,
                 wait: float = 0.0, callback_manager: CallbackManager | None = None,
                 verbose: bool = False) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if str(index_dir).startswith(("http://", "https://")):  # served by agree serve
            self.index_dir: Path | str = str(index_dir)
        else:
            self.index_dir = Path(index_dir).absolute()
            IndexConfig.load(self.index_dir)  # "not an agree index" now rather than at the first query
        self.top_k = top_k
        self.filters = filters
        self._agree_filters = to_agree_filters(filters)
        build_filter(self._agree_filters)  # value errors now too
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
        ``retriever.add_report.skipped``; ``kwargs`` go to the constructor."""
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
        root = Path(persist_dir).absolute() if persist_dir is not None else self.index_dir
        root.mkdir(parents=True, exist_ok=True)
        settings = {
            "index_dir": (self.index_dir if isinstance(self.index_dir, str)
                          else os.path.relpath(self.index_dir, root)),
            "top_k": self.top_k,
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
        index_dir = settings.pop("index_dir", ".")
        index_dir = index_dir if index_dir.startswith(("http://", "https://")) else root / index_dir
        if settings.get("filters"):
            settings["filters"] = MetadataFilters.model_validate(settings["filters"])
        return cls(index_dir, **{**settings, **kwargs})

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
        return self.shared.run(search_nodes, query_bundle.query_str, *self._search_args())

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await self.shared.arun(search_nodes, query_bundle.query_str, *self._search_args())

    def _search_args(self) -> tuple:  # plain values: the index's thread keeps no reference to self
        return self.top_k, self._agree_filters, self.candidates, self.index_dir


_LIVE: "weakref.WeakSet[AgreeVisualRetriever]" = weakref.WeakSet()


def open_index(index_dir: str | Path) -> SharedIndex | None:
    """The index a retriever of this process holds open at ``index_dir``, acquired for the
    caller (who releases it), else ``None``: never opens an index nobody holds."""
    path = Path(index_dir).absolute()
    if any(r.index_dir == path and r._shared is not None for r in list(_LIVE)):
        return SharedIndex.acquire(path, create=False)
    return None
