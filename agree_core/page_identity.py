"""Which physical page of which PDF a framework's node or Document names.

Readers name pages in their own words. This module reads all of them and answers with the
PDF's absolute path and its 1-based physical page number, the way the index stores pages:

============================  ==============================================================
``page``                       agree's own key (int, 1-based)
``page_number``                Haystack's converters and ``DocumentSplitter`` (int, 1-based)
``source`` (a number)          LlamaIndex's ``PyMuPDFReader`` (``"3"``, next to ``file_path``)
``page_label``                 LlamaIndex's ``PDFReader``: the PDF's *printed* label (``"iv"``,
                               ``"A-2"``, ``"3"``), mapped through the PDF's own ``/PageLabels``
============================  ==============================================================

The file comes from ``source`` (agree's key, when it is not PyMuPDF's page number) or
``file_path`` (LlamaIndex's ``SimpleDirectoryReader``, Haystack's converters); a relative
path is taken from the working directory. ``file_name`` alone does not say where the file is,
and a path that does not end in ``.pdf`` names a document, not a PDF page.

A label is a printed name, not a number: in a book labelled i, ii, 1, 2, ... label ``"1"`` is
physical page 3. A label printed on two pages names neither: :class:`PageIdentityError`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

__all__ = ["PageIdentity", "PageIdentityError", "page_identity", "page_labels", "page_label", "missing_file",
           "ON_MISSING_PAGE"]

ON_MISSING_PAGE = ("raise", "keep")  # what the rerankers do with a candidate naming no page

_LABELS: dict[tuple[str, int, int], list[str]] = {}  # (path, mtime_ns, size) -> labels
_LABELS_GUARD = threading.Lock()
_LABELS_MAX = 256


class PageIdentityError(ValueError):
    """A node or Document names a page ambiguously (a page label printed on several pages)."""


@dataclass(frozen=True)
class PageIdentity:
    """``source`` (absolute PDF path) and ``page`` (1-based physical page), ``None`` when
    unknown; ``reason`` says why the page is not known, or why its file cannot be read."""

    source: str | None
    page: int | None
    reason: str | None = None

    @property
    def found(self) -> bool:
        return self.source is not None and self.page is not None


def page_identity(meta: Mapping[str, Any] | None, *, name: object = None) -> PageIdentity:
    """The PDF page that ``meta`` (a node's or Document's metadata) names (see the module
    docstring). ``name``: how to call the node in errors (its id). A page number needs no
    file (an index may hold the pages of a file since moved); a page label is looked up in
    the file.

    >>> page_identity({"source": "/a/b.pdf", "page": 2})
    PageIdentity(source='/a/b.pdf', page=2, reason='/a/b.pdf is not a file')
    >>> page_identity({"file_path": "/a/b.pdf", "source": "7"}).page
    7
    >>> page_identity({"file_path": "notes.txt", "page_number": 1}).reason
    "names no PDF: 'notes.txt' is not a .pdf file"
    >>> page_identity({"file_name": "b.pdf", "page_label": "3"}).reason
    "names file 'b.pdf' but not where it is: give metadata 'file_path' (or 'source') with its path"

    Raises:
        PageIdentityError: a ``page_label`` printed on more than one page of the PDF.
    """
    meta = meta or {}
    source, pymupdf_page = _source(meta)
    if source is None:
        if isinstance(meta.get("file_name"), str):
            return PageIdentity(None, None, f"names file {meta['file_name']!r} but not where it is: "
                                "give metadata 'file_path' (or 'source') with its path")
        return PageIdentity(None, None, "names no PDF: no metadata 'source' or 'file_path'")
    if not source.lower().endswith(".pdf"):  # a text file, a web page: a document, not a PDF page
        return PageIdentity(None, None, f"names no PDF: {source!r} is not a .pdf file")
    path = str(Path(source).expanduser().absolute())
    for key, value in (("page", meta.get("page")), ("page_number", meta.get("page_number")),
                       ("source", pymupdf_page)):
        if value is None:
            continue
        number = _number(value)
        if number is None:
            return PageIdentity(path, None, f"metadata {key!r} must be a page number >= 1, got {value!r}")
        # found; the reason tells why it cannot be read, should the index not hold it either
        return PageIdentity(path, number, None if Path(path).is_file() else missing_file(source))
    label = meta.get("page_label")
    if label is None:
        return PageIdentity(path, None, "names no page: no metadata 'page', 'page_number' or 'page_label'")
    if not Path(path).is_file():
        return PageIdentity(path, None, missing_file(source))
    labels = page_labels(path)
    matches = [i + 1 for i, text in enumerate(labels) if text == str(label)]
    if len(matches) > 1:
        who = f"node {name!r}" if name is not None else "a node"
        raise PageIdentityError(
            f"{who}: page_label {str(label)!r} is printed on pages {matches} of {path}, so it names "
            "no single page; give the physical page as metadata 'page' (1-based)")
    if not matches:
        return PageIdentity(path, None, f"{path} has no page labelled {str(label)!r} "
                            f"(its labels: {_summary(labels)})")
    return PageIdentity(path, matches[0])


def missing_file(source: str | Path) -> str:
    """Why a named PDF cannot be read: it is not a file (with a hint for relative paths)."""
    path = Path(source).expanduser().absolute()
    hint = ("" if Path(source).expanduser().is_absolute() else
            f" ({str(source)!r} is relative to the working directory; Haystack's converters keep "
            "only the file name unless store_full_path=True)")
    return f"{path} is not a file{hint}"


def page_labels(path: str | Path) -> list[str]:
    """The printed label of each physical page of a PDF, from its ``/PageLabels`` (pypdf
    reads them as LlamaIndex's PDFReader does); ``"1", "2", ...`` when it has none."""
    p = Path(path).absolute()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _LABELS_GUARD:
        if key in _LABELS:
            return _LABELS[key]
    try:
        import pypdf
    except ImportError:
        raise ImportError("reading PDF page labels needs pypdf: pip install 'agree[llamaindex]' "
                          "(or pip install pypdf)") from None
    try:
        labels = list(pypdf.PdfReader(str(p)).page_labels)
    except Exception as e:  # noqa: BLE001 - pypdf raises many kinds on broken files
        raise ValueError(f"cannot read the page labels of {p}: {e}") from e
    with _LABELS_GUARD:
        if len(_LABELS) >= _LABELS_MAX:
            _LABELS.pop(next(iter(_LABELS)))
        _LABELS[key] = labels
    return labels


def _source(meta: Mapping[str, Any]) -> tuple[str | None, Any]:
    """``(the PDF path, PyMuPDF's page number or None)``."""
    src, file_path = meta.get("source"), meta.get("file_path")
    if isinstance(file_path, (str, Path)) and str(file_path):
        # PyMuPDFReader: source is the page number next to file_path
        if isinstance(src, int) and not isinstance(src, bool) or isinstance(src, str) and src.strip().isdigit():
            return str(file_path), src
        if isinstance(src, (str, Path)) and str(src) and Path(src).name.lower().endswith(".pdf"):
            return str(src), None
        return str(file_path), None
    if isinstance(src, (str, Path)) and str(src) and not str(src).strip().isdigit():
        return str(src), None
    return None, None


def _number(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _summary(labels: list[str]) -> str:
    shown = ", ".join(labels[:8])
    return shown + (f", ... ({len(labels)} pages)" if len(labels) > 8 else "")


def page_label(source: str | Path, page: int) -> str:
    """The printed label of physical page ``page`` of ``source`` (what LlamaIndex's
    PDFReader puts in ``page_label``); ``str(page)`` when the file cannot be read."""
    try:
        labels = page_labels(source)
    except (OSError, ValueError, ImportError):
        return str(page)
    return labels[page - 1] if 1 <= page <= len(labels) else str(page)
