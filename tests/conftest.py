"""Shared fixtures: PDFs made on the spot, one encoder per test session. No network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # hostile_folder
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite encodes with torch (CLI subprocesses inherit this): the ONNX Runtime path would
# build its graph under ~/.cache, outside tmp_path. tests/test_text_backend.py tests that path.
os.environ.setdefault("AGREE_TEXT_BACKEND", "torch")


def make_pdf(path: Path, pages: list[str], *, size: tuple[float, float] = (612, 792)) -> Path:
    """A PDF with a text layer: one string per page (lines split on newlines)."""
    from hostile_folder import text_pdf

    return text_pdf(path, pages, size=size)


MARKERS = ("aardvark badger camel dolphin elephant flamingo giraffe hedgehog iguana jaguar "
           "kangaroo lemur mongoose narwhal ocelot penguin quokka raccoon salamander tortoise "
           "urchin vulture walrus yak zebra albatross bison cheetah dingo ermine").split()


def marker(page_no: int) -> str:
    """The word that only page ``page_no`` (1-based) of :func:`lorem_pages` contains."""
    return MARKERS[page_no - 1]


def lorem_pages(n: int, topic: str = "page", words: int = 120) -> list[str]:
    """``n`` pages of filler text; page i also names its own animal, :func:`marker` (i)."""
    vocab = ("river bridge lantern orchard granite falcon meadow harbor compass velvet "
             "summit canyon ember glacier willow copper prairie thunder marble").split()
    pages = []
    for i in range(n):
        body = " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words))
        lines = [f"{topic} {i + 1} {marker(i + 1)}"] + [body[k : k + 90] for k in range(0, len(body), 90)]
        pages.append("\n".join(lines))
    return pages


@pytest.fixture
def pdf_factory(tmp_path):
    def factory(name: str, pages: list[str], **kwargs) -> Path:
        return make_pdf(tmp_path / name, pages, **kwargs)

    return factory


@pytest.fixture(scope="session")
def encoder():
    from agree_core.encoders import load_encoder

    return load_encoder("text-layer")


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    from agree_core.samples import build_samples

    return build_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, samples, encoder):
    """An index of the three sample PDFs, built once; tests copy it before changing it."""
    from agree_core.index import PageIndex

    directory = tmp_path_factory.mktemp("sample_index") / "index"
    with PageIndex.open(directory, encoder) as index:
        report = index.add([samples[0].parent], progress=False)
    assert report.ok, report.skipped
    return directory


def copy_index(src: Path, dst: Path) -> Path:
    """A copy of an index folder that keeps its files sparse: the engine preallocates
    segment and write-ahead-log files (mostly holes, ~270 MB apparent per index), which
    ``shutil.copytree`` would write out in full."""
    import shutil

    def sparse_copy(a: str, b: str, *, follow_symlinks: bool = True) -> None:
        with open(a, "rb") as f, open(b, "wb") as g:
            while chunk := f.read(1 << 20):
                if chunk.count(0) == len(chunk):
                    g.seek(len(chunk), 1)  # a hole stays a hole
                else:
                    g.write(chunk)
            g.truncate()
        shutil.copystat(a, b)

    return Path(shutil.copytree(src, dst, copy_function=sparse_copy))


def run_cli(*args: str, timeout: float = 300, **kwargs):
    """Run ``agree`` in a fresh process (the real entry point)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "agree_core.cli", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def cli(*args: str, env: dict[str, str] | None = None):
    """Run ``agree`` in this process: ``agree_core.cli.main(args)`` with its stdout, stderr and
    logging captured, as a :class:`subprocess.CompletedProcess`. About ten times cheaper than
    :func:`run_cli` (torch and the model stay loaded); use :func:`run_cli` where the process is
    what is tested (signals, crashes, the interpreter's stream encodings). ``env`` adds to (does
    not replace) the environment for the call."""
    import contextlib
    import io
    import logging
    import subprocess
    from unittest import mock

    from agree_core.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # main()'s logging.basicConfig then writes to the captured stderr
    out, err = io.StringIO(), io.StringIO()
    try:
        with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse: --help, bad arguments
                code = e.code if isinstance(e.code, int) else 1
    finally:
        for h in root.handlers:
            h.close()
        root.handlers, root.level = handlers, level
    return subprocess.CompletedProcess(["agree", *args], code, out.getvalue(), err.getvalue())


def make_labelled_pdf(path: Path, pages: list[str], ranges: list[tuple[int, int, str, int]]) -> Path:
    """:func:`make_pdf`, with printed page labels: ``ranges`` of ``(first, last, style,
    start)``, 0-based physical pages, style ``/r`` (i, ii), ``/D`` (1, 2), ``/A`` (A, B)."""
    from pypdf import PdfReader, PdfWriter

    make_pdf(path, pages)
    writer = PdfWriter(clone_from=PdfReader(str(path)))
    for first, last, style, start in ranges:
        writer.set_page_label(first, last, style=style, start=start)
    with open(path, "wb") as f:
        writer.write(f)
    return path


BOOK_LABELS = ["i", "ii", "1", "2", "3"]  # a book: front matter in roman numerals, then 1, 2, 3


@pytest.fixture
def book_pdf(tmp_path):
    """A 5-page PDF labelled i, ii, 1, 2, 3; physical page n names :func:`marker` (n)."""
    return make_labelled_pdf(tmp_path / "book.pdf", lorem_pages(5, "book", words=40),
                             [(0, 1, "/r", 1), (2, 4, "/D", 1)])
# Both engines behind PageIndex: the embedded one (a folder) and the server one through
# qdrant-client's local mode (``qdrant-local:PATH``). Local mode speaks the server engine's
# client API but ignores vector datatypes, quantization, HNSW and on-disk settings and builds
# no payload indexes: no test here checks those (tests/test_engines.py says what it checks).
ENGINES = ("edge", "qdrant-local")


@pytest.fixture(params=ENGINES)
def engine_kind(request):
    if request.param == "qdrant-local":
        pytest.importorskip("qdrant_client")
    return request.param


@pytest.fixture
def index_at(tmp_path, engine_kind):
    """``index_at(name)``: where to open an index called ``name`` on the engine under test."""
    def at(name: str = "ix"):
        path = tmp_path / name
        return str(path) if engine_kind == "edge" else f"qdrant-local:{path}"

    return at
