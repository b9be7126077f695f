"""ColQwen2.5 / ColQwen2 / ColPali on tiny checkpoints in the published layout."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from agree_core.encoders import MultiVectorEncoder, load_encoder
from agree_core.encoders.colvision import CheckpointError
from agree_core.encoders.colvision.processing import collate
from agree_core.pages import Page
from visual.images import FAMILIES, noise_image


def pages(*sizes: tuple[int, int]) -> list[Page]:
    return [Page.from_image(noise_image(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]


# -- the published layout -----------------------------------------------------------------------
def test_checkpoints_use_the_published_weight_names(checkpoints):
    adapter, base = checkpoints["colqwen2.5"]
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "base_model.model.custom_text_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" in keys
    assert not any("visual" in k for k in keys)  # ColQwen2.5's regex keeps LoRA off the vision tower
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"model.embed_tokens.weight", "model.norm.weight", "custom_text_proj.bias"} <= keys
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    _, base = checkpoints["colpali"]
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.language_model.model.layers.0.mlp.up_proj.weight" in keys
    assert "model.vision_tower.vision_model.post_layernorm.weight" in keys


def _hand_merged(family, adapter, base):
    """The reference: base weights renamed by hand, LoRA merged by hand (W + alpha/r B A)."""
    from agree_core.encoders.colvision.encoder import FAMILIES as SPECS, _backbone_config, _model_class

    config = _backbone_config(base, SPECS[family])
    model = _model_class(SPECS[family])(config, dim=SPECS[family].dim).eval()
    renames = ([("model.language_model.model.", "model.language_model."),
                ("model.vision_tower.vision_model.", "model.vision_tower.")] if family == "colpali"
               else [("model.language_model.", "language_model."), ("model.visual.", "visual.")]
               if family == "colqwen3" else [("model.", "language_model.")])
    state = {}
    for k, v in load_file(str(base / "model.safetensors")).items():
        for old, new in renames:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        state[k] = v
    model.load_state_dict(state, strict=True)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key in [k for k in lora if k.endswith("lora_A.weight")]:
            path = key[len("base_model.model."):-len(".lora_A.weight")]
            for old, new in renames:
                if path.startswith(old):
                    path = new + path[len(old):]
                    break
            b = lora[key.replace("lora_A", "lora_B")]
            params[path + ".weight"] += cfg["lora_alpha"] / cfg["r"] * b @ lora[key]
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_and_base_load_like_a_hand_merge(family, checkpoints, encoders):
    adapter, base = checkpoints[family]
    enc = encoders[family]
    page = pages((150, 200))
    got = enc.encode_pages(page)[0].vectors
    reference = _hand_merged(family, adapter, base)
    batch = collate([enc._inputs.page(page[0].image)], enc._inputs.pad_id, enc._inputs.padding_side)
    with torch.no_grad():
        want = reference(**batch)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    without_adapter = load_encoder(f"{family}:{base}", dtype="float32").encode_pages(page)[0].vectors
    assert (without_adapter - got).abs().max() > 1e-2  # the adapter really changes the vectors


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_match_the_transformers_processors(family, encoders):
    from transformers import AutoTokenizer, PaliGemmaProcessor, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    enc = encoders[family]
    tokenizer = AutoTokenizer.from_pretrained(enc.config["model"])
    image = noise_image(230, 310)
    if family == "colpali":
        ip = SiglipImageProcessorPil(size={"height": 112, "width": 112}, image_mean=[0.5] * 3,
                                     image_std=[0.5] * 3)
        ip.image_seq_length = 64
        out = PaliGemmaProcessor(image_processor=ip, tokenizer=tokenizer)(
            text=["<image><bos>Describe the image."], images=[image], return_tensors="pt")
        pixels = out["pixel_values"][0]
    else:
        class ImageOnly(Qwen2_5_VLProcessor):  # without torchvision there is no video processor
            def __init__(self, image_processor, tokenizer):
                self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
                self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
                self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
                self.image_processor, self.tokenizer = image_processor, tokenizer
                self.video_processor, self.chat_template = None, None

        ip = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=768 * 28 * 28)
        out = ImageOnly(ip, tokenizer)(text=[enc.config["page_prompt"]], images=[image], return_tensors="pt")
        pixels = out["pixel_values"]
    mine = enc._inputs.page(image)
    assert out["input_ids"][0].tolist() == mine.input_ids
    assert torch.equal(pixels, mine.pixel_values)


def test_query_formats_are_the_trained_ones(encoders):
    def tokens(family, query):
        enc = encoders[family]
        return enc._inputs.tokenizer.decode(enc._inputs.query(query).input_ids)

    assert tokens("colqwen2.5", "what is shown") == "Query: what is shown" + "<|endoftext|>" * 10
    assert tokens("colqwen2", "what") == "Query: what" + "<|endoftext|>" * 10
    assert tokens("colpali", "what is shown") == "<bos>Query: what is shown" + "<pad>" * 10 + "\n"
    page = encoders["colqwen2.5"]._inputs.page(noise_image(56, 56))
    text = encoders["colqwen2.5"]._inputs.tokenizer.decode(page.input_ids)
    assert text == ("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 4 +
                    "<|vision_end|>Describe the image.<|im_end|><|endoftext|>")


# -- shapes, grids, masks ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_grids_and_cells(family, encoders):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    enc = encoders[family]
    assert isinstance(enc, MultiVectorEncoder) and enc.dim == 128
    sizes = [(150, 200), (400, 120), (56, 56)]
    for (w, h), emb in zip(sizes, enc.encode_pages(pages(*sizes))):
        if family == "colpali":
            assert emb.grid == (8, 8)  # 112 px / 14 px patches
        else:
            rh, rw = smart_resize(h, w, 28, 3136, 768 * 28 * 28)
            assert emb.grid == (rh // 28, rw // 28)
        rows, cols = emb.grid
        on_grid = emb.cells >= 0
        assert emb.cells[on_grid].tolist() == list(range(rows * cols))  # row-major, in order
        assert int((~on_grid).sum()) == len(emb.cells) - rows * cols > 0  # prompt tokens: -1
        assert emb.vectors.dtype == torch.float32
        torch.testing.assert_close(emb.vectors.norm(dim=-1), torch.ones(len(emb.vectors)))
    queries = enc.encode_queries(["what is the revenue", "growth"])
    assert [q.shape[1] for q in queries] == [128, 128] and queries[0].shape[0] > queries[1].shape[0]


def test_image_tokens_only_keeps_the_patches(checkpoints):
    enc = load_encoder(f"colqwen2.5:{checkpoints['colqwen2.5'][0]}", image_tokens_only=True)
    emb = enc.encode_pages(pages((150, 200)))[0]
    assert (emb.cells >= 0).all() and len(emb.cells) == emb.grid[0] * emb.grid[1]


def test_max_visual_tokens_caps_large_pages(checkpoints):
    adapter = checkpoints["colqwen2.5"][0]
    enc = load_encoder(f"colqwen2.5:{adapter}", max_visual_tokens=32)
    emb = enc.encode_pages(pages((1700, 2200)))[0]
    assert emb.grid[0] * emb.grid[1] <= 32 and emb.grid[0] > emb.grid[1]
    assert enc.config["max_visual_tokens"] == 32
    assert load_encoder(f"colqwen2.5:{adapter}").config["max_visual_tokens"] == 768


# -- invariance ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_vectors_do_not_depend_on_batch_size_or_padding(family, checkpoints):
    adapter = checkpoints[family][0]
    one = load_encoder(f"{family}:{adapter}", batch_size=1, query_batch_size=1)
    many = load_encoder(f"{family}:{adapter}", batch_size=3, query_batch_size=3)
    batch = pages((150, 200), (300, 90), (60, 60))  # different lengths: padded together
    for a, b in zip(one.encode_pages(batch), many.encode_pages(batch)):
        assert a.grid == b.grid and torch.equal(a.cells, b.cells)
        torch.testing.assert_close(a.vectors, b.vectors, atol=2e-5, rtol=0)
    queries = ["a much longer query about revenue growth in the report", "fox", "what year"]
    for a, b in zip(one.encode_queries(queries), many.encode_queries(queries)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


def test_bfloat16_on_cpu_runs_close_to_float32(checkpoints, encoders):
    bf16 = load_encoder(f"colqwen2.5:{checkpoints['colqwen2.5'][0]}", dtype="bfloat16")
    page = pages((150, 200))
    a = bf16.encode_pages(page)[0].vectors
    b = encoders["colqwen2.5"].encode_pages(page)[0].vectors
    assert a.dtype == torch.float32 and (a * b).sum(-1).min() > 0.95  # cosine per vector


# -- bad input ------------------------------------------------------------------------------------
def test_bad_pages_are_clear_errors(encoders):
    from PIL import Image

    enc = encoders["colqwen2.5"]
    empty = Page.from_image(noise_image(10, 10))
    empty.image = Image.new("RGB", (0, 0))
    with pytest.raises(ValueError, match=r"page 1: the page image is empty \(0 x 0 pixels\)"):
        enc.encode_pages([empty])
    huge = Page.from_image(noise_image(10, 10))
    huge.image = Image.new("RGB", (20_000, 12_000))
    with pytest.raises(ValueError, match="too large .* render it at a lower dpi"):
        enc.encode_pages([huge])
    with pytest.raises(ValueError, match="aspect ratio above 200:1"):
        enc.encode_pages(pages((5000, 20)))
    no_image = Page.from_image(noise_image(10, 10))
    no_image.image = None
    with pytest.raises(ValueError, match="has no image"):
        enc.encode_pages([no_image])
    with pytest.raises(ValueError, match="non-empty strings"):
        enc.encode_queries([" "])


def test_bad_checkpoints_are_clear_errors(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="unknown encoder 'colqwen9'; available: text-layer, .*colpali"):
        load_encoder("colqwen9")
    with pytest.raises(ValueError, match="dtype must be .*float16 overflows"):
        load_encoder("colqwen2.5", dtype="float16")
    with pytest.raises(TypeError, match="unknown colpali options \\['resolution'\\]"):
        load_encoder("colpali", resolution=448)
    with pytest.raises(ValueError, match="fixed-size images"):
        load_encoder("colpali", max_visual_tokens=100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a colqwen2.5 checkpoint: expected adapter_config.json"):
        load_encoder(f"colqwen2.5:{tmp_path / 'empty'}").dim
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(f"colqwen2.5:{tmp_path / 'nowhere'}").dim
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face hub"):
        load_encoder("colqwen2.5:nobody/no-such-model").dim  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(CheckpointError, match="holds a 'paligemma' model; colqwen2.5 needs 'qwen2_5_vl': "
                                              "use --encoder colpali:"):
        load_encoder(f"colqwen2.5:{checkpoints['colpali'][1]}").dim


def test_plain_vlm_and_mismatched_adapter_are_refused(checkpoints, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from agree_core.encoders.colvision.encoder import FAMILIES as SPECS, _backbone_config

    adapter, base = checkpoints["colqwen2.5"]
    plain = tmp_path / "plain"
    Qwen2_5_VLForConditionalGeneration(_backbone_config(base, SPECS["colqwen2.5"])).save_pretrained(plain)
    with pytest.raises(CheckpointError, match="no custom_text_proj weights: it is a plain"):
        load_encoder(f"colqwen2.5:{plain}").dim
    bad = tmp_path / "bad-adapter"
    shutil.copytree(adapter, bad)
    weights = load_file(str(bad / "adapter_model.safetensors"))
    weights = {k.replace("layers.0.", "layers.7."): v for k, v in weights.items()}
    from safetensors.torch import save_file

    save_file(weights, str(bad / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit this colqwen2.5 model"):
        load_encoder(f"colqwen2.5:{bad}").dim
    truncated = tmp_path / "truncated-base"
    shutil.copytree(base, truncated)
    weights = {k: v for k, v in load_file(str(base / "model.safetensors")).items()
               if k != "model.norm.weight"}
    save_file(weights, str(truncated / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 weights missing, e.g. language_model.norm.weight"):
        load_encoder(f"colqwen2.5:{adapter}", base=str(truncated)).dim


def test_names_and_configs(checkpoints):
    assert load_encoder("colqwen2.5").name == "colqwen2.5"
    assert load_encoder("colqwen2.5").config["model"] == "vidore/colqwen2.5-v0.2"
    assert load_encoder("colqwen2").config["model"] == "vidore/colqwen2-v1.0"
    assert load_encoder("colpali").config["model"] == "vidore/colpali-v1.3"
    adapter = checkpoints["colpali"][0]
    enc = load_encoder(f"colpali:{adapter}")
    assert enc.name == f"colpali:{adapter}"
    rebuilt = load_encoder(enc.name, **enc.config)  # how an index reopens its encoder
    assert rebuilt.config == enc.config and json.dumps(enc.config)
