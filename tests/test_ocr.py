"""OCR that accepts whatever rapidocr returns: the real engine on hard images, and the result
objects rapidocr builds (its own classes), including the shapes that once crashed a run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rapidocr")
from rapidocr.ch_ppocr_det.utils import TextDetOutput  # noqa: E402
from rapidocr.ch_ppocr_rec.typings import TextRecOutput, WordInfo  # noqa: E402
from rapidocr.utils.output import RapidOCROutput  # noqa: E402

from agree_core import pages as pages_mod  # noqa: E402
from agree_core.ocr import OcrPool, OcrTimeout, ocr_words, words_from_result  # noqa: E402

from hostile_folder import scan_image  # noqa: E402

QUAD = [[10, 20], [110, 20], [110, 40], [10, 40]]


def test_the_empty_output_rapidocr_returns_for_a_page_without_text():
    # RapidOCROutput() carries word_results=(("", 1.0, None),): iterating it once gave
    # "object of type 'float' has no len()" and stopped a whole run
    assert words_from_result(RapidOCROutput(), 200, 100) == []
    assert words_from_result(None, 200, 100) == []


def test_detection_only_and_recognition_only_outputs_give_no_words():
    det = TextDetOutput(boxes=np.array([QUAD], dtype=np.float32), scores=[0.9])
    rec = TextRecOutput(txts=("hello",), scores=[0.9])  # no boxes: nowhere to put the words
    assert words_from_result(det, 200, 100) == []
    assert words_from_result(rec, 200, 100) == []


def test_word_boxes_with_numpy_scores_and_array_boxes():
    out = RapidOCROutput(
        boxes=np.array([QUAD], dtype=np.float32), txts=("total due",),
        scores=(np.float32(0.93),),
        word_results=(
            (("total", np.float32(0.95), np.array([[10, 20], [50, 20], [50, 40], [10, 40]])),
             ("due", np.float64(0.9), [[60, 20], [110, 20], [110, 40], [60, 40]])),),
    )
    words = words_from_result(out, 200, 100)
    assert [w.text for w in words] == ["total", "due"]
    assert words[0].box == pytest.approx((0.05, 0.2, 0.25, 0.4))
    assert all(isinstance(v, float) for v in words[1].box)


def test_lines_without_word_boxes_fall_back_to_line_boxes():
    line_only = RapidOCROutput(
        boxes=np.array([QUAD, [[10, 60], [110, 60], [110, 80], [10, 80]]], dtype=np.float32),
        txts=("net amount", "paid"), scores=(0.9, np.float32(0.2)),  # the second is below 0.5
        word_results=(WordInfo(words=[["net"], ["amount"]], confs=[0.9, 0.9]), ("", 1.0, None)),
    )
    words = words_from_result(line_only, 200, 100)
    assert [w.text for w in words] == ["net", "amount"]
    net, amount = words
    assert net.box[0] == pytest.approx(0.05) and net.box[2] < amount.box[0] <= amount.box[2]
    assert amount.box[2] == pytest.approx(0.55)
    # rapidocr drops lines without word boxes from word_results: lengths no longer match
    dropped = RapidOCROutput(boxes=np.array([QUAD, QUAD]), txts=("a b", "c"), scores=(0.9, 0.9),
                             word_results=((("a", 0.9, QUAD),),))
    assert [w.text for w in words_from_result(dropped, 200, 100)] == ["a", "b", "c"]


def test_malformed_items_are_ignored_not_fatal():
    out = RapidOCROutput(boxes=[[10, 20, 110, 20, 110, 40, 10, 40]], txts=["flat box"],
                         scores=[float("nan")], word_results=[[("x", "high", None), 3.5]])
    assert words_from_result(out, 200, 100) == []  # a NaN score reads nothing
    out.scores = [0.8]
    assert [w.text for w in words_from_result(out, 200, 100)] == ["flat", "box"]


@pytest.mark.parametrize("image", [
    Image.new("RGB", (850, 1100), "white"),  # blank
    scan_image("", noise=0.3),  # noise
    Image.new("RGB", (5, 3), "black"),  # tiny
], ids=["blank", "noise", "tiny"])
def test_the_real_engine_on_images_without_text(image):
    words = ocr_words(image)
    assert isinstance(words, list)
    assert all(0 <= v <= 1 for w in words for v in w.box)


def test_the_real_engine_reads_rotated_text_and_a_huge_image(monkeypatch):
    rotated = ocr_words(scan_image("harbor compass", size=(600, 300), angle=90))
    assert all(0 <= v <= 1 for w in rotated for v in w.box)
    # a page over the pixel budget is scaled down before the engine sees it
    monkeypatch.setattr("agree_core.ocr.MAX_IMAGE_PIXELS", 800 * 400)
    big = scan_image("harbor compass", size=(1600, 800))
    words = ocr_words(big)
    assert "harbor" in " ".join(w.text for w in words).lower()
    assert pages_mod.MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS  # PIL's bomb guard is never hit


def test_the_pool_stops_a_page_that_takes_too_long_and_goes_on():
    page = scan_image("velvet summit", size=(600, 300))
    with OcrPool(workers=1, timeout=0.05) as pool:
        pool.submit("slow", page)  # includes the worker's start: far over 0.05 s
        start = time.monotonic()
        key, got = pool.next()
        assert key == "slow" and isinstance(got, OcrTimeout)
        assert "longer than 0.05 s" in str(got) and time.monotonic() - start < 5
        pool.timeout = 300.0
        pool.submit("next", page)
        key, got = pool.next()  # a fresh worker reads it
        assert key == "next" and "velvet" in " ".join(w.text for w in got).lower()
