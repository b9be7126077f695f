"""AgreeDocumentEmbedder: page Documents -> multi-vector embeddings (one vector per token)."""

from __future__ import annotations

from typing import Any

from haystack import Document, component, default_from_dict

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder
from agree_core.index.record_pages import embed_records
from agree_core.index.shared import shared_encoder
from haystack_integrations.document_stores.agree._convert import (
    check_positive,
    document_to_record,
    init_to_dict,
    with_multivector,
)


@component
class AgreeDocumentEmbedder:
    """Embeds page Documents with an agree encoder: one vector per token (or image patch),
    each tied to its cell of the page grid.

    The vectors go to ``multivector_embedding`` (the Document field on Haystack versions
    that have it, else ``meta["multivector_embedding"]``), their grid cells to
    ``meta["multivector_grid"]`` and ``meta["multivector_cells"]``. A Document whose meta
    names a PDF page (``source``, ``page``) is embedded from that page's text layer, with
    the words' real positions; others from their text, or from their image (``blob``) when
    they have no text.

    :param encoder: an agree encoder name (``text-layer``, or ``NAME:CHECKPOINT``); use the
        encoder of the index you write to.
    :param encoder_options: runtime options (``device``, ``dtype``...).
    :param batch_size: pages per forward pass.
    """

    def __init__(self, *, encoder: str = DEFAULT_ENCODER, encoder_options: dict[str, Any] | None = None,
                 batch_size: int = 16):
        if not isinstance(encoder, str) or not encoder:
            raise ValueError(f"encoder must be an encoder name such as 'text-layer', got {encoder!r}")
        check_positive("batch_size", batch_size)
        self.encoder = encoder
        self.encoder_options = encoder_options
        self.batch_size = batch_size
        self._encoder: MultiVectorEncoder | None = None

    def warm_up(self) -> None:
        if self._encoder is None:
            self._encoder = shared_encoder(self.encoder, **(self.encoder_options or {}))

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeDocumentEmbedder":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """Copies of ``documents`` with their multi-vector embeddings."""
        if not isinstance(documents, list):
            raise TypeError(f"AgreeDocumentEmbedder expects a list of Documents, got {type(documents).__name__}")
        records = [document_to_record(d) for d in documents]
        self.warm_up()
        embeddings = embed_records(self._encoder, records, self.batch_size)
        return {"documents": [with_multivector(d, e) for d, e in zip(documents, embeddings)]}
