"""A folder of hostile PDFs (benchmarks/hostile_folder.py) indexes to the end: every readable
page in, every bad file or page named with a reason, failures isolated per page and retried."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from agree_core.index import PageIndex, ingest
from agree_core.index.images import ImageStore
from agree_core.pages import PdfError, find_pdfs, iter_pages

from conftest import cli, lorem_pages, make_pdf, marker, run_cli

pytest.importorskip("pikepdf")
import hostile_folder  # noqa: E402


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """The hostile folder, built once, and one CLI run of `agree index` over it (and a rerun)."""
    root = tmp_path_factory.mktemp("hostile")
    folder = hostile_folder.build(root / "in", copies=1)
    index = root / "ix"
    first = run_cli("index", str(folder), "--index", str(index), "--report", str(root / "r1.jsonl"),
                    timeout=1200)
    again = run_cli("index", str(folder), "--index", str(index), "--report", str(root / "r2.jsonl"),
                    timeout=1200)
    info = json.loads(run_cli("info", "--index", str(index), "--json").stdout)
    yield folder, first, again, info, root
    for f in folder.rglob("*"):  # let pytest clean up the unreadable file
        if f.is_file() and not f.is_symlink():
            f.chmod(stat.S_IRUSR | stat.S_IWUSR)


def _report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_hostile_folder_indexes_to_the_end(hostile):
    folder, first, again, info, root = hostile
    assert first.returncode == 3, first.stderr
    assert "Traceback" not in first.stderr
    indexed = {Path(d["source"]).name: d["pages"] for d in info["documents"]}
    named = {}
    for r in _report(root / "r1.jsonl"):
        named[Path(os.fsencode(r["source"]).decode("utf-8", "backslashreplace")).name] = r
        assert r["code"] and r["message"]
        line = "skipped: " if r["page"] is None else "failed: "
        assert line + r["source"] in first.stderr  # named on stderr too
    for name, what in hostile_folder.EXPECT.items():
        if name.startswith("junk"):
            continue
        shown = name.replace("\udce9", "\\xe9")
        if what == "indexed":
            assert name in indexed and name not in named, (name, named.get(name))
        elif what == "skipped":
            assert shown in named and named[shown]["page"] is None, name
        else:  # either: indexed or named, never lost
            assert name in indexed or shown in named, name
    assert named["encrypted_user.pdf"]["code"] == "encrypted"
    assert named["zero_pages.pdf"]["code"] == "empty"
    assert named["not_a_pdf.pdf"]["code"] == named["empty.pdf"]["code"] == "not_pdf"
    assert named["link_a.pdf"]["code"] == "unreadable"
    assert named["caf\\xe9_latin1.pdf"]["code"] == "bad_name"
    assert indexed["one_sliver_page.pdf"] == 2 and indexed["absurd_mediabox.pdf"] == 1
    assert not Path("/tmp/agree-launched").exists()  # the launch action never ran


def test_a_rerun_adds_nothing_and_names_the_same_files(hostile):
    folder, first, again, info, root = hostile
    assert again.returncode == 3, again.stderr
    assert "indexed 0 pages" in again.stderr and "Traceback" not in again.stderr
    key = lambda r: (r["source"], r["page"], r["code"])  # noqa: E731
    assert sorted(map(key, _report(root / "r2.jsonl"))) == sorted(map(key, _report(root / "r1.jsonl")))


def test_scans_are_read_by_ocr_and_rotated_pages_by_their_text_layer(hostile):
    folder, first, again, info, root = hostile
    with PageIndex.open(root / "ix", create=False) as index:
        for query, name in (("scanned invoice number", "scan_jpeg.pdf"),
                            ("fax cover sheet", "scan_ccitt.pdf"),
                            ("rotated by 270 degrees", "rotated_270.pdf")):
            assert Path(index.search(query, k=1)[0].source).name == name


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_rotated_pages_have_their_word_boxes_where_the_image_shows_the_words(tmp_path, angle):
    pdf = hostile_folder.text_pdf(tmp_path / "r.pdf", ["marker"], rotate=angle)
    (page,) = iter_pages(pdf, dpi=50)
    (word,) = page.words
    gray = np.asarray(page.image.convert("L"))  # (rows, cols)
    h, w = gray.shape
    x0, y0, x1, y1 = word.box
    inside = gray[int(y0 * h):int(np.ceil(y1 * h)) + 1, int(x0 * w):int(np.ceil(x1 * w)) + 1]
    assert inside.size and inside.min() < 128  # ink inside the box
    assert (gray < 128).sum() <= (inside < 128).sum() + 2  # and nowhere else


def test_symlink_loops_and_unlistable_folders_are_named_not_followed(tmp_path):
    make_pdf(tmp_path / "a.pdf", ["a"])
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "back").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "dangling.pdf").symlink_to(tmp_path / "gone.pdf")
    files, errors = find_pdfs([tmp_path])
    assert files == [tmp_path / "a.pdf"]
    assert [(Path(e.path).name, e.code) for e in errors] == [("dangling.pdf", "unreadable")]


def _hanging_pdftoppm(tmp_path, monkeypatch, pattern: str) -> None:
    """Put a ``pdftoppm`` on PATH that hangs when its arguments match the shell ``pattern``
    and runs the real one otherwise."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pdftoppm"
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in {pattern}) exec sleep 600;; esac\n"
                    f"exec {shutil.which('pdftoppm')} \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_page_that_renders_too_long_is_stopped_and_the_others_go_on(tmp_path, monkeypatch):
    """pdftoppm hangs on page 2: it is killed after the timeout, page 2 is named, pages 1
    and 3 are indexed."""
    pdf = make_pdf(tmp_path / "slow.pdf", lorem_pages(3))
    _hanging_pdftoppm(tmp_path, monkeypatch, '*"-f 2 "*|*"-f 1 -l 3 "*')
    with PageIndex.open(tmp_path / "ix") as index:
        report = index.add([pdf], progress=False, page_timeout=5)
        (failed,) = report.failed_pages
        assert (failed.page, failed.code) == (2, "timeout")
        assert "rendering page 2 took longer than 5 s" in failed.reason
        assert report.pages == 2 and {h.page for h in index.search(marker(3), k=3)} >= {3}
        assert index.info()["failed_pages"] == [failed.to_json()]


