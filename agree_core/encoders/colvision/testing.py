"""Tiny random ColVision checkpoints in the published layout, for tests and plumbing benchmarks.

Nothing here downloads anything: the tokenizer is trained on the spot (byte-level BPE) and
the models are built from small configs. :func:`save_published_checkpoint` writes what a hub
user gets: a base directory in transformers 4.4x weight names and a LoRA adapter directory
whose ``adapter_config.json`` points at it, so loading goes through the same code path.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from agree_core.encoders.colvision import checkpoint as ckpt

__all__ = ["make_tokenizer", "tiny_config", "save_published_checkpoint", "save_tiny_teacher",
           "TARGET_MODULES"]

TARGET_MODULES = ckpt.LORA_TARGET_MODULES

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>"]
PALIGEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
_CORPUS = ("the quick brown fox jumps over the lazy dog describe the image query what is shown "
           "in the figure table chart page revenue growth year report method results question "
           "point out all content helpful answering single word phrase write general description "
           "0 1 2 3 4 5 6 7 8 9 . , : ? ! \n").split(" ")


def make_tokenizer(kind: str, vocab_size: int = 400):
    """A small byte-level BPE tokenizer with the special tokens of Qwen2-VL or PaliGemma."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = QWEN_SPECIALS if kind == "qwen" else PALIGEMMA_SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(_CORPUS)] * 20, trainer)
    if kind == "qwen":
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>",
                                       eos_token="<|im_end|>", extra_special_tokens={})
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", extra_special_tokens={})


def tiny_config(family: str, tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                kv_heads: int = 2, vision_depth: int = 2, image_size: int = 112):
    """A small backbone config (``family``: colqwen2.5, colqwen2 or colpali; also used for
    teachers, which are Qwen2(.5)-VL)."""
    from transformers import PaliGemmaConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    vocab = len(tokenizer)
    head_dim = hidden // heads
    if family == "colpali":
        return PaliGemmaConfig(
            text_config=dict(model_type="gemma", hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=vision_depth, num_attention_heads=2,
                               image_size=image_size, patch_size=14, projection_dim=hidden,
                               vision_use_head=False),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=hidden)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    half = head_dim // 2
    text = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
                rope_scaling={"type": "mrope",
                              "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]})
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if family == "colqwen3":
        text.pop("rope_scaling")
        text.update(head_dim=head_dim, rope_parameters={
            "rope_type": "default", "rope_theta": 5_000_000.0, "mrope_interleaved": True,
            "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]})
        return Qwen3VLConfig(text_config=text, vision_config=dict(
            depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
            patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0]), **tokens)
    if family == "colqwen2":
        return Qwen2VLConfig(text_config=text, vision_config=dict(
            depth=vision_depth, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2), **tokens)
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(
        depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
        fullatt_block_indexes=[vision_depth - 1], window_size=112), **tokens)


def preprocessor_config(family: str, image_size: int = 112) -> dict[str, Any]:
    if family == "colqwen3":  # Qwen3-VL: 16-px patches, mean/std 0.5
        return {"image_processor_type": "Qwen2VLImageProcessorFast", "patch_size": 16, "merge_size": 2,
                "temporal_patch_size": 2, "size": {"shortest_edge": 65536, "longest_edge": 16777216},
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3}
    if family == "colpali":
        return {"image_processor_type": "SiglipImageProcessor",
                "size": {"height": image_size, "width": image_size},
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
                "rescale_factor": 1 / 255, "image_seq_length": (image_size // 14) ** 2}
    return {"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136, "max_pixels": 12845056,
            "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "resample": 3,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711]}


def save_published_checkpoint(family: str, directory: str | Path, *, seed: int = 0,
                              lora_r: int = 4, **config_kwargs: Any) -> tuple[Path, Path]:
    """Write ``directory/base`` and ``directory/adapter`` in the published layout and return
    ``(adapter_dir, base_dir)``. The adapter's LoRA weights are random and non-zero, so a
    loader that drops them gives different vectors."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    from agree_core.encoders.colvision.encoder import _model_class, FAMILIES

    directory = Path(directory)
    base_dir, adapter_dir = directory / "base", directory / "adapter"
    kind = {"colpali": "paligemma", "colqwen3": "qwen3"}.get(family, "qwen")
    tokenizer = make_tokenizer("paligemma" if family == "colpali" else "qwen")
    config = tiny_config(family, tokenizer, **config_kwargs)
    config.architectures = [{"colqwen2.5": "ColQwen2_5", "colqwen2": "ColQwen2", "colqwen3": "ColQwen3",
                             "colpali": "ColPali"}[family]]
    torch.manual_seed(seed)
    model = _model_class(FAMILIES[family])(config, dim=FAMILIES[family].dim).eval()
    for d in (base_dir, adapter_dir):
        d.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(d))
        (d / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family), indent=2))
    config.save_pretrained(str(base_dir))
    rules = ckpt.TO_PUBLISHED[kind]
    weights = {ckpt.rename_key(k, rules): v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(base_dir / "model.safetensors"), metadata={"format": "pt"})

    lora = LoraConfig(r=lora_r, lora_alpha=lora_r, lora_dropout=0.1, target_modules=TARGET_MODULES[family],
                      init_lora_weights="gaussian", bias="none", task_type="FEATURE_EXTRACTION")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    prefix = "base_model.model."
    adapter = {prefix + ckpt.rename_key(k[len(prefix):], rules): v.contiguous()
               for k, v in get_peft_model_state_dict(peft_model).items()}
    save_file(adapter, str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_config = lora.to_dict()
    adapter_config.update(base_model_name_or_path=str(base_dir), peft_type="LORA",
                          task_type="FEATURE_EXTRACTION", target_modules=TARGET_MODULES[family])
    adapter_config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in adapter_config.items()}
    (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, default=str))
    return adapter_dir, base_dir


def save_tiny_teacher(family: str, directory: str | Path, *, seed: int = 0, **config_kwargs: Any) -> Path:
    """A random Qwen2.5-VL (``family="colqwen2.5"``) or Qwen2-VL (``"colqwen2"``) instruct-style
    checkpoint, saved by transformers like the published teachers."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    tokenizer = make_tokenizer("qwen")
    config = tiny_config(family, tokenizer, **config_kwargs)
    cls = Qwen2_5_VLForConditionalGeneration if family == "colqwen2.5" else Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family), indent=2))
    return directory
