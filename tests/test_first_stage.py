"""The MUVERA first stage of large searches (agree_core.index.first_stage): the encoding,
both engines' dense HNSW vector, the search path above the page threshold, old indexes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agree_core.index import PageIndex
from agree_core.index import page_index as page_index_module
from agree_core.index.first_stage import DEFAULT_GRAPH, FDE, Muvera, muvera_of
from conftest import copy_index, lorem_pages, make_pdf, marker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qdrant_mock import OPENAPI, MockQdrant, Schema  # noqa: E402


def _clustered_pages(rng, n_pages=300, n_vec=40, dim=64):
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    pages = []
    for _ in range(n_pages):
        v = centres[rng.integers(50, size=n_vec)] + 0.3 * rng.standard_normal((n_vec, dim)).astype(np.float32)
        pages.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return pages


def test_encodings_rank_like_maxsim():
    rng = np.random.default_rng(7)
    pages = _clustered_pages(rng)
    m = Muvera(64, k_sim=3, dim_proj=16, reps=10)
    docs = m.encode_documents(pages)
    hits = 0
    for page in pages[:30]:  # a query made of a page's own vectors: that page is the best MaxSim
        q = page[rng.choice(len(page), 8, replace=False)]
        exact = np.array([(p @ q.T).max(axis=0).sum() for p in pages])
        fde = docs @ m.encode_query(q)
        hits += int(np.argmax(exact) in np.argsort(-fde)[:10])
    assert hits >= 27  # the exact best page is among the encodings' top 10 (of 300)
    assert docs.shape == (300, m.size) == (300, 10 * 8 * 16)


def test_encoding_is_deterministic_and_checks_its_input():
    v = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    assert np.array_equal(Muvera(32, k_sim=2, dim_proj=8, reps=2).encode_document(v),
                          Muvera(32, k_sim=2, dim_proj=8, reps=2).encode_document(v))
    assert not Muvera(32, k_sim=2, dim_proj=8, reps=2).encode_document(np.zeros((0, 32))).any()
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        Muvera(32, k_sim=2, dim_proj=8, reps=2).encode_query(np.zeros((3, 16)))
    with pytest.raises(ValueError, match="dim_proj"):
        Muvera(8, dim_proj=16)


def test_large_index_searches_through_the_encodings_and_finds_the_exact_top(
        tmp_path, sample_index, encoder, monkeypatch):
    index_dir = copy_index(sample_index, tmp_path / "ix")
    with PageIndex.open(index_dir, encoder) as index:
        assert index.config.first_stage["kind"] == "muvera"
        n = index.engine.count()
        queries = ["solar panel output", "quarterly revenue", "parking"]
        exact = index.search_batch(queries, k=3, candidates=0)
        calls = []
        real = index.engine.search_batch
        monkeypatch.setattr(index.engine, "search_batch",
                            lambda *a, **kw: calls.append(kw) or real(*a, **kw))
        monkeypatch.setattr(page_index_module, "FIRST_STAGE_MIN_PAGES", n - 1)  # "large"
        fast = index.search_batch(queries, k=3, candidates=n)
    assert calls[-1]["prefetch"] == FDE and len(calls[-1]["prefetch_queries"]) == 3
    assert [[h.page_id for h in hits] for hits in fast] == [[h.page_id for h in hits] for hits in exact]
    assert [h.score for h in fast[0]] == pytest.approx([h.score for h in exact[0]], rel=1e-5)



def test_past_the_graphs_measured_range_searches_scan_the_centroids(tmp_path, sample_index, encoder,
                                                                   monkeypatch):
    """Above FIRST_STAGE_MAX_PAGES the graph's recall fell (0.73 at 100k): the centroid scan."""
    from agree_core.index.schema import POOLED

    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), encoder) as index:
        n = index.engine.count()
        calls = []
        real = index.engine.search_batch
        monkeypatch.setattr(index.engine, "search_batch",
                            lambda *a, **kw: calls.append(kw) or real(*a, **kw))
        monkeypatch.setattr(page_index_module, "FIRST_STAGE_MIN_PAGES", 0)
        monkeypatch.setattr(page_index_module, "FIRST_STAGE_MAX_PAGES", n - 1)
        hits = index.search("solar panel output", k=2)
        assert calls[-1]["prefetch"] == POOLED and hits
        monkeypatch.setattr(page_index_module, "FIRST_STAGE_MAX_PAGES", n)
        index.search("solar panel output", k=2)
        assert calls[-1]["prefetch"] == FDE

