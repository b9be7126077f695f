"""Both engines on the same corpus: top-10 agreement, build speed, and the HTTP cost of the
server engine.

1. The same random corpus (unit-norm multivectors, ``--tokens`` per page, 128-d, 32 pooled
   vectors) through the embedded engine (Qdrant Edge) and the server engine over
   qdrant-client's LOCAL MODE (no server can run here; local mode searches by brute force in
   Python, so its speed says nothing about a server's): points built by the index's own
   ``build_point``, upserted from numpy arrays in batches of ``--batch``; top-10 agreement and
   score differences, exact and through the pooled first stage.
2. The server engine's real HTTP path against an ``httpx.MockTransport``: requests and
   request bytes per 1,000 pages added (``PageIndex.add`` of real PDFs, text-layer encoder,
   images in the payload and, for comparison, without them) and per search.

    python benchmarks/bench_engines.py [--pages 2000] [--tokens 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from common import machine  # noqa: E402


def corpus(n: int, tokens: int, dim: int, seed: int = 0):
    from agree_core.encoders import PageEmbedding

    rng = np.random.default_rng(seed)
    for i in range(n):
        v = rng.standard_normal((tokens, dim), dtype=np.float32)  # (tokens, dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        yield i, PageEmbedding(torch.from_numpy(v), (1, 1), torch.full((tokens,), -1, dtype=torch.long))


def make_points(n: int, tokens: int, dim: int) -> tuple[list, float]:
    """The corpus as the index writes it (``build_point``: vectors as float32 numpy arrays,
    32 pooled k-means centroids per page); and pages/s of that step."""
    import uuid

    from agree_core.index.schema import build_point

    t = time.perf_counter()
    points = [build_point(str(uuid.UUID(int=i + 1)), emb, pooled=32, text="", source="s.pdf",
                          page=i + 1, doc_id="d", meta={}, image={"image": ""})
              for i, emb in corpus(n, tokens, dim)]
    return points, n / (time.perf_counter() - t)


def build(engine, points: list, batch: int) -> float:
    """Pages/s of upserting ``points`` in batches (and the final flush)."""
    t = time.perf_counter()
    for lo in range(0, len(points), batch):
        engine.upsert(points[lo : lo + batch])
    engine.flush()
    return len(points) / (time.perf_counter() - t)


def agreement(args) -> None:
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.engines.server import ServerEngine, connect
    from agree_core.index.schema import POOLED, TOKENS, vector_specs

    dim = 128
    rng = np.random.default_rng(1)
    queries = [q / np.linalg.norm(q, axis=1, keepdims=True)
               for q in rng.standard_normal((args.queries, 20, dim), dtype=np.float32)]
    points, point_rate = make_points(args.pages, args.tokens, dim)
    print(f"(building the points, pooling included: {point_rate:.0f} pages/s)\n")
    print("| engine | datatype | upsert pages/s | exact query ms | pooled query ms |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        results = {}
        for name in ("edge", "local"):
            for datatype in ("float32", "float16"):
                specs = vector_specs(dim, datatype, pooled=True)
                if name == "edge":
                    engine = EdgeEngine(Path(d) / f"edge-{datatype}", specs)
                else:
                    engine = ServerEngine(connect(path=f"{d}/local-{datatype}"), "agree", specs, local=True)
                upsert_rate = build(engine, points, args.batch)
                t = time.perf_counter()
                exact = engine.search_batch(queries, 10, using=TOKENS)
                t_exact = (time.perf_counter() - t) / len(queries)
                t = time.perf_counter()
                pooled = engine.search_batch(queries, 10, using=TOKENS, prefetch=POOLED, candidates=100)
                t_pooled = (time.perf_counter() - t) / len(queries)
                engine.close()
                results[name, datatype] = (exact, pooled)
                print(f"| {'Edge (embedded)' if name == 'edge' else 'server engine, LOCAL MODE'} | {datatype} | "
                      f"{upsert_rate:.0f} | {t_exact * 1000:.0f} | {t_pooled * 1000:.0f} |", flush=True)
        print("\n| datatype | search | identical top-10 (share of queries) | top-10 overlap | max score difference |")
        print("|---|---|---|---|---|")
        for datatype in ("float32", "float16"):
            for stage, k in (("exact", 0), ("pooled first stage, 100 candidates", 1)):
                a, b = results["edge", datatype][k], results["local", datatype][k]
                same = np.mean([[p.id for p in x] == [p.id for p in y] for x, y in zip(a, b)])
                overlap = np.mean([len({p.id for p in x} & {p.id for p in y}) / 10 for x, y in zip(a, b)])
                diff = max(abs(p.score - q.score) for x, y in zip(a, b) for p, q in zip(x, y))
                print(f"| {datatype} | {stage} | {same:.2f} | {overlap:.3f} | {diff:.2e} |")


def http_costs(args) -> None:
    import httpx

    from agree_core.encoders import load_encoder
    from agree_core.index import PageIndex
    from conftest import lorem_pages, make_pdf
    from qdrant_mock import MockQdrant, Schema

    class Counting(MockQdrant):
        def __init__(self):
            super().__init__(Schema())
            self.schema.errors = lambda schema, body: []  # counting only (tests/test_contract.py validates)

    encoder = load_encoder("text-layer")
    with tempfile.TemporaryDirectory() as d:
        pdfs = [make_pdf(Path(d) / f"doc{i}.pdf", lorem_pages(args.doc_pages, topic=f"d{i}"))
                for i in range(args.docs)]
        n_pages = args.docs * args.doc_pages
        for images in (True, False):
            mock = Counting()
            opts = {"transport": httpx.MockTransport(mock.handle), "check_compatibility": False}
            with PageIndex.open("qdrant://bench:6333/pages", encoder, client_options=opts) as index:
                if not images:  # the alternative measured: images kept out of the points
                    index.images.page_fields = lambda doc_id, page_no: {"image": ""}
                before = len(mock.requests)
                index.add(pdfs, progress=False)
                added = mock.requests[before:]
                before = len(mock.requests)
                index.search("river bridge lantern", k=10)
                searched = mock.requests[before:]
            per = 1000 / n_pages
            kinds = Counter(t.rsplit("/", 1)[-1] if "points" in t else t.rsplit("/", 1)[-1] for _, t, _, _ in added)
            print(f"| add, images {'in payload' if images else 'left out'} | {len(added) * per:.0f} | "
                  f"{sum(b for *_, b in added) * per / 1e6:.1f} MB | {dict(kinds)} |")
            if images:
                print(f"| search (k=10) | {len(searched)} | {sum(b for *_, b in searched) / 1e3:.1f} kB | "
                      f"{dict(Counter(t.rsplit('/', 1)[-1] for _, t, _, _ in searched))} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--doc-pages", type=int, default=10)
    ap.add_argument("--skip-agreement", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}; CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if not args.skip_agreement:
        print(f"\n{args.pages} pages x {args.tokens} tokens x 128-d, batches of {args.batch}\n")
        agreement(args)
    print(f"\nHTTP requests of the server engine ({args.docs} PDFs x {args.doc_pages} pages, mock transport)\n")
    print("| operation | requests (per 1,000 pages for add) | request bytes | by route |")
    print("|---|---|---|---|")
    http_costs(args)


if __name__ == "__main__":
    main()
