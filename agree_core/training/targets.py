"""Teacher maps as per-vector targets of the local loss."""

from __future__ import annotations

from typing import Sequence

import torch

from agree_core.teacher.align import align_to_grid

__all__ = ["check_map_fits", "vector_targets"]


def check_map_fits(map_shape: tuple[int, int], page_size: tuple[float, float]) -> str | None:
    """Why a teacher map cannot belong to a page of ``page_size`` (width, height), or None.

    A teacher's token grid follows the page's aspect ratio (up to one token of rounding); a
    map whose grid does not was computed on another page or a rotated render.

    >>> check_map_fits((40, 30), (612, 792)) is None        # portrait letter page
    True
    >>> check_map_fits((30, 40), (612, 792))
    'a 30 x 40 map cannot be of a 612 x 792 page (its grid would have about 23 columns for 30 rows)'
    """
    rows, cols = map_shape
    width, height = page_size
    if rows < 1 or cols < 1:
        return f"a teacher map needs at least one row and column, got {rows} x {cols}"
    expected = rows * width / height
    if abs(cols - expected) > max(1.5, 0.2 * expected):
        return (f"a {rows} x {cols} map cannot be of a {width:g} x {height:g} page "
                f"(its grid would have about {expected:.0f} columns for {rows} rows)")
    return None


def vector_targets(maps: Sequence[torch.Tensor | None], cells: torch.Tensor,
                   grids: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each page vector's teacher value: the map aligned to the page's grid
    (:func:`align_to_grid`, AGREE's adaptive max pooling), read at the vector's cell.

    Args:
        maps: one ``(H, W)`` teacher map per page, or None for pages without one.
        cells: ``(n, L)`` flat grid cell of each vector, -1 off the grid.
        grids: ``(rows, cols)`` per page.

    Returns:
        ``target (n, L)`` float32, ``mask (n, L)`` bool (on-grid vectors of pages with a map),
        ``has_map (n,)`` bool.

    >>> t, m, h = vector_targets([torch.tensor([[0., 1.], [2., 3.]]), None],
    ...                          torch.tensor([[3, 0, -1], [0, 1, 2]]), [(2, 2), (1, 3)])
    >>> t.tolist(), m.tolist(), h.tolist()
    ([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[True, True, False], [False, False, False]], [True, False])
    """
    n, length = cells.shape
    target = torch.zeros(n, length, dtype=torch.float32, device=cells.device)
    mask = torch.zeros(n, length, dtype=torch.bool, device=cells.device)
    has_map = torch.zeros(n, dtype=torch.bool, device=cells.device)
    for i, (teacher_map, grid) in enumerate(zip(maps, grids)):
        if teacher_map is None:
            continue
        flat = align_to_grid(teacher_map, grid).flatten().to(cells.device)
        on_grid = cells[i] >= 0
        target[i, on_grid] = flat[cells[i, on_grid]]
        mask[i] = on_grid
        has_map[i] = bool(on_grid.any())
    return target, mask, has_map
