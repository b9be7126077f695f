"""Window fusion (``sentence_weight``) as the text-layer default: new indexes record it, old
indexes keep the weight they were built with, pooling never merges a sentence vector."""

import json

import pytest
import torch

from agree_core.encoders.registry import recorded_config
from agree_core.encoders.text_layer import TextLayerEncoder
from agree_core.index import IndexConfigError, PageIndex
from agree_core.index.config import CONFIG_FILE
from agree_core.index.schema import TOKENS
from agree_core.pages import iter_pages
from agree_core.pooling import pool_tokens, pool_vectors
from agree_core.scoring import maxsim
from conftest import lorem_pages, marker, run_cli


def _old_index(path, pdf):
    """An index as agree wrote it before ``sentence_weight`` and ``layout`` existed: 384-d token
    vectors and neither option in its recorded encoder config."""
    with PageIndex.open(path, TextLayerEncoder(sentence_weight=0.0, layout="overlap")) as index:
        assert index.add([pdf], progress=False).ok
    config = json.loads((path / CONFIG_FILE).read_text())
    del config["encoder_config"]["sentence_weight"], config["encoder_config"]["layout"]
    (path / CONFIG_FILE).write_text(json.dumps(config))
    return path


def test_a_new_index_records_the_fused_default(tmp_path, pdf_factory, encoder):
    pdf = pdf_factory("a.pdf", lorem_pages(3, words=40))
    with PageIndex.open(tmp_path / "ix", "text-layer") as index:
        index.add([pdf], progress=False)
        assert index.config.encoder_config["sentence_weight"] == 0.4 and index.config.dim == 385
    saved = json.loads((tmp_path / "ix" / CONFIG_FILE).read_text())
    assert saved["encoder_config"]["sentence_weight"] == 0.4 and saved["dim"] == 385


def test_an_index_built_before_window_fusion_opens_and_searches_with_its_own_setting(tmp_path, pdf_factory):
    pdf = pdf_factory("a.pdf", lorem_pages(4, words=40))
    ix = _old_index(tmp_path / "old", pdf)
    with PageIndex.open(ix) as index:  # its own encoder, from its config
        assert index.config.encoder_config["sentence_weight"] == 0.0 and index.config.dim == 384
        assert index.encoder.dim == 384 and index.encoder.config["layout"] == "overlap"
        assert index.search(marker(3), k=1)[0].page == 3
    with PageIndex.open(ix, "text-layer") as index:  # the spec, as `--encoder text-layer` gives it
        assert index.encoder.config["sentence_weight"] == 0.0
    with pytest.raises(IndexConfigError, match=r"sentence_weight: index has 0\.0, encoder has 0\.4.*rebuild"):
        PageIndex.open(ix, TextLayerEncoder())  # today's default object is not what built it
    out = run_cli("search", "--index", str(ix), marker(2), "-k", "1", "--json")
    assert out.returncode == 0, out.stderr
    hit = json.loads(out.stdout)["hits"][0]
    assert hit["page"] == 2 and hit["evidence"]
    # adding to it keeps encoding pages its way (384-d), and a copy of a page scores like it
    more = pdf_factory("b.pdf", lorem_pages(5, words=40)[4:])
    out = run_cli("index", str(more), "--index", str(ix))
    assert out.returncode == 0, out.stderr
    with PageIndex.open(ix) as index:
        assert index.config.dim == 384 and index.search(marker(5), k=1)[0].page == 1


def test_recorded_config_fills_only_what_text_layer_indexes_lacked():
    assert recorded_config("text-layer", {"skip_stopwords": True})["sentence_weight"] == 0.0
    assert recorded_config("text-layer", {"skip_stopwords": True, "sentence_weight": 0.4})["sentence_weight"] == 0.4
    colbert = {"model": "/m", "grid_cells": 1024, "ocr": "auto", "ocr_dpi": 200}  # text-layer:COLBERT
    assert recorded_config("text-layer:/m", colbert) == colbert
    assert recorded_config("colpali", {"model": "x"}) == {"model": "x"}


def test_pooling_stores_sentence_vectors_as_they_are():
    g = torch.Generator().manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    tokens = torch.cat([tokens, torch.zeros(30, 1)], dim=1)
    windows = torch.cat([torch.nn.functional.normalize(torch.randn(2, 8, generator=g), dim=-1),
                         -torch.ones(2, 1)], dim=1)  # norm sqrt(2), last coordinate -1
    vectors, keep = torch.cat([tokens, windows]), torch.arange(32) >= 30
    pooled, group = pool_tokens(vectors, 3, keep=keep)
    assert pooled.shape == (10 + 2, 9)
    assert torch.equal(pooled[-2:], windows) and group[30:].tolist() == [10, 11]
    assert (pooled[:10, -1] == 0).all() and group[:30].max() == 9  # tokens pooled among themselves
    torch.testing.assert_close(pooled[group], torch.cat([pooled[group[:30]], windows]))
    centroids = pool_vectors(pooled, 4, keep=torch.arange(12) >= 10)
    assert centroids.shape == (6, 9) and torch.equal(centroids[-2:], windows)
    assert (centroids[:4, -1] == 0).all()


def test_a_pooled_index_keeps_the_fused_score(tmp_path, pdf_factory, encoder):
    """pool_factor 3 with the fused default: the stored sentence vectors are the encoder's,
    so the window term of the score survives pooling, and search scores what is stored."""
    pdf = pdf_factory("a.pdf", lorem_pages(3, words=120))
    pages = list(iter_pages(pdf, render=False))
    fresh = encoder.encode_pages(pages)
    with PageIndex.open(tmp_path / "ix", "text-layer", pool_factor=3, vector_datatype="float16") as index:
        index.add([pdf], progress=False)
        query = "the granite falcon over the canyon"
        hits = index.search(query, k=3)
        q = index.encode_queries([query])[0]
        got = index.engine.retrieve([h.page_id for h in hits], vectors=[TOKENS])
        for hit in hits:
            stored = torch.from_numpy(got[hit.page_id].vectors[TOKENS]).float()
            emb = fresh[hit.page - 1]
            n_windows = int(emb.unpooled.sum())
            assert len(stored) < len(emb.vectors) and n_windows >= 1
            # float16 storage of the sentence vectors, unmerged: last coordinate still -1
            torch.testing.assert_close(stored[-n_windows:], emb.vectors[emb.unpooled], atol=2e-3, rtol=0)
            assert (stored[:-n_windows, -1] == 0).all()
            want = float(maxsim([q], [stored], compute_dtype=torch.float32)[0, 0])
            assert hit.score == pytest.approx(want, rel=2e-3)


def test_records_written_with_their_vectors_keep_sentence_vectors_unpooled(tmp_path, pdf_factory, encoder):
    from agree_core.index.records import Record, record_point_id

    pdf = pdf_factory("a.pdf", lorem_pages(1, words=150))
    (emb,) = encoder.encode_pages(list(iter_pages(pdf, render=False)))
    with PageIndex.open(tmp_path / "ix", "text-layer", pool_factor=3, vector_datatype="float16") as index:
        index.records.write([Record("r1", "a page", vectors=emb.vectors, cells=emb.cells, grid=emb.grid)])
        pid = record_point_id("r1")
        stored = torch.from_numpy(index.engine.retrieve([pid], vectors=[TOKENS])[pid].vectors[TOKENS]).float()
    n = int(emb.unpooled.sum())
    assert len(stored) < len(emb.vectors)
    torch.testing.assert_close(stored[-n:], emb.vectors[emb.unpooled], atol=2e-3, rtol=0)
    assert (stored[:-n, -1] == 0).all()
