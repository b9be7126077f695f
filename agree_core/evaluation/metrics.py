"""Ranking metrics over ranked page keys and graded relevance (pure functions).

A ranking is a list of keys, best first; relevance maps a key to its gain (> 0 means
relevant; BEIR qrels scores, or 1 for a plain label). nDCG uses the gains as given
(``gain / log2(rank + 1)``), recall and MRR count every key with a gain above 0.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

__all__ = ["ndcg", "recall", "reciprocal_rank", "ranking_scores", "mean_scores", "METRIC_NAMES"]

METRIC_NAMES = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@10")


def ndcg(ranked: Sequence[Hashable], relevance: Mapping[Hashable, float], k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` keys.

    >>> round(ndcg(["a", "b", "c"], {"b": 1}, 5), 4)   # the one relevant page at rank 2
    0.6309
    >>> ndcg(["a"], {"a": 2, "b": 1}, 1)                # the best page first: ideal
    1.0
    """
    gains = sorted((g for g in relevance.values() if g > 0), reverse=True)
    ideal = sum(g / math.log2(r + 2) for r, g in enumerate(gains[:k]))
    if ideal == 0:
        return 0.0
    dcg = sum(max(relevance.get(key, 0.0), 0.0) / math.log2(r + 2) for r, key in enumerate(ranked[:k]))
    return dcg / ideal


def recall(ranked: Sequence[Hashable], relevance: Mapping[Hashable, float], k: int) -> float:
    """The share of relevant keys among the first ``k``.

    >>> recall(["a", "b", "c"], {"c": 1, "d": 1}, 3)
    0.5
    """
    relevant = {key for key, g in relevance.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[Hashable], relevance: Mapping[Hashable, float], k: int = 10) -> float:
    """1 / the rank of the first relevant key within ``k``, else 0.

    >>> reciprocal_rank(["a", "b", "c"], {"c": 1})
    0.3333333333333333
    """
    for r, key in enumerate(ranked[:k], start=1):
        if relevance.get(key, 0) > 0:
            return 1.0 / r
    return 0.0


def ranking_scores(ranked: Sequence[Hashable], relevance: Mapping[Hashable, float]) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one query.

    >>> ranking_scores(["a", "b"], {"b": 1})["mrr@10"]
    0.5
    """
    out = {f"ndcg@{k}": ndcg(ranked, relevance, k) for k in (1, 5, 10)}
    out.update({f"recall@{k}": recall(ranked, relevance, k) for k in (5, 10)})
    out["mrr@10"] = reciprocal_rank(ranked, relevance, 10)
    return out


def mean_scores(per_query: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries (an empty dict for no queries).

    >>> mean_scores([{"ndcg@1": 1.0}, {"ndcg@1": 0.0}])
    {'ndcg@1': 0.5}
    """
    if not per_query:
        return {}
    return {name: sum(q[name] for q in per_query) / len(per_query) for name in per_query[0]}
