"""Shared pieces of the benchmarks: the dev set, its corpus, and retrieval metrics."""

from __future__ import annotations

import json
import math
import os
import pickle
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
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

    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
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
    cache = DATA / "cache" / "devset_pages.pkl"
    if cache.exists() and not render:
        return pickle.loads(cache.read_bytes())
    pages = []
    for pdf in sorted(DEVSET.glob("*.pdf")):
        pages.extend(iter_pages(pdf, render=render, chunk_size=64))
    if not render:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(pages))
    return pages


def key(source: str | Path, page: int) -> tuple[str, int]:
    return (Path(source).name, int(page))


def ndcg_at_k(ranked: list[tuple[str, int]], relevant: set[tuple[str, int]], k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(ranked[:k]) if r in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at_k(ranked: list[tuple[str, int]], relevant: set[tuple[str, int]], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def evaluate(rankings: dict[str, list[tuple[str, int]]], questions: list[dict]) -> dict[str, float]:
    """Mean nDCG@1, nDCG@5, recall@10 and MRR@10 over the questions (binary relevance)."""
    n = len(questions)
    out = {"nDCG@1": 0.0, "nDCG@5": 0.0, "recall@10": 0.0, "MRR@10": 0.0}
    for q in questions:
        rel = {(r["doc"], int(r["page"])) for r in q["relevant"]}
        ranked = rankings[q["qid"]]
        out["nDCG@1"] += ndcg_at_k(ranked, rel, 1) / n
        out["nDCG@5"] += ndcg_at_k(ranked, rel, 5) / n
        out["recall@10"] += recall_at_k(ranked, rel, 10) / n
        first = next((i for i, r in enumerate(ranked[:10]) if r in rel), None)
        out["MRR@10"] += (1 / (first + 1) if first is not None else 0.0) / n
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
