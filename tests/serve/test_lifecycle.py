"""`agree serve` as a process: a held index, SIGTERM in the middle of a job, kill -9."""

from __future__ import annotations

import signal
import time

import httpx

from agree_core.index import PageIndex
from conftest import lorem_pages, make_pdf, marker, run_cli


def _job(url: str, paths: list[str], batch_size: int = 1) -> str:
    r = httpx.post(url + "/documents", json={"paths": paths, "batch_size": batch_size}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["job"]


def _state(url: str, job: str) -> dict:
    return httpx.get(f"{url}/jobs/{job}", timeout=30).json()


def _wait_for(url: str, job: str, predicate, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(url, job)
        if predicate(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job}: {state}")


LONG = 16  # pages of the document a job is stopped in


def test_a_held_index_names_its_holder(index_copy):
    with PageIndex.open(index_copy, create=False):
        out = run_cli("serve", "--index", str(index_copy), "--port", "1")
    assert out.returncode == 4, out.stderr
    assert "busy" in out.stderr and "pytest" in out.stderr  # the holder's command line


def test_sigterm_finishes_the_batch_and_a_rerun_resumes(tmp_path, index_copy, serve_process):
    pdf = make_pdf(tmp_path / "long.pdf", lorem_pages(LONG, topic="section"))
    srv = serve_process(index_copy, "--allow-dir", str(tmp_path)).wait_ready()
    job = _job(srv.url, [str(pdf)])
    reported = _wait_for(srv.url, job, lambda s: s["pages_done"] >= 3)["pages_done"]
    assert srv.stop(signal.SIGTERM) == 0
    stderr = srv.proc.stderr.read()
    assert "closed the index" in stderr and "Traceback" not in stderr
    with PageIndex.open(index_copy, create=False) as index:  # the lock was given back
        (incomplete,) = index.info()["incomplete"]
        assert (incomplete["source"], incomplete["state"]) == (str(pdf), "indexing")

    srv = serve_process(index_copy, "--allow-dir", str(tmp_path)).wait_ready()
    stopped = _state(srv.url, job)  # the job of the earlier run, with its final state
    assert stopped["state"] == "stopped" and stopped["pages_done"] >= reported, stopped
    assert "post the same paths again" in stopped["error"]
    state = _wait_for(srv.url, _job(srv.url, [str(pdf)], 4), lambda s: s["state"] != "queued"
                      and s["state"] != "running")
    assert state["state"] == "done" and state["added"] == [str(pdf)]
    assert 0 < state["pages_total"] <= LONG - reported  # only the pages not written before
    hit = httpx.post(srv.url + "/search", json={"query": f"section {marker(9)}", "k": 1}).json()
    assert (hit["results"][0]["hits"][0]["source"], hit["results"][0]["hits"][0]["page"]) == (str(pdf), 9)


def test_kill_9_loses_nothing_reported_done(tmp_path, index_copy, serve_process):
    small = make_pdf(tmp_path / "small.pdf", ["the ocelot report", "ocelot appendix"])
    long = make_pdf(tmp_path / "long.pdf", lorem_pages(LONG, topic="part"))
    srv = serve_process(index_copy, "--allow-dir", str(tmp_path)).wait_ready()
    first = _job(srv.url, [str(small)])
    done = _wait_for(srv.url, first, lambda s: s["state"] == "done")
    assert done["added"]
    job = _job(srv.url, [str(long)])
    reported = _wait_for(srv.url, job, lambda s: s["pages_done"] >= 4)["pages_done"]
    srv.stop(signal.SIGKILL)

    srv = serve_process(index_copy, "--allow-dir", str(tmp_path)).wait_ready()
    assert _state(srv.url, first) == done  # jobs survive the restart
    interrupted = _state(srv.url, job)
    assert interrupted["state"] == "interrupted" and interrupted["pages_done"] >= reported
    assert "post the same paths again to resume" in interrupted["error"]
    info = httpx.get(srv.url + "/info").json()
    assert {d["source"]: d["pages"] for d in info["documents"]}[str(small)] == 2
    assert [d["source"] for d in info["incomplete"]] == [str(long)]
    state = _wait_for(srv.url, _job(srv.url, [str(long)], 4), lambda s: s["state"] == "done")
    assert 0 < state["pages_total"] <= LONG - reported
    assert httpx.get(srv.url + "/info").json()["pages"] == 9 + 2 + LONG
