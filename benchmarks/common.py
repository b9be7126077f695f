"""Shared pieces of the benchmarks: the dev set, its corpus, and retrieval metrics."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = Path(os.environ.get("AGREE_BENCH_DATA") or ROOT / "data")  # caches, corpora, shards (large)
DEVSET = DATA / "devset"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    from agree_core.cpu import cpu_kind

    return (f"{cpu} [{cpu_kind()}], {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def ensure_devset() -> Path:
    """Fetch the dev-set PDFs (Debian packages) unless they are there already."""
    subprocess.run(["bash", str(ROOT / "devset" / "fetch.sh"), str(DEVSET)], check=True,
                   stdout=subprocess.DEVNULL)
    return DEVSET


def load_questions() -> list[dict]:
    lines = (ROOT / "devset" / "questions.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def corpus_pages(render: bool = False):
    """Every page of the dev-set corpus (text layer only), cached between runs."""
    from agree_core.pages import iter_pages

    ensure_devset()
    pdfs = sorted(DEVSET.glob("*.pdf"))
    names = "-".join(f"{p.stem}.{p.stat().st_size}" for p in pdfs)  # a new corpus, a new cache
    cache = DATA / "cache" / f"devset_pages-{hashlib.sha256(names.encode()).hexdigest()[:12]}.pkl"
    if cache.exists() and not render:
        return pickle.loads(cache.read_bytes())
    pages = []
    for pdf in pdfs:
        pages.extend(iter_pages(pdf, render=render, chunk_size=64))
    if not render:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(pages))
    return pages


def key(source: str | Path, page: int) -> tuple[str, int]:
    return (Path(source).name, int(page))


TYPES = ("keyword", "paraphrase", "visual")  # the dev set's question types (devset/README.md)


def evaluate(rankings: dict[str, list[tuple[str, int]]], questions: list[dict]) -> dict[str, float]:
    """Mean nDCG@1, nDCG@5, recall@10 and MRR@10 over the questions (binary relevance), and
    nDCG@5 per question type: the metrics of ``agree eval`` (agree_core.evaluation)."""
    from agree_core.evaluation.metrics import mean_scores, ranking_scores

    per_query = {q["qid"]: ranking_scores(rankings[q["qid"]],
                                          {(r["doc"], int(r["page"])): 1.0 for r in q["relevant"]})
                 for q in questions}
    overall = mean_scores(list(per_query.values()))
    out = {"nDCG@1": overall["ndcg@1"], "nDCG@5": overall["ndcg@5"],
           "recall@10": overall["recall@10"], "MRR@10": overall["mrr@10"]}
    for t in TYPES:
        typed = [per_query[q["qid"]] for q in questions if q.get("type") == t]
        if typed:
            out[f"nDCG@5 {t}"] = mean_scores(typed)["ndcg@5"]
    return out


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def cached_corpus(cache: Path, pages: list, encode, shard: str | None = None) -> list | None:
    """The encoded corpus ``encode(pages)``, kept in ``cache`` (a pickle). With ``shard`` "I/N"
    only every N-th page from the I-th is encoded, into ``cache.IofN``, and None is returned
    (run the N shards side by side, then once without ``shard``: it joins them)."""
    import sys
    import time

    cache.parent.mkdir(parents=True, exist_ok=True)
    if shard:
        i, n = map(int, shard.split("/"))
        started = time.perf_counter()
        part = encode(pages[i::n])
        print(f"encoded shard {shard} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        cache.with_suffix(f".{i}of{n}").write_bytes(pickle.dumps(part))
        return None
    shards = sorted(cache.parent.glob(cache.stem + ".*of*"))
    if not cache.exists() and shards:
        n = int(shards[0].suffix.split("of")[1])
        corpus = [None] * len(pages)
        for i in range(n):
            corpus[i::n] = pickle.loads(cache.with_suffix(f".{i}of{n}").read_bytes())
        cache.write_bytes(pickle.dumps(corpus))
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    started = time.perf_counter()
    corpus = encode(pages)
    print(f"encoded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    cache.write_bytes(pickle.dumps(corpus))
    return corpus