def test_old_index_without_encodings_opens_and_gets_them_by_command(tmp_path, encoder, monkeypatch, capsys):
    from agree_core import cli

    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(4))
    with PageIndex.open(tmp_path / "old", encoder, first_stage={}) as index:
        index.add([pdf], progress=False)
    config = json.loads((tmp_path / "old" / "agree-index.json").read_text())
    del config["first_stage"]  # as written before the first stage existed
    (tmp_path / "old" / "agree-index.json").write_text(json.dumps(config))
    monkeypatch.setattr(page_index_module, "FIRST_STAGE_MIN_PAGES", 1)
    with PageIndex.open(tmp_path / "old", encoder) as index:
        assert index.config.first_stage == {}
        assert index.search(marker(2), k=1)[0].page == 2  # the pooled first stage, as before
    assert cli.main(["first-stage", "--index", str(tmp_path / "old")]) == 0
    assert "4 points" in capsys.readouterr().out
    with PageIndex.open(tmp_path / "old", encoder) as index:
        assert index.config.first_stage["kind"] == "muvera"
        got = index.engine.retrieve([index.search(marker(3), k=1)[0].page_id], vectors=[FDE])
        assert index.search(marker(3), k=1)[0].page == 3
    (vec,) = [p.vectors[FDE] for p in got.values()]
    assert vec.shape == (muvera_of(index.config.dim, index.config.first_stage).size,)


def test_server_collection_has_the_dense_hnsw_vector_and_searches_it(tmp_path, encoder, monkeypatch):
    if not OPENAPI.is_file():
        pytest.fail(f"Qdrant's OpenAPI schema is missing at {OPENAPI}")
    mock = MockQdrant(Schema())
    pdf = make_pdf(tmp_path / "a.pdf", ["solar panels on the roof", "parking for visitors"])
    monkeypatch.setattr(page_index_module, "FIRST_STAGE_MIN_PAGES", 0)
    with PageIndex.open("qdrant://qdrant.example:6333/fs", encoder,
                        client_options={"transport": mock.transport(), "check_compatibility": False}) as index:
        assert index.add([pdf], progress=False).ok
        index.search_batch(["solar", "parking"], k=2)
    create = [b for m, t, b, _ in mock.requests if t == "/collections/{collection_name}" and b.get("vectors")][0]
    fde = create["vectors"][FDE]
    assert "multivector_config" not in fde or fde["multivector_config"] is None
    assert fde["hnsw_config"]["m"] == DEFAULT_GRAPH["m"] and fde["size"] == muvera_of(384, index.config.first_stage).size
    assert create["vectors"]["tokens"]["hnsw_config"]["m"] == 0
    upserts = [p for m, t, b, _ in mock.requests if t.endswith("/points") and m == "PUT" for p in b["points"]]
    assert all(len(p["vector"][FDE]) == fde["size"] for p in upserts if p["vector"])
    queries = [b for m, t, b, _ in mock.requests if t.endswith("/points/query/batch")]
    middle = queries[-1]["searches"][0]["prefetch"]  # the centroids rescore the graph's candidates
    assert middle["using"] == "pooled" and middle["params"]["exact"] is True
    prefetch = middle["prefetch"]
    assert prefetch["using"] == FDE and len(prefetch["query"]) == fde["size"]
    assert prefetch["params"]["hnsw_ef"] >= prefetch["limit"] > middle["limit"]


