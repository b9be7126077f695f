"""PageIndex: PDFs in, pages ranked by MaxSim out, persistent with add and delete.

Layout of an index directory::

    agree-index.json   the IndexConfig (encoder, its config, dim, storage), checked on open
    catalog.sqlite     one row per document and its state (indexing, ready, deleting)
    shard/             the embedded Qdrant Edge shard: page vectors and payloads
    images/<doc>/      the page images

Crash safety: a document is recorded as ``indexing`` before its first page is written and
turns ``ready`` after its last page is flushed. Pages are written in batches through the
engine's write-ahead log, so a killed process loses only the batch in flight; reopening
purges half-deleted documents, search never sees unfinished ones, and adding the same file
again resumes at the first missing page.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder, PageEmbedding, load_encoder
from agree_core.index.catalog import Catalog
from agree_core.index.config import IndexConfig, IndexConfigError
from agree_core.index.images import ImageStore
from agree_core.index.lock import DirectoryLock
from agree_core.index import ingest
from agree_core.index.ingest import AddReport  # noqa: F401 - a public name of this module
from agree_core.index.shard import VectorShard, build_filter
from agree_core.pages import page_id as make_page_id
from agree_core.scoring import idf_weights, similarity_map

if TYPE_CHECKING:
    from agree_core.index.records import PageRecords

log = logging.getLogger(__name__)

EXACT_SEARCH_MAX_PAGES = 2_000  # below this, every search is exact MaxSim over all vectors
DEFAULT_CANDIDATES = 800  # pages the pooled first stage passes to exact rescoring (BENCHMARKS.md)


@dataclass
class Hit:
    source: str
    page: int
    score: float
    image: str
    page_id: str
    doc_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "page": self.page, "score": self.score, "image": self.image}


class PageIndex:
    """A persistent index of PDF pages.

    Use :meth:`open` (creates the index on first use); close it, or use it as a context
    manager: one process at a time can hold an index directory.
    """

    def __init__(self, directory: Path, config: IndexConfig, encoder: MultiVectorEncoder | None,
                 lock: DirectoryLock, encoder_options: dict[str, Any] | None = None):
        self.directory = directory
        self.config = config
        self._encoder = encoder
        self._encoder_options = encoder_options or {}
        self._lock = lock
        self.catalog = Catalog(directory)
        self.images = ImageStore(directory, config.image_format, config.image_quality)
        self.shard = VectorShard(directory, config.dim, config.vector_datatype,
                                 pooled=config.pooled_vectors > 0)
        self._term_stats: tuple[int, dict[int, int]] | None = None  # cached catalog.term_stats()
        self._recover()

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: str | Path,
        encoder: str | MultiVectorEncoder | None = None,
        *,
        create: bool = True,
        wait: float = 0.0,
        encoder_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> "PageIndex":
        """Open the index at ``directory``, creating it when ``create`` and it does not exist.

        Args:
            encoder: a registry spec (``"text-layer"``) or an encoder object; default: the
                index's own encoder, or ``text-layer`` for a new index.
            wait: seconds to wait while another process holds the index.
            encoder_options: runtime options for a spec (device, dtype, batch sizes).
            settings: IndexConfig fields for a new index (vector_datatype, pooled_vectors,
                image_format, image_quality, dpi).

        Raises:
            IndexConfigError: not an index, another format version, or an encoder that does
                not match the one that built it.
            IndexBusyError: another process holds the index.

        ``http://HOST:PORT`` or ``https://...`` names an index that ``agree serve`` holds:
        the result is a :class:`~agree_core.serve.client.RemoteIndex` with the same methods.
        """
        if str(directory).startswith(("http://", "https://")):
            from agree_core.serve.client import open_remote

            return open_remote(str(directory), encoder, create=create, wait=wait)  # type: ignore[return-value]
        directory = Path(directory).absolute()
        exists = (directory / "agree-index.json").is_file()
        if not exists:
            if not create:
                IndexConfig.load(directory)  # raises the "not an agree index" error
            if directory.exists() and not directory.is_dir():
                raise IndexConfigError(f"{directory} exists and is not a directory")
            if directory.is_dir() and any(p.name != ".lock" for p in directory.iterdir()):
                raise IndexConfigError(f"{directory} is not empty and holds no agree index; "
                                       "choose an empty or new directory")
            directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(directory)
        lock.acquire(wait)
        try:
            if exists:
                config = IndexConfig.load(directory)
                unknown = set(settings) - {"dpi"}
                if unknown:
                    log.debug("ignoring %s for an existing index", sorted(unknown))
                if isinstance(encoder, str) and encoder != config.encoder:
                    config.check_encoder(encoder, {}, config.dim)  # raises, before loading a model
                enc = _resolve_encoder(encoder, config.encoder, config.encoder_config, encoder_options)
                if enc is not None:
                    config.check_encoder(enc.name, enc.config, enc.dim)
            else:
                enc = _resolve_encoder(encoder or DEFAULT_ENCODER, None, None, encoder_options)
                config = IndexConfig(encoder=enc.name, encoder_config=enc.config, dim=enc.dim,
                                     **settings)
                config.save(directory)
            return cls(directory, config, enc, lock, encoder_options)
        except BaseException:
            lock.release()
            raise

    @property
    def encoder(self) -> MultiVectorEncoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.config.encoder, **self.config.encoder_config,
                                         **self._encoder_options)
        return self._encoder

    @property
    def records(self) -> "PageRecords":
        """Pages written by callers (a framework's documents), next to the PDF pages: see
        :mod:`agree_core.index.records`."""
        from agree_core.index.records import PageRecords

        if self.__dict__.get("_records") is None:
            self._records = PageRecords(self)
        return self._records

    def close(self) -> None:
        if self._lock is None:
            return
        self.shard.close()
        self.catalog.close()
        self._lock.release()
        self._lock = None

    def __enter__(self) -> "PageIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | Path],
        *,
        metadata: dict[str, Any] | None = None,
        batch_size: int = 16,
        progress: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> AddReport:
        """Index PDF files and folders (recursive). Idempotent: unchanged files are skipped,
        a changed file replaces its pages, an interrupted file resumes.

        ``metadata`` (JSON values) is stored with every page of these documents and can be
        used in search filters; given for an indexed file, it replaces that file's metadata
        without re-encoding; ``None`` keeps what each file has.

        Files that cannot be indexed are reported in ``AddReport.skipped`` with the reason;
        they never stop the others.

        ``on_progress(pages_written, pages_to_write)`` is called once the files are checked,
        after every batch is written and after every document turns ready; an exception it
        raises stops the run there (what was written is kept and a rerun resumes).
        """
        return ingest.add(self, paths, metadata, batch_size, progress, on_progress)

    def delete(self, source: str | Path) -> int:
        """Remove a document by its path; returns the number of pages removed (0 if absent)."""
        source = str(Path(source).absolute())
        removed = 0
        for doc in self.catalog.documents(source=source):
            self.catalog.set_state(doc.doc_id, "deleting")
            removed += self.shard.count(build_filter({"doc_id": doc.doc_id}))
            self._purge(doc.doc_id)
        return removed

    # -- reading ----------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, filters: dict[str, Any] | None = None,
               candidates: int | None = None) -> list[Hit]:
        return self.search_batch([query], k, filters, candidates)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, filters: dict[str, Any] | None = None,
                     candidates: int | None = None) -> list[list[Hit]]:
        """Top ``k`` pages for each query.

        Args:
            filters: ``{"source": PATH or [PATHS], "page": N or {"gte": a, "lte": b},
                "<meta key>": value}``; see :func:`~agree_core.index.shard.build_filter`.
            candidates: pages kept by the pooled first stage before exact MaxSim rescoring;
                default exact search up to 2,000 pages and 800 candidates above.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        flt = self._filter(filters)
        if candidates is None and self.shard.count() > EXACT_SEARCH_MAX_PAGES:
            candidates = DEFAULT_CANDIDATES
        vectors = self.encode_queries(queries)
        results = []
        for q in vectors:
            scored = self.shard.search(q.float().numpy(), k, flt, candidates)
            results.append([self._hit(s.id, s.score, s.payload) for s in scored])
        return results

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        """Query vectors as this index scores them: with ``term_weighting="idf"`` and an
        encoder that has a vocabulary, each token's vector is scaled by its term's IDF over
        the indexed pages (:func:`agree_core.scoring.idf_weights`)."""
        queries = list(queries)
        vectors = self.encoder.encode_queries(queries)
        terms_of = getattr(self.encoder, "encode_query_terms", None)
        if self.config.term_weighting != "idf" or terms_of is None:
            return vectors
        if self._term_stats is None:
            self._term_stats = self.catalog.term_stats()
        n_pages, df = self._term_stats
        if not df:
            return vectors
        return [v * idf_weights(t, df, n_pages)[:, None] for v, t in zip(vectors, terms_of(queries))]

    def page_embedding(self, page_id: str) -> tuple[PageEmbedding, dict[str, Any]]:
        """A stored page's vectors, grid and cells, and its payload."""
        got = self.shard.retrieve([page_id], vectors=True)
        if page_id not in got:
            raise KeyError(f"page {page_id} is not in the index")
        payload, vectors = got[page_id]
        emb = PageEmbedding(torch.from_numpy(vectors), tuple(payload["grid"]),
                            torch.tensor(payload["cells"], dtype=torch.long), payload.get("text"))
        return emb, payload

    def similarity_maps(self, query: str, hits: Sequence[Hit], mode: str = "maxsim") -> list[torch.Tensor]:
        """Per-cell relevance of each hit's page for ``query`` (see
        :func:`agree_core.scoring.similarity_map`): why the page matched."""
        q = self.encode_queries([query])[0]
        maps = []
        for hit in hits:
            emb, _ = self.page_embedding(hit.page_id)
            maps.append(similarity_map(q, emb.vectors, emb.cells, emb.grid, mode))
        return maps

    def find_page(self, source: str | Path, page: int) -> str | None:
        """The id of page ``page`` of ``source`` when that file is indexed, else ``None``."""
        src = str(Path(source).absolute())
        for doc in self.catalog.documents(state="ready", source=src):
            if 1 <= page <= doc.pages:
                return make_page_id(src, doc.sha256, page)
        return None

    def page_vectors(self, page_ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Stored vectors ``(n, dim)`` of the pages found, by page id."""
        got = self.shard.retrieve(list(page_ids), vectors=True)
        return {pid: torch.from_numpy(v) for pid, (_, v) in got.items()}

    def page_text(self, page_id: str) -> str:
        got = self.shard.retrieve([page_id])
        return got[page_id][0].get("text", "") if page_id in got else ""

    def reader(self, encoder: MultiVectorEncoder | None = None) -> "PageIndex":
        """A view of this open index for reading from another thread while this one writes:
        it shares the engine and the page images and has its own catalog connection (an
        SQLite connection belongs to the thread that made it; readers see committed
        documents only). ``encoder`` answers its queries (default this index's; give it its
        own instance when pages are encoded at the same time). Close it in its thread; it
        never releases the index, which stays this object's."""
        view = copy.copy(self)
        view.catalog = Catalog(self.directory)
        view._encoder = encoder if encoder is not None else self._encoder
        view._term_stats = None
        view._records = None
        view._lock = None
        return view

    def close_reader(self) -> None:
        """Close a :meth:`reader` view (its catalog connection)."""
        if self._lock is None:
            self.catalog.close()

    def info(self) -> dict[str, Any]:
        docs = self.catalog.documents()
        ready = [d for d in docs if d.state == "ready"]
        return {
            "encoder": self.config.encoder,
            "pages": sum(d.pages for d in ready),
            "documents": [{"source": d.source, "pages": d.pages} for d in ready],
            "incomplete": [{"source": d.source, "pages": d.pages, "state": d.state}
                           for d in docs if d.state != "ready"],
            "dim": self.config.dim,
            "vector_datatype": self.config.vector_datatype,
            "directory": str(self.directory),
        }

    # -- internals --------------------------------------------------------------------------
    def _recover(self) -> None:
        for doc in self.catalog.documents(state="deleting"):
            log.info("finishing the interrupted removal of %s", doc.source)
            self._purge(doc.doc_id)

    def _set_ready(self, doc_id: str) -> None:
        """Flush the document's pages, then record it ready with its term counts."""
        self.shard.flush()
        term_pages: dict[int, int] = {}
        for terms in self.shard.page_terms(doc_id):
            for t in set(terms):
                term_pages[t] = term_pages.get(t, 0) + 1
        self.catalog.set_ready(doc_id, term_pages)
        self._term_stats = None

    def _purge(self, doc_id: str) -> None:
        self.shard.delete_document(doc_id)
        self.shard.flush()
        self.images.delete_document(doc_id)
        self.catalog.remove(doc_id)
        self._term_stats = None

    def _abandon(self, doc_id: str) -> None:
        self.catalog.set_state(doc_id, "deleting")
        self._purge(doc_id)

    def _filter(self, filters: dict[str, Any] | None) -> Any:
        filters = dict(filters or {})
        if "source" in filters:  # sources are stored as absolute paths
            src = filters["source"]
            filters["source"] = ([str(Path(s).absolute()) for s in src]
                                 if isinstance(src, (list, tuple)) else str(Path(src).absolute()))
        unfinished = [d.doc_id for d in self.catalog.documents() if d.state != "ready"]
        return build_filter(filters, exclude_docs=unfinished)

    def _hit(self, page_id: str, score: float, payload: dict[str, Any]) -> Hit:
        return Hit(payload["source"], int(payload["page"]), score,
                   str(self.directory / payload["image"]), page_id, payload["doc_id"],
                   payload.get("meta", {}))


def _resolve_encoder(spec: str | MultiVectorEncoder | None, index_spec: str | None,
                     index_config: dict[str, Any] | None,
                     options: dict[str, Any] | None) -> MultiVectorEncoder | None:
    """An encoder object from a spec; ``None`` defers loading an index's own encoder."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return spec
    if index_spec is not None and spec == index_spec:
        return load_encoder(spec, **(index_config or {}), **(options or {}))
    return load_encoder(spec, **(options or {}))
