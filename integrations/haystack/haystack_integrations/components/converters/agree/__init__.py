"""Haystack converters: PDF files -> one Document per page, with its image and text; page
Documents -> ImageContents for a vision chat model, with their citations."""

from .document_to_image import AgreeDocumentToImageContent
from .page_converter import AgreePageConverter

__all__ = ["AgreePageConverter", "AgreeDocumentToImageContent"]
