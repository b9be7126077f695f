"""Which physical page a framework's node or Document names (agree_core.page_identity)."""

import pytest

from agree_core.page_identity import PageIdentityError, page_identity, page_label, page_labels
from conftest import BOOK_LABELS, lorem_pages, make_labelled_pdf, make_pdf


def test_labels_are_read_from_the_pdf(book_pdf, tmp_path):
    assert page_labels(book_pdf) == BOOK_LABELS
    assert page_labels(make_pdf(tmp_path / "plain.pdf", ["a", "b"])) == ["1", "2"]  # no /PageLabels
    assert page_label(book_pdf, 3) == "1" and page_label(tmp_path / "gone.pdf", 3) == "3"


@pytest.mark.parametrize("meta, page", [
    ({"page_label": "1"}, 3),  # LlamaIndex PDFReader: the printed label, not the number
    ({"page_label": "ii"}, 2),
    ({"page": 4, "page_label": "2"}, 4),  # agree's physical page first
    ({"page_number": 5}, 5),  # Haystack's splitter
    ({"source": "3"}, 3),  # PyMuPDFReader: source is the page number next to file_path
    ({"source": 2}, 2),
])
def test_every_readers_page_keys(book_pdf, meta, page):
    ident = page_identity({"file_path": str(book_pdf), **meta})
    assert (ident.source, ident.page, ident.reason, ident.found) == (str(book_pdf), page, None, True)


def test_pages_that_cannot_be_named(book_pdf, tmp_path, monkeypatch):
    assert "no page labelled 'vii'" in page_identity({"file_path": str(book_pdf), "page_label": "vii"}).reason
    assert page_identity({"file_name": "book.pdf", "page_label": "1"}).reason.startswith("names file 'book.pdf'")
    assert page_identity({}).reason == "names no PDF: no metadata 'source' or 'file_path'"
    monkeypatch.chdir(tmp_path.parent)
    missing = page_identity({"file_path": "book.pdf", "page_label": "1"})
    assert missing.page is None and "store_full_path=True" in missing.reason
    number = page_identity({"file_path": "book.pdf", "page_number": 1})  # a number needs no file ...
    assert number.found and "store_full_path=True" in number.reason  # ... but says why it cannot be read
    assert "must be a page number >= 1, got 0" in page_identity({"source": str(book_pdf), "page": 0}).reason


def test_an_ambiguous_label_is_an_error_naming_the_node(tmp_path):
    # an appendix that starts again at 1: label "1" is printed on pages 1 and 3
    pdf = make_labelled_pdf(tmp_path / "two-parts.pdf", lorem_pages(4), [(0, 1, "/D", 1), (2, 3, "/D", 1)])
    with pytest.raises(PageIdentityError, match=r"node 'n7': page_label '1' is printed on pages \[1, 3\]"):
        page_identity({"file_path": str(pdf), "page_label": "1"}, name="n7")
    assert page_identity({"file_path": str(pdf), "page": 3}).page == 3  # the physical page is unambiguous
