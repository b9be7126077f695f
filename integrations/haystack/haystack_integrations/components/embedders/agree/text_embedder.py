"""AgreeTextEmbedder: a query -> its multi-vector embedding (one vector per token)."""

from __future__ import annotations

from typing import Any

from haystack import component, default_from_dict

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder
from agree_core.index.shared import shared_encoder
from haystack_integrations.document_stores.agree._convert import init_to_dict


@component
class AgreeTextEmbedder:
    """Embeds a query with an agree encoder, one vector per token, for
    ``query_multivector_embedding`` of :class:`AgreeRetriever` and :class:`AgreeRanker`.

    :param encoder: an agree encoder name; the one the pages were embedded with.
    :param encoder_options: runtime options (``device``, ``dtype``...).
    """

    def __init__(self, *, encoder: str = DEFAULT_ENCODER, encoder_options: dict[str, Any] | None = None):
        if not isinstance(encoder, str) or not encoder:
            raise ValueError(f"encoder must be an encoder name such as 'text-layer', got {encoder!r}")
        self.encoder = encoder
        self.encoder_options = encoder_options
        self._encoder: MultiVectorEncoder | None = None

    def warm_up(self) -> None:
        if self._encoder is None:
            self._encoder = shared_encoder(self.encoder, **(self.encoder_options or {}))

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeTextEmbedder":
        return default_from_dict(cls, data)

    @component.output_types(multivector_embedding=list[list[float]])
    def run(self, text: str) -> dict[str, list[list[float]]]:
        """The token vectors of ``text``, ``(n_tokens, dim)`` as nested lists."""
        if not isinstance(text, str):
            raise TypeError(f"AgreeTextEmbedder expects a string; got {type(text).__name__}. "
                            "To embed Documents, use AgreeDocumentEmbedder")
        self.warm_up()
        return {"multivector_embedding": self._encoder.encode_queries([text])[0].float().tolist()}
