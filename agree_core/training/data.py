"""The training-data format: one JSON object per line, one query and its page.

::

    {"qid": "q1", "query": "What was the 2023 revenue?", "image": "pages/report-p4.png"}
    {"qid": "q2", "query": "Which method is fastest?", "pdf": "papers/survey.pdf", "page": 7,
     "negatives": [{"pdf": "papers/other.pdf", "page": 2}, {"image": "pages/x.png"}],
     "map": "3fa1...e2"}

- ``query``: required, a non-empty string.
- the page: ``"image": PATH``, or ``"pdf": PATH`` with a 1-based ``"page": N``. Relative paths
  are relative to the JSONL file's folder.
- ``qid``: optional (default: the line number).
- ``negatives``: optional, a list of pages in the same two forms.
- ``map``: optional, the key of the example's teacher map in a map cache
  (:class:`agree_core.teacher.cache.MapCache`); without it the map is looked up by query and page.
- ``synthetic`` (true/false) and ``meta`` (any object): optional, carried along, not used.

Unknown keys are an error (a typo such as ``"negative"`` must not silently drop data); blank
lines are skipped. Every error names ``file:line`` and says how to fix it.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from agree_core.pages import Page, PdfError, PdfInfo

T = TypeVar("T")

__all__ = ["DataError", "PageRef", "Example", "read_examples", "parse_example", "check_files",
           "PageLoader", "KNOWN_KEYS"]

KNOWN_KEYS = ("qid", "query", "image", "pdf", "page", "negatives", "map", "synthetic", "meta")
PAGE_KEYS = ("image", "pdf", "page")


class DataError(ValueError):
    """A training file, line or page that cannot be used; the message names where and how to fix it."""


@dataclass(frozen=True)
class PageRef:
    """One page: an image file, or page ``page`` (1-based) of a PDF."""

    image: Path | None = None
    pdf: Path | None = None
    page: int | None = None

    @property
    def where(self) -> str:
        """For people (and as a page's identity in a run): the path, plus the page of a PDF.

        >>> PageRef(pdf=Path("/d/a.pdf"), page=3).where
        '/d/a.pdf page 3'
        """
        return str(self.image) if self.image is not None else f"{self.pdf} page {self.page}"

    @property
    def source(self) -> str:
        """The file's path (what the teacher-map cache records as ``source``)."""
        return str(self.image if self.image is not None else self.pdf)


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line of the JSONL file
    qid: Any
    query: str
    page: PageRef
    negatives: tuple[PageRef, ...] = ()
    map_key: str | None = None


def read_examples(path: str | Path) -> list[Example]:
    """Parse a training JSONL file.

    Raises:
        DataError: the file is missing or empty, or a line is malformed (``file:line: ...``).
    """
    return read_jsonl(path, parse_example, "training examples",
                      '{"query": ..., "pdf": PATH, "page": N} or {"query": ..., "image": PATH}')


def read_jsonl(path: str | Path, parse: Callable[[str, Path, int, str], T], what: str, shape: str) -> list[T]:
    """Each non-blank line of ``path`` through ``parse(line, root, line_no, "file:line")``
    (``root``: the file's folder, where relative paths start); a missing or empty file is a
    :class:`DataError` that names ``what`` the file should hold and its ``shape``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give a JSONL file of {what})")
    root = path.parent.absolute()
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                out.append(parse(line, root, n, f"{path.name}:{n}"))
    if not out:
        raise DataError(f"{path} holds no {what} (one JSON object per line: {shape})")
    return out


def parse_example(line: str, root: Path, n: int, where: str) -> Example:
    """One line of a training file (``root``: the folder relative paths start from;
    ``where``: how errors name the line).

    >>> ex = parse_example('{"query": "revenue?", "pdf": "a.pdf", "page": 2}', Path("/d"), 5, "t:5")
    >>> ex.qid, ex.page.where
    (5, '/d/a.pdf page 2')
    >>> parse_example('{"query": "q", "pdf": "a.pdf", "page": "7"}', Path("/d"), 12, "t:12")
    Traceback (most recent call last):
    ...
    agree_core.training.data.DataError: t:12: "page" must be a 1-based integer, got "7"
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not a JSON object ({e}); write one object per line") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a JSON object (got {type(obj).__name__}); write one "
                        '{"query": ..., ...} object per line')
    _known(obj, KNOWN_KEYS, where)
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise DataError(f'{where}: needs a non-empty "query" string, got {_show(query)}')
    qid = obj.get("qid", n)
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise DataError(f'{where}: "qid" must be a string or an integer, got {_show(qid)}')
    page = _page_ref(obj, root, where)
    negatives = obj.get("negatives", [])
    if not isinstance(negatives, list):
        raise DataError(f'{where}: "negatives" must be a list of pages such as '
                        f'[{{"pdf": PATH, "page": N}}, {{"image": PATH}}], got {_show(negatives)}')
    refs = []
    for i, neg in enumerate(negatives):
        at = f"{where}: negatives[{i}]"
        if not isinstance(neg, dict):
            raise DataError(f'{at} must be an object {{"pdf": PATH, "page": N}} or {{"image": PATH}}, '
                            f"got {_show(neg)}")
        _known(neg, PAGE_KEYS, at)
        refs.append(_page_ref(neg, root, at))
    key = obj.get("map")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise DataError(f'{where}: "map" must be a teacher-map key (a string), got {_show(key)}')
    if not isinstance(obj.get("synthetic", False), bool):
        raise DataError(f'{where}: "synthetic" must be true or false, got {_show(obj["synthetic"])}')
    if not isinstance(obj.get("meta", {}), dict):
        raise DataError(f'{where}: "meta" must be an object, got {_show(obj["meta"])}')
    return Example(n, qid, query, page, tuple(refs), key)


