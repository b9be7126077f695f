"""OCR for pages without a text layer (scans), with rapidocr's ONNX models from its wheel."""

from __future__ import annotations

import functools
import logging

import numpy as np
from PIL import Image

from agree_core.pages import Word

log = logging.getLogger(__name__)

__all__ = ["ocr_available", "ocr_words", "is_blank"]


def ocr_available() -> bool:
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _engine():
    try:
        from rapidocr import RapidOCR
    except ImportError as e:
        raise ImportError(
            "OCR needs rapidocr and onnxruntime: pip install 'agree[ocr]'"
        ) from e
    # rapidocr logs every model path at INFO on its own logger; keep it quiet.
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    return RapidOCR(params={"Global.log_level": "warning"})


def is_blank(image: Image.Image, tolerance: int = 8) -> bool:
    """True for an image of one flat colour (a blank page): no OCR needed."""
    lo, hi = image.convert("L").getextrema()
    return hi - lo <= tolerance


def ocr_words(image: Image.Image, min_score: float = 0.5) -> list[Word]:
    """Words read from ``image`` with boxes normalised to ``[0, 1]``, in reading order."""
    if is_blank(image):
        return []
    w, h = image.size
    result = _engine()(np.asarray(image.convert("RGB")), return_word_box=True)
    lines = getattr(result, "word_results", None) or ()
    words: list[Word] = []
    for line in lines:
        for item in line or ():
            if len(item) != 3:
                continue
            text, score, quad = item
            text = (text or "").strip()
            if not text or score < min_score:
                continue
            xs = [p[0] for p in quad]
            ys = [p[1] for p in quad]
            box = (min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h)
            words.append(Word(text, tuple(min(1.0, max(0.0, v)) for v in box)))
    return words