def test_fused_encodings_are_made_of_the_token_part():
    """A window-fused encoder's extra coordinate (+2 on query tokens, -1 on page windows) is
    left out, and so are the sentence rows: the encoding is the token vectors' own."""
    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((20, 32)).astype(np.float32)
    windows = rng.standard_normal((2, 32)).astype(np.float32)
    page = np.concatenate([np.c_[tokens, np.zeros(20)], np.c_[windows, -np.ones(2)]]).astype(np.float32)
    query = np.concatenate([np.c_[tokens[:5] * 1.5, np.full(5, 3.0)], np.c_[windows[:1] * 4, [-8.0]]])
    fused, plain = Muvera(33, k_sim=2, dim_proj=8, reps=3, fused=True), Muvera(32, k_sim=2, dim_proj=8, reps=3)
    assert np.allclose(fused.encode_document(page), plain.encode_document(tokens))
    assert np.allclose(fused.encode_query(query.astype(np.float32)), plain.encode_query(tokens[:5] * 1.5))
    assert not np.allclose(Muvera(33, k_sim=2, dim_proj=8, reps=3).encode_query(query.astype(np.float32)),
                           fused.encode_query(query.astype(np.float32)))


def test_new_index_records_fused_and_the_graph_and_a_stale_one_is_encoded_again(
        tmp_path, sample_index, encoder, monkeypatch, capsys):
    from agree_core import cli
    from agree_core.index.first_stage import DEFAULT_GRAPH, usable
    from agree_core.index.schema import POOLED

    index_dir = copy_index(sample_index, tmp_path / "ix")
    with PageIndex.open(index_dir, encoder) as index:
        fs = index.config.first_stage
        assert fs["fused"] is (encoder.config["sentence_weight"] > 0) is True
        assert {k: fs[k] for k in DEFAULT_GRAPH} == DEFAULT_GRAPH and usable(index.config)
    config = json.loads((index_dir / "agree-index.json").read_text())
    for key in ("fused", *DEFAULT_GRAPH):  # as session 5 wrote it: fused coordinate hashed
        del config["first_stage"][key]
    (index_dir / "agree-index.json").write_text(json.dumps(config))
    monkeypatch.setattr(page_index_module, "FIRST_STAGE_MIN_PAGES", 1)
    with PageIndex.open(index_dir, encoder) as index:
        assert not usable(index.config)
        calls = []
        real = index.engine.search_batch
        monkeypatch.setattr(index.engine, "search_batch", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
        assert index.search("solar panel output", k=2)
        assert calls[-1]["prefetch"] == POOLED  # the centroid scan, not the stale encodings
    assert cli.main(["first-stage", "--index", str(index_dir)]) == 0
    assert "first stage built for" in capsys.readouterr().out
    with PageIndex.open(index_dir, encoder) as index:
        assert usable(index.config) and index.config.first_stage["m"] == 16  # the graph it had
        exact = index.search_batch(["solar panel output", "parking"], k=3, candidates=0)
        fast = index.search_batch(["solar panel output", "parking"], k=3, candidates=index.engine.count())
    assert [[h.page_id for h in x] for x in fast] == [[h.page_id for h in x] for x in exact]


def test_the_centroid_stage_between_graph_and_exact_keeps_its_best(tmp_path, sample_index, encoder):
    """FDE graph -> all pages -> the best c by centroid MaxSim -> exact: the same pages as the
    centroid prefetch of c alone (one nested engine query)."""
    from agree_core.index.schema import POOLED, TOKENS

    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), encoder) as index:
        n = index.engine.count()
        muv = muvera_of(index.config.dim, index.config.first_stage)
        qs = [q.float().numpy() for q in index.encode_queries(["solar panel output", "quarterly revenue"])]
        for c in (1, 2, 3):
            nested = index.engine.search_batch(qs, 1, using=TOKENS, prefetch=FDE, candidates=n,
                                               prefetch_queries=[muv.encode_query(q) for q in qs],
                                               hnsw_ef=n, rescore=(POOLED, c))
            centroids = index.engine.search_batch(qs, 1, using=TOKENS, prefetch=POOLED, candidates=c)
            assert [[s.id for s in x] for x in nested] == [[s.id for s in x] for x in centroids]

