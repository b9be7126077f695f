"""Visual late-interaction encoders: ColQwen2.5, ColQwen2 and ColPali.

Our own thin classes over transformers (no colpali-engine, no torchvision), loading the
published checkpoints and fine-tuned adapters in the same layout:

=============  ==========================  ==========================  ==================
name           default checkpoint          base (from the adapter)     image tokens/page
=============  ==========================  ==========================  ==================
colqwen2.5     vidore/colqwen2.5-v0.2      vidore/colqwen2.5-base      <= 768 (option)
colqwen2       vidore/colqwen2-v1.0        vidore/colqwen2-base        <= 768 (option)
colpali        vidore/colpali-v1.3         vidore/colpaligemma-3b-pt-448-base   1024 (32 x 32)
=============  ==========================  ==========================  ==================

``load_encoder("colqwen2.5")``, ``load_encoder("colqwen2.5:/runs/agree-lora")``; options:
``device``, ``dtype``, ``batch_size``, ``max_visual_tokens``, ``base`` (override the adapter's
base, e.g. a local copy), ``query_prefix``... (see :class:`ColVisionConfig`). Every page
vector keeps its cell on the patch grid (after Qwen's 2x2 merge: ``(grid_h/2, grid_w/2)``;
ColPali ``(32, 32)``); prompt and special tokens have cell ``-1``.
"""

from __future__ import annotations

from typing import Any

from agree_core.encoders.colvision.checkpoint import CheckpointError
from agree_core.encoders.colvision.encoder import FAMILIES, ColVisionConfig, ColVisionEncoder
from agree_core.encoders.registry import register_encoder

__all__ = ["ColVisionEncoder", "ColVisionConfig", "CheckpointError", "FAMILIES"]


def _factory(family: str):
    def build(checkpoint: str | None = None, **options: Any) -> ColVisionEncoder:
        return ColVisionEncoder(family, checkpoint, **options)

    build.__name__ = f"build_{family.replace('.', '_')}"
    return build


for _name in FAMILIES:
    register_encoder(_name)(_factory(_name))
