"""OCR for pages without a text layer (scans), with rapidocr's ONNX models from its wheel.

:func:`ocr_words` reads one image in this process. :class:`OcrPool` reads many in worker
processes, so that scans overlap with encoding and a page that takes pathological time is
stopped (its worker is killed and replaced) instead of stalling a run.

rapidocr returns several result shapes (an empty ``RapidOCROutput`` whose ``word_results``
default is one ``("", 1.0, None)`` line, detection-only or recognition-only outputs, word
results that are ``WordInfo`` objects when word boxes could not be computed, numpy arrays
and numpy scalars); :func:`words_from_result` accepts all of them and falls back to line
boxes when word boxes are missing.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import time
from collections import deque
from typing import Any, Iterable

import numpy as np
from PIL import Image

from agree_core.pages import MAX_IMAGE_PIXELS, Word

log = logging.getLogger(__name__)

__all__ = ["ocr_available", "ocr_words", "is_blank", "words_from_result", "OcrPool", "OcrTimeout",
           "MIN_OCR_SIDE_PX"]

MIN_OCR_SIDE_PX = 8  # smaller images hold no readable text


class OcrTimeout(TimeoutError):
    """OCR of one image took longer than the pool's timeout."""


def ocr_available() -> bool:
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _engine(threads: int = -1):
    try:
        from rapidocr import RapidOCR
    except ImportError as e:
        raise ImportError(
            "OCR needs rapidocr and onnxruntime: pip install 'agree[ocr]'"
        ) from e
    # rapidocr logs model paths at INFO and "no text found" at WARNING on its own logger:
    # neither is news to a user (a blank page is a blank page).
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return RapidOCR(params={"Global.log_level": "error",
                            "EngineConfig.onnxruntime.intra_op_num_threads": threads})


def is_blank(image: Image.Image, tolerance: int = 8) -> bool:
    """True for an image of one flat colour (a blank page): no OCR needed."""
    lo, hi = image.convert("L").getextrema()
    return hi - lo <= tolerance


def ocr_words(image: Image.Image, min_score: float = 0.5, *, threads: int = -1) -> list[Word]:
    """Words read from ``image`` with boxes normalised to ``[0, 1]``, in reading order.

    Blank and tiny images give ``[]`` without running OCR; an image over the pixel budget
    (:data:`agree_core.pages.MAX_IMAGE_PIXELS`) is scaled down first.
    """
    w, h = image.size
    if min(w, h) < MIN_OCR_SIDE_PX or is_blank(image):
        return []
    if w * h > MAX_IMAGE_PIXELS:
        scale = (MAX_IMAGE_PIXELS / (w * h)) ** 0.5
        image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))))
        w, h = image.size
    result = _engine(threads)(np.asarray(image.convert("RGB")), return_word_box=True)
    return words_from_result(result, w, h, min_score)


def words_from_result(result: Any, width: int, height: int, min_score: float = 0.5) -> list[Word]:
    """Words of a rapidocr result on a ``width`` x ``height`` image, boxes in ``[0, 1]``.

    Word boxes are used where rapidocr computed them for every line; otherwise each line's
    box is split among its words by their share of the line's characters.
    """
    if result is None:
        return []
    txts = _seq(getattr(result, "txts", None))
    scores = _seq(getattr(result, "scores", None))
    boxes = _seq(getattr(result, "boxes", None))
    lines = [_word_line(line) for line in _seq(getattr(result, "word_results", None))]
    words: list[Word] = []
    if txts and len(lines) == len(txts) and all(ln is not None for ln in lines):
        for line in lines:
            for text, score, quad in line:
                _append(words, text, score, quad, width, height, min_score)
        return words
    if not txts:  # no line results at all: whatever word results there are
        for line in lines:
            for text, score, quad in line or ():
                _append(words, text, score, quad, width, height, min_score)
        return words
    for i, text in enumerate(txts):
        score = _float(scores[i]) if i < len(scores) else None
        quad = _quad(boxes[i]) if i < len(boxes) else None
        if not isinstance(text, str) or score is None or quad is None or score < min_score:
            continue
        x0, y0, x1, y1 = _bounds(quad)
        n = max(1, len(text))
        pos = 0
        for token in text.split(" "):
            if token.strip():
                a, b = pos / n, (pos + len(token)) / n
                _append(words, token, score, [[x0 + a * (x1 - x0), y0], [x0 + b * (x1 - x0), y1]],
                        width, height, min_score)
            pos += len(token) + 1
    return words


def _seq(value: Any) -> list:
    """``value`` as a list: ``None`` -> ``[]``, arrays and tuples -> lists of their items."""
    if value is None or isinstance(value, (str, bytes)):
        return []
    try:
        return list(value)
    except TypeError:
        return []


