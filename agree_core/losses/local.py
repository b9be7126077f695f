"""AGREE's local (region-level) loss: a positive page's patch relevance against the teacher map.

All functions take padded batches of positive pairs:

- ``relevance``: ``(n, L)`` the retriever's patch relevance ``s_j`` (:func:`patch_relevance`);
- ``target``: ``(n, L)`` the teacher map's value at each vector's grid cell
  (``align_to_grid(map, grid).flatten()[cells]``);
- ``mask``: ``(n, L)`` True on image-patch vectors (real, on the grid); prompt, special and
  padding positions are False and take no part.

and return one loss per pair, ``(n,)``, so callers can average over the pairs that have a
map, or over the pairs :func:`mismatch_first` selects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["patch_relevance", "local_loss", "cosine_loss", "kl_loss", "top_k_loss",
           "mismatch_first", "LOCAL_LOSSES"]

LOCAL_LOSSES = ("cosine", "kl", "topk")


def patch_relevance(queries: torch.Tensor, query_mask: torch.Tensor, pages: torch.Tensor) -> torch.Tensor:
    """``s_j = mean_t <q_t, d_j>`` over the real tokens of each query, for its own page
    (row ``i`` of ``queries`` with row ``i`` of ``pages``): ``(n, L_p)``.

    >>> q = torch.tensor([[[1., 0.], [0., 1.], [7., 7.]]])   # third token is padding
    >>> d = torch.tensor([[[1., 0.], [.5, .5]]])
    >>> patch_relevance(q, torch.tensor([[True, True, False]]), d)
    tensor([[0.5000, 0.5000]])
    """
    sims = torch.einsum("ntd,njd->ntj", queries, pages)  # (n, L_q, L_p)
    weights = query_mask.to(sims.dtype)
    return (sims * weights[..., None]).sum(1) / weights.sum(1).clamp_min(1)[:, None]


def cosine_loss(relevance: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - cos(s, A)`` over the masked positions (AGREE's default).

    >>> s = torch.tensor([[1., 0., 5.]]); a = torch.tensor([[2., 0., 0.]])
    >>> cosine_loss(s, a, torch.tensor([[True, True, False]]))   # position 2 masked: same direction
    tensor([0.])
    >>> cosine_loss(torch.tensor([[0., 1.]]), torch.tensor([[1., 0.]]), torch.tensor([[True, True]]))
    tensor([1.])
    """
    m = mask.to(relevance.dtype)
    s, a = relevance * m, target.to(relevance.dtype) * m
    return 1 - F.cosine_similarity(s, a, dim=1, eps=1e-8)


def kl_loss(relevance: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(A) || softmax(s))`` over the masked positions.

    >>> s = torch.tensor([[0., 0.]]); a = torch.tensor([[math.log(3), 0.]])  # p_A = (.75, .25)
    >>> kl_loss(s, a, torch.tensor([[True, True]]))  # .75 log 1.5 + .25 log .5
    tensor([0.1308])
    """
    neg = torch.finfo(relevance.dtype).min
    log_q = torch.log_softmax(relevance.masked_fill(~mask, neg), dim=1)
    log_p = torch.log_softmax(target.to(relevance.dtype).masked_fill(~mask, neg), dim=1)
    terms = torch.where(mask, log_p.exp() * (log_p - log_q), torch.zeros_like(log_q))
    return terms.sum(1)


def top_k_loss(relevance: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               fraction: float = 0.1) -> torch.Tensor:
    """``-log(sum_{j in top K} e^{s_j} / sum_j e^{s_j})``, with top K the ``ceil(fraction * n)``
    positions of highest teacher value among each pair's ``n`` masked positions (ties broken
    by position).

    >>> s = torch.tensor([[2., 0., 0., 0.]]); a = torch.tensor([[9., 1., 0., 0.]])
    >>> top_k_loss(s, a, torch.ones(1, 4, dtype=torch.bool), fraction=0.25)  # -log(e^2/(e^2+3))
    tensor([0.3408])
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"top-K fraction must be in (0, 1], got {fraction}")
    neg = torch.finfo(relevance.dtype).min
    n = mask.sum(1)  # (batch,)
    k = torch.ceil(n.to(torch.float64) * fraction).long().clamp_min(1)
    order = target.to(torch.float32).masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True,
                                                                               stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    top = (rank < k[:, None]) & mask
    all_logits = relevance.masked_fill(~mask, neg)
    return torch.logsumexp(all_logits, 1) - torch.logsumexp(relevance.masked_fill(~top, neg), 1)


def local_loss(kind: str, relevance: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
               top_k: float = 0.1) -> torch.Tensor:
    """The local loss ``kind`` (``"cosine"``, ``"kl"`` or ``"topk"``) per pair, ``(n,)``.

    >>> local_loss("dice", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool))
    Traceback (most recent call last):
    ...
    ValueError: unknown local loss 'dice'; choose one of cosine, kl, topk
    """
    if relevance.shape != target.shape or relevance.shape != mask.shape:
        raise ValueError(f"relevance {tuple(relevance.shape)}, target {tuple(target.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape (pairs, vectors)")
    if kind == "cosine":
        return cosine_loss(relevance, target, mask)
    if kind == "kl":
        return kl_loss(relevance, target, mask)
    if kind == "topk":
        return top_k_loss(relevance, target, mask, top_k)
    raise ValueError(f"unknown local loss {kind!r}; choose one of {', '.join(LOCAL_LOSSES)}")


def mismatch_first(relevance: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   fraction: float = 0.25, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """AGREE's mismatch-first selection: the ``ceil(fraction * n)`` pairs (of the ``n``
    ``eligible`` ones) whose relevance disagrees most with the teacher (highest ``1 - cos``,
    no gradient). Returns an ``(n_pairs,)`` bool mask.

    >>> s = torch.tensor([[1., 0.], [0., 1.], [1., 1.], [1., 0.]])
    >>> a = torch.tensor([[1., 0.], [1., 0.], [1., 0.], [0., 1.]])
    >>> mismatch_first(s, a, torch.ones(4, 2, dtype=torch.bool), 0.5).tolist()
    [False, True, False, True]
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"mismatch-first fraction must be in (0, 1], got {fraction}")
    with torch.no_grad():
        gap = cosine_loss(relevance.detach().float(), target.float(), mask)
        if eligible is not None:
            gap = gap.masked_fill(~eligible, float("-inf"))
        n = int(eligible.sum()) if eligible is not None else len(gap)
        k = min(n, math.ceil(fraction * n))
        chosen = torch.zeros_like(gap, dtype=torch.bool)
        if k:
            chosen[gap.topk(k).indices] = True
        return chosen
