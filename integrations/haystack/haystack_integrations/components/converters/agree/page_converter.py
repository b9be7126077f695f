"""AgreePageConverter: PDF files and folders -> one Document per page, with image and text."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from haystack import Document, component, default_from_dict, logging
from haystack.components.converters.utils import normalize_metadata
from haystack.dataclasses import ByteStream

from agree_core.index.record_pages import encode_image
from agree_core.pages import PdfError, find_pdfs, iter_pages
from agree_core.pages import page_id as make_page_id
from haystack_integrations.document_stores.agree._convert import init_to_dict

logger = logging.getLogger(__name__)

_FORMATS = ("jpeg", "png", "webp")


@component
class AgreePageConverter:
    """Converts PDFs into page Documents: ``content`` is the page's text layer, ``blob`` its
    rendered image, ``meta`` has ``source`` (the PDF's absolute path) and ``page`` (1-based),
    also under the names Haystack's own converters and splitters use, ``file_path`` and
    ``page_number``.
    The Document id is the page's id in an agree index. Folders are searched for PDFs
    recursively; a file that cannot be read is skipped with a warning naming the reason.

    :param dpi: render resolution of the page images.
    :param image_format: ``jpeg``, ``png`` or ``webp``.
    :param image_quality: JPEG/WebP quality, 1-100.
    :param include_images: attach the page images; without them, pages are embedded from text.
    """

    def __init__(self, *, dpi: int = 100, image_format: str = "jpeg", image_quality: int = 85,
                 include_images: bool = True):
        if not isinstance(dpi, int) or not 10 <= dpi <= 1200:
            raise ValueError(f"dpi must be an integer between 10 and 1200, got {dpi!r}")
        if image_format not in _FORMATS:
            raise ValueError(f"image_format must be one of {_FORMATS}, got {image_format!r}")
        if not isinstance(image_quality, int) or not 1 <= image_quality <= 100:
            raise ValueError(f"image_quality must be an integer between 1 and 100, got {image_quality!r}")
        self.dpi = dpi
        self.image_format = image_format
        self.image_quality = image_quality
        self.include_images = include_images

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreePageConverter":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, sources: list[str | Path | ByteStream],
            meta: dict[str, Any] | list[dict[str, Any]] | None = None) -> dict[str, list[Document]]:
        """One Document per page of every PDF in ``sources``.

        :param sources: PDF files, folders of PDFs, or PDF ByteStreams (their ``file_path``
            meta, if any, becomes the pages' ``source``); one path or ByteStream alone is
            one source.
        :param meta: metadata for the pages of all sources (a dict), or of each source (a list
            as long as ``sources``).
        """
        if isinstance(sources, (str, Path, ByteStream)):
            sources = [sources]  # one source, never walked character by character
        elif not isinstance(sources, (list, tuple)):
            raise TypeError(f"sources must be a list of paths or ByteStreams, got {type(sources).__name__}")
        documents = []
        for source, extra in zip(sources, normalize_metadata(meta, len(sources))):
            if isinstance(source, ByteStream):
                documents += self._from_bytes(source, extra)
                continue
            files, missing = find_pdfs([source])
            for error in missing:
                logger.warning("Skipping {source}: {reason}", source=error.path, reason=error.reason)
            for path in files:
                documents += self._pages(path, extra)
        return {"documents": documents}

    def _pages(self, path: Path, extra: dict[str, Any], name: str | None = None) -> list[Document]:
        docs = []
        try:
            for page in iter_pages(path, dpi=self.dpi, render=self.include_images):
                source = name if name is not None else str(page.source)
                blob = None
                if page.image is not None:
                    data, mime = encode_image(page.image, self.image_format, self.image_quality)
                    blob = ByteStream(data, mime_type=mime)
                docs.append(Document(id=make_page_id(source, page.sha256, page.page_no), content=page.text,
                                     blob=blob, meta={**extra, "source": source, "page": page.page_no,
                                                              "file_path": source, "page_number": page.page_no}))
        except PdfError as e:
            logger.warning("Skipping {source}: {reason}", source=name or path, reason=e.reason)
            return []
        return docs

    def _from_bytes(self, stream: ByteStream, extra: dict[str, Any]) -> list[Document]:
        name = str(stream.meta.get("file_path", ""))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "source.pdf"
            path.write_bytes(stream.data)
            return self._pages(path, {**stream.meta, **extra}, name)