def test_a_file_whose_pages_all_hang_fails_fast_after_three(tmp_path, monkeypatch):
    pdf = make_pdf(tmp_path / "stuck.pdf", lorem_pages(6))
    _hanging_pdftoppm(tmp_path, monkeypatch, "*")
    start = time.monotonic()
    pages = list(iter_pages(pdf, skip_bad_pages=True, timeout=1))
    assert [p.error.code for p in pages] == ["timeout"] * 6
    assert all("took longer than 1 s" in p.error.reason for p in pages[:3])
    assert all("not tried: 3 pages of this file ran out of time" in p.error.reason for p in pages[3:])
    assert time.monotonic() - start < 30  # a chunk and three pages, not six


def _fail_on(page_no: int, error: Exception):
    def check(pages):
        if any(p.page_no == page_no for p in pages):
            raise error
    return check


@pytest.mark.parametrize("stage", ["encode", "image_write", "vector_write"])
def test_a_failing_stage_costs_one_page_which_the_next_add_retries(tmp_path, encoder, monkeypatch,
                                                                   caplog, stage):
    pdf = make_pdf(tmp_path / "doc.pdf", lorem_pages(4))
    faults = {"on": True}
    real_encode, real_save = type(encoder).encode_pages, ImageStore.save

    def encode(self, pages):
        if faults["on"] and stage == "encode":
            _fail_on(2, RuntimeError("encoder bug"))(pages)
        return real_encode(self, pages)

    def save(self, doc_id, page_no, image):
        if faults["on"] and stage == "image_write" and page_no == 2:
            raise OSError(28, "No space left on device")
        return real_save(self, doc_id, page_no, image)

    real_records = ingest._points

    def records(index, plan, pages, embeddings):
        out = real_records(index, plan, pages, embeddings)
        if faults["on"] and stage == "vector_write" and any(p.page_no == 2 for p in pages):
            return [*out[:-1], None]  # a record the engine cannot take
        return out

    monkeypatch.setattr(type(encoder), "encode_pages", encode)
    monkeypatch.setattr(ImageStore, "save", save)
    monkeypatch.setattr(ingest, "_points", records)
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        report = index.add([pdf], batch_size=4, progress=False)
        (failed,) = report.failed_pages
        assert (failed.page, failed.code) == (2, stage) and report.pages == 3
        assert report.added == [str(pdf)] and not report.skipped
        assert index.search(marker(3), k=1)[0].page == 3  # the rest is searchable
        info = index.info()
        assert info["pages"] == 3 and info["failed_pages"][0]["page"] == 2
        if stage != "image_write":  # an unexpected error: logged with its traceback
            assert any(r.levelname == "WARNING" and r.exc_info for r in caplog.records)
        faults["on"] = False
        again = index.add([pdf], progress=False)
        assert again.pages == 1 and not again.failed_pages and again.ok
        assert index.info()["pages"] == 4 and index.info()["failed_pages"] == []
        assert index.search(marker(2), k=1)[0].page == 2
        assert index.add([pdf], progress=False).unchanged == [str(pdf)]


