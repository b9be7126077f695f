"""ColQwen2.5, ColQwen2 and ColPali: a transformers VLM backbone, a linear projection to 128-d,
L2 normalisation and the attention mask. Nothing else: no pooling, no extra layers.

The forward pass follows the published models (colpali-engine 0.3.x):

1. run the backbone (``use_cache=False``) and take its last hidden state (after the final norm);
2. project with ``custom_text_proj`` (``nn.Linear(hidden, 128)`` with a bias);
3. divide by the L2 norm;
4. zero the padded positions (with ``where``, so a NaN in a padded row cannot leak).

Two deliberate details for transformers 5.x:

- ColQwen pages pass ``mm_token_type_ids`` (1 on image tokens), without which 5.x silently
  falls back to 1-D positions instead of the multimodal (M-RoPE) positions the models were
  trained with; queries get positions counted over real tokens only, as 4.4x computed them.
- ColPali passes ``token_type_ids`` of zeros, so every token attends to every other token, as
  PaliGemma did in transformers 4.4x when ColPali was trained (5.x would otherwise be causal
  under eager attention and bidirectional under SDPA).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PaliGemmaConfig, PaliGemmaModel, Qwen2_5_VLModel, Qwen2VLModel, Qwen3VLModel
from transformers.models.paligemma.modeling_paligemma import PaliGemmaPreTrainedModel

__all__ = ["ColQwen3", "ColQwen2_5", "ColQwen2", "ColPali", "normalise"]


def normalise(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised vectors, zero on padded positions.

    >>> normalise(torch.tensor([[[3.0, 4.0], [1.0, 0.0]]]), torch.tensor([[1, 0]]))
    tensor([[[0.6000, 0.8000],
             [0.0000, 0.0000]]])
    """
    vectors = hidden / hidden.norm(dim=-1, keepdim=True)  # (batch, n_tokens, dim); no eps, as trained
    return torch.where(attention_mask[..., None].bool(), vectors, torch.zeros_like(vectors))


class _ColQwen:
    """The ColQwen head over a Qwen2(.5)-VL backbone (shared by both versions)."""

    config: object

    def _add_projection(self, dim: int) -> None:
        self.dim = dim
        self.custom_text_proj = nn.Linear(self.config.text_config.hidden_size, dim)

    def forward(
        self,
        input_ids: torch.Tensor,  # (batch, n_tokens)
        attention_mask: torch.Tensor,  # (batch, n_tokens), 1 on real tokens
        pixel_values: torch.Tensor | None = None,  # (n_patches, patch_dim) or padded (batch, max_patches, ...)
        image_grid_thw: torch.Tensor | None = None,  # (batch, 3)
        **kwargs,
    ) -> torch.Tensor:
        """``(batch, n_tokens, dim)`` L2-normalised vectors, zero on padding."""
        if pixel_values is not None:
            if pixel_values.dim() == 3:  # zero-padded per image, as colpali-engine collates
                sizes = image_grid_thw.prod(dim=-1).tolist()
                pixel_values = torch.cat([pv[:n] for pv, n in zip(pixel_values, sizes)])
            kwargs["mm_token_type_ids"] = (input_ids == self.config.image_token_id).int()
        else:  # text only: positions over real tokens, so padding shifts nothing
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (batch, n_tokens)
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                              pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                              use_cache=False, **kwargs)
        projected = self.custom_text_proj(out.last_hidden_state)  # (batch, n_tokens, dim)
        return normalise(projected, attention_mask)


class ColQwen2_5(_ColQwen, Qwen2_5_VLModel):
    """ColQwen2.5: Qwen2.5-VL (in-memory names ``language_model.*``, ``visual.*``) + projection."""

    def __init__(self, config, dim: int = 128):
        super().__init__(config)
        self._add_projection(dim)


class ColQwen3(_ColQwen, Qwen3VLModel):
    """ColQwen3 (colpali-engine's ``ColQwen3``): Qwen3-VL (``language_model.*``, ``visual.*``,
    deepstack visual features included) + projection (320-d in the published checkpoints)."""

    def __init__(self, config, dim: int = 320):
        super().__init__(config)
        self._add_projection(dim)


class ColQwen2(_ColQwen, Qwen2VLModel):
    """ColQwen2: Qwen2-VL + projection."""

    def __init__(self, config, dim: int = 128):
        super().__init__(config)
        self._add_projection(dim)


class ColPali(PaliGemmaPreTrainedModel):
    """ColPali: PaliGemma (``model.*``, without the language-model head) + projection."""

    def __init__(self, config: PaliGemmaConfig, dim: int = 128):
        super().__init__(config)
        self.dim = dim
        self.model = PaliGemmaModel(config)
        self.custom_text_proj = nn.Linear(config.text_config.hidden_size, dim)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,  # (batch, n_tokens)
        attention_mask: torch.Tensor,  # (batch, n_tokens)
        pixel_values: torch.Tensor | None = None,  # (batch, 3, size, size)
        **kwargs,
    ) -> torch.Tensor:
        """``(batch, n_tokens, dim)`` L2-normalised vectors, zero on padding."""
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.custom_text_proj.weight.dtype)
        kwargs.pop("token_type_ids", None)
        kwargs.pop("labels", None)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         pixel_values=pixel_values, token_type_ids=torch.zeros_like(input_ids),
                         use_cache=False, **kwargs)
        projected = self.custom_text_proj(out.last_hidden_state)  # (batch, n_tokens, dim)
        return normalise(projected, attention_mask)
