"""Pool a page's many vectors into a few, for a cheap first search stage."""

from __future__ import annotations

import torch

__all__ = ["pool_vectors"]


def pool_vectors(vectors: torch.Tensor, k: int, iterations: int = 8) -> torch.Tensor:
    """At most ``k`` L2-normalised centroids of ``vectors`` (spherical k-means, deterministic).

    The centroids stand in for the page in a first MaxSim pass; the full vectors rescore the
    survivors. Pages with ``k`` vectors or fewer are returned as they are.

    Args:
        vectors: ``(n, dim)``.
        k: number of centroids.

    Returns:
        ``(min(n, k), dim)`` float32.

    >>> v = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pool_vectors(v, 2).round(decimals=2)
    tensor([[1.0000, 0.0500],
            [0.0500, 1.0000]])
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
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
