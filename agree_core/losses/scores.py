"""Differentiable MaxSim over padded batches (training; search uses :mod:`agree_core.scoring`)."""

from __future__ import annotations

import torch

__all__ = ["late_interaction_scores"]


def late_interaction_scores(queries: torch.Tensor, query_mask: torch.Tensor,
                            pages: torch.Tensor, page_mask: torch.Tensor) -> torch.Tensor:
    """MaxSim of every query against every page: ``S[i, k] = sum_t max_j <q_it, d_kj>``.

    Args:
        queries: ``(n_q, L_q, dim)``; query_mask: ``(n_q, L_q)``, True on real tokens.
        pages: ``(n_p, L_p, dim)``; page_mask: ``(n_p, L_p)``, True on real vectors.

    Returns:
        ``(n_q, n_p)`` in the dtype of the inputs, differentiable. Padded page vectors never
        win a max; padded query tokens add nothing.

    >>> q = torch.tensor([[[1., 0.], [0., 1.]]])                       # one query, two tokens
    >>> d = torch.tensor([[[1., 0.], [9., 9.]], [[0., 1.], [.5, 0.]]])  # two pages
    >>> late_interaction_scores(q, torch.tensor([[True, True]]), d,
    ...                         torch.tensor([[True, False], [True, True]]))
    tensor([[1.0000, 1.5000]])
    """
    sims = torch.einsum("qtd,pjd->qptj", queries, pages)  # (n_q, n_p, L_q, L_p)
    sims = sims.masked_fill(~page_mask[None, :, None, :], float("-inf"))
    best = sims.max(dim=-1).values  # (n_q, n_p, L_q)
    best = torch.where(query_mask[:, None, :], best, torch.zeros_like(best))  # also kills -inf rows
    return best.sum(dim=-1)
