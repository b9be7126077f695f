from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from agree_core import pages as pages_mod
from agree_core.pages import PdfError, file_sha256, find_pdfs, inspect_pdf, iter_pages, page_id
from conftest import lorem_pages


def test_text_layer_words_and_boxes(pdf_factory):
    pdf = pdf_factory("a.pdf", ["Quarterly revenue grew\nsecond line here", "other page"])
    got = list(iter_pages(pdf, dpi=50))
    assert [p.page_no for p in got] == [1, 2]
    first = got[0]
    assert [w.text for w in first.words] == ["Quarterly", "revenue", "grew", "second", "line", "here"]
    x0, y0, x1, y1 = first.words[0].box
    assert 0 < x0 < x1 < 0.5 and 0 < y0 < y1 < 0.2  # top left of a letter page
    assert first.words[3].box[1] > first.words[0].box[3]  # the second line is below the first
    assert first.image.size == (round(612 / 72 * 50), round(792 / 72 * 50))
    assert first.text == "Quarterly revenue grew second line here"
    assert first.source.is_absolute() and first.sha256 == file_sha256(pdf)


def test_page_ids_are_stable_and_distinct(pdf_factory):
    pdf = pdf_factory("a.pdf", ["one", "two"])
    a = [p.id for p in iter_pages(pdf, render=False)]
    b = [p.id for p in iter_pages(pdf, render=False)]
    assert a == b and len(set(a)) == 2
    assert a[0] == page_id(pdf.absolute(), file_sha256(pdf), 1)


def test_pages_stream_in_chunks(pdf_factory, monkeypatch):
    pdf = pdf_factory("long.pdf", lorem_pages(30))
    calls = []
    real = pages_mod._render

    def counting(path, first, last, dpi, timeout):
        calls.append((first, last))
        return real(path, first, last, dpi, timeout)

    monkeypatch.setattr(pages_mod, "_render", counting)
    it = iter_pages(pdf, dpi=20, chunk_size=8)
    first = next(it)
    assert first.page_no == 1 and calls == [(1, 8)]  # only the first chunk was rendered
    rest = list(it)
    assert len(rest) == 29 and calls == [(1, 8), (9, 16), (17, 24), (25, 30)]


def test_selected_pages_only(pdf_factory):
    pdf = pdf_factory("a.pdf", lorem_pages(6))
    got = list(iter_pages(pdf, render=False, pages=[2, 5, 6]))
    assert [p.page_no for p in got] == [2, 5, 6]
    assert got[0].words[1].text == "2"
    with pytest.raises(ValueError, match="has 6 pages; cannot yield page"):
        list(iter_pages(pdf, pages=[7]))


def test_image_only_page_has_no_words(tmp_path):
    path = tmp_path / "scan.pdf"
    Image.new("RGB", (300, 400), "white").save(path, "PDF", resolution=50.0)
    (page,) = list(iter_pages(path, dpi=30))
    assert page.words == [] and page.image is not None


def test_encrypted_pdf_is_named_as_such(pdf_factory):
    pdf = pdf_factory("a.pdf", ["secret"])
    out = pdf.with_name("locked.pdf")
    with pikepdf.open(pdf) as doc:
        doc.save(out, encryption=pikepdf.Encryption(user="pw", owner="pw"))
    with pytest.raises(PdfError, match="encrypted: the PDF needs a password") as e:
        inspect_pdf(out)
    assert e.value.code == "encrypted"


def test_owner_password_only_pdf_is_readable(pdf_factory):
    pdf = pdf_factory("a.pdf", ["restricted but readable"])
    out = pdf.with_name("restricted.pdf")
    with pikepdf.open(pdf) as doc:
        doc.save(out, encryption=pikepdf.Encryption(user="", owner="pw"))
    (page,) = list(iter_pages(out, render=False))
    assert page.text == "restricted but readable"


