"""AgreeRanker: rerank Documents from any retriever by MaxSim against a query."""

from __future__ import annotations

import dataclasses
from typing import Any

from haystack import Document, component, default_from_dict

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder
from agree_core.index.shared import shared_encoder
from agree_core.page_identity import ON_MISSING_PAGE
from agree_core.rerank import PageRef, PageScorer, rank
from haystack_integrations.document_stores.agree import AgreeDocumentStore
from haystack_integrations.document_stores.agree._convert import (
    check_positive,
    document_ref,
    init_to_dict,
    query_vectors,
)


@component
class AgreeRanker:
    """Orders Documents by their late-interaction (MaxSim) score for a query.

    Each Document is scored from its ``multivector_embedding`` when it has one; else from the
    vectors stored under its id in ``document_store`` (pages found by :class:`AgreeRetriever`
    are not encoded again); else as the PDF page its meta names, in agree's keys
    (``source``, ``page``) or Haystack's converters' and splitters' (``file_path``,
    ``page_number``): stored vectors when the store's index holds that page, else the page
    read from the PDF; else, when it names no PDF, from its own text or image (``blob``).
    Documents from any retriever (BM25, dense...) can be reranked, chunks too: a chunk is
    scored as its page. A Document naming a PDF page that cannot be read (a missing file, a
    ``file_path`` kept without its folder by a converter's ``store_full_path=False``) is
    handled by ``on_missing_page``, never scored as another page.

    :param document_store: score with this store's index: its stored vectors and its encoder.
    :param encoder: without a store, the encoder to use (default ``text-layer``).
    :param encoder_options: runtime options of ``encoder`` (``device``, ``dtype``...).
    :param top_k: Documents returned.
    :param score_threshold: drop Documents scoring below this.
    :param batch_size: pages encoded per forward pass.
    :param on_missing_page: ``raise`` (default): a ``ValueError`` naming the Documents whose
        page cannot be read, and why; ``keep``: return them after the scored ones, unscored.
    :param one_per_page: keep only the best Document of each PDF page (chunks of one page, or
        one page from two joined retrievers).
    """

    def __init__(self, document_store: AgreeDocumentStore | None = None, *, encoder: str | None = None,
                 encoder_options: dict[str, Any] | None = None, top_k: int = 10,
                 score_threshold: float | None = None, batch_size: int = 16,
                 on_missing_page: str = "raise", one_per_page: bool = False):
        if document_store is not None and not isinstance(document_store, AgreeDocumentStore):
            raise ValueError(f"document_store must be an AgreeDocumentStore, got {type(document_store).__name__}")
        if document_store is not None and (encoder is not None or encoder_options is not None):
            raise ValueError("give a document_store or an encoder, not both: the store scores with its "
                             "index's encoder")
        check_positive("top_k", top_k)
        check_positive("batch_size", batch_size)
        if on_missing_page not in ON_MISSING_PAGE:
            raise ValueError(f"on_missing_page must be one of {ON_MISSING_PAGE}, got {on_missing_page!r}")
        self.on_missing_page = on_missing_page
        self.one_per_page = bool(one_per_page)
        self.document_store = document_store
        self.encoder = encoder
        self.encoder_options = encoder_options
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self._encoder: MultiVectorEncoder | None = None

    def warm_up(self) -> None:
        if self.document_store is not None:
            self.document_store._warm_up(write=False)
        elif self._encoder is None:
            self._encoder = shared_encoder(self.encoder or DEFAULT_ENCODER, **(self.encoder_options or {}))

    def close(self) -> None:
        """Give back the store's index (``Pipeline.close()`` calls this)."""
        if self.document_store is not None:
            self.document_store.close()

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeRanker":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document], query: str | None = None,
            query_multivector_embedding: list[list[float]] | None = None, top_k: int | None = None,
            score_threshold: float | None = None) -> dict[str, list[Document]]:
        """The Documents best first, each a copy with its MaxSim ``score``.

        :param documents: the candidates.
        :param query: the query text (ignored when ``query_multivector_embedding`` is given).
        :param query_multivector_embedding: the query's token vectors, from the same encoder.
        :param top_k: Documents returned (default: the init ``top_k``).
        :param score_threshold: drop Documents below this (default: the init threshold).
        """
        q, refs = self._inputs(documents, query, query_multivector_embedding, top_k)
        if not refs:
            return {"documents": []}
        if self.document_store is not None:
            scored = self.document_store._run(self.document_store._score_op(q, refs))
        else:
            self.warm_up()
            scored = PageScorer(encoder=self._encoder, batch_size=self.batch_size).scores_and_reasons(q, refs)
        return {"documents": self._ranked(documents, refs, scored, top_k, score_threshold)}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document], query: str | None = None,
                        query_multivector_embedding: list[list[float]] | None = None, top_k: int | None = None,
                        score_threshold: float | None = None) -> dict[str, list[Document]]:
        """:meth:`run` without blocking the event loop while pages are scored."""
        if self.document_store is None:
            return self.run(documents, query, query_multivector_embedding, top_k, score_threshold)
        q, refs = self._inputs(documents, query, query_multivector_embedding, top_k)
        if not refs:
            return {"documents": []}
        scored = await self.document_store._arun(self.document_store._score_op(q, refs))
        return {"documents": self._ranked(documents, refs, scored, top_k, score_threshold)}

    def _inputs(self, documents, query, query_multivector_embedding, top_k):  # noqa: ANN001, ANN202
        check_positive("top_k", top_k, allow_none=True)
        if not isinstance(documents, list):
            raise ValueError(f"documents must be a list of Documents, got {type(documents).__name__}")
        return query_vectors(query, query_multivector_embedding), [document_ref(d) for d in documents]

    def _ranked(self, documents: list[Document], refs: list[PageRef], scored: tuple, top_k: int | None,
                score_threshold: float | None) -> list[Document]:
        scores, reasons = scored
        threshold = score_threshold if score_threshold is not None else self.score_threshold
        order = rank(refs, scores, reasons, top_n=top_k or self.top_k, on_missing_page=self.on_missing_page,
                     one_per_page=self.one_per_page, threshold=threshold, what="Document")
        return [dataclasses.replace(documents[i], score=scores[i]) if scores[i] is not None else documents[i]
                for i in order]
