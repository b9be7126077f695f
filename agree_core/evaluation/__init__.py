"""``agree eval``: retrieval quality of an index on labelled queries (nDCG, recall, MRR)."""

from agree_core.evaluation.inputs import EvalInputError, EvalQuery, PageKey, load_queries
from agree_core.evaluation.metrics import METRIC_NAMES, mean_scores, ndcg, ranking_scores, recall
from agree_core.evaluation.run import EvalReport, evaluate_index

__all__ = ["EvalInputError", "EvalQuery", "PageKey", "load_queries", "METRIC_NAMES", "mean_scores",
           "ndcg", "ranking_scores", "recall", "EvalReport", "evaluate_index"]
