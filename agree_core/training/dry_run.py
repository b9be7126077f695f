"""``train.py --dry-run``: a config's exact settings, run for one step on tiny stand-ins.

A GPU recipe (ColQwen2.5 3B, a 7B teacher, 118k examples) cannot run on a laptop, but
everything except the sizes can: the config is resolved and checked, then one optimizer step
(and an evaluation) runs with the same encoder family, LoRA, loss, schedule and gradient
checkpointing settings over

- the model: a tiny random checkpoint of the same family in the published layout (the
  text layer is small and runs as itself);
- the data: the sample PDFs that ship with agree and their demo questions;
- the teacher: maps from a tiny random Qwen2.5-VL through the real teacher path
  (``agree teacher build``'s code), cached as a real run caches them.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["dry_run"]


def dry_run(cfg: Any, train: Callable[..., dict[str, Any]], directory: str | Path | None = None) -> str:
    """Run ``train`` once on stand-ins for ``cfg`` and return a short report."""
    from agree_core.encoders.testing import save_tiny_standin
    from agree_core.samples import SAMPLE_QUESTIONS, build_samples

    with tempfile.TemporaryDirectory(prefix="agree-dry-run-") as tmp:
        root = Path(directory or tmp)
        build_samples(root / "pdfs")
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"qid": f"s{i}", "query": q, "pdf": f"pdfs/{name}", "page": page}) + "\n"
                                for i, (q, name, page) in enumerate(SAMPLE_QUESTIONS)))
        family, _, checkpoint = cfg.encoder.partition(":")
        if family == "text-layer":
            encoder = cfg.encoder
        else:  # the same family, tiny and random, in its published layout
            is_adapter = bool(checkpoint) and not checkpoint.rstrip("/").endswith("-base")
            encoder = save_tiny_standin(family, root / "model", adapter=is_adapter)
        maps = None
        if cfg.local_loss != "none" and cfg.local_weight > 0:
            from agree_core.encoders.colvision.testing import save_tiny_teacher
            from agree_core.teacher.build import build_maps
            from agree_core.teacher.qwen import QwenVLTeacher
            from agree_core.training.data import read_examples

            teacher = QwenVLTeacher(str(save_tiny_teacher("colqwen2.5", root / "teacher")), device="cpu",
                                    max_image_tokens=256)
            maps = root / "maps"
            report = build_maps(read_examples(data), maps, teacher, dpi=50, progress=False)
            if not report.ok:
                raise RuntimeError(f"the stand-in teacher failed: {report.skipped}")
        small = dataclasses.replace(
            cfg, encoder=encoder, train_data=str(data), eval_data=str(data), eval_fraction=0.0,
            eval_max_queries=None, teacher_maps=str(maps) if maps else None, output_dir=str(root / "run"),
            device="cpu", dtype="float32", batch_size=4, micro_batch_size=2, max_steps=1, stop_after=None,
            warmup_steps=min(cfg.warmup_steps, 1), eval_every=0, save_every=0, dpi=50)
        result = train(small)
        saved = sorted(p.name for p in (root / "run").iterdir())
    return (f"dry run of {cfg.encoder}: config resolved; one step of {small.global_loss}"
            f"{' + ' + str(cfg.local_weight) + ' x ' + cfg.local_loss if maps else ''} on {encoder.split(':')[0]} "
            f"stand-ins (lora r={cfg.lora_r}, gradient checkpointing {cfg.gradient_checkpointing}); "
            f"eval {result}; wrote {', '.join(saved)}")
