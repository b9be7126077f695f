"""Index size and storage settings: `agree info --json`'s size fields (a contract checks rely
on), token pooling, quantized datatypes, and indexes written before these settings existed."""

import json

import numpy as np
import pytest
import torch

from agree_core.index import PageIndex
from agree_core.index.config import CONFIG_FILE
from agree_core.index.schema import TOKENS
from agree_core.evidence import evidence_by_id
from agree_core.pooling import pool_tokens
from agree_core.index.sizes import fde_bytes
from conftest import cli, copy_index, lorem_pages, make_pdf, marker


def _du(path):
    return sum(f.stat().st_blocks * 512 for f in [path, *path.rglob("*")])


def _stored_vectors(index):
    n = 0
    for p in index.engine.scroll(vectors=["tokens", "pooled"], payload=False):
        n += sum(len(v) for v in p.vectors.values())
    return n, index.engine.count()


def test_info_json_reports_bytes_on_disk_and_vector_bytes_per_page(tmp_path, sample_index):
    ix = copy_index(sample_index, tmp_path / "ix")
    out = cli("info", "--index", str(ix), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert isinstance(info["bytes_on_disk"], int)
    assert abs(info["bytes_on_disk"] - _du(ix)) < 0.05 * _du(ix)  # the whole folder, like du
    with PageIndex.open(ix) as index:
        vectors, points = _stored_vectors(index)
    assert (info["vector_datatype"], info["pool_factor"]) == ("turbo4", 5)  # the defaults
    fde = fde_bytes(index.config)  # the first stage's encoding of each point
    assert info["vector_bytes_per_page"] == pytest.approx((vectors * 385 * 0.5 + points * fde) / points, rel=1e-3)


def test_an_index_written_before_pooling_opens_searches_and_reports_its_size(tmp_path, samples, encoder):
    """The format of an index built before pooling: float16, every vector, no ``pool_factor``
    in the config, no ``nvec``/``pool_of`` on points."""
    ix = tmp_path / "old"
    from agree_core.encoders.text_layer import TextLayerEncoder

    # such an index also predates window fusion (sentence_weight 0, 384-d)
    with PageIndex.open(ix, TextLayerEncoder(sentence_weight=0.0), pool_factor=1, vector_datatype="float16") as index:
        assert index.add([samples[0].parent], progress=False).ok
    config = json.loads((ix / CONFIG_FILE).read_text())
    config.pop("pool_factor", None)
    config.pop("vector_datatype", None)  # the new defaults (3, turbo4) must not apply to it
    (ix / CONFIG_FILE).write_text(json.dumps(config))
    with PageIndex.open(ix) as index:
        index.engine.delete_payload(["nvec", "pool_of"], where=None,
                                    ids=[p.id for p in index.engine.scroll(payload=False)])
        expected, points = _stored_vectors(index)
    info = json.loads(cli("info", "--index", str(ix), "--json").stdout)
    assert (info["pool_factor"], info["vector_datatype"], info["pages"]) == (1, "float16", 9)
    fde = fde_bytes(index.config)  # the first stage's encoding of each point
    assert info["vector_bytes_per_page"] == pytest.approx((expected * 384 * 2 + points * fde) / points, rel=1e-3)
    out = cli("search", "--index", str(ix), "Which solar site produced the most electricity?",
              "-k", "1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hits"][0]["page"] == 3


def test_pool_tokens_keeps_every_token_mapped_and_maxsim_exact():
    v = torch.nn.functional.normalize(torch.randn(41, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    pooled, group = pool_tokens(v, 3)
    assert pooled.shape == (14, 16) and group.shape == (41,)
    assert sorted(set(group.tolist())) == list(range(14)) and group[0] == 0  # reading order
    assert torch.allclose(pooled.norm(dim=1), torch.ones(14))
    q = torch.randn(5, 16)
    assert torch.allclose((q @ pooled.T).max(1).values, (q @ pooled[group].T).max(1).values)


@pytest.mark.parametrize("engine_kind", ["edge", "qdrant-local"])
def test_a_pooled_quantized_index_stores_fewer_bytes_and_still_finds_and_maps_pages(
        tmp_path, encoder, engine_kind):
    if engine_kind == "qdrant-local":
        pytest.importorskip("qdrant_client")
    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(4))
    infos = {}
    plain = {"pool_factor": 1, "vector_datatype": "float16"}
    for name, settings in {"plain": plain, "pooled": {"pool_factor": 3, "vector_datatype": "turbo8"}}.items():
        path = tmp_path / name
        location = str(path) if engine_kind == "edge" else f"qdrant-local:{path}"
        with PageIndex.open(location, encoder, **settings) as index:
            assert index.add([pdf], progress=False).pages == 4
            hit = index.search(marker(2), k=1)[0]
            assert hit.page == 2
            emb, payload = index.page_embedding(hit.page_id)
            assert emb.vectors.shape[0] == len(payload["cells"])  # one vector per cell's token
            (heat,) = index.similarity_maps(marker(2), [hit])
            assert heat.shape == emb.grid and float(heat.max()) > 0
            (ev,) = evidence_by_id(index, marker(2), [hit.page_id]).values()  # word boxes, pooled too
            assert ev and all(0 <= e["box"][0] < e["box"][2] <= 1 for e in ev)
            q = index.encode_queries([marker(2)])[0]
            window = float((emb.vectors[emb.cells < 0] @ q[-1]).max())  # window fusion's part: no box
            assert sum(e["score"] for e in ev) == pytest.approx(hit.score - window, rel=0.05)
            infos[name] = index.info()
        if engine_kind == "edge":
            assert json.loads((path / CONFIG_FILE).read_text())["pool_factor"] == settings["pool_factor"]
    plain, pooled = infos["plain"]["vector_bytes_per_page"], infos["pooled"]["vector_bytes_per_page"]
    assert pooled < plain / 3  # a third of the vectors at half the bytes each (centroids too)
    assert infos["pooled"]["bytes_on_disk"] > 0


def test_the_default_pool_factor_is_the_encoders_and_recorded_settings_win():
    from agree_core.index.config import IndexConfig

    assert IndexConfig("text-layer", {}, 385).pool_factor == 5  # the measured pick
    assert IndexConfig("colqwen2.5", {}, 128).pool_factor == 1  # not measured: every vector
    assert IndexConfig("text-layer", {}, 385, pool_factor=1).pool_factor == 1
    saved = {"encoder": "text-layer", "encoder_config": {}, "dim": 385, "format_version": 1}
    assert IndexConfig.from_dict({**saved, "pool_factor": 1, "vector_datatype": "turbo4"}, "x").pool_factor == 1
    old = IndexConfig.from_dict(saved, "x")  # written before the settings existed
    assert (old.pool_factor, old.vector_datatype) == (1, "float16")


def test_bad_storage_settings_say_what_is_allowed(tmp_path, encoder):
    with pytest.raises(ValueError, match="pool_factor must be an integer >= 1"):
        PageIndex.open(tmp_path / "a", encoder, pool_factor=0)
    with pytest.raises(ValueError, match="vector_datatype must be one of float32, float16, turbo8, turbo4"):
        PageIndex.open(tmp_path / "b", encoder, vector_datatype="uint8")


def test_agree_index_storage_flags_make_a_pooled_index_and_an_existing_one_keeps_its_own(tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(2))
    ix = tmp_path / "ix"
    out = cli("index", str(pdf), "--index", str(ix), "--pool-factor", "2", "--vector-datatype", "turbo4")
    assert out.returncode == 0, out.stderr
    config = json.loads((ix / CONFIG_FILE).read_text())
    assert (config["pool_factor"], config["vector_datatype"]) == (2, "turbo4")
    out = cli("index", str(pdf), "--index", str(ix), "--pool-factor", "3")
    assert out.returncode != 0 and "was built with pool_factor=2, not 3" in out.stderr


def test_a_default_index_reports_the_engine_score_and_reads_back_within_its_tolerance(tmp_path, encoder):
    """A pooled turbo4 index (the default datatype): a hit's score is the engine's, and MaxSim
    over the stored vectors read back (evidence, heatmaps, the reranker) agrees to SCORE_TOLERANCE."""
    from agree_core.index.config import SCORE_TOLERANCE
    from agree_core.scoring import maxsim

    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(4))
    with PageIndex.open(tmp_path / "ix", encoder, pool_factor=3) as index:
        assert (index.config.pool_factor, index.config.vector_datatype) == (3, "turbo4")
        assert index.add([pdf], progress=False).pages == 4
        hits = index.search(marker(2), k=4)
        assert hits[0].page == 2
        q = index.encode_queries([marker(2)])[0].float()
        stored = index.page_vectors([h.page_id for h in hits])
        read = maxsim([q], [stored[h.page_id] for h in hits], compute_dtype=torch.float32)[0].tolist()
    tolerance = SCORE_TOLERANCE["turbo4"]
    assert read == pytest.approx([h.score for h in hits], rel=tolerance)
    assert tolerance > max(abs(r - h.score) / h.score for r, h in zip(read, hits))



def test_evidence_on_a_pooled_index_names_the_words_that_were_asked(tmp_path, samples, encoder):
    """Pool factor 3 merges a page's tokens into shared vectors, whose scores tie: the
    evidence credits each match to the token of the query token's own term ("electricity",
    not "Energy" pooled with it), through `agree search --json`'s path and evidence_by_id,
    and the scores still add up to the page's MaxSim score (less the window part)."""
    from agree_core.index.config import SCORE_TOLERANCE
    from agree_core.search_json import search_lines

    question = "Which solar site produced the most electricity?"
    report = next(p for p in samples if p.name == "report.pdf")
    with PageIndex.open(tmp_path / "ix", encoder, pool_factor=3, vector_datatype="turbo4") as index:
        index.add([report], progress=False)
        hit = index.search(question, k=1)[0]
        assert hit.page == 3
        (line,) = search_lines(index, [(1, question)], [[hit]])
        ev = line["hits"][0]["evidence"]
        assert ev == evidence_by_id(index, question, [hit.page_id])[hit.page_id]
        emb, payload = index.page_embedding(hit.page_id)
        assert len(set(payload["pool_of"])) < len(payload["pool_of"]) / 2  # pooled
        q = index.encode_queries([question])[0]
        read = float((q @ emb.vectors.T).max(dim=1).values.sum())  # MaxSim over the stored vectors read back
        window = float((emb.vectors[emb.cells < 0] @ q[-1]).max())  # window fusion's part: no box
        every = evidence_by_id(index, question, [hit.page_id], top=100)[hit.page_id]  # not only the top 8
    words = {e["text"].lower().strip(".,") for e in ev}
    assert {"electricity", "most", "site"} <= words, words
    assert sum(e["score"] for e in every) == pytest.approx(read - window, abs=1e-3)
    assert read == pytest.approx(hit.score, rel=SCORE_TOLERANCE["turbo4"])  # the engine's score
