"""Haystack writer: page Documents into an AgreeDocumentStore."""

from .document_writer import AgreeDocumentWriter

__all__ = ["AgreeDocumentWriter"]