def _known(obj: dict, keys: tuple[str, ...], where: str) -> None:
    for k in obj:
        if k not in keys:
            raise DataError(f'{where}: unknown key "{k}"; the known keys are '
                            + ", ".join(f'"{x}"' for x in keys))


def _page_ref(obj: dict, root: Path, where: str) -> PageRef:
    if "image" in obj and "pdf" in obj:
        raise DataError(f'{where}: give either "image" or "pdf", not both')
    if "image" in obj:
        if "page" in obj:
            raise DataError(f'{where}: "page" goes with "pdf"; an "image" is a single page: drop "page"')
        return PageRef(image=_path(obj, "image", root, where))
    if "pdf" in obj:
        pdf = _path(obj, "pdf", root, where)
        if "page" not in obj:
            raise DataError(f'{where}: "pdf" needs a 1-based integer "page" (e.g. "page": 1)')
        page = obj["page"]
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise DataError(f'{where}: "page" must be a 1-based integer, got {_show(page)}')
        return PageRef(pdf=pdf, page=page)
    raise DataError(f'{where}: give the page as "image": PATH or "pdf": PATH with "page": N')


def _path(obj: dict, key: str, root: Path, where: str) -> Path:
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f'{where}: "{key}" must be a file path (a string), got {_show(value)}')
    return Path(os.path.normpath(root / Path(value).expanduser()))  # absolute stays; "a/../b" -> "b"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)[:80]


def check_files(examples: list[Example]) -> list[str]:
    """One message per image or PDF file that does not exist, naming the lines that use it.

    >>> check_files([Example(3, "q", "q?", PageRef(image=Path("/nowhere/p.png")))])
    ['/nowhere/p.png: image not found (line 3)']
    """
    lines: dict[tuple[str, Path], list[int]] = {}
    for ex in examples:
        for ref in (ex.page, *ex.negatives):
            kind, file = ("image", ref.image) if ref.image is not None else ("PDF", ref.pdf)
            lines.setdefault((kind, file), []).append(ex.line)
    problems = []
    for (kind, file), used in lines.items():
        if not file.is_file():
            used = sorted(set(used))
            more = f" and {len(used) - 5} more" if len(used) > 5 else ""
            problems.append(f"{file}: {kind} not found (line{'s' if len(used) > 1 else ''} "
                            f"{', '.join(map(str, used[:5]))}{more})")
    return problems


class PageLoader:
    """Pages for :class:`PageRef`\\ s, with an LRU cache of recent pages.

    Args:
        render: render PDF pages to images (visual encoders); image refs always hold their image.
        dpi: PDF rendering resolution.
        text: read the PDF text layer (text-layer encoders).
        cache_size: pages kept in memory (a 150-dpi letter page is about 6 MB).
    """

    def __init__(self, render: bool, dpi: int = 150, text: bool = True, cache_size: int = 256):
        if not 10 <= dpi <= 1200:
            raise ValueError(f"dpi must be between 10 and 1200, got {dpi}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.render, self.dpi, self.text, self.cache_size = render, dpi, text, cache_size
        self._pages: OrderedDict[PageRef, Page] = OrderedDict()
        self._pdfs: dict[Path, tuple[PdfInfo, str]] = {}

    def load(self, ref: PageRef) -> Page:
        """The page ``ref`` points to.

        Raises:
            DataError: the file is missing or unreadable, or the PDF has no such page.
        """
        page = self._pages.get(ref)
        if page is not None:
            self._pages.move_to_end(ref)
            return page
        page = self._image_page(ref.image) if ref.image is not None else self._pdf_page(ref)
        if self.cache_size:
            self._pages[ref] = page
            if len(self._pages) > self.cache_size:
                self._pages.popitem(last=False)
        return page

    def _image_page(self, path: Path) -> Page:
        from PIL import Image, UnidentifiedImageError

        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        try:
            with Image.open(path) as im:
                return Page.from_image(im, source=path, dpi=self.dpi)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from e

    def _pdf_page(self, ref: PageRef) -> Page:
        from agree_core.pages import file_sha256, inspect_pdf, iter_pages

        try:
            if ref.pdf not in self._pdfs:
                self._pdfs[ref.pdf] = (inspect_pdf(ref.pdf), file_sha256(ref.pdf))
            info, sha = self._pdfs[ref.pdf]
            if ref.page > info.pages:
                raise DataError(f"{ref.pdf}: has {info.pages} pages, there is no page {ref.page}")
            return next(iter_pages(ref.pdf, dpi=self.dpi, render=self.render, text=self.text,
                                   pages=[ref.page], info=info, sha256=sha))
        except PdfError as e:
            raise DataError(str(e)) from e
