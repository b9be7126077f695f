"""Tiny ColVision checkpoints and teachers, built once per test run in the published layout.

Tests load them through the same code path a user's checkpoint takes (``load_encoder(
"colqwen2.5:PATH")``); tests that change a checkpoint copy it to their own tmp_path first.
"""

from __future__ import annotations

import pytest

from visual.images import FAMILIES


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family -> (adapter_dir, base_dir), as on the hub: base + LoRA adapter."""
    from agree_core.encoders.colvision.testing import save_published_checkpoint

    root = tmp_path_factory.mktemp("colvision")
    return {f: save_published_checkpoint(f, root / f.replace(".", "_")) for f in FAMILIES}


@pytest.fixture(scope="session")
def encoders(checkpoints):
    """family -> encoder loaded from the adapter directory (float32, CPU)."""
    from agree_core.encoders import load_encoder

    loaded = {f: load_encoder(f"{f}:{checkpoints[f][0]}", device="cpu", dtype="float32")
              for f in FAMILIES}
    for enc in loaded.values():
        enc.model  # noqa: B018 - load now: tests look at the processors too
    return loaded


@pytest.fixture(scope="session")
def teachers(tmp_path_factory):
    """family -> a tiny Qwen2.5-VL / Qwen2-VL teacher checkpoint directory."""
    from agree_core.encoders.colvision.testing import save_tiny_teacher

    root = tmp_path_factory.mktemp("teachers")
    return {f: save_tiny_teacher(f, root / f.replace(".", "_")) for f in ("colqwen2.5", "colqwen2")}
