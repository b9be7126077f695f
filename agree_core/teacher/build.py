"""Build teacher maps for a training file (``agree teacher build DATA.jsonl --out DIR``).

DATA.jsonl is the training format of :mod:`agree_core.training.data`::

    {"qid": "q1", "query": "What was the 2023 revenue?", "image": "pages/report-p4.png"}
    {"query": "Which method is fastest?", "pdf": "papers/survey.pdf", "page": 7}

The teacher reads only each line's query and page (``negatives`` and ``map`` are for
training); ``qid`` (default: the line number) is recorded with the map. PDF pages are
rendered at ``dpi``. Maps are cached by (query, page pixels, teacher config): rerunning skips
what is done, so an interrupted build resumes.
Under ``torchrun --nproc-per-node N`` each rank takes every N-th example, runs on its own GPU
and writes its own shards.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agree_core.teacher.cache import MapCache, page_digest
from agree_core.teacher.qwen import QwenVLTeacher
from agree_core.training.data import Example, PageLoader, read_examples

log = logging.getLogger(__name__)

__all__ = ["Example", "read_examples", "build_maps", "build_command", "BuildReport", "dist_rank"]


@dataclass
class BuildReport:
    total: int = 0  # examples for this rank
    cached: int = 0  # already in the cache
    computed: int = 0  # computed now
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    @property
    def ok(self) -> bool:
        return not self.skipped


def dist_rank() -> tuple[int, int, int | None]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, None)`` alone)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = os.environ.get("LOCAL_RANK")
    return rank, world, int(local) if local is not None else None


def build_maps(examples: list[Example], out: str | Path, teacher: QwenVLTeacher, *, dpi: int = 150,
               rank: int = 0, world_size: int = 1, shard_size: int = 64, progress: bool = True,
               on_map: Callable[[Example], None] | None = None) -> BuildReport:
    """Compute and cache the maps of this rank's share of ``examples`` (every
    ``world_size``-th, starting at ``rank``), skipping those already cached.

    A page that cannot be read is reported in ``BuildReport.skipped`` and the others go on.
    """
    from tqdm import tqdm

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    mine = examples[rank::world_size]
    report = BuildReport(total=len(mine))
    loader = PageLoader(render=True, dpi=dpi, text=False, cache_size=8)
    with MapCache(out, teacher.cfg, rank=rank, shard_size=shard_size) as cache:
        bar = tqdm(mine, desc=f"teacher maps (rank {rank})" if world_size > 1 else "teacher maps",
                   unit="map", disable=not progress, dynamic_ncols=True)
        for ex in bar:
            try:
                image = loader.load(ex.page).image  # DataError names the file
                digest = page_digest(image)
            except (OSError, ValueError) as e:
                report.skipped.append((ex.line, str(e)))
                log.warning("line %d skipped: %s", ex.line, e)
                continue
            key = cache.key(ex.query, digest)
            if key in cache:
                report.cached += 1
                continue
            try:
                values = teacher.map(ex.query, image)
            except ValueError as e:
                report.skipped.append((ex.line, f"{ex.page.where}: {e}"))
                log.warning("line %d skipped: %s: %s", ex.line, ex.page.where, e)
                continue
            cache.add(key, values, qid=ex.qid, query=ex.query, page_digest=digest,
                      source=ex.page.source, page=ex.page.page or 1)
            report.computed += 1
            if on_map is not None:
                on_map(ex)
        bar.close()
    return report


def build_command(data: str | Path, out: str | Path, *, teacher: str | None = None,
                  device: str | None = None, dpi: int = 150, shard_size: int = 64,
                  progress: bool = True, **teacher_config: Any) -> BuildReport:
    """What ``agree teacher build`` does: read DATA.jsonl, pick this process's rank and GPU
    (torchrun), and build the maps into ``out``."""
    import torch

    examples = read_examples(data)
    rank, world, local = dist_rank()
    if device is None and local is not None and torch.cuda.is_available():
        device = f"cuda:{local}"
    model = QwenVLTeacher(teacher, device=device, **teacher_config)
    if world > 1:
        log.info("rank %d of %d: %d of %d examples on %s", rank, world,
                 len(examples[rank::world]), len(examples), model.device)
    return build_maps(examples, out, model, dpi=dpi, rank=rank, world_size=world,
                      shard_size=shard_size, progress=progress)
