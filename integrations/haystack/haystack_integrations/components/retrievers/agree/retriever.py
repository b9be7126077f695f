"""AgreeRetriever: a query -> the top-k page Documents of an AgreeDocumentStore, by MaxSim."""

from __future__ import annotations

from typing import Any

from haystack import Document, component, default_from_dict
from haystack.document_stores.types import FilterPolicy
from haystack.document_stores.types.filter_policy import apply_filter_policy

from haystack_integrations.document_stores.agree import AgreeDocumentStore
from haystack_integrations.document_stores.agree._convert import (
    check_positive,
    init_to_dict,
    query_vectors,
    record_to_document,
)


@component
class AgreeRetriever:
    """Retrieves the pages that best match a query, by late interaction (MaxSim) over every
    token vector of every page, with Haystack filters.

    The query is given as text, encoded as the index's own search encodes it (with its
    encoder, tokens weighted by IDF when the index keeps term statistics), or as
    ``query_multivector_embedding`` (from :class:`AgreeTextEmbedder`, one vector per token),
    used as given.

    ```python
    store = AgreeDocumentStore(index_dir="agree-index")
    retriever = AgreeRetriever(document_store=store, top_k=5)
    retriever.run(query="solar output in 2023", filters={"field": "meta.page", "operator": "<=", "value": 3})
    ```

    :param document_store: the store to search.
    :param top_k: pages returned.
    :param filters: filters applied to every search (Haystack filter syntax).
    :param filter_policy: how run-time filters combine with ``filters``: ``replace`` or ``merge``.
    :param candidates: pages a cheap first stage (pooled vectors) keeps before exact MaxSim;
        default exact search over indexes of up to 2,000 pages, 300 candidates above.
    """

    def __init__(self, document_store: AgreeDocumentStore, *, top_k: int = 10,
                 filters: dict[str, Any] | None = None,
                 filter_policy: str | FilterPolicy = FilterPolicy.REPLACE, candidates: int | None = None):
        if not isinstance(document_store, AgreeDocumentStore):
            raise ValueError(f"document_store must be an AgreeDocumentStore, got {type(document_store).__name__}")
        check_positive("top_k", top_k)
        check_positive("candidates", candidates, allow_none=True)
        self.document_store = document_store
        self.top_k = top_k
        self.filters = filters
        self.filter_policy = (FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str)
                              else filter_policy)
        self.candidates = candidates

    def warm_up(self) -> None:
        self.document_store._warm_up(write=False)

    def close(self) -> None:
        """Give back the store's index (``Pipeline.close()`` calls this)."""
        self.document_store.close()

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeRetriever":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str | None = None, query_multivector_embedding: list[list[float]] | None = None,
            filters: dict[str, Any] | None = None, top_k: int | None = None) -> dict[str, list[Document]]:
        """Pages for a query, best first, with their MaxSim ``score`` and ``meta["evidence"]``,
        the places of the page that matched, as ``agree search --json`` gives them.

        :param query: the query text (ignored when ``query_multivector_embedding`` is given).
        :param query_multivector_embedding: the query's token vectors.
        :param filters: Haystack filters, combined with the init filters by ``filter_policy``.
        :param top_k: pages returned (default: the init ``top_k``).
        """
        op = self._op(query, query_multivector_embedding, filters, top_k)
        return {"documents": [record_to_document(r) for r in self.document_store._run(op)]}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str | None = None,
                        query_multivector_embedding: list[list[float]] | None = None,
                        filters: dict[str, Any] | None = None,
                        top_k: int | None = None) -> dict[str, list[Document]]:
        """:meth:`run` without blocking the event loop while the index searches."""
        op = self._op(query, query_multivector_embedding, filters, top_k)
        return {"documents": [record_to_document(r) for r in await self.document_store._arun(op)]}

    def _op(self, query, query_multivector_embedding, filters, top_k):  # noqa: ANN001, ANN202
        check_positive("top_k", top_k, allow_none=True)
        q = query_vectors(query, query_multivector_embedding)
        flt = apply_filter_policy(self.filter_policy, self.filters, filters)
        return self.document_store._search_op(q, top_k or self.top_k, flt, self.candidates)
