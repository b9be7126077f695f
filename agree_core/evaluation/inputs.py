"""Labelled queries for ``agree eval``, from the three input forms it reads.

- **JSONL**: one ``{"qid": ..., "query": ..., "type": ..., "relevant": [...]}`` per line;
  ``type`` is optional, and a relevant page is ``"FILE_STEM:PAGE"``,
  ``{"doc": "zoo.pdf", "page": 3}`` (``doc`` or ``source``: a file name, stem or path;
  optional ``"score"``, the gain, default 1). Without ``relevant``, the labels come from
  ``--qrels``.
- **BEIR qrels TSV** (``--qrels FILE``): a header line, then ``query-id  corpus-id  score``;
  a corpus-id names a page as ``FILE_STEM:PAGE`` (``zoo:3`` is page 3 of zoo.pdf).
- **A ViDoRe / MTEB parquet folder**: the ``queries``, ``qrels`` and (optional) ``corpus``
  subsets as parquet files (``queries/test-*.parquet`` or ``queries-*.parquet`` ...), column
  names with ``-`` or ``_`` (``query-id`` / ``query_id``). Query types come from
  ``query_type``, ``query_types`` (a list: the query counts in each) or ``type``. With a
  corpus that has ``doc_id`` and ``page_number_in_doc`` (ViDoRe v3: numbered from 0), a
  corpus id names page ``page_number_in_doc + 1`` of the file whose stem is ``doc_id``'s;
  otherwise corpus ids must be ``FILE_STEM:PAGE``.

Pages are physical, 1-based (what ``pdftotext -f N`` uses), never printed page labels.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = ["EvalQuery", "PageKey", "EvalInputError", "load_queries", "parse_page_key"]


class EvalInputError(ValueError):
    """A queries or qrels input that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class PageKey:
    """A page named by its file: ``doc`` is a stem (``zoo``) or an absolute path."""

    doc: str
    page: int

    def __str__(self) -> str:
        return f"{self.doc}:{self.page}"


@dataclass
class EvalQuery:
    qid: str
    query: str
    types: tuple[str, ...] = ()
    relevant: dict[PageKey, float] = field(default_factory=dict)


def parse_page_key(text: str, where: str) -> PageKey:
    """``"zoo:3"`` -> ``PageKey("zoo", 3)``.

    >>> parse_page_key("annual.report:12", "x")
    PageKey(doc='annual.report', page=12)
    >>> parse_page_key("zoo", "qrels.tsv:2")
    Traceback (most recent call last):
    ...
    agree_core.evaluation.inputs.EvalInputError: qrels.tsv:2: 'zoo' does not name a page as FILE_STEM:PAGE (e.g. zoo:3 is page 3 of zoo.pdf)
    """
    stem, sep, page = str(text).rpartition(":")
    if not sep or not stem or not page.strip().isdigit() or int(page) < 1:
        raise EvalInputError(f"{where}: {text!r} does not name a page as FILE_STEM:PAGE "
                             "(e.g. zoo:3 is page 3 of zoo.pdf)")
    return PageKey(_doc_name(stem.strip(), None), int(page))


