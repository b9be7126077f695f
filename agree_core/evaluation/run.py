"""Run labelled queries through an index's own search and score the rankings."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from agree_core.evaluation.inputs import EvalInputError, EvalQuery, PageKey
from agree_core.evaluation.metrics import METRIC_NAMES, mean_scores, ranking_scores

log = logging.getLogger(__name__)

__all__ = ["EvalReport", "evaluate_index"]


@dataclass
class EvalReport:
    index: str
    encoder: str
    metrics: dict[str, float]
    by_type: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: int = 0
    unlabelled: list[str] = field(default_factory=list)  # qids with no relevant page: left out
    missing_pages: list[str] = field(default_factory=list)  # relevant pages the index lacks
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "encoder": self.encoder, "queries": self.queries,
                "metrics": self.metrics, "by_type": self.by_type,
                "unlabelled": self.unlabelled, "missing_pages": self.missing_pages}

    def table(self) -> str:
        cols = ["type", "queries", *METRIC_NAMES]
        rows = [["all", str(self.queries), *(f"{self.metrics[m]:.3f}" for m in METRIC_NAMES)]]
        rows += [[t, str(v["queries"]), *(f"{v['metrics'][m]:.3f}" for m in METRIC_NAMES)]
                 for t, v in self.by_type.items()]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        return "\n".join([line(cols), *map(line, rows)])


def evaluate_index(index: Any, queries: Sequence[EvalQuery], *, batch_size: int = 32,
                   candidates: int | None = None, depth: int = 10) -> EvalReport:
    """nDCG@1/5/10, recall@5/10 and MRR@10 of ``index.search_batch`` over ``queries``,
    overall and per query type.

    Relevant pages name their file by stem (``zoo``) or path; a stem shared by two indexed
    files is an error naming both. Relevant pages that are not in the index still count
    (they can only lower the scores) and are listed in ``missing_pages``.
    """
    if depth < 10:
        raise ValueError(f"depth must be >= 10 (the metrics look at the top 10), got {depth}")
    info = index.info()
    documents = {d["source"]: d["pages"] for d in info["documents"] if d.get("source")}
    resolve = _resolver(documents)
    labelled = [q for q in queries if q.relevant]
    report = EvalReport(str(info.get("directory", "")), info.get("encoder", ""), {},
                        unlabelled=[q.qid for q in queries if not q.relevant])
    if report.unlabelled:
        log.warning("%d queries have no relevant page and are left out (first: %s)",
                    len(report.unlabelled), report.unlabelled[0])
    if not labelled:
        raise EvalInputError("no query has a relevant page: give labels inline (\"relevant\") "
                             "or with --qrels")
    missing: set[str] = set()
    relevance = []
    for q in labelled:
        rel: dict[Any, float] = {}
        for key, gain in q.relevant.items():
            target = resolve(key)
            if target is None:
                missing.add(str(key))
                target = key
            rel[target] = max(gain, rel.get(target, 0.0))
        relevance.append(rel)
    if missing:
        log.warning("%d relevant pages are not in the index (first: %s); they count as not found",
                    len(missing), sorted(missing)[0])
    by_type: dict[str, list[dict[str, float]]] = defaultdict(list)
    scores = []
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start : start + batch_size]
        results = index.search_batch([q.query for q in chunk], depth, None, candidates)
        for q, hits, rel in zip(chunk, results, relevance[start : start + batch_size]):
            ranked = [(h.source, h.page) for h in hits]
            s = ranking_scores(ranked, rel)
            scores.append(s)
            report.per_query[q.qid] = s
            for t in q.types:
                by_type[t].append(s)
    report.queries = len(labelled)
    report.metrics = mean_scores(scores)
    report.by_type = {t: {"queries": len(v), "metrics": mean_scores(v)} for t, v in sorted(by_type.items())}
    report.missing_pages = sorted(missing)
    return report


def _resolver(documents: dict[str, int]):
    """PageKey -> (source, page) of an indexed page, or ``None`` when the index lacks it."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for source in documents:
        by_stem[Path(source).stem].append(source)

    def resolve(key: PageKey) -> tuple[str, int] | None:
        if Path(key.doc).is_absolute():
            source = key.doc if key.doc in documents else None
        else:
            found = by_stem.get(key.doc, [])
            if len(found) > 1:
                raise EvalInputError(f"{key}: the index holds {len(found)} files named "
                                     f"{key.doc}.pdf ({', '.join(sorted(found))}); name the "
                                     "page by its path instead")
            source = found[0] if found else None
        if source is None or key.page > documents[source]:
            return None
        return (source, key.page)

    return resolve
