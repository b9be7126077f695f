"""Published architectures at full size with random weights, to measure memory and speed where
no hub is reachable (``--architecture`` of the visual-encoding and teacher benchmarks).

The sizes are those of the published ``config.json`` files (see docs/MODELS.md); the weights
are random and the tokenizer is a tiny stand-in (the vocabulary size, and so the embedding
matrix, is the published one). On a CPU a size that cannot fit in the memory available is
refused before anything is allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["ARCHITECTURES", "parameter_count", "check_fits", "save_random_published"]

_QWEN2_5_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                       spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31])
# name -> (family of the tiny layout, text config, vision config)
ARCHITECTURES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "qwen2.5-vl-3b": ("colqwen2.5", dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                         num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                                         tie_word_embeddings=True),
                      dict(_QWEN2_5_VISION, out_hidden_size=2048)),
    "qwen2.5-vl-7b": ("colqwen2.5", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                         num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
                      dict(_QWEN2_5_VISION, out_hidden_size=3584)),
    "qwen2-vl-2b": ("colqwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                     num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                     tie_word_embeddings=True),
                    dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14)),
}


def _config(name: str, tokenizer):
    from agree_core.encoders.colvision.testing import tiny_config

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    family, text, vision = ARCHITECTURES[name]
    config = tiny_config(family, tokenizer)
    for key, value in text.items():
        setattr(config.text_config, key, value)
    config.text_config.layer_types = ["full_attention"] * text["num_hidden_layers"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2
    config.text_config.rope_scaling = {"type": "mrope", "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]}
    config.text_config.rope_parameters = {"rope_type": "default", "rope_theta": 1_000_000.0,
                                          "mrope_section": [16, 24, 24] if head_dim == 128 else
                                          config.text_config.rope_scaling["mrope_section"]}
    for key, value in vision.items():
        setattr(config.vision_config, key, value)
    return family, config


def parameter_count(name: str) -> int:
    """Parameters of the architecture with the 128-d projection (counted on the meta device)."""
    from agree_core.encoders.colvision.encoder import FAMILIES, _model_class
    from agree_core.encoders.colvision.testing import make_tokenizer

    family, config = _config(name, make_tokenizer("qwen"))
    with torch.device("meta"):
        model = _model_class(FAMILIES[family])(config, dim=128)
    return sum(p.numel() for p in model.parameters())


def check_fits(name: str, dtype: torch.dtype, device: torch.device) -> int:
    """Bytes the weights need; on a CPU, a ``MemoryError`` with what to do when they (and
    about 30% for activations) do not fit in the memory available now."""
    need = parameter_count(name) * torch.finfo(dtype).bits // 8
    if device.type == "cpu":
        available = _available_memory()
        if need * 1.3 > available:
            raise MemoryError(f"{name} needs {need / 2**30:.1f} GiB of weights in {str(dtype).split('.')[-1]} "
                              f"(+30% for activations) and this machine has {available / 2**30:.1f} GiB available: "
                              "run it on a GPU or pick a smaller architecture")
    return need


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def save_random_published(name: str, directory: str | Path, *, dtype: torch.dtype = torch.bfloat16,
                          device: str = "cpu", seed: int = 0, teacher: bool = False) -> Path:
    """A checkpoint of architecture ``name`` with random weights: a retriever base in the
    published ColQwen layout (``colqwen2.5:DIR`` / ``colqwen2:DIR`` load it), or with
    ``teacher=True`` an instruct-style ``*ForConditionalGeneration`` (what ``QwenVLTeacher`` reads)."""
    import json

    from safetensors.torch import save_file

    from agree_core.encoders.colvision import checkpoint as ckpt
    from agree_core.encoders.colvision.encoder import FAMILIES, _model_class
    from agree_core.encoders.colvision.testing import make_tokenizer, preprocessor_config

    tokenizer = make_tokenizer("qwen")
    family, config = _config(name, tokenizer)
    check_fits(name, dtype, torch.device(device))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if teacher:
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

        cls = Qwen2_5_VLForConditionalGeneration if family == "colqwen2.5" else Qwen2VLForConditionalGeneration
        with torch.device(device):
            cls(config).to(dtype).save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family), indent=2))
        return directory
    with torch.device(device):
        model = _model_class(FAMILIES[family])(config, dim=128).to(dtype)
    rules = ckpt.TO_PUBLISHED["qwen"]
    save_file({ckpt.rename_key(k, rules): v.contiguous().cpu() for k, v in model.state_dict().items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = [type(model).__name__]
    config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family), indent=2))
    return directory
