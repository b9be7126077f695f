"""Training checkpoints: the adapter, the resolved config, and the optimizer, schedule and RNG
state of every rank, so that ``train.py --resume`` continues exactly where a run stopped."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from agree_core.training.distributed import World

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "prune_checkpoints"]


def save_checkpoint(directory: Path, model, optimizer, scheduler, step: int, config: dict[str, Any],
                    world: World) -> None:
    """Everything ``--resume`` needs; ``state.pt`` is written last and marks it complete."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"random": random.getstate(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
               directory / f"rng-rank{world.rank}.pt")
    if world.main:
        model.save(directory)
        (directory / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        torch.save({"step": step, "trainable": model.trainable_state(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, directory / "state.pt.tmp")
        Path(directory / "state.pt.tmp").replace(directory / "state.pt")  # the marker of a complete checkpoint


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = [d for d in (output_dir / "checkpoints").glob("step-*") if (d / "state.pt").is_file()]
    return max(done, key=lambda d: int(d.name.split("-")[1]), default=None)


def load_checkpoint(directory: Path, model, optimizer, scheduler, world: World) -> int:
    state = torch.load(directory / "state.pt", weights_only=False)
    model.load_trainable_state(state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = directory / f"rng-rank{world.rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        random.setstate(rng["random"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"])


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    import shutil

    done = sorted((d for d in (output_dir / "checkpoints").glob("step-*") if (d / "state.pt").is_file()),
                  key=lambda d: int(d.name.split("-")[1]))
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
