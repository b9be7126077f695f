"""Build teacher maps for a training file (``agree teacher build DATA.jsonl --out DIR``).

DATA.jsonl holds one JSON object per line::

    {"qid": "q1", "query": "What was the 2023 revenue?", "image": "pages/report-p4.png"}
    {"query": "Which method is fastest?", "pdf": "papers/survey.pdf", "page": 7}

``query`` is required; the page is an ``image`` file, or a ``pdf`` with a 1-based ``page``
(rendered at ``dpi``); relative paths are relative to DATA.jsonl's folder; ``qid`` is optional
(default: the line number) and is recorded with the map. Maps are cached by (query, page
pixels, teacher config): rerunning skips what is done, so an interrupted build resumes.
Under ``torchrun --nproc-per-node N`` each rank takes every N-th example, runs on its own GPU
and writes its own shards.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from agree_core.teacher.cache import MapCache, page_digest
from agree_core.teacher.qwen import QwenVLTeacher

log = logging.getLogger(__name__)

__all__ = ["Example", "read_examples", "build_maps", "build_command", "BuildReport", "dist_rank"]


@dataclass(frozen=True)
class Example:
    line: int
    qid: Any
    query: str
    image: Path | None = None
    pdf: Path | None = None
    page: int | None = None

    @property
    def where(self) -> str:
        return str(self.image) if self.image is not None else f"{self.pdf} page {self.page}"


@dataclass
class BuildReport:
    total: int = 0  # examples for this rank
    cached: int = 0  # already in the cache
    computed: int = 0  # computed now
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    @property
    def ok(self) -> bool:
        return not self.skipped


def read_examples(path: str | Path) -> list[Example]:
    """Parse DATA.jsonl; a malformed line is a ``ValueError`` naming the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    root = path.parent.absolute()
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON object ({e})") from e
        query = obj.get("query") if isinstance(obj, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f'{path}:{n}: needs a non-empty "query" string')
        qid = obj.get("qid", n)
        if "image" in obj:
            examples.append(Example(n, qid, query, image=root / obj["image"]))
        elif "pdf" in obj:
            page = obj.get("page")
            if not isinstance(page, int) or page < 1:
                raise ValueError(f'{path}:{n}: "pdf" needs a 1-based integer "page", got {page!r}')
            examples.append(Example(n, qid, query, pdf=root / obj["pdf"], page=page))
        else:
            raise ValueError(f'{path}:{n}: give the page as "image": PATH or "pdf": PATH with "page": N')
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples


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
    renderer = _Renderer(dpi)
    with MapCache(out, teacher.cfg, rank=rank, shard_size=shard_size) as cache:
        bar = tqdm(mine, desc=f"teacher maps (rank {rank})" if world_size > 1 else "teacher maps",
                   unit="map", disable=not progress, dynamic_ncols=True)
        for ex in bar:
            try:
                image = renderer.image(ex)
                digest = page_digest(image)
            except (OSError, ValueError) as e:
                report.skipped.append((ex.line, f"{ex.where}: {e}"))
                log.warning("line %d skipped: %s: %s", ex.line, ex.where, e)
                continue
            key = cache.key(ex.query, digest)
            if key in cache:
                report.cached += 1
                continue
            try:
                values = teacher.map(ex.query, image)
            except ValueError as e:
                report.skipped.append((ex.line, f"{ex.where}: {e}"))
                log.warning("line %d skipped: %s: %s", ex.line, ex.where, e)
                continue
            cache.add(key, values, qid=ex.qid, query=ex.query, page_digest=digest,
                      source=str(ex.image or ex.pdf), page=ex.page or 1)
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


class _Renderer:
    """Page images for examples (PDF facts looked up once per file)."""

    def __init__(self, dpi: int):
        self.dpi = dpi
        self._pdfs: dict[Path, Any] = {}

    def image(self, ex: Example) -> Image.Image:
        if ex.image is not None:
            if not ex.image.is_file():
                raise ValueError("image file not found")
            with Image.open(ex.image) as im:
                return im.convert("RGB")
        from agree_core.pages import PdfError, inspect_pdf, iter_pages

        from agree_core.pages import file_sha256

        try:
            if ex.pdf not in self._pdfs:
                self._pdfs[ex.pdf] = (inspect_pdf(ex.pdf), file_sha256(ex.pdf))
            info, sha = self._pdfs[ex.pdf]
            page = next(iter_pages(ex.pdf, dpi=self.dpi, text=False, pages=[ex.page], info=info,
                                   sha256=sha))
        except PdfError as e:
            raise ValueError(e.reason) from e
        return page.image
