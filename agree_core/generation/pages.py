"""The pages an answer is built from: each retrieved page's stored image (sized for the model),
its text, and its citation (file, page, score, evidence boxes).

Page images come from the index (the JPEG written at indexing time): nothing is rendered again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image

if TYPE_CHECKING:
    from agree_core.index import Hit, PageIndex

__all__ = ["PageContext", "page_contexts", "fit_image", "DEFAULT_MAX_PIXELS"]

# Qwen2.5-VL's 768 image tokens of 28 x 28 pixels; about a 150-dpi letter page at 60%.
DEFAULT_MAX_PIXELS = 768 * 28 * 28


@dataclass
class PageContext:
    """One page shown to the model, and how to cite it."""

    source: str  # absolute path of the PDF
    page: int  # 1-based
    score: float
    image_path: str  # the stored page image
    text: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    page_id: str = ""

    @property
    def file_name(self) -> str:
        return Path(self.source).name

    def citation(self) -> dict[str, Any]:
        """``{"source", "file_name", "page", "score", "image", "evidence"}`` (JSON-ready)."""
        return {"source": self.source, "file_name": self.file_name, "page": self.page,
                "score": self.score, "image": self.image_path, "evidence": self.evidence}

    def image(self, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
        """The stored page image in RGB, scaled down to at most ``max_pixels`` pixels."""
        try:
            with Image.open(self.image_path) as img:
                img.load()
                rgb = img.convert("RGB")
        except (OSError, ValueError) as e:
            raise ValueError(f"the image of page {self.page} of {self.source} cannot be read "
                             f"({self.image_path}: {e}); index the file again") from e
        return fit_image(rgb, max_pixels)


def fit_image(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """``image`` scaled down (aspect kept, bicubic) to at most ``max_pixels`` pixels; smaller
    images and ``max_pixels=None`` leave it as it is.

    >>> fit_image(Image.new("RGB", (1000, 400)), 100_000).size
    (500, 200)
    """
    if max_pixels is None:
        return image
    if max_pixels < 28 * 28:
        raise ValueError(f"max_pixels must be >= {28 * 28} (one 28 x 28 patch), got {max_pixels}")
    w, h = image.size
    if w * h <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (w * h))
    size = (max(1, math.floor(w * scale)), max(1, math.floor(h * scale)))
    return image.resize(size, Image.BICUBIC)


def page_contexts(index: "PageIndex", query: str, hits: Sequence["Hit"], *,
                  with_evidence: bool = True, top_evidence: int = 3) -> list[PageContext]:
    """The hits of ``query`` as pages to show a model, in rank order, with their text and
    (``with_evidence``) evidence boxes computed from the stored vectors and the PDF's words
    (a served index's hits carry the ones the server computed)."""
    from agree_core.search_json import hits_evidence  # torch: not for `agree --help`

    found = hits_evidence(index, [query], [list(hits)], top=top_evidence)[0] if with_evidence and hits else {}
    out = []
    for h in hits:
        out.append(PageContext(h.source, h.page, h.score, h.image, index.page_text(h.page_id),
                               found.get(h.page_id, []), h.page_id))
    return out
