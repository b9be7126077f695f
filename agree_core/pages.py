"""PDF files to pages: images rendered by poppler's ``pdftoppm``, text layer with word boxes.

Pages stream in chunks, so a 2,000-page PDF never sits in memory. Every problem with a file
is raised as :class:`PdfError` with a reason a person can act on; callers that process many
files catch it per file and go on.

Poppler runs in child processes with a timeout (killed when it runs out) and an address-space
limit (``prlimit``), called directly rather than through pdf2image, which runs ``pdfinfo``
with no timeout before every render and decodes images before their size can be checked.
Every rendered image's size is read from its header and checked against the pixel budget
before it is decoded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

log = logging.getLogger(__name__)

PAGE_ID_NAMESPACE = uuid.UUID("6d1f0a52-6c1e-4d38-9a53-3f5f0e6b7a11")
MAX_PAGE_SIDE_PT = 14_400.0  # 200 in: the largest page PDF 1.7 allows (annex C); larger pages
# (broken exports) are still rendered, at the dpi that keeps them within MAX_IMAGE_SIDE_PX
MAX_IMAGE_SIDE_PX = 4_000  # renders are scaled down past this, whatever the dpi
# No rendered image beyond this reaches PIL or OCR (PIL's own decompression-bomb guard,
# Image.MAX_IMAGE_PIXELS, is 89 M pixels: ours is below it).
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE_PX * MAX_IMAGE_SIDE_PX
DEFAULT_PAGE_TIMEOUT = 300.0  # seconds a page may take to render (or OCR) before it is stopped
RENDER_MEMORY_BYTES = 2 << 30  # address-space limit of a poppler process (where prlimit exists)
MAX_TIMEOUTS_PER_FILE = 3  # after this many pages of one file ran out of time, its rest fails fast

__all__ = [
    "Word", "Page", "PdfError", "PdfInfo", "file_sha256", "page_id", "inspect_pdf",
    "iter_pages", "require_poppler", "find_pdfs", "check_page_size", "MAX_IMAGE_PIXELS",
    "DEFAULT_PAGE_TIMEOUT",
]


class PdfError(Exception):
    """A file (or, with ``page``, one page of it) that cannot be read; ``code`` is
    machine-readable, str() is for people.

    Codes: ``missing``, ``unreadable``, ``not_pdf``, ``encrypted``, ``empty``, ``corrupt``,
    ``timeout`` (a poppler tool ran past its time), ``page_size``, ``too_large`` (over the
    pixel budget), ``render``, ``ocr``, ``encode``, ``image_write``, ``vector_write``,
    ``failed`` (an unexpected error: a bug, logged with its traceback).
    """

    def __init__(self, path: str | Path, code: str, reason: str, page: int | None = None):
        self.path, self.code, self.reason, self.page = str(path), code, reason, page
        where = f"{path}" if page is None else f"{path} page {page}"
        super().__init__(f"{where}: {reason}")

    def to_json(self) -> dict:
        return {"source": self.path, "page": self.page, "code": self.code, "message": self.reason}


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
    ocr_done: bool = False  # OCR has read this page already: ``words`` are final, even if empty
    error: PdfError | None = None  # iter_pages(skip_bad_pages=True): why this page has no image

    @property
    def id(self) -> str:
        return page_id(self.source, self.sha256, self.page_no)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def render(self, dpi: int, *, timeout: float = DEFAULT_PAGE_TIMEOUT) -> Image.Image:
        """The page rendered anew at ``dpi`` (e.g. for OCR at a higher resolution); a page
        made from an image returns that image."""
        if not self.from_pdf:
            if self.image is None:
                raise ValueError(f"page {self.page_no} of {self.source} has no image")
            return self.image
        return _render(self.source, self.page_no, self.page_no, _safe_dpi(dpi, self), timeout)[0]

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
    sizes: list[tuple[float, float]]  # (width, height) in points as shown (rotation applied)
    encrypted: bool
    rotations: tuple[int, ...] = ()  # /Rotate of each page (0, 90, 180, 270)


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
_ROT_RE = re.compile(r"^Page\s+(\d+) rot:\s+(-?\d+)", re.M)


def inspect_pdf(path: str | Path, *, timeout: float = DEFAULT_PAGE_TIMEOUT) -> PdfInfo:
    """Check that ``path`` is a readable PDF and return its page count and sizes.

    Raises:
        PdfError: missing, not a PDF, encrypted, corrupt, no pages, or poppler's ``pdfinfo``
            ran longer than ``timeout`` seconds.
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
    proc = _poppler(["pdfinfo", "-f", "1", "-l", "1000000", str(path)], path, timeout, "reading it")
    err = proc.stderr.decode("utf-8", "replace").strip()
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        if "page count 0" in err or "last page (0)" in err:
            raise PdfError(path, "empty", "the PDF has no pages")
        if "password" in err.lower():
            raise PdfError(path, "encrypted", "encrypted: the PDF needs a password to open; "
                           "decrypt it first (e.g. `qpdf --decrypt --password=... in out`)")
        raise PdfError(path, "corrupt", f"corrupt or damaged PDF: {_first_line(err)}")
    m = re.search(r"^Pages:\s+(\d+)", out, re.M)
    n_pages = int(m.group(1)) if m else 0
    if n_pages == 0:
        raise PdfError(path, "empty", "the PDF has no pages")
    sizes = {int(p): (float(w), float(h)) for p, w, h in _SIZE_RE.findall(out)}
    if not sizes:
        raise PdfError(path, "corrupt", f"corrupt: {n_pages} pages declared, none readable")
    encrypted = bool(re.search(r"^Encrypted:\s+yes", out, re.M))
    rots = {int(p): int(r) % 360 for p, r in _ROT_RE.findall(out)}
    rotations = tuple(rots.get(p, 0) for p in range(1, n_pages + 1))
    shown = []  # pdfinfo gives the unrotated size; the image and the text layer are rotated
    for p, rot in enumerate(rotations, start=1):
        w, h = sizes.get(p, (0.0, 0.0))
        shown.append((h, w) if rot in (90, 270) else (w, h))
    return PdfInfo(path, n_pages, shown, encrypted, rotations)


