"""Evidence boxes: the regions of a page that made it match a query, for citations.

A hit's evidence is a list of ``{"box": [x0, y0, x1, y1], "text": ..., "score": ...}``, best
first. Boxes are fractions of the page (x right, y down, as :class:`agree_core.pages.Word`
boxes); ``text`` is the page's words inside the box when the page has a text layer, else
``None``; ``score`` is the part of the page's MaxSim score that the region holds.

They come from the MaxSim similarity map (:func:`agree_core.scoring.similarity_map`): every
query token adds its best similarity to the grid cell of its best-matching page vector, so
the map sums to the score. Cells with a contribution that touch (8-neighbours, or within
``gap`` empty cells of each other) form one region; a region's box is the union of its cells,
tightened to the words whose centres fall in it when the words are known.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from agree_core.encoders.base import PageEmbedding, cell_of
from agree_core.pages import Word
from agree_core.scoring import similarity_map

__all__ = ["evidence"]


def evidence(query: torch.Tensor, page: PageEmbedding, words: Sequence[Word] | None = None, *,
             top: int = 3, gap: int = 1) -> list[dict[str, Any]]:
    """The ``top`` regions of ``page`` that match ``query`` most, best first.

    Args:
        query: ``(n_q_tokens, dim)`` query vectors, as the index scores them.
        page: the page's stored vectors, grid and cells.
        words: the page's words with their boxes (``None``: ``text`` is ``None``).
        top: regions kept (``>= 1``).
        gap: empty cells allowed between two cells of one region (``>= 0``).

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> emb = PageEmbedding(torch.tensor([[1.0, 0.0], [0.0, 0.5]]), (4, 4), torch.tensor([0, 15]))
    >>> evidence(q, emb, gap=0)
    [{'box': [0.0, 0.0, 0.25, 0.25], 'text': None, 'score': 1.0}, {'box': [0.75, 0.75, 1.0, 1.0], 'text': None, 'score': 0.5}]
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    rows, cols = page.grid
    heat = similarity_map(query, page.vectors, page.cells, page.grid, "maxsim")  # (rows, cols)
    hot = [(int(i) // cols, int(i) % cols) for i in torch.nonzero(heat.flatten() > 0).flatten()]
    regions = _regions(hot, gap)
    words_in: dict[int, list[Word]] = {}
    for w in words or ():
        words_in.setdefault(cell_of(w.box, page.grid), []).append(w)
    out = []
    for cells in regions:
        score = float(sum(heat[r, c] for r, c in cells))
        r0, r1 = min(r for r, _ in cells), max(r for r, _ in cells)
        c0, c1 = min(c for _, c in cells), max(c for _, c in cells)
        box = [c0 / cols, r0 / rows, (c1 + 1) / cols, (r1 + 1) / rows]
        text = None
        if words is not None:
            inside = [w for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)
                      for w in words_in.get(r * cols + c, ())]
            if inside:
                inside.sort(key=lambda w: (round(w.box[1], 2), w.box[0]))  # reading order
                box = [min(w.box[0] for w in inside), min(w.box[1] for w in inside),
                       max(w.box[2] for w in inside), max(w.box[3] for w in inside)]
                text = " ".join(w.text for w in inside)
        out.append({"box": [round(v, 4) for v in box], "text": text, "score": round(score, 4)})
    out.sort(key=lambda e: -e["score"])
    return out[:top]


def _regions(cells: list[tuple[int, int]], gap: int) -> list[list[tuple[int, int]]]:
    """Groups of cells within ``gap + 1`` rows and columns of another cell of the group."""
    reach = gap + 1
    left = set(cells)
    groups = []
    while left:
        stack = [left.pop()]
        group = []
        while stack:
            r, c = stack.pop()
            group.append((r, c))
            near = [(rr, cc) for rr, cc in left if abs(rr - r) <= reach and abs(cc - c) <= reach]
            for cell in near:
                left.discard(cell)
                stack.append(cell)
        groups.append(sorted(group))
    return groups
