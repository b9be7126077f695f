"""Pool a page's many vectors into fewer: k-means centroids for the cheap first search stage
(:func:`pool_vectors`), and hierarchical token pooling of the stored vectors (:func:`pool_tokens`)."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch

__all__ = ["pool_vectors", "pool_tokens"]


def pool_vectors(vectors: torch.Tensor | np.ndarray, k: int, iterations: int = 8,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
    """At most ``k`` L2-normalised centroids of ``vectors`` (spherical k-means, deterministic).

    The centroids stand in for the page in a first MaxSim pass; the full vectors rescore the
    survivors. Pages with ``k`` vectors or fewer are returned as they are. Computed in numpy
    float32 (a page is small: torch's per-call overhead and thread start-up cost more than the
    arithmetic when many indexing threads share the cores).

    Args:
        vectors: ``(n, dim)``.
        k: number of centroids.

        keep: ``(n,)`` bool, vectors returned as they are after the centroids of the others
            (:attr:`~agree_core.encoders.base.PageEmbedding.unpooled`).

    Returns:
        ``(min(n, k), dim)`` float32 (plus the kept vectors).

    >>> v = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pool_vectors(v, 2).round(decimals=2)
    tensor([[1.0000, 0.0500],
            [0.0500, 1.0000]])
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if keep is not None and bool(keep.any()):  # stored as they are, after the centroids
        vectors, keep = torch.as_tensor(vectors), keep.to(torch.bool)
        rest = vectors[~keep]
        pooled = pool_vectors(rest, k, iterations) if len(rest) else vectors.new_zeros(0, vectors.shape[1]).float()
        return torch.cat([pooled, vectors[keep].float()])
    x = _float32(vectors)
    n = x.shape[0]
    if n <= k:
        return torch.from_numpy(x.copy())
    init = np.round(np.linspace(0, n - 1, k)).astype(np.int64)  # spread over the page's reading order
    centroids = _normalized(x[init])  # (k, dim)
    with one_blas_thread():
        for _ in range(iterations):
            assign = (x @ centroids.T).argmax(axis=1)  # (n,)
            sums = _cluster_sums(x, assign, k)  # (k, dim)
            empty = ~sums.any(axis=1)
            sums[empty] = centroids[empty]  # a centroid that lost all its vectors stays put
            centroids = _normalized(sums)
    return torch.from_numpy(centroids)


def pool_tokens(vectors: torch.Tensor, factor: int,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a page's vectors into about ``n / factor`` by hierarchical clustering (Ward
    linkage, as in Clavie et al.'s token pooling): the stored vectors of an index built
    with ``pool_factor > 1``.

    Returns ``(pooled, group)``: ``pooled`` ``(m, dim)`` float32, each the L2-normalised mean
    of its cluster; ``group`` ``(n,)`` int64, the pooled vector of each input vector, so that
    ``pooled[group]`` stands in for the page's vectors wherever cells matter (heatmaps,
    evidence, AGREE's grid): every cell keeps the pooled vector of its own token. MaxSim
    over ``pooled`` equals MaxSim over ``pooled[group]``. Vectors marked in ``keep`` (``(n,)``
    bool, :attr:`~agree_core.encoders.base.PageEmbedding.unpooled`) are merged with none and
    stored as they are, after the pooled ones; the others are pooled by ``factor``.

    >>> v = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pooled, group = pool_tokens(v, 2)
    >>> group.tolist(), pooled.shape
    ([0, 0, 1, 1], torch.Size([2, 2]))
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if keep is not None and bool(keep.any()) and factor > 1:  # stored as they are, after the pooled ones
        vectors, keep = torch.as_tensor(vectors), keep.to(torch.bool)
        pooled, group = pool_tokens(vectors[~keep], factor)
        kept = vectors[keep].float()
        full = torch.empty(len(vectors), dtype=torch.long)
        full[~keep] = group
        full[keep] = len(pooled) + torch.arange(len(kept))
        return torch.cat([pooled, kept]), full
    x = _float32(vectors)
    n = x.shape[0]
    m = max(1, -(-n // factor))  # ceil(n / factor)
    if factor == 1 or n <= 2 or m >= n:
        return torch.from_numpy(x.copy()), torch.arange(n, dtype=torch.long)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    with one_blas_thread():
        sq = np.einsum("ij,ij->i", x, x)  # Euclidean distances through one float32 Gram product
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        np.fill_diagonal(d2, 0.0)
        dist = np.sqrt(np.maximum(squareform(d2, checks=False), 0.0)).astype(np.float64)
        labels = fcluster(linkage(dist, method="ward"), m, criterion="maxclust")
        # clusters numbered by their first token, so pooled vectors keep the page's reading order
        values, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        rank = np.empty(values.size, dtype=np.int64)
        rank[np.argsort(first)] = np.arange(values.size)
        group = rank[inverse.reshape(-1)]
        pooled = _normalized(_cluster_sums(x, group, values.size))
    return torch.from_numpy(pooled), torch.from_numpy(group)


def _float32(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _cluster_sums(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """``(k, dim)``: the sum of the rows of ``x`` in each cluster (one small matrix product)."""
    onehot = np.zeros((k, x.shape[0]), dtype=np.float32)
    onehot[assign, np.arange(x.shape[0])] = 1.0
    return onehot @ x


def _normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run a page's small matrix products on one BLAS thread: at these sizes (a few hundred
    vectors) OpenBLAS's threads cost more than they save, 6-10x more on a loaded machine
    (BENCHMARKS.md, "The storage default")."""
    with _blas().limit(limits=1, user_api="blas"):
        yield