def check_page_size(path: str | Path, page_no: int, size: tuple[float, float]) -> None:
    """Raise ``PdfError(page_size)`` for a page whose size pdfinfo cannot read. Any other
    size renders: pages over 200 in at a lower dpi, slivers as what they are."""
    w, h = size
    if w <= 0 or h <= 0:
        raise PdfError(path, "page_size", "the page's size cannot be read", page_no)


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
    skip_bad_pages: bool = False,
    timeout: float = DEFAULT_PAGE_TIMEOUT,
) -> Iterator[Page]:
    """Yield the pages of one PDF in order, ``chunk_size`` pages rendered at a time.

    Args:
        path: the PDF.
        dpi: render resolution (scaled down for pages that would exceed
            ``MAX_IMAGE_SIDE_PX`` pixels on a side).
        render: render page images; ``text``: extract the text layer with word boxes.
        pages: 1-based page numbers to yield (default all), e.g. to resume.
        sha256, info: pass them when already computed.
        skip_bad_pages: a page that cannot be rendered comes as a ``Page`` with ``error``
            set and no image, and the others go on; by default its error is raised.
        timeout: seconds a poppler call may take per page (a chunk that runs out is
            retried page by page, so one pathological page is named on its own).

    A text layer that cannot be read costs the page its text only (logged; OCR may then
    read the image).

    Raises:
        PdfError: before the first page if the file is unusable, or later if a page
            cannot be rendered (unless ``skip_bad_pages``).
    """
    if dpi < 10 or dpi > 1200:
        raise ValueError(f"dpi must be between 10 and 1200, got {dpi}")
    if timeout <= 0:
        raise ValueError(f"the page timeout must be > 0 seconds, got {timeout}")
    path = Path(path).absolute()
    info = info or inspect_pdf(path, timeout=timeout)
    sha256 = sha256 or file_sha256(path)
    wanted = sorted(set(pages)) if pages is not None else list(range(1, info.pages + 1))
    bad = [p for p in wanted if not 1 <= p <= info.pages]
    if bad:
        raise ValueError(f"{path} has {info.pages} pages; cannot yield page(s) {bad[:5]}")
    timeouts = [0]  # pages of this file that ran out of time
    for run in _runs(wanted, chunk_size):
        words = (_text_layer(path, run, timeout, info.rotations)
                 if text and timeouts[0] < MAX_TIMEOUTS_PER_FILE else {})
        images = _render_run(path, run, dpi, info, timeout, timeouts) if render else {}
        for p in run:
            w, h = info.sizes[p - 1]
            got = images.get(p)
            error = got if isinstance(got, PdfError) else None
            if error is not None and not skip_bad_pages:
                raise error
            yield Page(path, sha256, p, w, h, words.get(p, []), None if error else got,
                       dpi if render else 0, error=error)


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


