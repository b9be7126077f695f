"""Caller-given pages (records) as :class:`~agree_core.pages.Page` objects an encoder reads
(records are scored for a query by :class:`agree_core.rerank.PageScorer`).

A record names its PDF page when its ``meta`` has ``source`` (an existing PDF) and ``page``:
its words then come with their real boxes from the PDF's text layer, as long as they are the
record's text. Otherwise its text is laid out on a virtual page (so the text-layer encoder
has word boxes), and a record with only an image is read from the image (OCR).
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from agree_core.encoders import MultiVectorEncoder, PageEmbedding
from agree_core.pages import Page, PdfError, Word, iter_pages

if TYPE_CHECKING:
    from agree_core.index.records import Record

log = logging.getLogger(__name__)

__all__ = ["text_page", "record_pages", "embed_records", "encode_image", "decode_image"]

LETTER = (612.0, 792.0)  # points
_CHARS_PER_LINE = 85
_LINE_HEIGHT = 2.9  # in character widths (11 pt type on 16 pt lines)
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def text_page(text: str, source: str | Path = "", page_no: int = 1,
              size: tuple[float, float] = LETTER, image: Image.Image | None = None) -> Page:
    """A page holding ``text`` laid out in lines, left to right and top to bottom, inside
    1-inch margins: each word gets a box, as the text layer of a PDF would give it.

    >>> p = text_page("one two three")
    >>> [w.text for w in p.words], p.words[0].box[0] < p.words[1].box[0]
    (['one', 'two', 'three'], True)
    >>> all(0 <= v <= 1 for w in text_page("word " * 5000).words for v in w.box)
    True
    """
    width, height = size
    margin = min(width, height) / 8.5  # 72 pt on a letter page
    char_w = (width - 2 * margin) / _CHARS_PER_LINE
    lines: list[list[tuple[str, int]]] = [[]]  # (word, first column)
    col = 0
    for word in text.split():
        n = min(len(word), _CHARS_PER_LINE)
        if col and col + n > _CHARS_PER_LINE:
            lines.append([])
            col = 0
        lines[-1].append((word, col))
        col += n + 1
    line_h = min(char_w * _LINE_HEIGHT, (height - 2 * margin) / max(1, len(lines)))
    words = []
    for i, line in enumerate(lines):
        y0 = margin + i * line_h
        for word, c in line:
            x0 = margin + c * char_w
            x1 = min(width - margin, x0 + len(word) * char_w)
            words.append(Word(word, (x0 / width, y0 / height, x1 / width, (y0 + 0.8 * line_h) / height)))
    return Page(Path(source), "", page_no, width, height, words, image, 100 if image else 0,
                from_pdf=False)


def decode_image(data: bytes | None) -> Image.Image | None:
    """The image in ``data`` (an encoded image file), or ``None`` when it holds no image."""
    if not data:
        return None
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return img.convert("RGB")


def encode_image(image: Image.Image, image_format: str = "jpeg", quality: int = 85) -> tuple[bytes, str]:
    """``(bytes, mime type)`` of ``image`` saved as JPEG, PNG or WebP."""
    fmt = image_format.upper()
    if fmt not in _MIME:
        raise ValueError(f"image_format must be jpeg, png or webp, got {image_format!r}")
    buf = io.BytesIO()
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    image.convert("RGB").save(buf, format=fmt, **options)
    return buf.getvalue(), _MIME[fmt]


def record_pages(records: Sequence["Record"]) -> list[Page]:
    """One page per record, for an encoder (see the module docstring)."""
    out: list[Page | None] = [None] * len(records)
    by_pdf: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        source, page = r.meta.get("source"), r.meta.get("page")
        if (isinstance(source, str) and source.lower().endswith(".pdf") and isinstance(page, int)
                and not isinstance(page, bool) and Path(source).is_file()):
            by_pdf[str(Path(source).absolute())].append(i)
    for source, positions in by_pdf.items():
        wanted = sorted({records[i].meta["page"] for i in positions})
        try:
            found = {p.page_no: p for p in iter_pages(source, render=False, pages=wanted)}
        except (PdfError, ValueError) as e:
            log.debug("cannot read the text layer of %s (%s); laying the text out instead", source, e)
            continue
        for i in positions:
            page = found[records[i].meta["page"]]
            if records[i].text is None or records[i].text == page.text:
                page.image, page.dpi = decode_image(records[i].blob), 100
                out[i] = page
    for i, r in enumerate(records):
        if out[i] is None:
            out[i] = _free_page(r)
    return out  # type: ignore[return-value]


def _free_page(r: "Record") -> Page:
    source = r.meta.get("source") if isinstance(r.meta.get("source"), str) else ""
    page = r.meta.get("page")
    page_no = page if isinstance(page, int) and not isinstance(page, bool) and page > 0 else 1
    image = decode_image(r.blob)
    if r.text and r.text.strip():
        size = (image.width * 0.72, image.height * 0.72) if image is not None else LETTER
        return text_page(r.text, source, page_no, size, image)
    if image is not None:
        return Page.from_image(image, source, page_no)  # no text: the encoder reads the image
    return Page(Path(source), "", page_no, *LETTER, [], None, 0, from_pdf=False)


def embed_records(encoder: MultiVectorEncoder, records: Sequence["Record"],
                  batch_size: int = 16) -> list[PageEmbedding]:
    """The encoder's embedding of each record's page, ``batch_size`` pages per call."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[PageEmbedding] = []
    for start in range(0, len(records), batch_size):
        out.extend(encoder.encode_pages(record_pages(records[start : start + batch_size])))
    return out
