"""Haystack converter: PDF files -> one Document per page, with its image and text."""

from .page_converter import AgreePageConverter

__all__ = ["AgreePageConverter"]
