"""kill -9 in the middle of `agree index`, and `agree search` while indexing runs."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from agree_core.index import PageIndex
from conftest import cli, lorem_pages, make_pdf, marker, run_cli

N_FILES, N_PAGES = 6, 8


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "pdfs"
    d.mkdir()
    for i in range(N_FILES):
        make_pdf(d / f"doc{i}.pdf", lorem_pages(N_PAGES, topic=f"doc{i}", words=200))
    return d


def start_indexing(folder, directory):
    return subprocess.Popen([sys.executable, "-m", "agree_core.cli", "-q", "index", str(folder),
                             "--index", str(directory), "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def states(directory):
    path = directory / "catalog.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return [r[0] for r in db.execute("SELECT state FROM documents")]
    except sqlite3.OperationalError:
        return []


def wait_for(condition, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"indexing ended before the test could act: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out")
        time.sleep(0.05)


def test_kill_9_during_indexing_loses_nothing_and_a_rerun_completes(tmp_path, folder):
    directory = tmp_path / "ix"
    proc = start_indexing(folder, directory)
    # kill once two documents are done and a third is half-way
    wait_for(lambda: states(directory).count("ready") >= 2 and "indexing" in states(directory), proc)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with PageIndex.open(directory) as index:
        info = index.info()
        committed = index.engine.count()
        ready_pages = info["pages"]
        assert ready_pages >= 2 * N_PAGES and ready_pages % N_PAGES == 0
        assert committed >= ready_pages  # pages of the unfinished document are kept too
        assert committed < N_FILES * N_PAGES
        hits = index.search(f"doc0 {marker(3)}", k=3)
        assert (os.path.basename(hits[0].source), hits[0].page) == ("doc0.pdf", 3)

    rerun = run_cli("index", str(folder), "--index", str(directory))
    assert rerun.returncode == 0, rerun.stderr
    encoded_now = int(re.search(r"indexed (\d+) pages", rerun.stderr).group(1))
    assert encoded_now == N_FILES * N_PAGES - committed  # nothing committed was redone

    with PageIndex.open(directory) as index:
        info = index.info()
        assert info["pages"] == N_FILES * N_PAGES and info["incomplete"] == []
        assert index.engine.count() == N_FILES * N_PAGES
        hits = index.search(f"doc5 {marker(8)}", k=1)
        assert (os.path.basename(hits[0].source), hits[0].page) == ("doc5.pdf", 8)
        assert all(os.path.exists(h.image) for h in index.search("animal", k=20))


def test_search_while_indexing_is_busy_then_waits(tmp_path, folder):
    directory = tmp_path / "ix"
    proc = start_indexing(folder, directory)
    try:
        wait_for(lambda: "indexing" in states(directory), proc)
        busy = cli("search", "--index", str(directory), marker(1))  # in this process: at once
        assert busy.returncode == 4
        assert f"is busy: process {proc.pid}" in busy.stderr and "--wait" in busy.stderr
        waited = cli("search", "--index", str(directory), f"doc5 {marker(2)}", "--json", "--wait", "300")
        assert waited.returncode == 0, waited.stderr
        assert states(directory) == ["ready"] * N_FILES  # it opened the index once indexing was done
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0
    assert '"page": 2' in waited.stdout and "doc5.pdf" in waited.stdout
