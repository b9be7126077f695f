"""Haystack document store over an agree page index (multi-vector pages, MaxSim)."""

from .document_store import AgreeDocumentStore

__all__ = ["AgreeDocumentStore"]
