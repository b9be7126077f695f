"""AgreeDocumentWriter: page Documents -> an AgreeDocumentStore."""

from __future__ import annotations

from typing import Any

from haystack import Document, component, default_from_dict
from haystack.document_stores.types import DuplicatePolicy

from haystack_integrations.document_stores.agree import AgreeDocumentStore
from haystack_integrations.document_stores.agree._convert import init_to_dict


@component
class AgreeDocumentWriter:
    """Writes page Documents into an :class:`AgreeDocumentStore`: with the multi-vector
    embeddings they carry, or embedded now with the index's encoder.

    :param document_store: where to write.
    :param policy: for a Document whose id is in the store: ``overwrite`` it (default, so an
        indexing pipeline can run again), ``skip`` it, or ``fail``.
    """

    def __init__(self, document_store: AgreeDocumentStore, *,
                 policy: str | DuplicatePolicy = DuplicatePolicy.OVERWRITE):
        if not isinstance(document_store, AgreeDocumentStore):
            raise ValueError(f"document_store must be an AgreeDocumentStore, got {type(document_store).__name__}")
        try:
            self.policy = DuplicatePolicy(policy)
        except ValueError:
            choices = [p.value for p in DuplicatePolicy]
            raise ValueError(f"policy must be one of {choices}, got {policy!r}") from None
        self.document_store = document_store

    def warm_up(self) -> None:
        self.document_store._warm_up(write=True)

    def close(self) -> None:
        """Give back the store's index (``Pipeline.close()`` calls this)."""
        self.document_store.close()

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeDocumentWriter":
        return default_from_dict(cls, data)

    @component.output_types(documents_written=int)
    def run(self, documents: list[Document]) -> dict[str, int]:
        """:returns: ``documents_written``, the number of Documents written."""
        return {"documents_written": self.document_store.write_documents(documents, self.policy)}

    @component.output_types(documents_written=int)
    async def run_async(self, documents: list[Document]) -> dict[str, int]:
        """:meth:`run` without blocking the event loop while pages are encoded and written."""
        return {"documents_written": await self.document_store.write_documents_async(documents, self.policy)}
