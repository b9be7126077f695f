"""Pool a page's many vectors into fewer: k-means centroids for the cheap first search stage
(:func:`pool_vectors`), and hierarchical token pooling of the stored vectors (:func:`pool_tokens`)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pool_vectors", "pool_tokens"]


def pool_vectors(vectors: torch.Tensor, k: int, iterations: int = 8,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
    """At most ``k`` L2-normalised centroids of ``vectors`` (spherical k-means, deterministic).

    The centroids stand in for the page in a first MaxSim pass; the full vectors rescore the
    survivors. Pages with ``k`` vectors or fewer are returned as they are.

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
    if keep is not None and bool(keep.any()):
        keep = keep.to(torch.bool)
        rest = vectors[~keep]
        pooled = pool_vectors(rest, k, iterations) if len(rest) else vectors.new_zeros(0, vectors.shape[1]).float()
        return torch.cat([pooled, vectors[keep].float()])
    vectors = vectors.float()
    n = vectors.shape[0]
    if n <= k:
        return vectors.clone()
    init = torch.linspace(0, n - 1, k).round().long()  # spread over the page's reading order
    centroids = torch.nn.functional.normalize(vectors[init], dim=-1)  # (k, dim)
    for _ in range(iterations):
        assign = (vectors @ centroids.T).argmax(dim=1)  # (n,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)  # (k, dim)
        empty = sums.norm(dim=1) == 0
        sums[empty] = centroids[empty]  # a centroid that lost all its vectors stays put
        centroids = torch.nn.functional.normalize(sums, dim=-1)
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
    if keep is not None and bool(keep.any()) and factor > 1:
        keep = keep.to(torch.bool)
        pooled, group = pool_tokens(vectors[~keep], factor)
        kept = vectors[keep].float()
        full = torch.empty(len(vectors), dtype=torch.long)
        full[~keep] = group
        full[keep] = len(pooled) + torch.arange(len(kept))
        return torch.cat([pooled, kept]), full
    vectors = vectors.float()
    n = vectors.shape[0]
    m = max(1, -(-n // factor))  # ceil(n / factor)
    if factor == 1 or n <= 2 or m >= n:
        return vectors.clone(), torch.arange(n, dtype=torch.long)
    from scipy.cluster.hierarchy import fcluster, linkage

    x = vectors.numpy().astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    i, j = np.triu_indices(n, 1)  # condensed Euclidean distances through one matrix product
    dist = np.sqrt(np.maximum((sq[:, None] + sq[None, :] - 2.0 * (x @ x.T))[i, j], 0.0))
    labels = fcluster(linkage(dist, method="ward"), m, criterion="maxclust")
    # clusters numbered by their first token, so pooled vectors keep the page's reading order
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    group = torch.from_numpy(rank[np.searchsorted(np.unique(labels), labels)])
    sums = torch.zeros(order.size, vectors.shape[1]).index_add_(0, group, vectors)
    return torch.nn.functional.normalize(sums, dim=-1), group
