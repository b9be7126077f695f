"""A published-layout checkpoint through the CLI: index, info, search, show, round trip."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from agree_core.cli import main
from conftest import cli, lorem_pages, make_pdf, run_cli


@pytest.fixture(scope="module")
def visual_index(tmp_path_factory, checkpoints):
    """An index of a 3-page PDF built with `agree index --encoder colqwen2.5:ADAPTER`."""
    root = tmp_path_factory.mktemp("visual_cli")
    pdf = make_pdf(root / "doc.pdf", lorem_pages(3))
    adapter = checkpoints["colqwen2.5"][0]
    result = cli("-q", "index", str(pdf), "--index", str(root / "index"),
                 "--encoder", f"colqwen2.5:{adapter}", "--dpi", "40")
    assert result.returncode == 0, result.stderr
    return root / "index", pdf, adapter


def test_index_records_the_encoder_and_searches(visual_index, capsys):
    index, pdf, adapter = visual_index
    config = json.loads((index / "agree-index.json").read_text())
    assert config["encoder"] == f"colqwen2.5:{adapter}" and config["dim"] == 128
    assert config["encoder_config"]["max_visual_tokens"] == 768
    assert main(["-q", "info", "--index", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pages"] == 3 and info["encoder"] == f"colqwen2.5:{adapter}"
    result = run_cli("search", "--index", str(index), "camel", "--json", "-k", "2")  # a fresh process
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["hits"]
    assert len(hits) == 2 and {h["source"] for h in hits} == {str(pdf)} and hits[0]["score"] > 0


def test_show_draws_visual_heatmaps(visual_index, tmp_path, capsys):
    index, _, _ = visual_index
    out = tmp_path / "show.png"
    assert main(["-q", "show", "camel", "--index", str(index), "-k", "2", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0

    from agree_core.index import PageIndex

    with PageIndex.open(index, create=False) as idx:
        hit = idx.search("camel", 1)[0]
        emb, payload = idx.page_embedding(hit.page_id)
        rows, cols = emb.grid
        assert (emb.cells >= 0).sum() == rows * cols and (emb.cells < 0).any()  # prompt tokens: -1
        heat = idx.similarity_maps("camel", [hit])[0]
        assert heat.shape == (rows, cols) and heat.sum() > 0
        # the maxsim map sums to the score, less the query tokens that matched prompt tokens
        assert float(heat.sum()) <= hit.score + 1e-3


def test_an_index_rejects_another_encoder(visual_index, checkpoints):
    index, pdf, _ = visual_index
    result = cli("index", str(pdf), "--index", str(index), "--encoder",
                 f"colpali:{checkpoints['colpali'][0]}")
    assert result.returncode == 5 and "was built with encoder 'colqwen2.5:" in result.stderr
    assert main(["-q", "index", str(pdf), "--index", str(index / "new"), "--encoder", "colqwen9"]) == 1


def test_search_json_gives_visual_pages_patch_boxes_with_no_text(visual_index):
    index, _, _ = visual_index
    result = cli("search", "--index", str(index), "camel", "--json", "-k", "1")
    assert result.returncode == 0, result.stderr
    (hit,) = json.loads(result.stdout)["hits"]
    assert hit["evidence"], hit  # the PDF has a text layer, but the vectors are patches
    for e in hit["evidence"]:
        assert set(e) == {"box", "text", "score"} and e["text"] is None and e["score"] > 0
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