def _safe_dpi(dpi: float, page_size: tuple[float, float] | Page) -> float:
    """``dpi``, or the lower dpi at which the page's longer side is ``MAX_IMAGE_SIDE_PX``
    (rounded down, so a huge poster never exceeds the pixel budget)."""
    w, h = (page_size.width_pt, page_size.height_pt) if isinstance(page_size, Page) else page_size
    side_px = max(w, h) / 72.0 * dpi
    if side_px <= MAX_IMAGE_SIDE_PX:
        return dpi
    return max(0.001, int(dpi * MAX_IMAGE_SIDE_PX / side_px * 1000) / 1000)


def _render_run(path: Path, run: list[int], dpi: int, info: PdfInfo, timeout: float,
                timeouts: list[int]) -> dict[int, Image.Image | PdfError]:
    """Images of the pages of ``run``, or the error that stopped each page. ``timeouts``
    counts the file's pages that ran out of time; past ``MAX_TIMEOUTS_PER_FILE`` the
    others fail at once instead of each waiting for its timeout."""
    out: dict[int, Image.Image | PdfError] = {}
    for p in run:
        try:
            check_page_size(path, p, info.sizes[p - 1])
        except PdfError as e:
            out[p] = e
    normal = [p for p in run if p not in out and _safe_dpi(dpi, info.sizes[p - 1]) == dpi]
    if len(normal) > 1 and normal == list(range(normal[0], normal[-1] + 1)) \
            and timeouts[0] < MAX_TIMEOUTS_PER_FILE:
        try:
            out.update(zip(normal, _render(path, normal[0], normal[-1], dpi, timeout)))
        except PdfError as e:  # retried page by page below, to name only the bad pages
            log.info("%s: retrying pages %d-%d one by one (%s)", path, normal[0], normal[-1],
                     e.reason)
    for p in run:
        if p in out:
            continue
        if timeouts[0] >= MAX_TIMEOUTS_PER_FILE:
            out[p] = PdfError(path, "timeout", f"not tried: {timeouts[0]} pages of this file ran "
                              "out of time already (see --page-timeout)", p)
            continue
        try:  # alone: a retried page, or a huge one rendered at a lower dpi
            out[p] = _render(path, p, p, _safe_dpi(dpi, info.sizes[p - 1]), timeout)[0]
        except PdfError as e:
            out[p] = e
            timeouts[0] += e.code == "timeout"
    return out


def _render(path: Path, first: int, last: int, dpi: float, timeout: float) -> list[Image.Image]:
    """Pages ``first..last`` rendered by ``pdftoppm`` in a child process that is killed
    after ``timeout`` seconds; each image's size is checked before it is decoded."""
    page = first if first == last else None
    what = f"page {first}" if page else f"pages {first}-{last}"
    with tempfile.TemporaryDirectory(prefix="agree-render-") as tmp:
        proc = _poppler(["pdftoppm", "-r", f"{dpi:g}", "-f", str(first), "-l", str(last), str(path),
                         str(Path(tmp) / "p")], path, timeout, f"rendering {what}", page)
        files = {int(f.stem.rsplit("-", 1)[1]): f for f in Path(tmp).glob("p-*.ppm")}
        if proc.returncode != 0 or len(files) != last - first + 1:
            err = _first_line(proc.stderr.decode("utf-8", "replace"))
            if proc.returncode < 0 or "alloc" in err.lower():
                err = f"poppler was stopped ({err}; memory limit {RENDER_MEMORY_BYTES >> 20} MiB)"
            raise PdfError(path, "render", f"cannot be rendered: {err}", page)
        return [_load_image(path, p, files[p]) for p in range(first, last + 1)]


