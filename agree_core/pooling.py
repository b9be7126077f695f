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
    x, kept = _float32(vectors), _mask(keep)
    if kept is not None and kept.any():  # stored as they are, after the centroids
        return torch.from_numpy(np.concatenate([_centroids(x[~kept], k, iterations), x[kept]]))
    return torch.from_numpy(_centroids(x, k, iterations))


def _centroids(x: np.ndarray, k: int, iterations: int) -> np.ndarray:
    n = x.shape[0]
    if n <= k:
        return x.copy()
    init = np.round(np.linspace(0, n - 1, k)).astype(np.int64)  # spread over the page's reading order
    centroids = _normalized(x[init])  # (k, dim)
    with one_blas_thread():
        for _ in range(iterations):
            assign = (x @ centroids.T).argmax(axis=1)  # (n,)
            sums = _cluster_sums(x, assign, k)  # (k, dim)
            empty = ~sums.any(axis=1)
            sums[empty] = centroids[empty]  # a centroid that lost all its vectors stays put
            centroids = _normalized(sums)
    return centroids


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
    # numpy throughout: on a page's few hundred vectors torch's per-op thread pool costs
    # milliseconds a call on a loaded machine, more than the clustering (BENCHMARKS.md)
    x, kept = _float32(vectors), _mask(keep)
    if kept is not None and kept.any() and factor > 1:  # stored as they are, after the pooled ones
        pooled, group = _pooled(x[~kept], factor)
        full = np.empty(len(x), dtype=np.int64)
        full[~kept] = group
        full[kept] = len(pooled) + np.arange(int(kept.sum()))
        return torch.from_numpy(np.concatenate([pooled, x[kept]])), torch.from_numpy(full)
    pooled, group = _pooled(x, factor)
    return torch.from_numpy(pooled), torch.from_numpy(group)


def _pooled(x: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    m = max(1, -(-n // factor))  # ceil(n / factor)
    if factor == 1 or n <= 2 or m >= n:
        return x.copy(), np.arange(n, dtype=np.int64)
    with one_blas_thread():
        group, m = _ward_groups(x, m)
        return _normalized(_cluster_sums(x, group, m)), group


def _ward_groups(x: np.ndarray, m: int) -> tuple[np.ndarray, int]:
    """The ``(n,)`` cluster of each row of ``x`` when Ward's linkage is cut at ``m`` clusters,
    numbered by their first row (pooled vectors keep the page's reading order), and ``m``.

    The cut takes the first ``n - m`` merges of the linkage (scipy orders them by height, and
    Ward's heights never decrease): the clusters of ``fcluster(Z, m, "maxclust")`` wherever
    that gives ``m`` clusters, and exactly ``m`` where tied heights make ``maxclust`` stop
    short. Cost: one Gram product, scipy's O(n^2) linkage and a few O(n) numpy passes
    (BENCHMARKS.md, "Pooling cost")."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)  # Euclidean distances through one float32 Gram product
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d2, 0.0)
    dist = np.sqrt(np.maximum(squareform(d2, checks=False), 0.0), dtype=np.float64)
    merges = linkage(dist, method="ward")[: n - m, :2].astype(np.int64)  # (n - m, 2): the nodes joined
    parent = np.arange(2 * n - 1)
    parent[merges.ravel()] = np.repeat(np.arange(n, 2 * n - m), 2)  # merge i makes node n + i
    root = parent[:n]
    while True:  # pointer jumping: each pass halves the distance to the cluster's top node
        up = parent[root]
        if np.array_equal(up, root):
            break
        root = up
    _, first, inverse = np.unique(root, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.reshape(-1)], int(first.size)


def _mask(keep: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    if keep is None:
        return None
    if isinstance(keep, torch.Tensor):
        keep = keep.detach().cpu().numpy()
    return np.asarray(keep, dtype=bool)


def _float32(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _cluster_sums(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """``(k, dim)``: the sum of the rows of ``x`` in each cluster (one small matrix product,
    faster here than ``np.add.reduceat`` or ``np.add.at``)."""
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
