"""Haystack embedders: multi-vector embeddings of pages and of queries."""

from .document_embedder import AgreeDocumentEmbedder
from .text_embedder import AgreeTextEmbedder

__all__ = ["AgreeDocumentEmbedder", "AgreeTextEmbedder"]
