"""Teacher maps onto a retriever's grid (pure functions)."""

from __future__ import annotations

import torch

__all__ = ["align_to_grid"]


def align_to_grid(teacher_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """AGREE's alignment: adaptive max pooling of a teacher map to the retriever's grid.

    Output cell ``(i, j)`` takes the max over teacher rows ``floor(i*H/rows) ..
    ceil((i+1)*H/rows) - 1`` and columns likewise (``torch.nn.functional.adaptive_max_pool2d``;
    AGREE's ``floor(i*H/rows) .. floor((i+1)*H/rows)`` when ``rows`` divides ``H``, and never an
    empty window when the retriever grid is finer than the teacher's, as a text-layer grid can be).

    Args:
        teacher_map: ``(H, W)`` on the teacher's token grid (as cached).
        grid: ``(rows, cols)`` of the retriever (``PageEmbedding.grid``).

    Returns:
        ``(rows, cols)`` float32; ``.flatten()`` lines up with ``PageEmbedding.cells``.

    >>> a = torch.tensor([[1., 2., 3., 4.],
    ...                   [5., 6., 7., 8.],
    ...                   [9., 0., 0., 1.]])
    >>> align_to_grid(a, (2, 2))   # rows 0-1 | 1-2, cols 0-1 | 2-3
    tensor([[6., 8.],
            [9., 8.]])
    >>> align_to_grid(torch.tensor([[1., 2.]]), (2, 4))   # finer grid: each cell copies its source
    tensor([[1., 1., 2., 2.],
            [1., 1., 2., 2.]])
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    if teacher_map.dim() != 2 or teacher_map.numel() == 0:
        raise ValueError(f"teacher_map must be a non-empty 2-D (H, W) tensor, got shape "
                         f"{tuple(teacher_map.shape)}")
    pooled = torch.nn.functional.adaptive_max_pool2d(teacher_map.float()[None, None], (rows, cols))
    return pooled[0, 0]
