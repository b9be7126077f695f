"""The encoder contract every retriever implements, and the page grid it maps vectors to."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from agree_core.pages import Page

__all__ = ["PageEmbedding", "MultiVectorEncoder", "page_grid"]


@dataclass
class PageEmbedding:
    """The vectors of one page and where each sits on the page's patch grid.

    Attributes:
        vectors: ``(n, dim)`` float32, L2-normalised (zero rows allowed for blank pages).
        grid: ``(rows, cols)`` of the page's patch grid.
        cells: ``(n,)`` int64 flat cell (``row * cols + col``) of each vector, ``-1`` for
            vectors that belong to no cell (prompt or special tokens of visual encoders).
        text: the text the encoder read (text layer or OCR), if any.
        terms: ``(n,)`` vocabulary id behind each vector, for encoders with a vocabulary
            (the index keeps term statistics from them to weight query tokens by IDF).
    """

    vectors: torch.Tensor
    grid: tuple[int, int]
    cells: torch.Tensor
    text: str | None = None
    terms: torch.Tensor | None = None

    def __post_init__(self) -> None:
        rows, cols = self.grid
        if self.vectors.dim() != 2 or self.cells.shape != self.vectors.shape[:1]:
            raise ValueError(
                f"vectors {tuple(self.vectors.shape)} and cells {tuple(self.cells.shape)} "
                "must be (n, dim) and (n,)"
            )
        if self.cells.numel() and int(self.cells.max()) >= rows * cols:
            raise ValueError(f"cell index {int(self.cells.max())} outside grid {rows}x{cols}")


@runtime_checkable
class MultiVectorEncoder(Protocol):
    """One vector per token or patch for pages, one per token for queries.

    ``name`` is the registry spec that rebuilds the encoder (``load_encoder(name)``);
    ``config`` is a JSON-serialisable record of everything that changes its vectors, saved
    in every index it builds and checked when the index is reopened.

    Encoders with a vocabulary may also fill ``PageEmbedding.terms`` and implement
    ``encode_query_terms(queries) -> list[list[int]]`` (the vocabulary id behind each vector
    ``encode_queries`` returns); an index then weights query tokens by their IDF.
    """

    name: str
    dim: int

    @property
    def config(self) -> dict[str, Any]: ...

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]: ...

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]: ...


def page_grid(width: float, height: float, n_cells: int = 1024) -> tuple[int, int]:
    """A ``(rows, cols)`` grid of about ``n_cells`` near-square cells for a page.

    >>> page_grid(612, 792)   # US letter, portrait
    (36, 28)
    >>> page_grid(1000, 1000, 16)
    (4, 4)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"page size must be positive, got {width} x {height}")
    rows = max(1, round(math.sqrt(n_cells * height / width)))
    cols = max(1, round(n_cells / rows))
    return rows, cols


def cell_of(box: tuple[float, float, float, float], grid: tuple[int, int]) -> int:
    """Flat cell of a normalised box's centre.

    >>> cell_of((0.0, 0.0, 0.1, 0.1), (2, 2)), cell_of((0.6, 0.6, 1.0, 1.0), (2, 2))
    (0, 3)
    """
    rows, cols = grid
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    r = min(rows - 1, max(0, int(cy * rows)))
    c = min(cols - 1, max(0, int(cx * cols)))
    return r * cols + c
