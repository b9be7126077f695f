"""The global (document-level) losses over a batch of queries and pages."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["hardest_negative_softplus", "info_nce"]


def _negatives_mask(scores: torch.Tensor, positives: torch.Tensor,
                    exclude: torch.Tensor | None) -> torch.Tensor:
    """True where page ``k`` may serve as a negative of query ``i``."""
    allowed = torch.ones_like(scores, dtype=torch.bool)
    allowed[torch.arange(len(positives), device=scores.device), positives] = False
    if exclude is not None:
        allowed &= ~exclude
    if not bool(allowed.any(dim=1).all()):
        raise ValueError("a query has no negative in the batch: use a batch of at least 2 "
                         "different pages (or add explicit negatives)")
    return allowed


def hardest_negative_softplus(scores: torch.Tensor, positives: torch.Tensor,
                              exclude: torch.Tensor | None = None) -> torch.Tensor:
    """AGREE's (and ColPali's) global loss: ``mean_i softplus(S(q_i, d-) - S(q_i, d+))`` with
    ``d-`` the highest-scoring page of the batch that is not a positive of ``q_i``. No
    temperature.

    Args:
        scores: ``(n_q, n_p)`` late-interaction scores.
        positives: ``(n_q,)`` column of each query's positive page.
        exclude: optional ``(n_q, n_p)`` bool, True on pages that must not count as negatives
            (the same page seen twice in a batch, another page labelled relevant).

    >>> s = torch.tensor([[5., 3., 4.], [1., 2., 6.]])
    >>> round(hardest_negative_softplus(s, torch.tensor([0, 1])).item(), 4)  # (sp(-1) + sp(4)) / 2
    2.1657
    >>> ex = torch.tensor([[False, False, True], [False, False, False]])
    >>> round(hardest_negative_softplus(s, torch.tensor([0, 1]), ex).item(), 4)  # q0's d- is now 3
    2.0725
    """
    allowed = _negatives_mask(scores, positives, exclude)
    pos = scores.gather(1, positives[:, None]).squeeze(1)  # (n_q,)
    hardest = scores.masked_fill(~allowed, float("-inf")).max(dim=1).values  # (n_q,)
    return F.softplus(hardest - pos).mean()


def info_nce(scores: torch.Tensor, positives: torch.Tensor, *, temperature: float = 0.02,
             query_lengths: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each query's positive against all pages of the batch, on scores
    divided by the query's length (mean MaxSim per token, in [-1, 1]) and by ``temperature``.

    >>> s = torch.tensor([[2., 0.], [0., 2.]])
    >>> round(info_nce(s, torch.tensor([0, 1]), temperature=1.0).item(), 4)  # -log(e^2/(e^2+1))
    0.1269
    >>> round(info_nce(s, torch.tensor([0, 1]), temperature=1.0,
    ...                query_lengths=torch.tensor([2, 2])).item(), 4)       # -log(e/(e+1))
    0.3133
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query_lengths is not None:
        scores = scores / query_lengths.to(scores.dtype).clamp_min(1)[:, None]
    logits = scores / temperature
    if exclude is not None:
        keep = exclude.clone()
        keep[torch.arange(len(positives), device=scores.device), positives] = False
        logits = logits.masked_fill(keep, float("-inf"))
    return F.cross_entropy(logits, positives)
