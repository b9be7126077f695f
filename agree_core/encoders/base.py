"""The encoder contract every retriever implements, and the page grid it maps vectors to."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from agree_core.pages import Page

__all__ = ["PageEmbedding", "MultiVectorEncoder", "TrainableMultiVectorEncoder", "VectorBatch",
           "pad_vectors", "page_grid", "check_options", "local_spec"]


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
        unpooled: ``(n,)`` bool, vectors that token pooling and the first-stage centroids
            store as they are, never merged with others (a text-layer window's sentence vector,
            whose scale and extra dimension the fused score relies on); ``None``: none.
    """

    vectors: torch.Tensor
    grid: tuple[int, int]
    cells: torch.Tensor
    text: str | None = None
    terms: torch.Tensor | None = None
    unpooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        rows, cols = self.grid
        if self.vectors.dim() != 2 or self.cells.shape != self.vectors.shape[:1]:
            raise ValueError(
                f"vectors {tuple(self.vectors.shape)} and cells {tuple(self.cells.shape)} "
                "must be (n, dim) and (n,)"
            )
        if self.unpooled is not None and self.unpooled.shape != self.cells.shape:
            raise ValueError(f"unpooled {tuple(self.unpooled.shape)} must be (n,) like cells {tuple(self.cells.shape)}")
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


@dataclass
class VectorBatch:
    """Padded, differentiable vectors of a batch of pages or queries (what training consumes).

    ``cells``: flat grid cell of each vector, -1 off the grid (prompt tokens, padding);
    ``grids``: each page's ``(rows, cols)`` (empty for queries)."""

    vectors: torch.Tensor  # (n, L, dim)
    mask: torch.Tensor  # (n, L) bool
    cells: torch.Tensor  # (n, L) long
    grids: list[tuple[int, int]] = field(default_factory=list)


@runtime_checkable
class TrainableMultiVectorEncoder(MultiVectorEncoder, Protocol):
    """An encoder that AGREE can fine-tune (``agree_core.training`` uses only these members).

    The training loop calls :meth:`load_trainable` once, wraps the module it returns (LoRA
    through peft, unless it already is a peft model: a published adapter is trained further),
    hands the result back with :meth:`use_module`, and then calls :meth:`embed_pages` and
    :meth:`embed_queries` under autograd. They see exactly the inputs (prompts, image sizes,
    windows, kept tokens) that :meth:`encode_pages` and :meth:`encode_queries` see, and they
    return the same vectors, padded into a :class:`VectorBatch`, on the model's device.

    Attributes:
        needs_images: pages must be rendered (visual encoders).
        lora_targets: peft ``target_modules`` of a new adapter (the published adapters' own).
        full_finetuning: whether training every weight (``lora=None``) is offered.
    """

    needs_images: bool
    lora_targets: list[str] | str
    full_finetuning: bool
    device: torch.device

    def load_trainable(self) -> torch.nn.Module:
        """Load the model for training (a LoRA checkpoint stays an unmerged peft model) and
        return the module whose parameters are trained."""
        ...

    def use_module(self, module: torch.nn.Module) -> None:
        """Run ``module`` (the trainable model, e.g. wrapped by peft) from now on."""
        ...

    def embed_pages(self, pages: Sequence[Page]) -> VectorBatch:
        """Page vectors with their cells, differentiable when autograd is enabled."""
        ...

    def embed_queries(self, queries: Sequence[str]) -> VectorBatch:
        """Query vectors (cells -1), differentiable when autograd is enabled."""
        ...

    def save_trained(self, directory: str | Path) -> None:
        """Save the trained module so that ``load_encoder(f"{family}:{directory}")`` loads it."""
        ...


def pad_vectors(vectors: list[torch.Tensor], cells: list[torch.Tensor] | None = None,
                grids: list[tuple[int, int]] | None = None) -> VectorBatch:
    """A :class:`VectorBatch` from per-item ``(n_i, dim)`` vectors and ``(n_i,)`` cells.

    >>> b = pad_vectors([torch.ones(2, 3), torch.ones(1, 3)])
    >>> b.vectors.shape, b.mask.tolist(), b.cells.tolist()
    (torch.Size([2, 2, 3]), [[True, True], [True, False]], [[-1, -1], [-1, -1]])
    """
    if cells is None:
        cells = [torch.full((len(v),), -1, dtype=torch.long, device=v.device) for v in vectors]
    lengths = torch.tensor([len(v) for v in vectors])
    padded = torch.nn.utils.rnn.pad_sequence(vectors, batch_first=True)  # (n, L, dim)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]  # (n, L)
    cell = torch.nn.utils.rnn.pad_sequence([c.to(padded.device) for c in cells], batch_first=True,
                                           padding_value=-1)
    return VectorBatch(padded, mask.to(padded.device), cell, list(grids or []))


def check_options(family: str, fields: Sequence[str], config: dict[str, Any], dtype: str,
                  *batch_sizes: int) -> None:
    """The checks every encoder constructor makes of its runtime options.

    >>> check_options("st", ["model"], {"window": 3}, "auto", 1)
    Traceback (most recent call last):
    ...
    TypeError: unknown st options ['window']; known: device, dtype, batch_size, query_batch_size, model
    """
    unknown = set(config) - set(fields)
    if unknown:
        raise TypeError(f"unknown {family} options {sorted(unknown)}; known: device, dtype, batch_size, "
                        f"query_batch_size, {', '.join(fields)}")
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r} "
                         "(float16 overflows in Qwen2-VL and is emulated on CPUs)")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {' and '.join(map(str, batch_sizes))}")


def local_spec(spec: str) -> str:
    """A checkpoint spec as recorded: the absolute path when it names an existing path."""
    path = Path(spec).expanduser()
    return str(path.absolute()) if path.exists() else spec


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
