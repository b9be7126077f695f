"""Searches answered while a job indexes: never waiting for the whole document, never
seeing a half-indexed one."""

from __future__ import annotations

import time

from conftest import lorem_pages, make_pdf, marker


def test_searches_during_a_job(http, tmp_path):
    pdf = make_pdf(tmp_path / "long.pdf", lorem_pages(30, topic="chapter"))
    job = http.post("/documents", json={"paths": [str(pdf)], "batch_size": 2}).json()["job"]
    started = time.monotonic()
    during = []  # (pages done when the answer came, sources in the answer, seconds)
    while True:
        t0 = time.monotonic()
        r = http.post("/search", json={"query": f"chapter {marker(7)}", "k": 3})
        elapsed = time.monotonic() - t0
        assert r.status_code == 200, r.text
        state = http.get(f"/jobs/{job}").json()
        if state["state"] != "running":
            break
        during.append((state["pages_done"], {h["source"] for h in r.json()["results"][0]["hits"]}, elapsed))
    job_seconds = time.monotonic() - started
    assert state["state"] == "done" and state["pages_done"] == 30, state
    partial = [d for d in during if 0 < d[0] < 30]
    assert partial, f"no search was answered in the middle of the job ({during})"
    assert all(str(pdf) not in sources for _, sources, _ in during)  # unfinished: invisible
    assert max(s for _, _, s in during) < job_seconds / 2  # no read waited for the document
    hits = http.post("/search", json={"query": f"chapter {marker(7)}", "k": 1}).json()["results"][0]["hits"]
    assert (hits[0]["source"], hits[0]["page"]) == (str(pdf), 7)


def test_delete_between_batches_and_conflict(http, tmp_path, samples):
    from serve.test_api import _wait

    pdf = make_pdf(tmp_path / "long.pdf", lorem_pages(30))
    job = http.post("/documents", json={"paths": [str(pdf)], "batch_size": 1}).json()["job"]
    while (state := http.get(f"/jobs/{job}").json())["state"] == "queued" or state["pages_done"] < 1:
        time.sleep(0.02)
    # another document goes at once, between two batches, not after the job...
    gone = http.request("DELETE", "/documents", json={"source": str(samples[2])})
    assert gone.json()["pages"] == 1
    # ...but not the document the job is writing
    busy = http.request("DELETE", "/documents", json={"source": str(pdf)})
    assert busy.status_code == 409 and "being indexed" in busy.json()["error"]
    assert http.get(f"/jobs/{job}").json()["pages_done"] < 30
    assert _wait(http, job)["state"] == "done"
    assert http.get("/info").json()["pages"] == 9 - 1 + 30
