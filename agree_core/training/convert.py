"""Labelled queries over an indexed corpus -> training examples (``agree dataset convert``).

The query file holds one JSON object per line, with the positive page as ``source`` (a PDF
path, relative to the query file or absolute) and 1-based ``page``, or several of them::

    {"qid": "q1", "query": "What was the 2023 revenue?", "source": "reports/2023.pdf", "page": 4}
    {"query": "Which plots show the decay?", "positives": [{"source": "a.pdf", "page": 2},
                                                          {"source": "a.pdf", "page": 3}]}

Every positive page must be in the index (the index's own search mines the hard negatives).
The output is the training format of :mod:`agree_core.training.data`, one example per
positive, with absolute ``pdf`` paths and, with ``hard_negatives=K``, the query's top K hits
that are none of its positives as ``negatives``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agree_core.training.data import DataError, read_jsonl

log = logging.getLogger(__name__)

__all__ = ["LabelledQuery", "ConvertReport", "read_labelled_queries", "convert"]

QUERY_KEYS = ("qid", "query", "source", "page", "positives")
SEARCH_BATCH = 64  # queries encoded and searched together


@dataclass(frozen=True)
class LabelledQuery:
    line: int
    qid: Any
    query: str
    positives: tuple[tuple[Path, int], ...]  # (absolute PDF path, 1-based page)


@dataclass
class ConvertReport:
    queries: int = 0
    examples: int = 0
    negatives: int = 0  # hard negatives written, over all examples
    short: int = 0  # examples that got fewer than K negatives (a small index)


def read_labelled_queries(path: str | Path) -> list[LabelledQuery]:
    """Parse a query file; a malformed line is a :class:`DataError` naming ``file:line``."""
    return read_jsonl(path, _parse, "labelled queries", '{"query": ..., "source": PDF, "page": N}')


def _parse(line: str, root: Path, n: int, where: str) -> LabelledQuery:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not a JSON object ({e}); write one object per line") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a JSON object; write one object per line")
    unknown = [k for k in obj if k not in QUERY_KEYS]
    if unknown:
        raise DataError(f'{where}: unknown key "{unknown[0]}"; the known keys are '
                        + ", ".join(f'"{k}"' for k in QUERY_KEYS))
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise DataError(f'{where}: needs a non-empty "query" string')
    if ("positives" in obj) == ("source" in obj or "page" in obj):
        raise DataError(f'{where}: give the labelled page as "source": PDF with "page": N, or as '
                        '"positives": [{"source": PDF, "page": N}, ...] (one of the two)')
    items = obj["positives"] if "positives" in obj else [obj]
    if not isinstance(items, list) or not items:
        raise DataError(f'{where}: "positives" must be a non-empty list of {{"source": PDF, "page": N}}')
    positives = []
    for i, item in enumerate(items):
        at = where if "positives" not in obj else f"{where}: positives[{i}]"
        if not isinstance(item, dict) or ("positives" in obj and set(item) - {"source", "page"}):
            raise DataError(f'{at} must be an object {{"source": PDF, "page": N}}')
        source, page = item.get("source"), item.get("page")
        if not isinstance(source, str) or not source.strip():
            raise DataError(f'{at}: "source" must be the path of an indexed PDF, got {source!r}')
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise DataError(f'{at}: "page" must be a 1-based integer, got {json.dumps(page)}')
        positives.append((Path(os.path.normpath(root / Path(source).expanduser())), page))
    return LabelledQuery(n, obj.get("qid", n), query, tuple(dict.fromkeys(positives)))


def convert(index_dir: str | Path, queries: str | Path, out: str | Path, *, hard_negatives: int = 0,
            wait: float = 0.0) -> ConvertReport:
    """Write the training file ``out`` for the labelled ``queries`` over the index at ``index_dir``.

    Raises:
        DataError: a malformed query line, or positive pages that are not in the index (all
            of them named, with their lines).
    """
    from agree_core.index import PageIndex

    if hard_negatives < 0:
        raise ValueError(f"hard_negatives must be >= 0, got {hard_negatives}")
    labelled = read_labelled_queries(queries)
    name = Path(queries).name
    report = ConvertReport(queries=len(labelled))
    with PageIndex.open(index_dir, create=False, wait=wait) as index:
        missing = [(q, src, page) for q in labelled for src, page in q.positives
                   if index.find_page(src, page) is None]
        if missing:
            docs = {d["source"]: d["pages"] for d in index.info()["documents"]}
            lines = [f"{name}:{q.line}: page {page} of {src} is not in the index ("
                     + (f"the file has {docs[str(src)]} pages)" if str(src) in docs
                        else "the file is not indexed)") for q, src, page in missing]
            more = f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
            raise DataError(f"{len(lines)} labelled page(s) are not in the index {index_dir}; fix "
                            '"source"/"page" or index the files with `agree index`:\n  '
                            + "\n  ".join(lines[:10]) + more)
        negatives: list[list[tuple[str, int]]] = [[] for _ in labelled]
        if hard_negatives:
            for lo in range(0, len(labelled), SEARCH_BATCH):
                chunk = labelled[lo : lo + SEARCH_BATCH]
                k = hard_negatives + max(len(q.positives) for q in chunk)
                hits = index.search_batch([q.query for q in chunk], k)
                for i, (q, found) in enumerate(zip(chunk, hits)):
                    positive = {(str(s), p) for s, p in q.positives}
                    negatives[lo + i] = [(h.source, h.page) for h in found
                                         if (h.source, h.page) not in positive][:hard_negatives]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for q, negs in zip(labelled, negatives):
            for src, page in q.positives:
                record: dict[str, Any] = {"qid": q.qid, "query": q.query, "pdf": str(src), "page": page}
                if hard_negatives:
                    record["negatives"] = [{"pdf": s, "page": p} for s, p in negs]
                    report.negatives += len(negs)
                    report.short += len(negs) < hard_negatives
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                report.examples += 1
    os.replace(tmp, out)
    return report
