"""The MUVERA first stage of large searches (agree_core.index.first_stage): the encoding,
both engines' dense vector (a quantized scan; the HNSW graph of older indexes), the search
path above the page threshold, old indexes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agree_core.index import PageIndex
from agree_core.index import first_stage as first_stage_module
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
        monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", n - 1)  # "large"
        fast = index.search_batch(queries, k=3, candidates=n)
    assert calls[-1]["prefetch"] == FDE and len(calls[-1]["prefetch_queries"]) == 3
    assert [[h.page_id for h in hits] for hits in fast] == [[h.page_id for h in hits] for hits in exact]
    assert [h.score for h in fast[0]] == pytest.approx([h.score for h in exact[0]], rel=1e-5)



def test_a_search_chooses_its_path_by_the_engines_cheap_count(tmp_path, sample_index, encoder, monkeypatch):
    """The page count that picks exact search or the first stage is the segments' count, not an
    exact count (a pass over 100,000 points: 6-12 ms a search, BENCHMARKS.md session 9); the
    two agree on an optimized index, and the path is the same."""
    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), encoder) as index:
        n = index.engine.count()
        assert index.engine.point_count() == n
        before = index.search_batch(["solar panel output"], k=3)
        calls = []
        real = index.engine.count
        monkeypatch.setattr(index.engine, "count", lambda where=None: calls.append(where) or real(where))
        monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", n - 1)  # "large": the first stage
        fast = index.search_batch(["solar panel output"], k=3)
        monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 2_000)
        again = index.search_batch(["solar panel output"], k=3)
    assert None not in calls  # no unfiltered exact count on the search path
    assert [h.page_id for h in again[0]] == [h.page_id for h in before[0]]
    assert fast[0]


def test_past_the_graphs_measured_range_searches_scan_the_centroids(tmp_path, sample_index, encoder,
                                                                   monkeypatch):
    """An index built with the graph (session 6) keeps FIRST_STAGE_MAX_PAGES: above it the
    graph's recall fell (0.82-0.90 at 100k) and the centroid scan is used; a scan of the
    quantized encodings (the default) has no limit."""
    from agree_core.index import first_stage
    from agree_core.index.schema import POOLED

    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), encoder) as index:
        n = index.engine.count()
        calls = []
        real = index.engine.search_batch
        monkeypatch.setattr(index.engine, "search_batch",
                            lambda *a, **kw: calls.append(kw) or real(*a, **kw))
        monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 0)
        monkeypatch.setattr(first_stage, "FIRST_STAGE_MAX_PAGES", n - 1)
        index.search("solar panel output", k=2)
        assert calls[-1]["prefetch"] == FDE and calls[-1]["oversampling"] == first_stage.OVERSAMPLING
        assert calls[-1]["hnsw_ef"] is None  # no graph: a scan
        scan = index.config.first_stage
        index.config.first_stage = {k: v for k, v in scan.items() if k != "quantization"} | DEFAULT_GRAPH
        hits = index.search("solar panel output", k=2)
        assert calls[-1]["prefetch"] == POOLED and hits
        index.search("solar panel output", k=2, candidates=2)  # the centroid scan: the heaviest rows
        q = index.encode_queries(["solar panel output"])[0].float().numpy()
        assert calls[-1]["candidates"] == 2 and len(calls[-1]["coarse_queries"]) == 1
        assert np.array_equal(calls[-1]["coarse_queries"][0], first_stage.middle_rows(q))
        monkeypatch.setattr(first_stage, "FIRST_STAGE_MAX_PAGES", n)
        index.search("solar panel output", k=2)
        assert calls[-1]["prefetch"] == FDE and calls[-1]["hnsw_ef"] >= calls[-1]["candidates"]
        assert calls[-1]["oversampling"] is None


def test_both_engines_scan_a_quantized_dense_vector_and_rescore_it(tmp_path):
    """The first stage's vector as both engines store it: no graph, a 1-bit copy. Edge builds
    the copy when it optimizes (about 640 bytes a point of 5,120 dims, in its segment files); a scan
    with oversampling returns scores of the stored vectors (rescored), as local mode (which
    ignores quantization) does."""
    from agree_core.index.engines.base import Point, VectorSpec
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.engines.server import ServerEngine, connect

    rng = np.random.default_rng(5)
    n, dim = 1_200, 5_120  # past Edge's indexing threshold (10 MB of float16), so it is optimized
    x = rng.standard_normal((n, dim)).astype(np.float32)
    from agree_core.index.first_stage import SCAN

    spec = VectorSpec(FDE, dim, "float16", index=False, on_disk=True, multivector=False, m=0,
                      quantization=SCAN["quantization"])
    ids = [f"00000000-0000-0000-0000-{i + 1:012d}" for i in range(n)]
    q = [x[i] + 0.3 * rng.standard_normal(dim).astype(np.float32) for i in (3, 500, 1_100)]
    edge = EdgeEngine(tmp_path / "edge", [spec])
    local = ServerEngine(connect(path=str(tmp_path / "local")), "c", [spec], local=True)
    for engine in (edge, local):
        for a in range(0, n, 300):
            engine.upsert([Point(ids[i], {FDE: x[i]}, {}) for i in range(a, a + 300)])
        engine.flush()
        engine.optimize()
        hits = engine.search_batch(q, 5, using=FDE, prefetch_queries=None, oversampling=4.0)
        for h, i in zip(hits, (3, 500, 1_100)):
            assert h[0].id == ids[i]
            assert h[0].score == pytest.approx(float(x[i].astype(np.float16).astype(np.float32) @ q[(3, 500, 1_100).index(i)]),
                                               rel=1e-3)
        engine.close()
    copies = sum(f.stat().st_size for f in (tmp_path / "edge").rglob("vector_storage-fde/quantized.data"))
    assert n * dim // 8 <= copies < n * (dim // 8 + 64)  # 1 bit a dimension (and a norm or two)
    with pytest.raises(ValueError, match="quantization must be one of"):
        VectorSpec("tokens", 8, quantization="binary")


def test_old_index_without_encodings_opens_and_gets_them_by_command(tmp_path, encoder, monkeypatch, capsys):
    from agree_core import cli

    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(4))
    with PageIndex.open(tmp_path / "old", encoder, first_stage={}) as index:
        index.add([pdf], progress=False)
    config = json.loads((tmp_path / "old" / "agree-index.json").read_text())
    del config["first_stage"]  # as written before the first stage existed
    (tmp_path / "old" / "agree-index.json").write_text(json.dumps(config))
    monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 1)
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


def test_server_collection_has_the_quantized_encodings_and_scans_them(tmp_path, encoder, monkeypatch):
    """A new index's ``fde`` vector on a server: no graph (m 0), a 1-bit copy in RAM, the
    encodings on disk (float16 on the mock's Qdrant 1.19); searches scan it with the
    oversampling of float16 encodings and rescoring, and the centroid stage scores with the
    query's heaviest rows, the exact stage with all."""
    if not OPENAPI.is_file():
        pytest.fail(f"Qdrant's OpenAPI schema is missing at {OPENAPI}")
    from agree_core.index.first_stage import OLD_OVERSAMPLING, SCAN, middle_rows

    mock = MockQdrant(Schema())
    pdf = make_pdf(tmp_path / "a.pdf", ["solar panels on the roof", "parking for visitors"])
    monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 0)
    with PageIndex.open("qdrant://qdrant.example:6333/fs", encoder,
                        client_options={"transport": mock.transport(), "check_compatibility": False}) as index:
        assert index.add([pdf], progress=False).ok
        index.search_batch(["solar", "parking for visitors near the roof panels"], k=2)
        assert {k: index.config.first_stage[k] for k in SCAN} == SCAN
        cascade = len(mock.requests)
        fs, index.config.first_stage = index.config.first_stage, {}  # no encodings: the centroid scan
        index.search_batch(["parking for visitors near the roof panels"], k=1, candidates=1)
        index.config.first_stage = fs
    scan = [b for m, t, b, _ in mock.requests[cascade:] if t.endswith("/points/query/batch")][-1]["searches"][0]
    assert scan["prefetch"]["using"] == "pooled" and scan["prefetch"]["limit"] == 1
    assert np.array_equal(np.array(scan["prefetch"]["query"], np.float32),
                          middle_rows(np.array(scan["query"]["nearest"], np.float32)))
    assert len(scan["prefetch"]["query"]) < len(scan["query"]["nearest"])
    create = [b for m, t, b, _ in mock.requests if t == "/collections/{collection_name}" and b.get("vectors")][0]
    fde = create["vectors"][FDE]
    assert "multivector_config" not in fde or fde["multivector_config"] is None
    assert fde["hnsw_config"]["m"] == 0 and fde["size"] == muvera_of(384, index.config.first_stage).size
    assert fde["quantization_config"] == {"turbo": {"always_ram": True, "bits": "bits1"}}
    assert fde["on_disk"] is True
    assert create["vectors"]["tokens"]["hnsw_config"]["m"] == 0
    upserts = [p for m, t, b, _ in mock.requests if t.endswith("/points") and m == "PUT" for p in b["points"]]
    assert all(len(p["vector"][FDE]) == fde["size"] for p in upserts if p["vector"])
    queries = [b for m, t, b, _ in mock.requests[:cascade] if t.endswith("/points/query/batch")]
    main = queries[-1]["searches"][-1]
    middle = main["prefetch"]  # the centroids rescore the scan's candidates
    assert middle["using"] == "pooled" and middle["params"]["exact"] is True
    rows = np.array(main["query"]["nearest"], np.float32)
    assert 1 <= len(middle["query"]) < len(rows)  # the last query: 4 words and its sentence vector
    assert np.array_equal(np.array(middle["query"], np.float32), middle_rows(rows))
    prefetch = middle["prefetch"]
    assert prefetch["using"] == FDE and len(prefetch["query"]) == fde["size"]
    assert prefetch["limit"] > middle["limit"] and "hnsw_ef" not in prefetch["params"]
    assert index.config.first_stage["datatype"] == "float16"
    assert prefetch["params"]["quantization"] == {"rescore": True, "oversampling": OLD_OVERSAMPLING}


