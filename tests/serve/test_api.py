"""The JSON API contract of `agree serve` (routes and fields as issue 12 writes them)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from agree_core.heatmaps import draw_evidence
from agree_core.index import PageIndex
from agree_core.samples import SAMPLE_QUESTIONS
from conftest import make_pdf

HIT_FIELDS = {"source", "page", "score", "image", "evidence", "image_url", "doc_id", "meta"}


def test_health_and_info(http, samples):
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/docs").status_code == 200  # the OpenAPI page
    routes = http.get("/openapi.json").json()["paths"]
    assert {"/health", "/info", "/search", "/documents", "/jobs/{job_id}", "/pages/{page_id}/image",
            "/pages/{page_id}/heatmap", "/pages/{page_id}/evidence"} <= set(routes)
    info = http.get("/info").json()
    assert info["encoder"] == "text-layer" and info["pages"] == 9
    assert {d["source"]: d["pages"] for d in info["documents"]} == {
        str(samples[0]): 3, str(samples[1]): 5, str(samples[2]): 1}


def test_search_one_and_many(http, samples, sample_index):
    by_name = {p.name: str(p) for p in samples}
    got = http.post("/search", json={"query": SAMPLE_QUESTIONS[1][0], "k": 2}).json()
    assert set(got) == {"results"}
    (result,) = got["results"]
    assert set(result) == {"qid", "query", "hits"} and result["qid"] == 1
    assert len(result["hits"]) == 2 and all(set(h) == HIT_FIELDS for h in result["hits"])
    assert (result["hits"][0]["source"], result["hits"][0]["page"]) == (by_name["report.pdf"], 3)

    questions = [q for q, _, _ in SAMPLE_QUESTIONS]
    many = http.post("/search", json={"queries": questions, "k": 3}).json()["results"]
    assert [r["qid"] for r in many] == list(range(1, len(questions) + 1))
    assert [r["query"] for r in many] == questions
    with PageIndex.open(sample_index, create=False) as local:  # the same pages, in this process
        expected = local.search_batch(questions, 3)
    for r, hits in zip(many, expected):
        assert [(h["source"], h["page"], h["score"]) for h in r["hits"]] == [
            (h.source, h.page, h.score) for h in hits]
    # the default k is PageIndex's (10): every page of the 9-page index
    assert len(http.post("/search", json={"query": "parking"}).json()["results"][0]["hits"]) == 9


def test_filters_restrict_the_hits(http, samples):
    slides = str(samples[1])
    hits = http.post("/search", json={"query": "solar site electricity", "k": 3,
                                      "filters": {"source": slides}}).json()["results"][0]["hits"]
    assert hits and {h["source"] for h in hits} == {slides}
    hits = http.post("/search", json={"query": "solar", "k": 9,
                                      "filters": {"page": {"gte": 4}}}).json()["results"][0]["hits"]
    assert {h["page"] for h in hits} == {4, 5}
    bad = http.post("/search", json={"query": "solar", "filters": {"page": {"between": 3}}})
    assert bad.status_code == 400 and "between" in bad.json()["error"]


def test_page_image_heatmap_and_evidence(http):
    hit = http.post("/search", json={"query": SAMPLE_QUESTIONS[0][0], "k": 1}).json()["results"][0]["hits"][0]
    image = http.get(hit["image_url"])
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
    stored = Image.open(hit["image"])
    assert Image.open(io.BytesIO(image.content)).size == stored.size
    page_id = hit["image_url"].split("/")[2]
    heat = http.get(f"/pages/{page_id}/heatmap", params={"query": SAMPLE_QUESTIONS[0][0]})
    assert heat.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(heat.content))
    assert drawn.size == stored.size and drawn.tobytes() != stored.convert("RGB").tobytes()
    # maxsim (the default) draws the hit's evidence boxes, as agree show does
    assert hit["evidence"] and drawn.tobytes() == draw_evidence(stored, hit["evidence"]).tobytes()
    mean = Image.open(io.BytesIO(http.get(f"/pages/{page_id}/heatmap",
                                          params={"query": SAMPLE_QUESTIONS[0][0], "mode": "mean"}).content))
    assert mean.size == stored.size and mean.tobytes() != drawn.tobytes()
    small = Image.open(io.BytesIO(http.get(f"/pages/{page_id}/heatmap",
                                           params={"query": "revenue", "width": 200}).content))
    assert small.width == 200
    ev = http.get(f"/pages/{page_id}/evidence", params={"query": SAMPLE_QUESTIONS[0][0]}).json()
    assert ev["page_id"] == page_id and ev["page"] == hit["page"] and ev["source"] == hit["source"]
    rows, cols = ev["grid"]
    assert len(ev["map"]) == rows and len(ev["map"][0]) == cols
    # MaxSim map cells sum to the token part of the score (window fusion's part has no cell)
    assert 0 < ev["score"] < hit["score"]
    assert ev["best_cells"] and ev["best_cells"][0]["value"] == max(max(r) for r in ev["map"])


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"query": 5}', 422, "query"),
    (b'{"query": "x", "k": 0}', 422, "k"),
    (b'{"query": "x", "k": 100000}', 422, "k"),
    (b'{"query": "x", "k": "3"}', 422, "k"),
    (b'{"query": "x", "queries": ["y"]}', 422, "either"),
    (b'{}', 422, "either"),
    (b'{"queries": []}', 422, "queries"),
    (b'{"query": "   "}', 422, "blank"),
    (b'{"query": "x", "top_k": 3}', 422, "top_k"),
    (b'["query"]', 422, "body"),
])
def test_malformed_search_bodies(http, body, status, words):
    r = http.post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message and "Traceback" not in r.text


def test_malformed_document_bodies(http, tmp_path):
    r = http.post("/documents", content=b"[1, 2", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = http.post("/documents", json={"paths": "one.pdf"})
    assert r.status_code == 422 and "paths" in r.json()["error"]
    r = http.post("/documents", json={"paths": [str(tmp_path / "a.pdf")], "batch_size": 0})
    assert r.status_code == 422 and "batch_size" in r.json()["error"]
    r = http.request("DELETE", "/documents", json={"path": "x.pdf"})
    assert r.status_code == 422 and "source" in r.json()["error"]
    assert http.get("/jobs/nope").status_code == 404


def test_index_by_path_then_delete(http, tmp_path):
    pdf = make_pdf(tmp_path / "new.pdf", ["the narwhal migration schedule", "appendix"])
    job = http.post("/documents", json={"paths": [str(pdf)], "metadata": {"team": "ops"}}).json()["job"]
    state = _wait(http, job)
    assert state["state"] == "done" and state["added"] == [str(pdf)]
    assert (state["pages_done"], state["pages_total"]) == (2, 2) and state["skipped"] == []
    hit = http.post("/search", json={"query": "narwhal migration", "k": 1,
                                     "filters": {"team": "ops"}}).json()["results"][0]["hits"][0]
    assert (hit["source"], hit["page"]) == (str(pdf), 1)
    again = _wait(http, http.post("/documents", json={"paths": [str(pdf)]}).json()["job"])
    assert again["unchanged"] == [str(pdf)] and again["pages_total"] == 0
    gone = http.request("DELETE", "/documents", json={"source": str(pdf)})
    assert gone.json() == {"source": str(pdf), "pages": 2}
    assert http.get("/info").json()["pages"] == 9
    missing = http.request("DELETE", "/documents", json={"source": str(pdf)})
    assert missing.status_code == 404 and "not in the index" in missing.json()["error"]


def test_a_relative_source_is_deleted_under_the_first_allowed_folder(http, tmp_path, monkeypatch):
    """As POST /documents takes a relative path, never against the server's working directory."""
    (tmp_path / "docs").mkdir()
    pdf = make_pdf(tmp_path / "docs" / "kelp.pdf", ["kelp forest survey"])
    assert _wait(http, http.post("/documents", json={"paths": ["docs/kelp.pdf"]}).json()["job"])["added"] == [str(pdf)]
    monkeypatch.chdir(tmp_path / "docs")  # the server's working directory: kelp.pdf is here too
    assert http.request("DELETE", "/documents", json={"source": "kelp.pdf"}).status_code == 404
    gone = http.request("DELETE", "/documents", json={"source": "docs/kelp.pdf"})
    assert gone.status_code == 200 and gone.json()["pages"] == 1