def test_truncated_pdf_is_corrupt(pdf_factory):
    pdf = pdf_factory("a.pdf", lorem_pages(5))
    data = pdf.read_bytes()
    pdf.write_bytes(data[: len(data) // 2])
    with pytest.raises(PdfError, match="corrupt or damaged PDF") as e:
        inspect_pdf(pdf)
    assert e.value.code == "corrupt"


def test_not_a_pdf(tmp_path):
    path = tmp_path / "notes.pdf"
    path.write_text("just some text, not a PDF")
    with pytest.raises(PdfError, match="not a PDF file") as e:
        inspect_pdf(path)
    assert e.value.code == "not_pdf"


def test_zero_pages(tmp_path):
    path = tmp_path / "empty.pdf"
    pikepdf.new().save(path)
    with pytest.raises(PdfError, match="has no pages") as e:
        inspect_pdf(path)
    assert e.value.code == "empty"


def test_pages_past_200_inches_render_within_the_pixel_budget(pdf_factory):
    pdf = pdf_factory("poster.pdf", ["too big"], size=(100_000, 100_000))
    (page,) = list(iter_pages(pdf))
    assert max(page.image.size) <= pages_mod.MAX_IMAGE_SIDE_PX and page.text == "too big"


def test_a_sliver_page_renders_as_what_it_is(pdf_factory):
    pdf = pdf_factory("sliver.pdf", ["x", "a normal page"], size=(612, 792))
    with pikepdf.open(pdf, allow_overwriting_input=True) as doc:
        doc.pages[0].MediaBox = [0, 0, 612, 1]
        doc.save(pdf)
    first, second = iter_pages(pdf, dpi=100)
    assert first.image.size[0] == 850 and first.image.size[1] <= 2 and second.text == "a normal page"


def test_a_page_that_cannot_be_rendered_costs_that_page_only(pdf_factory, monkeypatch):
    pdf = pdf_factory("doc.pdf", ["one", "two", "three"])
    real = pages_mod._render

    def render(path, first, last, dpi, timeout):
        if first <= 2 <= last:
            raise PdfError(path, "render", "cannot be rendered: damaged", 2 if first == last else None)
        return real(path, first, last, dpi, timeout)

    monkeypatch.setattr(pages_mod, "_render", render)
    with pytest.raises(PdfError, match="page 2: cannot be rendered: damaged"):
        list(iter_pages(pdf))
    pages = list(iter_pages(pdf, skip_bad_pages=True))
    assert [p.error.code if p.error else p.text for p in pages] == ["one", "render", "three"]


def test_large_page_is_scaled_down_not_rejected(pdf_factory):
    pdf = pdf_factory("banner.pdf", ["wide"], size=(10000, 500))
    (page,) = list(iter_pages(pdf, dpi=100))
    assert max(page.image.size) <= pages_mod.MAX_IMAGE_SIDE_PX


def test_missing_file(tmp_path):
    with pytest.raises(PdfError, match="file not found"):
        inspect_pdf(tmp_path / "nope.pdf")


def test_dpi_is_validated(pdf_factory):
    pdf = pdf_factory("a.pdf", ["x"])
    with pytest.raises(ValueError, match="dpi must be between 10 and 1200, got 5"):
        list(iter_pages(pdf, dpi=5))


def test_find_pdfs_recurses_and_reports_missing(tmp_path, pdf_factory):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    a = pdf_factory("a.pdf", ["a"])
    b = pdf_factory("sub/deeper/B.PDF", ["b"])
    (tmp_path / "sub" / "readme.txt").write_text("x")
    files, errors = find_pdfs([tmp_path, a, tmp_path / "gone.pdf"])
    assert files == [a.absolute(), b.absolute()]  # a given twice is kept once
    assert [e.code for e in errors] == ["missing"]


def test_poppler_missing_is_a_clear_error(monkeypatch, pdf_factory):
    monkeypatch.setattr(pages_mod.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="poppler is not installed.*apt-get install poppler-utils"):
        inspect_pdf(Path("whatever.pdf"))