def test_an_index_built_with_the_graph_keeps_it_on_both_engines(tmp_path, encoder, monkeypatch):
    """Session 6 indexes recorded m 32 and no quantization: they open with their graph (the
    server's collection and the Edge shard's config) and are searched through it."""
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.schema import vector_specs

    mock = MockQdrant(Schema())
    graph = {"kind": "muvera", "k_sim": 4, "dim_proj": 16, "reps": 20, "seed": 0, "fused": True, **DEFAULT_GRAPH}
    with PageIndex.open("qdrant://qdrant.example:6333/old", encoder, first_stage={**graph, "quantization": ""},
                        client_options={"transport": mock.transport(), "check_compatibility": False}) as index:
        pass
    create = [b for m, t, b, _ in mock.requests if t == "/collections/{collection_name}" and b.get("vectors")][0]
    assert create["vectors"][FDE]["hnsw_config"]["m"] == DEFAULT_GRAPH["m"]
    assert not create["vectors"][FDE].get("quantization_config") and not create["vectors"][FDE]["on_disk"]
    (spec,) = [s for s in vector_specs(384, "turbo4", True, graph) if s.name == FDE]
    assert spec.index and spec.m == DEFAULT_GRAPH["m"] and not spec.quantization
    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(3))
    with PageIndex.open(tmp_path / "old", encoder, first_stage={**graph, "datatype": "float16"}) as index:
        index.add([pdf], progress=False)  # its encodings stored float16, as before session 10
    config = json.loads((tmp_path / "old" / "agree-index.json").read_text())
    config["first_stage"] = graph  # as session 6 wrote it (no datatype recorded: float16)
    (tmp_path / "old" / "agree-index.json").write_text(json.dumps(config))
    monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 0)
    with PageIndex.open(tmp_path / "old", encoder) as index:
        assert index.config.first_stage == graph and isinstance(index.engine, EdgeEngine)
        calls = []
        real = index.engine.search_batch
        monkeypatch.setattr(index.engine, "search_batch", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
        assert index.search(marker(2), k=1)[0].page == 2
    assert calls[-1]["prefetch"] == FDE and calls[-1]["hnsw_ef"] and calls[-1]["oversampling"] is None


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
    from agree_core.index.first_stage import SCAN, usable
    from agree_core.index.schema import POOLED

    index_dir = copy_index(sample_index, tmp_path / "ix")
    with PageIndex.open(index_dir, encoder) as index:
        fs = index.config.first_stage
        assert fs["fused"] is (encoder.config["sentence_weight"] > 0) is True
        assert {k: fs[k] for k in SCAN} == SCAN and usable(index.config)
    config = json.loads((index_dir / "agree-index.json").read_text())
    for key in ("fused", *SCAN):  # as session 5 wrote it: fused coordinate hashed
        del config["first_stage"][key]
    (index_dir / "agree-index.json").write_text(json.dumps(config))
    monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 1)
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
        assert "quantization" not in index.config.first_stage
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