def test_skipped_files_are_reported(http, tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    state = _wait(http, http.post("/documents", json={"paths": [str(tmp_path / "broken.pdf"),
                                                                str(tmp_path / "absent.pdf")]}).json()["job"])
    assert state["state"] == "done" and state["added"] == []
    reasons = {s["path"]: s["reason"] for s in state["skipped"]}
    assert set(reasons) == {str(tmp_path / "broken.pdf"), str(tmp_path / "absent.pdf")}
    assert all(reasons.values())


def test_upload_indexes_the_pdf(http, tmp_path, index_copy):
    pdf = make_pdf(tmp_path / "up load.pdf", ["quokka census results by island"])
    r = http.post("/documents", files=[("files", ("../../up load.pdf", pdf.read_bytes(), "application/pdf"))],
                  data={"metadata": json.dumps({"kind": "upload"})})
    assert r.status_code == 200, r.text
    state = _wait(http, r.json()["job"])
    (source,) = state["added"]
    assert source.startswith(str(index_copy / "uploads") + "/") and source.endswith("-up_load.pdf")
    hit = http.post("/search", json={"query": "quokka census", "k": 1,
                                     "filters": {"kind": "upload"}}).json()["results"][0]["hits"][0]
    assert hit["source"] == source
    not_pdf = http.post("/documents", files=[("files", ("notes.pdf", b"hello", "application/pdf"))])
    assert not_pdf.status_code == 415 and "not a PDF" in not_pdf.json()["error"]
    empty = http.post("/documents", files=[("other", ("a.pdf", b"%PDF-", "application/pdf"))])
    assert empty.status_code == 400 and "files" in empty.json()["error"]


def _wait(http, job: str, timeout: float = 120) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = http.get(f"/jobs/{job}").json()
        if state["state"] in ("done", "failed", "stopped"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not end: {state}")


def test_the_records_routes_are_documented_and_refuse_bad_bodies(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/config", "/queries/vectors", "/records/search", "/records/find", "/records/get",
            "/records/count", "/records/metas", "/records/vectors", "/records/{record_id}/embedding",
            "/records/write", "/records/delete", "/records/delete_all", "/records/update_meta"} <= set(paths)
    assert "get" in paths["/documents"] and {"post", "delete"} <= set(paths["/documents"])
    bad = [
        ("/records/write", {"records": [{"id": "a", "colour": "red"}]}, 400, "unknown field(s) ['colour']"),
        ("/records/write", {"records": [{"id": "a", "blob": "not base64!"}]}, 400, "blob is not base64"),
        ("/records/write", {"records": [{"id": "a", "vectors": [[0.1, 0.2]]}]}, 400, "vectors must be (n >= 1, 385)"),
        ("/records/search", {"query": "x", "vectors": [[0.1]]}, 422, 'either "query"'),
        ("/records/search", {"vectors": {"dtype": "float32", "shape": [2, 385], "data": "AAAA"}}, 400,
         "does not hold float32 values of shape [2, 385]"),
        ("/records/search", {"query": "x", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ("/records/count", {"filters": {"field": "meta.a", "operator": "~", "value": 1}}, 400, "operator"),
        ("/records/delete", {}, 422, 'give "ids" or "filters"'),
    ]
    for path, body, status, message in bad:
        r = http.post(path, json=body)
        assert r.status_code == status and message in r.json()["error"], (path, r.status_code, r.text)
    assert http.post("/records/count", json={"filters": {"field": "meta.a", "operator": "~", "value": 1}}
                     ).json()["code"] == "filter"
    assert http.get("/records/nope/embedding").status_code == 404