def test_a_file_none_of_whose_pages_can_be_indexed_is_skipped_whole(tmp_path, encoder, monkeypatch):
    pdf = make_pdf(tmp_path / "doc.pdf", lorem_pages(2))
    monkeypatch.setattr(ImageStore, "save", lambda *a: (_ for _ in ()).throw(OSError(13, "denied")))
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        report = index.add([pdf], progress=False)
        (skipped,) = report.skipped
        assert skipped.code == "image_write" and "no page could be indexed (page 1:" in skipped.reason
        assert index.info()["documents"] == [] and index.info()["incomplete"] == []


def test_cli_index_options_and_info_show_failed_pages(tmp_path, monkeypatch):
    out = cli("index", str(tmp_path), "--index", str(tmp_path / "ix"), "--page-timeout", "0")
    assert out.returncode == 2 and "--page-timeout must be > 0 seconds, got 0" in out.stderr
    pdf = make_pdf(tmp_path / "doc.pdf", ["hangs", "fine page"])
    _hanging_pdftoppm(tmp_path, monkeypatch, '*"-f 1 "*')
    out = cli("index", str(pdf), "--index", str(tmp_path / "ix"), "--report",
              str(tmp_path / "r.jsonl"), "--page-timeout", "3")
    assert out.returncode == 3, out.stderr
    message = "rendering page 1 took longer than 3 s (stopped; see --page-timeout)"
    assert f"failed: {pdf} page 1: {message} [timeout]" in out.stderr
    assert "indexed 1 pages from 1 files; 0 files unchanged; 0 files skipped; 1 pages failed" in out.stderr
    assert _report(tmp_path / "r.jsonl") == [{"source": str(pdf), "page": 1, "code": "timeout",
                                              "message": message}]
    info = cli("info", "--index", str(tmp_path / "ix"))
    assert f"{pdf} page 1: {message}" in info.stdout and "retried by the next" in info.stdout
    js = json.loads(cli("info", "--index", str(tmp_path / "ix"), "--json").stdout)
    assert js["pages"] == 1 and js["failed_pages"][0]["code"] == "timeout"
    monkeypatch.undo()  # the real pdftoppm again: the rerun indexes the page that failed
    again = cli("index", str(pdf), "--index", str(tmp_path / "ix"))
    assert again.returncode == 0 and "indexed 1 pages from 1 files" in again.stderr, again.stderr
    js = json.loads(cli("info", "--index", str(tmp_path / "ix"), "--json").stdout)
    assert js["pages"] == 2 and js["failed_pages"] == []
