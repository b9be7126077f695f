"""The synthetic multi-region data set of the AGREE experiment (benchmarks/synthetic_regions.py)."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("reportlab")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import synthetic_regions as sr  # noqa: E402

from agree_core.encoders.base import cell_of  # noqa: E402
from agree_core.pages import iter_pages  # noqa: E402
from agree_core.teacher.cache import MapCache  # noqa: E402

SMALL = dict(train_pages=8, train_queries=12, eval_pages=4, eval_queries=6, check=False)


def _lines(path):
    return [json.loads(s) for s in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, sr.build(out, seed=3, **SMALL)


def test_files_and_lines(built):
    out, res = built
    assert sorted(p.name for p in (out / "pdfs").glob("*.pdf")) == ["eval-000.pdf", "train-000.pdf"]
    train, evals = _lines(res["train"]), _lines(res["eval"])
    assert len(train) == 12 and len(evals) == 6
    for line in train + evals:
        assert {"qid", "query", "pdf", "page", "map"} <= set(line)
        assert (out / line["pdf"]).is_file() and 1 <= line["page"] <= 10
    assert len({q["qid"] for q in train + evals}) == 18
    # one positive page per query: an (entity, relation) pair occurs once per split
    regions = _lines(out / "regions.jsonl")
    for split in ("train", "eval"):
        pairs = Counter((r["entity"], r["relation"]) for r in regions if r["split"] == split)
        assert max(pairs.values()) == 1
    # disjoint entities between the splits
    ents = {s: {r["entity"] for r in regions if r["split"] == s} for s in ("train", "eval")}
    assert ents["train"] and ents["eval"] and not ents["train"] & ents["eval"]
    per_page = Counter((r["pdf"], r["page"]) for r in regions)
    assert set(per_page.values()) <= {4, 5, 6}


def test_maps_cover_exactly_the_evidence_words(built):
    out, res = built
    cache = MapCache(out / "maps")
    assert cache.teacher.model == "oracle:synthetic-regions"
    regions = _lines(out / "regions.jsonl")
    for line in _lines(res["train"]) + _lines(res["eval"]):
        m = cache.load(line["map"])
        assert tuple(m.shape) == (32, 24)
        assert set(m.unique().tolist()) == {0.0, 1.0}
        rec = next(r for r in cache.records() if r["key"] == line["map"])
        assert rec["query"] == line["query"] and rec["page"] == line["page"]
        assert rec["source"] == str(out / line["pdf"])
        assert cache.key(line["query"], rec["page_digest"]) == line["map"]
        evidence = next(r for r in regions if r["pdf"] == line["pdf"] and r["page"] == line["page"]
                        and r["box"] == line["meta"]["box"])
        assert evidence["entity"] in line["query"]
        page = next(iter_pages(out / line["pdf"], render=False, pages=[line["page"]]))
        flat = m.flatten()
        in_ones = [w.text for w in page.words if flat[cell_of(w.box, (32, 24))] == 1.0]
        # the evidence region's words, and no other words, sit in the map's 1-cells
        assert Counter(in_ones) == Counter((evidence["heading"] + " " + evidence["text"]).split())


def test_deterministic_and_idempotent(built, tmp_path):
    out, res = built
    again = sr.build(tmp_path / "a", seed=3, **SMALL)
    assert (tmp_path / "a" / "train.jsonl").read_text() == (out / "train.jsonl").read_text()
    assert (tmp_path / "a" / "pdfs" / "eval-000.pdf").read_bytes() == (out / "pdfs" / "eval-000.pdf").read_bytes()
    assert again["train_counts"] == res["train_counts"]
    other = sr.build(tmp_path / "b", seed=4, **SMALL)
    assert Path(other["train"]).read_text() != (out / "train.jsonl").read_text()
    # a complete build with the same parameters is returned as is
    stamp = (tmp_path / "a" / "pdfs" / "train-000.pdf").stat().st_mtime_ns
    assert sr.build(tmp_path / "a", seed=3, **SMALL) == again
    assert (tmp_path / "a" / "pdfs" / "train-000.pdf").stat().st_mtime_ns == stamp


def test_sanity_bm25_only(built):
    out, _ = built
    res = sr.sanity(out, "eval", encoder=False)
    n1, n5 = res["bm25_ndcg@1,@5"]
    assert res["queries"] == 6 and 0 <= n1 <= n5 <= 1


def test_oracle_map_noise():
    import random

    m = sr.oracle_map((0.5, 0.5, 1.0, 1.0), (4, 4), noise=0.1, rng=random.Random(0))
    assert (m[2:, 2:] == 1).all()
    off = m[:2].flatten()
    assert (off >= 0).all() and (off < 0.1).all() and off.std() > 0
