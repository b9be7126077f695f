"""A tiny random jina-reranker-m0-style checkpoint in the published layout (transformers 4.4x
names: ``model.*``, ``visual.*``, ``lm_head.*``, ``score.0.*``, ``score.2.*``), for tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["save_tiny_reranker"]


def save_tiny_reranker(directory: str | Path, *, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    from agree_core.encoders.colvision.testing import make_tokenizer, preprocessor_config, tiny_config
    from agree_core.rerankers.vlm import RerankerModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer("qwen")
    config = tiny_config("colqwen2", tokenizer)
    config.architectures = ["JinaVLForRanking"]
    config.num_labels = 1
    torch.manual_seed(seed)
    model = RerankerModel(config).eval()
    weights = {}
    for key, value in model.state_dict().items():
        key = key.replace("backbone.language_model.", "model.").replace("backbone.visual.", "visual.")
        weights[key] = value.contiguous()
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor_config("colqwen2"), indent=2))
    return directory
