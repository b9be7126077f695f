"""Training data for tests: the sample PDFs, their demo questions, oracle teacher maps."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def load_train_module():
    """``training/train.py`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("agree_train", ROOT / "training" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write_dataset(directory: Path, samples: list[Path], *, maps: bool = True,
                  map_shape: tuple[int, int] | None = None) -> tuple[Path, Path | None]:
    """train.jsonl over the sample PDFs (the demo questions) and, with ``maps``, a teacher-map
    cache whose maps (20 rows, the page's aspect, or ``map_shape``) mark the top third of
    each positive page."""
    from agree_core.pages import inspect_pdf
    from agree_core.samples import SAMPLE_QUESTIONS
    from agree_core.teacher.cache import MapCache
    from agree_core.teacher.qwen import TeacherConfig

    by_name = {p.name: p for p in samples}
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "train.jsonl"
    data.write_text("".join(json.dumps({"qid": f"q{i}", "query": q, "pdf": str(by_name[name]), "page": page}) + "\n"
                            for i, (q, name, page) in enumerate(SAMPLE_QUESTIONS) if name in by_name))
    if not maps:
        return data, None
    cache_dir = directory / "maps"
    with MapCache(cache_dir, TeacherConfig(model="oracle:test")) as cache:
        for i, (q, name, page) in enumerate(SAMPLE_QUESTIONS):
            if name not in by_name:
                continue
            width, height = inspect_pdf(by_name[name]).sizes[page - 1]
            shape = map_shape or (20, round(20 * width / height))
            values = torch.zeros(shape)
            values[: shape[0] // 3] = 1.0
            digest = f"{name}-{page}"
            cache.add(cache.key(q, digest), values, qid=f"q{i}", query=q, page_digest=digest,
                      source=str(by_name[name]), page=page)
    return data, cache_dir


def config(module, data: Path, maps: Path | None, out: Path, **overrides):
    settings = dict(encoder="text-layer", train_data=str(data), teacher_maps=str(maps) if maps else None,
                    local_loss="cosine" if maps else "none", output_dir=str(out), device="cpu",
                    batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=0, schedule="constant",
                    lora_r=4, lora_alpha=8, eval_at_start=False, eval_every=0, save_every=0)
    settings.update(overrides)
    return module.Config(**settings)


def log_entries(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
