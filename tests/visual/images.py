"""Test images (random noise: shapes and numerics only)."""

from __future__ import annotations

import numpy as np
from PIL import Image

FAMILIES = ["colqwen2.5", "colqwen2", "colpali"]


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8"))