def _word_line(line: Any) -> list[tuple[str, float, Any]] | None:
    """The ``(text, score, quad)`` items of one word-result line; ``None`` when the line
    has no usable word boxes (an empty placeholder, a ``WordInfo``, a bare triple)."""
    items = _seq(line)
    if not items:
        return None
    if len(items) == 3 and isinstance(items[0], str) and _quad(items[2]) is None:
        return None  # a line-level placeholder such as ("", 1.0, None)
    out = []
    for item in items:
        parts = _seq(item)
        if len(parts) != 3 or not isinstance(parts[0], str):
            return None
        score, quad = _float(parts[1]), _quad(parts[2])
        if score is None or quad is None:
            return None
        out.append((parts[0], score, quad))
    return out


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _quad(v: Any) -> np.ndarray | None:
    """Points ``(n, 2)`` of a box given as points, a flat list, or an array; else ``None``."""
    if v is None:
        return None
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return None
    return a if len(a) >= 2 and np.isfinite(a).all() else None


def _bounds(quad: Any) -> tuple[float, float, float, float]:
    a = np.asarray(quad, dtype=np.float64).reshape(-1, 2)
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 0].max()), float(a[:, 1].max())


def _append(words: list[Word], text: Any, score: Any, quad: Any, width: int, height: int,
            min_score: float) -> None:
    text = text.strip() if isinstance(text, str) else ""
    score = _float(score)
    if not text or score is None or score < min_score:
        return
    x0, y0, x1, y1 = _bounds(quad)
    box = tuple(min(1.0, max(0.0, v)) for v in (x0 / width, y0 / height, x1 / width, y1 / height))
    words.append(Word(text, box))


# -- the worker pool -------------------------------------------------------------------------
def _worker_init() -> None:
    _engine(1)


def _worker_read(pixels: np.ndarray, min_score: float) -> list[tuple[str, tuple]]:
    words = ocr_words(Image.fromarray(pixels), min_score, threads=1)
    return [(w.text, w.box) for w in words]


def default_workers() -> int:
    """OCR processes: one per two cores (the encoder needs the others), at least one."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class OcrPool:
    """OCR in worker processes (``spawn``), one ONNX thread each, at most ``workers`` images
    in flight. An image that takes longer than ``timeout`` seconds raises
    :class:`OcrTimeout` from :meth:`result`; its worker is killed and the others' images
    are read again on fresh workers.
    """

    def __init__(self, workers: int | None = None, timeout: float = 300.0, min_score: float = 0.5):
        if timeout <= 0:
            raise ValueError(f"the OCR timeout must be > 0 seconds, got {timeout}")
        self.workers = workers or default_workers()
        self.timeout = timeout
        self.min_score = min_score
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: Any = None
        self._jobs: deque[list] = deque()  # [key, pixels, async result, started]

    def __enter__(self) -> "OcrPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def full(self) -> bool:
        return len(self._jobs) >= self.workers

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, key: Any, image: Image.Image) -> None:
        """Queue ``image`` under ``key``; call :meth:`next` when :attr:`full`."""
        job = [key, np.asarray(image.convert("RGB")), None, 0.0]
        self._start(job)
        self._jobs.append(job)

    def next(self) -> tuple[Any, list[Word] | BaseException]:
        """The oldest job's key and its words, or the exception that stopped it."""
        key, pixels, handle, started = self._jobs[0]
        try:
            got = handle.get(timeout=max(0.0, started + self.timeout - time.monotonic()))
        except multiprocessing.TimeoutError:
            self._jobs.popleft()
            self._restart()
            return key, OcrTimeout(f"OCR took longer than {self.timeout:g} s")
        except Exception as e:  # noqa: BLE001 - an OCR failure costs this page only
            self._jobs.popleft()
            return key, e
        self._jobs.popleft()
        return key, [Word(t, tuple(b)) for t, b in got]

    def drain(self) -> Iterable[tuple[Any, list[Word] | BaseException]]:
        while self._jobs:
            yield self.next()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._jobs.clear()

    def _start(self, job: list) -> None:
        if self._pool is None:
            self._pool = self._ctx.Pool(self.workers, initializer=_worker_init)
        job[2] = self._pool.apply_async(_worker_read, (job[1], self.min_score))
        job[3] = time.monotonic()

    def _restart(self) -> None:
        """Kill every worker (one is stuck) and start the pending jobs again."""
        self._pool.terminate()
        self._pool.join()
        self._pool = None
        for job in self._jobs:
            self._start(job)
