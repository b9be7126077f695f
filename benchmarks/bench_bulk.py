"""Bulk building: how fast pages reach a Qdrant Edge shard, and what the optimizer buys.

    .venv/bin/python benchmarks/bench_bulk.py --pages 10000
    .venv/bin/python benchmarks/bench_bulk.py --pages 10000 --batches 16,512 --settings 1:float16,3:turbo4

Pages are the dev-set pages of ``bench_storage.py`` (real vectors, cells and terms, cached),
repeated with a small random rotation of their vectors beyond the corpus, as bench_search.py
synthesises large indexes. Each page goes through the product's write path: the point schema
(``schema.build_point``: token pooling, the 32 first-stage centroids, payload) and
``EdgeEngine.upsert`` in batches of the given size (``agree index`` writes one encoded batch,
16 pages by default, at a time). Reported per setting (pool factor : datatype) and batch size:
pages/s for building points, for upserting, and overall; then ``EdgeEngine.optimize()`` once
(seconds), and for the shard before and after it: the resident memory a fresh process gains by
opening it and running one query, and that query's latency (exact MaxSim over every page, p50 of 5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_storage import corpus  # noqa: E402
from common import DATA, machine, table  # noqa: E402

SHARDS = DATA / "bulk-shards"

PROBE = r"""
import json, resource, sys, time
import numpy as np
from agree_core.index.engines.edge import EdgeEngine
from agree_core.index.schema import INTEGER_FIELDS, KEYWORD_FIELDS, SEARCH_EXCLUDE, TOKENS, vector_specs
path, dim, dt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from pathlib import Path
base = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
e = EdgeEngine(Path(path), vector_specs(dim, dt, True), KEYWORD_FIELDS, INTEGER_FIELDS)
q = np.random.default_rng(0).standard_normal((12, dim)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
times = []
for _ in range(5):
    t = time.perf_counter(); e.search(q, 10, using=TOKENS, exclude=SEARCH_EXCLUDE); times.append(time.perf_counter() - t)
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
print(json.dumps({"rss_mb": (rss - base) / 2**20, "query_ms": 1000 * float(np.median(times))}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def synthetic(embs: list, n: int, seed: int = 7):
    """``n`` pages: the real ones, then copies with their vectors nudged (and renormalised)."""
    import torch

    from agree_core.encoders import PageEmbedding

    rng = np.random.default_rng(seed)
    for i in range(n):
        e = embs[i % len(embs)]
        if i < len(embs):
            yield e
            continue
        v = e.vectors.numpy()
        v = v + 0.15 * rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(v.shape[1])
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        yield PageEmbedding(torch.from_numpy(v), e.grid, e.cells, e.text, e.terms)


def probe(path: Path, dim: int, dt: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(dim), dt], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(embs: list, meta: list, n: int, factor: int, dt: str, batch: int, dim: int) -> dict:
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.schema import INTEGER_FIELDS, KEYWORD_FIELDS, build_point, vector_specs

    d = SHARDS / f"p{factor}-{dt}-b{batch}"
    shutil.rmtree(d, ignore_errors=True)
    engine = EdgeEngine(d, vector_specs(dim, dt, True), KEYWORD_FIELDS, INTEGER_FIELDS)
    t_points = t_upsert = 0.0
    t0 = time.perf_counter()
    points = []
    for i, e in enumerate(synthetic(embs, n)):
        t = time.perf_counter()
        m = meta[i % len(meta)]
        points.append(build_point(str(uuid.UUID(int=i + 1)), e, pooled=32, pool_factor=factor, text=m["text"],
                                  source=m["source"], page=int(m["page"]), doc_id=m["source"], meta={},
                                  image={"image": ""}))
        t_points += time.perf_counter() - t
        if len(points) == batch or i == n - 1:
            t = time.perf_counter()
            engine.upsert(points)
            t_upsert += time.perf_counter() - t
            points = []
        if (i + 1) % 2000 == 0:
            log(f"  {i + 1}/{n} pages")
    t = time.perf_counter()
    engine.flush()
    t_upsert += time.perf_counter() - t
    total = time.perf_counter() - t0
    engine.close()
    before = probe(d, dim, dt)
    engine = EdgeEngine(d, vector_specs(dim, dt, True), KEYWORD_FIELDS, INTEGER_FIELDS)
    t = time.perf_counter()
    engine.optimize()
    engine.flush()
    t_opt = time.perf_counter() - t
    engine.close()
    after = probe(d, dim, dt)
    shutil.rmtree(d, ignore_errors=True)
    return {"pool factor": factor, "datatype": dt, "batch": batch, "pages": n,
            "points pages/s": round(n / t_points), "upsert pages/s": round(n / t_upsert),
            "overall pages/s": round(n / total), "optimize s": round(t_opt, 1),
            "RSS at open MB": round(before["rss_mb"]), "after optimize MB": round(after["rss_mb"]),
            "query ms": round(before["query_ms"]), "after optimize ms": round(after["query_ms"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=10_000)
    ap.add_argument("--batches", default="16,512", help="pages per upsert")
    ap.add_argument("--settings", default="1:float16,3:turbo4", help="pool factor:datatype, comma-separated")
    args = ap.parse_args()

    from agree_core.encoders import load_encoder

    print(f"# Bulk building\n\n{machine()}\n")
    enc = load_encoder("text-layer")
    embs, meta = corpus(enc, 400)
    rows = []
    for setting in args.settings.split(","):
        factor, dt = setting.split(":")
        for batch in (int(b) for b in args.batches.split(",")):
            log(f"building pool {factor} {dt}, batches of {batch} ...")
            rows.append(run(embs, meta, args.pages, int(factor), dt, batch, enc.dim))
            log(json.dumps(rows[-1]))
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
