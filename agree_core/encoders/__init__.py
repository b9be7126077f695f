"""Multi-vector encoders: the protocol, the registry and the built-in encoders."""

from agree_core.encoders.base import MultiVectorEncoder, PageEmbedding, page_grid
from agree_core.encoders.registry import (
    DEFAULT_ENCODER,
    available_encoders,
    load_encoder,
    register_encoder,
)

__all__ = [
    "MultiVectorEncoder", "PageEmbedding", "page_grid", "DEFAULT_ENCODER",
    "available_encoders", "load_encoder", "register_encoder",
]
