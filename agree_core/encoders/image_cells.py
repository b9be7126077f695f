"""Where each image token of a visual encoder sits on the page's patch grid.

Visual encoders lay a page's image tokens out in one of three ways; each function returns the
page ``grid`` ``(rows, cols)`` and the flat ``cells`` of every token (``-1`` off the grid:
prompt, special and padding tokens, and the downscaled global view of tiled encoders).

- Qwen2-VL / Qwen2.5-VL / Qwen3-VL: ``grid_h * grid_w / merge**2`` tokens, row-major over the
  merged grid (:func:`sequence_cells` with ``(grid_h // merge, grid_w // merge)``).
- PaliGemma and other fixed-size encoders: ``side**2`` tokens, row-major (:func:`sequence_cells`).
- Idefics3 / ModernVBERT image splitting: the page is cut into ``R x C`` tiles, each of
  ``seq_len`` tokens (a ``sqrt(seq_len)``-square, row-major), in row-major tile order, followed by
  one more tile for the global (downscaled) view (:func:`tile_cells`).
"""

from __future__ import annotations

import math
import re

import torch

__all__ = ["sequence_cells", "tile_cells", "tile_layout"]

_ROW_COL = re.compile(r"<row_(\d+)_col_(\d+)>")


def sequence_cells(is_image: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cells of image tokens laid out row-major over ``grid``.

    >>> sequence_cells(torch.tensor([False, True, True, True, True, False]), (2, 2)).tolist()
    [-1, 0, 1, 2, 3, -1]
    """
    n = int(is_image.sum())
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} image tokens do not fill a {grid[0]}x{grid[1]} grid")
    cells = torch.full(is_image.shape, -1, dtype=torch.long)
    cells[is_image] = torch.arange(n)
    return cells


def tile_layout(text: str) -> tuple[int, int]:
    """``(R, C)`` tiles named by Idefics3's ``<row_r_col_c>`` markers in a decoded prompt
    (``(0, 0)``: no markers, the image was not split).

    >>> tile_layout("<fake_token_around_image><row_1_col_1><image><row_1_col_2><image>\\n"
    ...             "<fake_token_around_image><row_2_col_1><image><row_2_col_2><image>")
    (2, 2)
    """
    found = [(int(r), int(c)) for r, c in _ROW_COL.findall(text)]
    if not found:
        return 0, 0
    return max(r for r, _ in found), max(c for _, c in found)


def tile_cells(is_image: torch.Tensor, tiles: tuple[int, int], seq_len: int
               ) -> tuple[tuple[int, int], torch.Tensor]:
    """Grid and cells of Idefics3-style split images: ``R x C`` tiles of ``seq_len`` tokens
    each, then the global view (off the grid). Unsplit images (``tiles == (0, 0)``) are one
    ``sqrt(seq_len)``-square.

    >>> grid, cells = tile_cells(torch.tensor([True] * 12), (1, 2), 4)  # 2 tiles of 2x2 + global
    >>> grid, cells.tolist()
    ((2, 4), [0, 1, 4, 5, 2, 3, 6, 7, -1, -1, -1, -1])
    """
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise ValueError(f"image_seq_len {seq_len} is not a square number of tokens")
    rows, cols = tiles
    n = int(is_image.sum())
    if rows == 0:
        grid = (side, side)
        return grid, sequence_cells(is_image, grid)
    if n != (rows * cols + 1) * seq_len:
        raise ValueError(f"{n} image tokens do not make {rows}x{cols} tiles of {seq_len} plus a global view")
    k = torch.arange(rows * cols * seq_len)
    tile, inner = k // seq_len, k % seq_len
    r = (tile // cols) * side + inner // side  # row on the page grid
    c = (tile % cols) * side + inner % side
    flat = torch.cat([r * (cols * side) + c, torch.full((seq_len,), -1, dtype=torch.long)])
    cells = torch.full(is_image.shape, -1, dtype=torch.long)
    cells[is_image] = flat
    return (rows * side, cols * side), cells
