"""PDF files to pages: images rendered with poppler (pdf2image), text layer with word boxes.

Pages stream in chunks, so a 2,000-page PDF never sits in memory. Every problem with a file
is raised as :class:`PdfError` with a reason a person can act on; callers that process many
files catch it per file and go on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

log = logging.getLogger(__name__)

PAGE_ID_NAMESPACE = uuid.UUID("6d1f0a52-6c1e-4d38-9a53-3f5f0e6b7a11")
MAX_PAGE_SIDE_PT = 14_400.0  # 200 in: the largest page PDF readers support (PDF 1.7, annex C)
MIN_PAGE_SIDE_PT = 3.0
MAX_IMAGE_SIDE_PX = 4_000  # renders are scaled down past this, whatever the dpi

__all__ = [
    "Word", "Page", "PdfError", "PdfInfo", "file_sha256", "page_id", "inspect_pdf",
    "iter_pages", "require_poppler", "find_pdfs",
]


class PdfError(Exception):
    """A file that cannot be read as a PDF; ``code`` is machine-readable, str() is for people."""

    def __init__(self, path: str | Path, code: str, reason: str):
        self.path, self.code, self.reason = str(path), code, reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Word:
    """One word of the page, with its box normalised to ``[0, 1]`` (x right, y down)."""

    text: str
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1)


@dataclass
class Page:
    source: Path  # absolute path of the PDF
    sha256: str  # of the whole file
    page_no: int  # 1-based
    width_pt: float
    height_pt: float
    words: list[Word] = field(default_factory=list)
    image: Image.Image | None = None  # rendered at ``dpi``
    dpi: int = 0
    from_pdf: bool = True  # False for a page made from an image (no PDF to render again)

    @property
    def id(self) -> str:
        return page_id(self.source, self.sha256, self.page_no)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def render(self, dpi: int) -> Image.Image:
        """The page rendered anew at ``dpi`` (e.g. for OCR at a higher resolution); a page
        made from an image returns that image."""
        if not self.from_pdf:
            if self.image is None:
                raise ValueError(f"page {self.page_no} of {self.source} has no image")
            return self.image
        return _render(self.source, self.page_no, self.page_no, _safe_dpi(dpi, self))[0]

    @classmethod
    def from_image(cls, image: Image.Image, source: str | Path = "", page_no: int = 1,
                   dpi: int = 100) -> "Page":
        """A page that exists only as an image (a screenshot, a scan, a node's image)."""
        if image.width < 1 or image.height < 1:
            raise ValueError(f"the page image is empty ({image.width} x {image.height} pixels)")
        image = image.convert("RGB")
        return cls(Path(source), "", page_no, image.width * 72 / dpi, image.height * 72 / dpi,
                   [], image, dpi, from_pdf=False)


@dataclass(frozen=True)
class PdfInfo:
    path: Path
    pages: int
    sizes: list[tuple[float, float]]  # (width, height) in points, per page
    encrypted: bool


def page_id(source: str | Path, sha256: str, page_no: int) -> str:
    """Stable id of a page: the same file at the same path always gives the same ids."""
    return str(uuid.uuid5(PAGE_ID_NAMESPACE, f"{Path(source)}\x00{sha256}\x00{page_no}"))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_poppler() -> None:
    missing = [t for t in ("pdfinfo", "pdftotext", "pdftoppm") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"poppler is not installed ({', '.join(missing)} not found on PATH): "
            "install it with `apt-get install poppler-utils` (Debian/Ubuntu), "
            "`brew install poppler` (macOS) or `conda install -c conda-forge poppler`"
        )


_SIZE_RE = re.compile(r"^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts", re.M)


def inspect_pdf(path: str | Path) -> PdfInfo:
    """Check that ``path`` is a readable PDF and return its page count and sizes.

    Raises:
        PdfError: missing, not a PDF, encrypted, corrupt, no pages, or absurd page size.
    """
    require_poppler()
    path = Path(path)
    if not path.is_file():
        raise PdfError(path, "missing", "file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise PdfError(path, "unreadable", f"cannot be read: {e.strerror}") from e
    if b"%PDF-" not in head:
        raise PdfError(path, "not_pdf", "not a PDF file (no %PDF- header in its first 1 KiB)")
    proc = subprocess.run(
        ["pdfinfo", "-f", "1", "-l", "1000000", str(path)], capture_output=True, text=True,
        errors="replace",
    )
    err = proc.stderr.strip()
    if proc.returncode != 0:
        if "page count 0" in err or "last page (0)" in err:
            raise PdfError(path, "empty", "the PDF has no pages")
        if "password" in err.lower():
            raise PdfError(path, "encrypted", "encrypted: the PDF needs a password to open; "
                           "decrypt it first (e.g. `qpdf --decrypt --password=... in out`)")
        raise PdfError(path, "corrupt", f"corrupt or damaged PDF: {_first_line(err)}")
    m = re.search(r"^Pages:\s+(\d+)", proc.stdout, re.M)
    n_pages = int(m.group(1)) if m else 0
    if n_pages == 0:
        raise PdfError(path, "empty", "the PDF has no pages")
    sizes = {int(p): (float(w), float(h)) for p, w, h in _SIZE_RE.findall(proc.stdout)}
    if len(sizes) != n_pages:
        raise PdfError(path, "corrupt", f"corrupt: {n_pages} pages declared, "
                       f"{len(sizes)} readable")
    for p, (w, h) in sorted(sizes.items()):
        if max(w, h) > MAX_PAGE_SIDE_PT or min(w, h) < MIN_PAGE_SIDE_PT:
            raise PdfError(path, "page_size", f"page {p} is {w:g} x {h:g} pt; pages must be "
                           f"between {MIN_PAGE_SIDE_PT:g} and {MAX_PAGE_SIDE_PT:g} pt a side")
    encrypted = bool(re.search(r"^Encrypted:\s+yes", proc.stdout, re.M))
    return PdfInfo(path, n_pages, [sizes[p] for p in range(1, n_pages + 1)], encrypted)


def iter_pages(
    path: str | Path,
    *,
    dpi: int = 100,
    render: bool = True,
    text: bool = True,
    pages: list[int] | None = None,
    chunk_size: int = 8,
    sha256: str | None = None,
    info: PdfInfo | None = None,
) -> Iterator[Page]:
    """Yield the pages of one PDF in order, ``chunk_size`` pages rendered at a time.

    Args:
        path: the PDF.
        dpi: render resolution (scaled down for pages that would exceed
            ``MAX_IMAGE_SIDE_PX`` pixels on a side).
        render: render page images; ``text``: extract the text layer with word boxes.
        pages: 1-based page numbers to yield (default all), e.g. to resume.
        sha256, info: pass them when already computed.

    Raises:
        PdfError: before the first page if the file is unusable, or later if a page
            cannot be rendered (a damaged page stream).
    """
    if dpi < 10 or dpi > 1200:
        raise ValueError(f"dpi must be between 10 and 1200, got {dpi}")
    path = Path(path).absolute()
    info = info or inspect_pdf(path)
    sha256 = sha256 or file_sha256(path)
    wanted = sorted(set(pages)) if pages is not None else list(range(1, info.pages + 1))
    bad = [p for p in wanted if not 1 <= p <= info.pages]
    if bad:
        raise ValueError(f"{path} has {info.pages} pages; cannot yield page(s) {bad[:5]}")
    for run in _runs(wanted, chunk_size):
        first, last = run[0], run[-1]
        words = _text_layer(path, first, last) if text else {}
        images = _render_run(path, run, dpi, info) if render else {}
        for p in run:
            w, h = info.sizes[p - 1]
            yield Page(path, sha256, p, w, h, words.get(p, []), images.get(p),
                       dpi if render else 0)


def _runs(numbers: list[int], size: int) -> Iterator[list[int]]:
    """Consecutive runs of page numbers, at most ``size`` long."""
    run: list[int] = []
    for n in numbers:
        if run and (n != run[-1] + 1 or len(run) == size):
            yield run
            run = []
        run.append(n)
    if run:
        yield run


def _safe_dpi(dpi: int, page_size: tuple[float, float] | Page) -> int:
    w, h = (page_size.width_pt, page_size.height_pt) if isinstance(page_size, Page) else page_size
    side_px = max(w, h) / 72.0 * dpi
    return dpi if side_px <= MAX_IMAGE_SIDE_PX else max(1, int(dpi * MAX_IMAGE_SIDE_PX / side_px))


def _render_run(path: Path, run: list[int], dpi: int, info: PdfInfo) -> dict[int, Image.Image]:
    out: dict[int, Image.Image] = {}
    normal = [p for p in run if _safe_dpi(dpi, info.sizes[p - 1]) == dpi]
    if normal:
        for p, img in zip(range(normal[0], normal[-1] + 1), _render(path, normal[0], normal[-1], dpi)):
            out[p] = img
    for p in run:
        if p not in out:  # a huge page: rendered alone at a lower dpi
            out[p] = _render(path, p, p, _safe_dpi(dpi, info.sizes[p - 1]))[0]
    return out


def _render(path: Path, first: int, last: int, dpi: int) -> list[Image.Image]:
    from pdf2image import convert_from_path
    from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError

    try:
        images = convert_from_path(str(path), dpi=dpi, first_page=first, last_page=last)
    except (PDFPageCountError, PDFSyntaxError) as e:
        raise PdfError(path, "corrupt", f"pages {first}-{last} cannot be rendered: {e}") from e
    if len(images) != last - first + 1:
        raise PdfError(path, "corrupt", f"pages {first}-{last} cannot be rendered "
                       f"(poppler returned {len(images)} of {last - first + 1} images)")
    return [img.convert("RGB") for img in images]


def _text_layer(path: Path, first: int, last: int) -> dict[int, list[Word]]:
    """Words with normalised boxes for pages ``first..last``, via ``pdftotext -bbox``."""
    proc = subprocess.run(
        ["pdftotext", "-bbox", "-enc", "UTF-8", "-f", str(first), "-l", str(last), str(path), "-"],
        capture_output=True,
    )
    if proc.returncode != 0:
        raise PdfError(path, "corrupt", f"text layer of pages {first}-{last} cannot be read: "
                       f"{_first_line(proc.stderr.decode('utf-8', 'replace'))}")
    xml = proc.stdout.decode("utf-8", "replace")
    start = xml.find("<doc>")
    end = xml.rfind("</doc>")
    if start < 0 or end < 0:
        return {}
    try:
        doc = ET.fromstring(_strip_invalid_xml(xml[start : end + len("</doc>")]))
    except ET.ParseError as e:
        log.warning("%s: text layer of pages %d-%d is unreadable (%s); indexing them without text",
                    path, first, last, e)
        return {}
    out: dict[int, list[Word]] = {}
    for i, page in enumerate(doc.iter("page")):
        w, h = float(page.get("width", 0)), float(page.get("height", 0))
        words = []
        if w > 0 and h > 0:
            for el in page:
                t = (el.text or "").strip()
                if not t:
                    continue
                x0, y0 = float(el.get("xMin")) / w, float(el.get("yMin")) / h
                x1, y1 = float(el.get("xMax")) / w, float(el.get("yMax")) / h
                words.append(Word(t, (_clip(x0), _clip(y0), _clip(x1), _clip(y1))))
        out[first + i] = words
    return out


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))


_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _strip_invalid_xml(s: str) -> str:
    return _INVALID_XML.sub("", s)


def _first_line(s: str) -> str:
    lines = [ln for ln in s.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def find_pdfs(paths: list[str | Path]) -> tuple[list[Path], list[PdfError]]:
    """Files given, plus ``*.pdf`` files under folders (recursive, sorted), as absolute paths.

    Paths that do not exist come back as errors, so the caller can report them and go on.
    One path alone (a string) is one path, never its characters.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    errors: list[PdfError] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f.absolute() for f in p.rglob("*") if f.is_file()
                                and f.suffix.lower() == ".pdf"))
        elif p.is_file():
            files.append(p.absolute())
        else:
            errors.append(PdfError(p.absolute(), "missing", "no such file or folder"))
    seen: set[Path] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, errors