def load_queries(path: str | Path, qrels: str | Path | None = None) -> list[EvalQuery]:
    """The labelled queries of a JSONL file or a parquet folder, with ``qrels`` (a BEIR TSV)
    adding labels. Queries that end up with no relevant page are kept with an empty
    ``relevant`` (the caller reports and leaves them out)."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path} does not exist: give a JSONL file of queries or a parquet folder")
    queries = _read_parquet_folder(path) if path.is_dir() else _read_jsonl(path)
    if qrels is not None:
        by_qid = {q.qid: q for q in queries}
        for qid, key, score in _read_qrels_tsv(Path(qrels)):
            if qid in by_qid and score > 0:
                by_qid[qid].relevant[key] = max(score, by_qid[qid].relevant.get(key, 0.0))
    if not queries:
        raise EvalInputError(f"{path} holds no queries")
    return queries


def _doc_name(doc: str, base: Path | None) -> str:
    """A stem for a bare name (``zoo.pdf`` -> ``zoo``), an absolute path for a path."""
    if "/" in doc or "\\" in doc:
        p = Path(doc)
        return str(p if p.is_absolute() or base is None else (base / p).absolute())
    return doc[:-4] if doc.lower().endswith(".pdf") else doc


def _read_jsonl(path: Path) -> list[EvalQuery]:
    out, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalInputError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str) or not obj["query"].strip():
            raise EvalInputError(f'{where}: expected {{"qid": ..., "query": "...", "relevant": [...]}}')
        qid = str(obj.get("qid", n))
        if qid in seen:
            raise EvalInputError(f"{where}: qid {qid!r} appears twice")
        seen.add(qid)
        kind = obj.get("type")
        types = tuple(kind) if isinstance(kind, list) else (str(kind),) if kind else ()
        relevant: dict[PageKey, float] = {}
        for item in obj.get("relevant") or ():
            key, score = _relevant_item(item, where, path.parent)
            relevant[key] = score
        out.append(EvalQuery(qid, obj["query"], types, relevant))
    return out


def _relevant_item(item: Any, where: str, base: Path) -> tuple[PageKey, float]:
    if isinstance(item, str):
        return parse_page_key(item, where), 1.0
    if isinstance(item, dict):
        doc = item.get("doc", item.get("source"))
        page = item.get("page")
        score = item.get("score", 1)
        if isinstance(doc, str) and doc and isinstance(page, int) and not isinstance(page, bool) \
                and page >= 1 and isinstance(score, (int, float)):
            return PageKey(_doc_name(doc, base), page), float(score)
    raise EvalInputError(f'{where}: a relevant page is "FILE_STEM:PAGE" or {{"doc": "zoo.pdf", '
                         f'"page": 3}} (page >= 1), got {item!r}')


def _read_qrels_tsv(path: Path) -> Iterable[tuple[str, PageKey, float]]:
    if not path.is_file():
        raise EvalInputError(f"--qrels {path} is not a file")
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = [h.strip().lower().replace("_", "-") for h in next(rows, [])]
        if header[:2] != ["query-id", "corpus-id"]:
            raise EvalInputError(f"{path}:1: a BEIR qrels file starts with the header "
                                 f"'query-id<TAB>corpus-id<TAB>score', got {header!r}")
        for n, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise EvalInputError(f"{path}:{n}: expected query-id, corpus-id and score")
            try:
                score = float(row[2]) if len(row) > 2 and row[2].strip() else 1.0
            except ValueError:
                raise EvalInputError(f"{path}:{n}: score {row[2]!r} is not a number") from None
            yield row[0].strip(), parse_page_key(row[1].strip(), f"{path}:{n}"), score


def _read_parquet_folder(folder: Path) -> list[EvalQuery]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading parquet needs pyarrow: pip install 'agree[train]'") from e

    def table(name: str, required: bool) -> list[dict[str, Any]]:
        files = sorted(p for p in folder.rglob("*.parquet")
                       if any(part == name or part.startswith(f"{name}-") or part.startswith(f"{name}_")
                              or part.startswith(f"{name}.")
                              for part in p.relative_to(folder).parts))
        if not files and required:
            raise EvalInputError(f"{folder}: no {name} parquet files (expected {name}/*.parquet "
                                 f"or {name}-*.parquet, as ViDoRe and MTEB publish them)")
        rows: list[dict[str, Any]] = []
        for f in files:
            columns = [c for c in pq.read_schema(f).names if c != "image"]  # never load page images
            rows.extend({k.replace("-", "_"): v for k, v in r.items()}
                        for r in pq.read_table(f, columns=columns).to_pylist())
        return rows

    pages: dict[str, PageKey] = {}
    for r in table("corpus", required=False):
        if r.get("doc_id") is not None and r.get("page_number_in_doc") is not None:
            pages[str(r["corpus_id"])] = PageKey(_doc_name(Path(str(r["doc_id"])).name, None),
                                                 int(r["page_number_in_doc"]) + 1)
    queries: dict[str, EvalQuery] = {}
    for n, r in enumerate(table("queries", required=True), start=1):
        if "query_id" not in r or not isinstance(r.get("query"), str):
            raise EvalInputError(f"{folder}: queries row {n} has no query_id or query column")
        kind = r.get("query_types", r.get("query_type", r.get("type")))
        types = tuple(map(str, kind)) if isinstance(kind, (list, tuple)) else (str(kind),) if kind else ()
        queries[str(r["query_id"])] = EvalQuery(str(r["query_id"]), r["query"], types)
    for n, r in enumerate(table("qrels", required=True), start=1):
        qid, cid = str(r.get("query_id")), str(r.get("corpus_id"))
        score = float(r.get("score", 1) or 0)
        if qid not in queries or score <= 0:
            continue
        key = pages.get(cid) or parse_page_key(cid, f"{folder}: qrels row {n} (no corpus row with "
                                                    "doc_id and page_number_in_doc for it)")
        queries[qid].relevant[key] = max(score, queries[qid].relevant.get(key, 0.0))
    return list(queries.values())
