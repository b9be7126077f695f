"""AGREE's teacher: MLLM attention maps of a query over a page, aligned to a retriever's grid,
cached on disk for training.

- :class:`QwenVLTeacher` computes maps (Qwen2.5-VL / Qwen2-VL, by hub id or path) without
  materialising attention matrices (:mod:`agree_core.teacher.attention`).
- :func:`align_to_grid` pools a map to any retriever grid (visual or text-layer).
- :class:`MapCache` stores maps as safetensors shards with a manifest, resumable, one writer per
  rank; :func:`build_maps` fills it from a JSONL file (``agree teacher build``).
"""

from agree_core.teacher.align import align_to_grid
from agree_core.teacher.qwen import DEFAULT_TEACHER, QwenVLTeacher, TeacherConfig

__all__ = ["QwenVLTeacher", "TeacherConfig", "DEFAULT_TEACHER", "align_to_grid", "MapCache",
           "build_maps", "read_examples", "page_digest"]


def __getattr__(name: str):  # the cache and builder load lazily (they import safetensors, tqdm)
    if name in ("MapCache", "page_digest"):
        from agree_core.teacher import cache

        return getattr(cache, name)
    if name in ("build_maps", "read_examples"):
        from agree_core.teacher import build

        return getattr(build, name)
    raise AttributeError(name)