def test_the_centroid_stage_scores_with_the_rows_it_is_given(tmp_path, sample_index, encoder):
    """``coarse_queries`` are the centroid stage's query, in the cascade (the middle stage)
    and in the centroid scan (the prefetch): with one candidate kept, the page that stage
    picks is the best by centroid MaxSim of those rows, whatever the exact stage's query."""
    from agree_core.index.first_stage import middle_rows
    from agree_core.index.schema import POOLED, TOKENS

    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), encoder) as index:
        n = index.engine.count()
        muv = muvera_of(index.config.dim, index.config.first_stage)
        a, b = [q.float().numpy() for q in index.encode_queries(["solar panel output", "quarterly revenue"])]
        best = [index.engine.search_batch([q], 1, using=POOLED)[0][0].id for q in (a, b)]
        assert best[0] != best[1]
        for middle, expected in ((None, best[0]), ([b], best[1]), ([a], best[0])):
            got = index.engine.search_batch([a], 1, using=TOKENS, prefetch=FDE, candidates=n,
                                            prefetch_queries=[muv.encode_query(a)], hnsw_ef=n,
                                            rescore=(POOLED, 1), coarse_queries=middle)
            assert got[0][0].id == expected
            got = index.engine.search_batch([a], 1, using=TOKENS, prefetch=POOLED, candidates=1,
                                            coarse_queries=middle)
            assert got[0][0].id == expected
    rows = np.array([[0.1, 0.0], [2.0, 0.0], [0.0, 1.5], [0.2, 0.2]], np.float32)
    assert middle_rows(rows).tolist() == [[2.0, 0.0], [0.0, 1.5]]  # 3.5 of 3.88: over 70%
    assert middle_rows(rows[:1]).tolist() == rows[:1].tolist()
    assert len(middle_rows(rows, mass=1.0)) == 4


