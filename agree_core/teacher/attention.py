"""Attention from a few query rows to a few key columns, without attention matrices.

A teacher map needs, in every text layer, the softmax rows of a handful of tokens (the query
tokens, or the last token) restricted to the image-token columns. Asking transformers for
``output_attentions=True`` materialises every layer's full ``(heads, L, L)`` matrix and forces
the slow eager kernel. Instead we register an attention function (transformers'
``AttentionInterface``) that lets the usual kernel (SDPA or flash attention) compute the layer's
output, and on the side computes just ``softmax(q_rows @ K^T * scale)`` for the selected rows
from the post-RoPE queries and keys it is handed: ``(heads, n_rows, L)`` numbers per layer,
reduced at once to one value per image column.

:func:`column_attention` is the memory-lean path; :func:`column_attention_eager` is the
reference computed from ``output_attentions=True`` (used by the tests and benchmarks).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["column_attention", "column_attention_eager", "lean_implementation"]

_ACTIVE: contextvars.ContextVar["_Probe | None"] = contextvars.ContextVar("agree_probe", default=None)
_REGISTERED: set[str] = set()


@dataclass
class _Probe:
    """What to record: rows and columns (sequence positions) of the batch-of-one input."""

    modules: dict[int, int]  # id(attention module) -> layer index, for the selected layers
    rows: torch.Tensor  # (n_rows,) positions whose attention rows are averaged
    cols: torch.Tensor  # (n_cols,) positions of the image tokens
    per_layer: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (n_cols,)

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
               scaling: float | None) -> None:
        layer = self.modules[id(module)]
        if query.shape[0] != 1:
            raise ValueError("teacher attention is computed one example at a time (batch size 1)")
        rows = self.rows.to(query.device)
        q = query[0, :, rows].float()  # (heads, n_rows, head_dim), after RoPE
        k = key[0].float()  # (kv_heads, L, head_dim)
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)  # (heads, L, head_dim): GQA
        scale = scaling if scaling is not None else q.shape[-1] ** -0.5
        logits = (q @ k.transpose(-1, -2)) * scale  # (heads, n_rows, L)
        later = torch.arange(k.shape[1], device=q.device)[None, :] > rows[:, None]  # (n_rows, L): causal
        probs = logits.masked_fill(later[None], float("-inf")).softmax(dim=-1)  # (heads, n_rows, L)
        cols = probs[:, :, self.cols.to(query.device)]  # (heads, n_rows, n_cols)
        self.per_layer[layer] = cols.mean(dim=(0, 1)).cpu()  # (n_cols,)


def lean_implementation(base: str) -> str:
    """Register (once) and return the name of the lean wrapper around attention ``base``
    (``"sdpa"`` or ``"flash_attention_2"``...)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = f"agree_lean_{base}"
    if name in _REGISTERED:
        return name
    if base not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"attention implementation {base!r} is not available; use 'sdpa' or an "
                         f"installed flash attention ({', '.join(sorted(ALL_ATTENTION_FUNCTIONS))})")
    inner = ALL_ATTENTION_FUNCTIONS[base]

    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any):
        probe = _ACTIVE.get()
        if probe is not None and id(module) in probe.modules:
            probe.record(module, query, key, kwargs.get("scaling"))
        return inner(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    _REGISTERED.add(name)
    return name


def _text_attentions(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of each text layer of a Qwen2(.5)-VL ``...Model``."""
    return [layer.self_attn for layer in model.language_model.layers]


def _select(n_layers: int, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    chosen = sorted({i % n_layers for i in layers if -n_layers <= i < n_layers})
    if len(chosen) != len(set(layers)):
        raise ValueError(f"layers must be in -{n_layers}..{n_layers - 1} (the teacher has "
                         f"{n_layers} text layers), got {list(layers)}")
    return chosen


def column_attention(model: torch.nn.Module, inputs: dict[str, torch.Tensor], rows: torch.Tensor,
                     cols: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Attention of ``rows`` to ``cols``, averaged over heads and rows, per selected layer.

    Args:
        model: a Qwen2(.5)-VL ``...Model`` whose text config uses a :func:`lean_implementation`.
        inputs: one example (batch size 1): input_ids, pixel_values, image_grid_thw...
        rows: ``(n_rows,)`` positions of the attending tokens.
        cols: ``(n_cols,)`` positions of the attended (image) tokens.
        layers: text layers to use (negative counts from the end); default all.

    Returns:
        ``(n_layers_selected, n_cols)`` float32.
    """
    attn = _text_attentions(model)
    if not model.config.text_config._attn_implementation.startswith("agree_lean_"):
        raise ValueError("set the text attention to a lean implementation first "
                         "(model.set_attn_implementation({'text_config': lean_implementation('sdpa')}))")
    chosen = _select(len(attn), layers)
    probe = _Probe({id(attn[i]): i for i in chosen}, rows, cols)
    token = _ACTIVE.set(probe)
    try:
        with torch.inference_mode():
            model(**inputs, use_cache=False)
    finally:
        _ACTIVE.reset(token)
    return torch.stack([probe.per_layer[i] for i in chosen])


def column_attention_eager(model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                           rows: torch.Tensor, cols: torch.Tensor,
                           layers: Sequence[int] | None = None) -> torch.Tensor:
    """The same numbers from ``output_attentions=True`` (eager attention, every layer's full
    ``(heads, L, L)`` matrix kept): the reference, and the memory cost the lean path avoids."""
    previous = {"text_config": model.config.text_config._attn_implementation,
                "vision_config": model.config.vision_config._attn_implementation}
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model(**inputs, use_cache=False, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    chosen = _select(len(out.attentions), layers)
    maps = []
    for i in chosen:
        a = out.attentions[i][0].float()  # (heads, L, L)
        maps.append(a[:, rows][:, :, cols].mean(dim=(0, 1)))  # (n_cols,)
    return torch.stack(maps).cpu()
