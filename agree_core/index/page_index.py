"""PageIndex: PDFs in, pages ranked by MaxSim out, persistent with add and delete.

An index is named by a folder (the embedded engine), ``qdrant://HOST:PORT/COLLECTION`` (a
Qdrant server or cluster) or ``qdrant-local:PATH`` (see :mod:`agree_core.index.storage`);
everything here runs over the engine interface (:mod:`agree_core.index.engines`).

Layout of an index directory::

    agree-index.json   the IndexConfig (encoder, its config, dim, storage), checked on open
    catalog.sqlite     one row per document and its state (indexing, ready, deleting)
    shard/             the embedded Qdrant Edge shard: page vectors and payloads
    images/<doc>/      the page images

Crash safety: a document is recorded as ``indexing`` before its first page is written and
turns ``ready`` after its last page is flushed. Pages are written in batches through the
engine's write-ahead log, so a killed process loses only the batch in flight; reopening
purges half-deleted documents, search never sees unfinished ones, and adding the same file
again resumes at the first missing page. A server index keeps the same things in the
server: the collection's points, a ``<collection>-catalog`` collection (documents, term
counts, the config) and the page images in the points' payload.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder, PageEmbedding, load_encoder
from agree_core.index import filters as F
from agree_core.index.catalog import Catalog
from agree_core.index.config import IndexConfig, IndexConfigError
from agree_core.index import first_stage, ingest, sizes
from agree_core.index.framework_nodes import NodeMethods
from agree_core.index.ingest import AddReport  # noqa: F401 - a public name of this module
from agree_core.index.schema import TOKENS, expand_pooled
from agree_core.index.searching import Hit, SearchMethods
from agree_core.index.storage import Storage
from agree_core.pages import DEFAULT_PAGE_TIMEOUT
from agree_core.pages import page_id as make_page_id
from agree_core.scoring import similarity_map

if TYPE_CHECKING:
    from agree_core.index.records import RecordStore

log = logging.getLogger(__name__)


class PageIndex(SearchMethods, NodeMethods):
    """A persistent index of PDF pages.

    Use :meth:`open` (creates the index on first use); close it, or use it as a context
    manager: one process at a time can hold an index directory. The search methods are in
    :mod:`~agree_core.index.searching`, what framework nodes ask of it (``node_filters``,
    ``page_labels``, ``warm_up``) in :mod:`~agree_core.index.framework_nodes`.
    """

    def __init__(self, storage: Storage, config: IndexConfig, encoder: MultiVectorEncoder | None,
                 encoder_options: dict[str, Any] | None = None):
        self.storage = storage
        self.location = storage.location  # the name the index was opened by
        self.directory = storage.directory  # the index folder; None for a server index
        self.config = config
        self._encoder = encoder
        self._encoder_options = encoder_options or {}
        storage.attach(config)
        self.engine = storage.engine
        self.catalog = storage.catalog
        self.images = storage.images
        self._term_stats: tuple[int, dict[int, int]] | None = None  # cached catalog.term_stats()
        self._open = True
        self._recover()

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        location: str | Path,
        encoder: str | MultiVectorEncoder | None = None,
        *,
        create: bool = True,
        wait: float = 0.0,
        encoder_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> "PageIndex":
        """Open the index at ``location``, creating it when ``create`` and it does not exist.

        Args:
            location: a folder (embedded engine), ``qdrant://HOST:PORT/COLLECTION`` or
                ``qdrants://...`` (a Qdrant server or cluster; API key from
                ``QDRANT_API_KEY``), or ``qdrant-local:PATH`` (qdrant-client's local mode).
            encoder: a registry spec (``"text-layer"``) or an encoder object; default: the
                index's own encoder, or ``text-layer`` for a new index.
            wait: seconds to wait while another process holds the index.
            encoder_options: runtime options for a spec (device, dtype, batch sizes).
            settings: IndexConfig fields for a new index (vector_datatype, pooled_vectors,
                image_format, image_quality, dpi); for a new server collection also
                ``shard_number``, ``replication_factor``, ``on_disk_payload``.

        Raises:
            IndexConfigError: not an index, another format version, or an encoder that does
                not match the one that built it.
            IndexBusyError: another process holds the index.

        ``http://HOST:PORT`` or ``https://...`` names an index that ``agree serve`` holds:
        the result is a :class:`~agree_core.serve.client.RemoteIndex` with the same methods.
        """
        if str(location).startswith(("http://", "https://")):
            from agree_core.serve.client import open_remote

            return open_remote(str(location), encoder, create=create, wait=wait)  # type: ignore[return-value]
        from agree_core.index.storage import SERVER_SETTINGS

        server = {k: settings.pop(k) for k in SERVER_SETTINGS if k in settings}
        if "client_options" in settings:
            server["client_options"] = settings.pop("client_options")
        storage = Storage.open(location, create=create, wait=wait, **server)
        try:
            config = storage.load_config()
            if config is None and not create:
                raise IndexConfigError(f"{storage.location} is not an agree index; create one with "
                                       f"`agree index PDF... --index {storage.location}`")
            if config is not None:
                for key in ("pool_factor", "vector_datatype"):  # how its vectors are stored
                    if key in settings and settings[key] != getattr(config, key):
                        raise IndexConfigError(
                            f"{storage.location} was built with {key}={getattr(config, key)!r}, not "
                            f"{settings[key]!r}: an index keeps its storage settings; build a new "
                            "index for the other setting")
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
                if config.first_stage:  # what the encodings and their graph are, recorded
                    config.first_stage = {**first_stage.new_settings(enc.config, storage.first_stage_datatype()),
                                          **config.first_stage}
                storage.save_config(config)
            return cls(storage, config, enc, encoder_options)
        except BaseException:
            storage.close()
            raise

    @property
    def encoder(self) -> MultiVectorEncoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.config.encoder, **self.config.encoder_config,
                                         **self._encoder_options)
        return self._encoder

    @property
    def records(self) -> "RecordStore":
        """Pages written by callers (a framework's documents), next to the PDF pages: see
        :mod:`agree_core.index.records`."""
        from agree_core.index.records import RecordStore

        if self.__dict__.get("_records") is None:
            self._records = RecordStore(self)
        return self._records

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self.storage.close()

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
        page_timeout: float = DEFAULT_PAGE_TIMEOUT,
        ocr_workers: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> AddReport:
        """Index PDF files and folders (recursive). Idempotent: unchanged files are skipped,
        a changed file replaces its pages, an interrupted file resumes.

        ``metadata`` (JSON values) is stored with every page of these documents and can be
        used in search filters; given for an indexed file, it replaces that file's metadata
        without re-encoding; ``None`` keeps what each file has.

        Files that cannot be indexed are reported in ``AddReport.skipped`` with the reason;
        they never stop the others. A page that fails (render, OCR, encoding, writing) is
        reported in ``AddReport.failed_pages``, recorded in the catalog (see :meth:`info`)
        and retried by the next add of the same file; the rest of its document is indexed.

        ``on_progress(pages_written, pages_to_write)`` is called once the files are checked,
        after every batch is written and after every document turns ready; an exception it
        raises stops the run there (what was written is kept and a rerun resumes).

        Args:
            page_timeout: seconds a page may take to render or OCR before it is stopped.
            ocr_workers: OCR processes reading scans ahead of encoding (default: one per
                two cores); 0 leaves OCR to the encoder, on this thread.
        """
        report = ingest.add(self, paths, metadata, batch_size, progress, page_timeout, ocr_workers,
                            on_progress)
        if report.pages and self.config.first_stage and self.engine.count() > first_stage.FIRST_STAGE_MIN_PAGES:
            # the first stage's HNSW graph, only where searches read it (up to FIRST_STAGE_MIN_PAGES
            # they are exact MaxSim: building one took 22 s wall at 1,200 pages, loaded machine, and sped nothing up).
            # Cheap after a small add: Edge graphs a segment only past its indexing threshold and
            # searches the newest points plainly (+1 page to 2,500: 0.01 s; BENCHMARKS.md)
            self.engine.optimize()
        return report

    def delete(self, source: str | Path) -> int:
        """Remove a document by its path; returns the number of pages removed (0 if absent)."""
        source = str(Path(source).absolute())
        removed = 0
        for doc in self.catalog.documents(source=source):
            self.catalog.set_state(doc.doc_id, "deleting")
            removed += self.engine.count(F.Match("doc_id", doc.doc_id))
            self._purge(doc.doc_id)
        return removed

    # -- reading ----------------------------------------------------------------------------
    def page_embedding(self, page_id: str) -> tuple[PageEmbedding, dict[str, Any]]:
        """A stored page's vectors, grid and cells, and its payload (on a pooled index, each
        cell's token gets the pooled vector that stands in for it)."""
        got = self.engine.retrieve([page_id], vectors=[TOKENS], exclude=["image_data"])
        if page_id not in got:
            raise KeyError(f"page {page_id} is not in the index")
        payload = got[page_id].payload
        vectors = np.ascontiguousarray(expand_pooled(got[page_id].vectors[TOKENS], payload))
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
        """Stored vectors ``(n, dim)`` of the pages found, by page id: one per vector the
        encoder made (on a pooled index, each its pooled vector; MaxSim is the same)."""
        got = self.engine.retrieve(list(page_ids), payload=["pool_of"], vectors=[TOKENS])
        return {pid: torch.from_numpy(np.ascontiguousarray(expand_pooled(p.vectors[TOKENS], p.payload)))
                for pid, p in got.items()}

    def page_text(self, page_id: str) -> str:
        got = self.engine.retrieve([page_id], payload=["text"])
        return got[page_id].payload.get("text", "") if page_id in got else ""

    def reader(self, encoder: MultiVectorEncoder | None = None) -> "PageIndex":
        """A view of this open index for reading from another thread while this one writes:
        it shares the engine and the page images and has its own catalog connection (an
        SQLite connection belongs to the thread that made it; readers see committed
        documents only). ``encoder`` answers its queries (default this index's; give it its
        own instance when pages are encoded at the same time). Close it in its thread; it
        never releases the index, which stays this object's."""
        view = copy.copy(self)
        # an SQLite catalog belongs to the thread that opened it; a server index's catalog is
        # in the engine and is shared
        view._own_catalog = Catalog(self.directory) if self.directory is not None else None
        if view._own_catalog is not None:
            view.catalog = view._own_catalog
        view._encoder = encoder if encoder is not None else self._encoder
        view._term_stats = None
        view._records = None
        view._open = False  # closing a view never closes the index
        return view

    def close_reader(self) -> None:
        """Close a :meth:`reader` view (its catalog connection)."""
        own = self.__dict__.get("_own_catalog")
        if own is not None:
            own.close()

    def info(self) -> dict[str, Any]:
        """What the index holds. ``pages`` and ``documents`` are the ready PDF files (the
        contract of ``agree info --json``); documents written by frameworks are counted
        apart, in ``records``."""
        docs = self.catalog.documents()
        ready = [d for d in docs if d.state == "ready"]
        failed = self.catalog.failed_pages()
        n_failed = {d.doc_id: 0 for d in docs}
        for f in failed:
            n_failed[f.doc_id] = n_failed.get(f.doc_id, 0) + 1
        return {
            "encoder": self.config.encoder,
            "pages": sum(d.pages - n_failed[d.doc_id] for d in ready),
            "documents": [{"source": d.source, "pages": d.pages - n_failed[d.doc_id]} for d in ready],
            "failed_pages": [f.to_json() for f in failed],
            "incomplete": [{"source": d.source, "pages": d.pages, "state": d.state}
                           for d in docs if d.state != "ready"],
            "records": self.engine.count(F.Match("kind", F.RECORD_KIND)),
            "dim": self.config.dim,
            "vector_datatype": self.config.vector_datatype,
            "pool_factor": self.config.pool_factor,
            **sizes.index_sizes(self),
            "engine": self.engine.capabilities.name,
            "location": self.location,
            "directory": str(self.directory) if self.directory is not None else None,
        }

    # -- internals --------------------------------------------------------------------------
    def _recover(self) -> None:
        for doc in self.catalog.documents(state="deleting"):
            log.info("finishing the interrupted removal of %s", doc.source)
            self._purge(doc.doc_id)

    def _set_ready(self, doc_id: str) -> None:
        """Flush the document's pages, then record it ready with its term counts."""
        self.engine.flush()
        term_pages: dict[int, int] = {}
        for p in self.engine.scroll(F.Match("doc_id", doc_id), payload=["terms"], batch=256):
            for t in set(p.payload.get("terms") or ()):
                term_pages[t] = term_pages.get(t, 0) + 1
        self.catalog.set_ready(doc_id, term_pages)
        self._term_stats = None

    def _purge(self, doc_id: str) -> None:
        self.engine.delete_where(F.Match("doc_id", doc_id))
        self.engine.flush()
        self.images.delete_document(doc_id)
        self.catalog.remove(doc_id)
        self._term_stats = None

    def _abandon(self, doc_id: str) -> None:
        self.catalog.set_state(doc_id, "deleting")
        self._purge(doc_id)

    def _set_document_meta(self, doc_id: str, meta: dict[str, Any]) -> None:
        """Replace the metadata of a document's pages (never merged: keys may disappear)."""
        self.engine.delete_payload(["meta"], where=F.Match("doc_id", doc_id))
        self.engine.set_payload({"meta": meta}, where=F.Match("doc_id", doc_id))

    def _written_pages(self, doc_id: str) -> set[int]:
        """Pages of a document already in the engine (to resume an interrupted add)."""
        return {int(p.payload["page"]) for p in
                self.engine.scroll(F.Match("doc_id", doc_id), payload=["page"], batch=1024)}


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