def test_new_encodings_are_stored_turbo8_where_the_engine_can(tmp_path, encoder, monkeypatch):
    """A new embedded index records and stores its encodings as turbo8 (half float16's bytes);
    on a Qdrant server older than 1.20 (the mock answers 1.19) a new index records float16 and
    creates its collection so; ``agree info`` counts the bytes of what is stored."""
    from agree_core.index.config import VECTOR_DATATYPES
    from agree_core.index.sizes import fde_bytes

    with PageIndex.open(tmp_path / "new", encoder) as index:
        index.add([make_pdf(tmp_path / "a.pdf", lorem_pages(2))], progress=False)
        assert index.config.first_stage["datatype"] == "turbo8"
        size = muvera_of(index.config.dim, index.config.first_stage).size
        assert fde_bytes(index.config) == size * VECTOR_DATATYPES["turbo8"] + size / 8  # + the 1-bit copy
    recorded = json.loads((tmp_path / "new" / "agree-index.json").read_text())["first_stage"]
    assert recorded["datatype"] == "turbo8"
    monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 0)  # searches go through the encodings
    with PageIndex.open(tmp_path / "new", encoder) as index:  # reopens with the shard's own datatype
        assert index.search(marker(1), k=1)[0].page == 1

    mock = MockQdrant(Schema())
    with PageIndex.open("qdrant://qdrant.example:6333/fresh", encoder,
                        client_options={"transport": mock.transport(), "check_compatibility": False}) as index:
        assert index.config.first_stage["datatype"] == "float16"
    create = [b for m, t, b, _ in mock.requests if t == "/collections/{collection_name}" and b.get("vectors")][0]
    assert create["vectors"][FDE]["datatype"] == "float16"


def test_an_index_that_recorded_no_encoding_datatype_reads_float16(tmp_path, encoder, monkeypatch):
    """Indexes built before session 10 stored their encodings float16 and recorded nothing:
    they open, search through their first stage, and are measured as float16."""
    from agree_core.index.first_stage import fde_datatype
    from agree_core.index.schema import fde_spec

    old = {k: v for k, v in first_stage_module.new_settings({"sentence_weight": 0.3}, "float16").items()
           if k != "datatype"}
    assert fde_datatype(old) == "float16" and fde_spec(384, old).datatype == "float16"
    with PageIndex.open(tmp_path / "old", encoder, first_stage={**old, "datatype": "float16"}) as index:
        index.add([make_pdf(tmp_path / "a.pdf", lorem_pages(3))], progress=False)
    path = tmp_path / "old" / "agree-index.json"
    config = json.loads(path.read_text())
    config["first_stage"] = {k: v for k, v in config["first_stage"].items() if k != "datatype"}
    path.write_text(json.dumps(config))
    monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 0)
    with PageIndex.open(tmp_path / "old", encoder) as index:
        assert "datatype" not in index.config.first_stage
        assert index.search(marker(3), k=1)[0].page == 3
