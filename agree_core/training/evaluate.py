"""Retrieval metrics on a held-out split, scored with the project's own MaxSim (the metrics
of :mod:`agree_core.evaluation.metrics`, which ``agree eval`` prints too)."""

from __future__ import annotations

from typing import Sequence

import torch

from agree_core.evaluation.metrics import mean_scores, ndcg, recall

__all__ = ["ranking_metrics", "METRICS"]

METRICS = ("ndcg@1", "ndcg@5", "recall@5")


def ranking_metrics(scores: torch.Tensor, relevant: Sequence[set[int]]) -> dict[str, float]:
    """nDCG@1, nDCG@5 and recall@5 (binary relevance), averaged over queries.

    Args:
        scores: ``(n_queries, n_pages)``.
        relevant: per query, the columns of its relevant pages.

    >>> s = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.1, 0.8]])
    >>> ranking_metrics(s, [{0}, {0}])   # q0 right at rank 1; q1's page at rank 2
    {'ndcg@1': 0.5, 'ndcg@5': 0.8155, 'recall@5': 1.0}
    """
    if scores.shape[0] != len(relevant):
        raise ValueError(f"{scores.shape[0]} score rows for {len(relevant)} queries")
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :5].tolist()
    per_query = []
    for ranked, rel in zip(order, relevant):
        if not rel:
            raise ValueError("every evaluation query needs at least one relevant page")
        gains = dict.fromkeys(rel, 1.0)
        per_query.append({"ndcg@1": ndcg(ranked, gains, 1), "ndcg@5": ndcg(ranked, gains, 5),
                          "recall@5": recall(ranked, gains, 5)})
    return {k: round(v, 4) for k, v in mean_scores(per_query).items()}
