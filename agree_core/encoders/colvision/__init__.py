"""Visual late-interaction encoders: ColQwen3, ColQwen2.5, ColQwen2 and ColPali.

Our own thin classes over transformers (no colpali-engine, no torchvision), loading the
published checkpoints and fine-tuned adapters in the same layout:

=============  ==========================  ==========================  ==================
name           default checkpoint          base (from the adapter)     image tokens/page
=============  ==========================  ==========================  ==================
colqwen2.5     vidore/colqwen2.5-v0.2      vidore/colqwen2.5-base      <= 768 (option)
colqwen2       vidore/colqwen2-v1.0        vidore/colqwen2-base        <= 768 (option)
colpali        vidore/colpali-v1.3         vidore/colpaligemma-3b-pt-448-base   1024 (32 x 32)
colqwen3       TomoroAI/tomoro-colqwen3-    (a full checkpoint; verify) <= 768 (option)
               embed-4b (320-d)
jina-v4        jinaai/jina-embeddings-v4   the repo itself, adapter    <= 768 (option)
                                           adapters/retrieval
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


_SIZES = {"colqwen2.5": "3B", "colqwen2": "2B", "colpali": "3B", "colqwen3": "4B", "jina-v4": "3.8B"}
_LAYOUTS = "colpali-engine: a LoRA adapter (adapter_config.json) over its *-base repo, or a full directory with custom_text_proj"
for _name, _family in FAMILIES.items():
    register_encoder(_name, default_checkpoint=_family.default_checkpoint, dim=_family.dim, gpu=True,
                     parameters=_SIZES.get(_name, ""),
                     layouts=("the jina repo (Qwen2.5-VL weights + multi_vector_projector) with its task adapters "
                              "in adapters/TASK (option task, default retrieval), or a LoRA adapter over it"
                              if _name == "jina-v4" else _LAYOUTS))(_factory(_name))