def _load_image(path: Path, page_no: int, file: Path) -> Image.Image:
    """A rendered page, its size checked against the pixel budget before it is decoded."""
    try:
        with Image.open(file) as img:
            w, h = img.size  # read from the header: nothing is decoded yet
            if w * h > MAX_IMAGE_PIXELS:
                raise PdfError(path, "too_large", f"the page renders to {w} x {h} pixels, over "
                               f"the budget of {MAX_IMAGE_PIXELS:,} pixels", page_no)
            if w < 1 or h < 1:
                raise PdfError(path, "render", "poppler rendered an empty image", page_no)
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise PdfError(path, "render", f"the rendered image cannot be read: {e}", page_no) from e


def _poppler(cmd: list[str], path: Path, timeout: float, doing: str,
             page: int | None = None) -> subprocess.CompletedProcess:
    """Run a poppler tool with a memory limit, killed after ``timeout`` seconds."""
    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={RENDER_MEMORY_BYTES}", "--", *cmd]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PdfError(path, "timeout", f"{doing} took longer than {timeout:g} s (stopped; "
                       "see --page-timeout)", page) from e


def _text_layer(path: Path, run: list[int], timeout: float,
                rotations: tuple[int, ...] = ()) -> dict[int, list[Word]]:
    """Words with normalised boxes for the pages of ``run``, via ``pdftotext -bbox``; a run
    that fails is read page by page (unless it ran out of time), and a page that fails has
    no words (logged)."""
    try:
        return _read_text_layer(path, run[0], run[-1], timeout, rotations)
    except PdfError as e:
        if len(run) == 1 or e.code == "timeout":
            log.warning("%s pages %d-%d: the text layer cannot be read (%s); the pages are "
                        "indexed from their images", path, run[0], run[-1], e.reason)
            return {}
    out: dict[int, list[Word]] = {}
    for p in run:
        out.update(_text_layer(path, [p], timeout, rotations))
    return out


def _read_text_layer(path: Path, first: int, last: int, timeout: float,
                     rotations: tuple[int, ...] = ()) -> dict[int, list[Word]]:
    one = first if first == last else None
    proc = _poppler(["pdftotext", "-bbox", "-enc", "UTF-8", "-f", str(first), "-l", str(last),
                     str(path), "-"], path, timeout, "reading the text layer", one)
    if proc.returncode != 0:
        raise PdfError(path, "corrupt", f"text layer of pages {first}-{last} cannot be read: "
                       f"{_first_line(proc.stderr.decode('utf-8', 'replace'))}", one)
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
        p = first + i
        if p <= len(rotations) and rotations[p - 1] in (90, 270):
            w, h = h, w  # pdftotext gives the unrotated size but words where they are shown
        words = []
        if w > 0 and h > 0:
            for el in page:
                t = (el.text or "").strip()
                if not t:
                    continue
                try:
                    x0, y0 = float(el.get("xMin")) / w, float(el.get("yMin")) / h
                    x1, y1 = float(el.get("xMax")) / w, float(el.get("yMax")) / h
                except (TypeError, ValueError):
                    continue
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

    Symlinked folders are not followed (no loops). Paths that do not exist, folders that
    cannot be listed, broken symlinks and file names that are not valid UTF-8 come back as
    errors, so the caller can report them and go on. One path alone (a string) is one path,
    never its characters.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    errors: list[PdfError] = []

    def add(f: Path) -> None:
        if _bad_name(f):
            errors.append(PdfError(printable_path(f), "bad_name", "the file name is not valid "
                                   "UTF-8; rename the file to index it"))
        elif f.is_file():
            files.append(f)
        else:
            errors.append(PdfError(f, "unreadable", "a broken symlink or a symlink loop"))

    for p in map(Path, paths):
        if p.is_dir():
            found: list[Path] = []

            def unlistable(e: OSError) -> None:
                errors.append(PdfError(printable_path(e.filename or p), "unreadable",
                                       f"the folder cannot be listed: {e.strerror}"))

            for root, _dirs, names in os.walk(p.absolute(), onerror=unlistable):
                found.extend(Path(root) / n for n in names if n.lower().endswith(".pdf"))
            for f in sorted(found):
                add(f)
        elif p.is_file():
            add(p.absolute())
        else:
            errors.append(PdfError(printable_path(p.absolute()), "missing", "no such file or folder"))
    seen: set[Path] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, errors


def _bad_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_path(path: str | Path) -> str:
    """``path`` as text that any stream can print (undecodable bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
