"""PageIndex's reading by query: one query path from text to ranked pages.

:class:`SearchMethods` holds the search methods of :class:`~agree_core.index.PageIndex`
(which inherits them: ``index.search(...)``, ``index.search_batch(...)``...): queries
encoded as the index scores them (IDF weights), filters compiled and restricted to what
readers may see, and every search through :meth:`SearchMethods.search_vectors`, the exact
MaxSim scan or the first stage on large indexes (:mod:`agree_core.index.first_stage`).
They read the index's ``engine``, ``catalog``, ``config``, ``encoder``, ``images`` and
``location``; the index resets ``_term_stats`` (the catalog's term counts, cached here)
whenever a document turns ready or goes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from agree_core.index import filters as F
from agree_core.index import first_stage
from agree_core.index.first_stage import DEFAULT_FDE_CANDIDATES
from agree_core.index.schema import POOLED, SEARCH_EXCLUDE, TOKENS, candidates_for, visible
from agree_core.scoring import idf_weights

log = logging.getLogger(__name__)

__all__ = ["Hit", "SearchMethods"]


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


class SearchMethods:
    """The search methods of :class:`~agree_core.index.PageIndex` (see the module docstring)."""

    _term_stats: tuple[int, dict[int, int]] | None = None  # cached catalog.term_stats()

    def search(self, query: str, k: int = 10, filters: dict[str, Any] | None = None,
               candidates: int | None = None) -> list[Hit]:
        return self.search_batch([query], k, filters, candidates)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, filters: dict[str, Any] | None = None,
                     candidates: int | None = None) -> list[list[Hit]]:
        """Top ``k`` PDF pages for each query (records written by frameworks are searched
        through :attr:`records`).

        Args:
            filters: the flat form ``{"source": PATH or [PATHS], "page": N or {"gte": a,
                "lte": b}, "<meta key>": value}``, or the nested one of
                :mod:`agree_core.index.filters` (AND, OR, NOT).
            candidates: pages kept by the first stage before exact MaxSim rescoring; default
                exact search up to 2,000 pages, above it 300 through the encodings (800 through
                the centroid scan). The first stage is a scan of the pages' binary-quantized
                MUVERA encodings (2,800 or 4x candidates, oversampled and rescored by the
                encodings) whose survivors the 32 stored centroids narrow to ``candidates`` (by
                MaxSim of the query's heaviest rows), all in one engine query
                (:mod:`~agree_core.index.first_stage`); indexes built
                with an HNSW graph of the encodings (session 5-6) use it up to 20,000 pages;
                above that, and on indexes without encodings, the scan of every pooled
                centroid (``agree first-stage`` adds the encodings).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        where = self.search_scope(filters)
        return self.search_encoded(self.encode_queries(queries), k, where, candidates)

    def search_scope(self, filters: dict[str, Any] | None) -> F.Node | None:
        """What :meth:`search_batch` searches for ``filters``: the PDF pages readers may see
        that match them (flat filters' sources made absolute)."""
        return self.scope(_absolute_sources(filters), pdf_pages_only=True)

    def search_encoded(self, vectors: Sequence[torch.Tensor], k: int, where: F.Node | None,
                       candidates: int | None = None) -> list[list[Hit]]:
        """The second half of :meth:`search_batch`: the top ``k`` pages for queries encoded by
        :meth:`encode_queries` (each ``(n_q, dim)``) within ``where`` (:meth:`search_scope`).
        For a caller that encodes many queries in one batch and answers them one by one (the
        server: a client has its answer while the next query is searched)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        found = self.search_vectors([q.float().numpy() for q in vectors], k, where, candidates)
        images = self.images.local_paths({s.id: s.payload for scored in found for s in scored})  # one fetch
        return [[self._hit(s.id, s.score, s.payload, images[s.id]) for s in scored] for scored in found]

    def search_vectors(self, queries: Sequence[np.ndarray], k: int, where: F.Node | None,
                       candidates: int | None = None) -> list[list[Any]]:
        """The one query path: each query ``(n_q, dim)`` scored by MaxSim over the points
        matching ``where`` (see :meth:`scope`), through the first stage on large
        indexes; the engine's scored points, best first."""
        # the page count decides the path (the engine's cheap count: an exact one is a pass over
        # its segments); not needed when the caller fixed it without a choice
        usable = first_stage.usable(self.config)
        points = self.engine.point_count() if candidates != 0 and (candidates is None or usable) else 0
        pooled = POOLED if self.config.pooled_vectors > 0 else None
        if usable and first_stage.FIRST_STAGE_MIN_PAGES < points <= first_stage.max_pages(self.config.first_stage) \
                and candidates != 0:
            n = DEFAULT_FDE_CANDIDATES if candidates is None else candidates_for(points, candidates)
            return first_stage.search(self.engine, self.config, list(queries), k, where, n,
                                      using=TOKENS, rescore_with=pooled, exclude=SEARCH_EXCLUDE)
        if not usable and points > first_stage.FIRST_STAGE_MIN_PAGES and not self.__dict__.get("_told"):
            self._told = True
            log.warning("%s has no usable MUVERA first stage%s: each search scans every pooled "
                        "centroid (slow at this size); build it once with `agree first-stage --index %s`",
                        self.location, " (its encodings predate window-fused vectors)"
                        if self.config.first_stage else "", self.location)
        n = candidates_for(points if candidates is None else 0, candidates)
        if not pooled:
            n = 0  # an index without centroids: exact MaxSim over every page
        # the centroid scan scores with the query's heaviest rows, as the cascade's centroid stage
        # does: at 100,000 pages 1,038 -> 451 ms for the same recall (BENCHMARKS.md, session 11)
        return self.engine.search_batch(list(queries), k, using=TOKENS, where=where,
                                        prefetch=pooled, candidates=n, exclude=SEARCH_EXCLUDE,
                                        coarse_queries=[first_stage.middle_rows(q) for q in queries] if n else None)

    def scope(self, filters: dict[str, Any] | None, *, pdf_pages_only: bool = False) -> F.Node | None:
        """``filters`` (nested or flat) as an engine-neutral tree, restricted to what readers
        may see (:func:`~agree_core.index.schema.visible`)."""
        unfinished = self.unfinished()
        return F.all_of(F.compile_filter(filters), visible(unfinished, pdf_pages_only))

    def unfinished(self) -> list[str]:
        """Ids of the documents not ready (being indexed or removed): hidden from readers.
        Asked by state, so a server's catalog sends only those, not every document."""
        return [d.doc_id for state in ("indexing", "deleting") for d in self.catalog.documents(state=state)]

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        """Query vectors as this index scores them: with ``term_weighting="idf"`` and an
        encoder that has a vocabulary, each token's vector is scaled by its term's IDF over
        the indexed pages (:func:`agree_core.scoring.idf_weights`)."""
        queries = list(queries)
        last = getattr(self, "_last_queries", None)  # a search's evidence asks for the same queries again
        if last is not None and last[0] == queries and last[1] is self._term_stats:
            return list(last[2])
        vectors = self.encoder.encode_queries(queries)
        terms_of = getattr(self.encoder, "encode_query_terms", None)
        if self.config.term_weighting == "idf" and terms_of is not None:
            if self._term_stats is None:
                self._term_stats = self.catalog.term_stats()
            n_pages, df = self._term_stats
            if df:
                # vectors past the terms (an encoder's sentence vector) carry no term and keep their scale
                vectors = [torch.cat([v[:len(t)] * idf_weights(t, df, n_pages)[:, None], v[len(t):]])
                           for v, t in zip(vectors, terms_of(queries))]
        self._last_queries = (queries, self._term_stats, list(vectors))
        return vectors

    def _hit(self, page_id: str, score: float, payload: dict[str, Any], image: str) -> Hit:
        return Hit(payload["source"], int(payload["page"]), score, image, page_id, payload["doc_id"],
                   payload.get("meta", {}))


def _absolute_sources(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Flat filters name sources as the user typed them; the index stores absolute paths."""
    if not filters or "source" not in filters or F.is_nested(filters):
        return filters
    src = filters["source"]
    return {**filters, "source": [str(Path(s).absolute()) for s in src]
            if isinstance(src, (list, tuple)) else str(Path(src).absolute())}
