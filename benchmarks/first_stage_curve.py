"""Where the first stage loses recall at 100k-1M pages, and what it costs to win it back
(issue 13, session 6): brute-force MUVERA recall (an ideal graph), the centroid cascade, and
HNSW graph parameters, on the synthetic pages of bench_first_stage.py.

    .venv/bin/python benchmarks/first_stage_curve.py make --pages 100000 --workers 2
    .venv/bin/python benchmarks/first_stage_curve.py ideal --pages 100000
    .venv/bin/python benchmarks/first_stage_curve.py graph --pages 100000 --m 16 --ef-construct 100

``make`` writes, per collection page (``bench_search.page_vectors`` over the 400 real dev-set
pages pooled by 3, as bench_first_stage.py makes them), chunk by chunk in worker processes:
its MUVERA encoding (float16, memory-mapped ``fde.npy``), and for each IDF-weighted dev-set
query its exact float32 MaxSim score and its MaxSim over the page's 32 centroids
(``pooling.pool_vectors``, what the index stores as ``pooled``). ``ideal`` ranks by numpy dot
products over the encodings (no graph) and replays the cascades on those scores: encodings ->
C -> centroids -> c -> exact. ``graph`` writes the encodings into a Qdrant Edge shard with the
given HNSW parameters, optimizes it (timed) and measures, for each search-time ``hnsw_ef``,
the graph's candidates against the ideal ones and the cascade recall@10 on top.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, machine  # noqa: E402

ROOT = DATA / "fs-curve"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load(n: int) -> tuple[Path, dict]:
    d = ROOT / f"n{n}"
    return d, json.loads((d / "meta.json").read_text())


def _work(args: tuple) -> int:
    d, n, lo, hi = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from threadpoolctl import threadpool_limits

    from bench_first_stage import FACTOR  # noqa: F401 (same pooled base pages)
    from bench_search import page_vectors, real_order
    from agree_core.index.first_stage import muvera_of
    from agree_core.pooling import pool_vectors

    z = np.load(d / "base.npz")
    off, v = z["offsets"], z["vectors"]
    real = [v[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    q = np.load(d / "queries.npz")
    qv, qoff = q["vectors"], q["offsets"][:-1]
    muv = muvera_of(real[0].shape[1], json.loads((d / "settings.json").read_text()))
    order = real_order(len(real))
    fde = np.load(d / "fde.npy", mmap_mode="r+")
    exact = np.load(d / "exact.npy", mmap_mode="r+")
    cent = np.load(d / "centroids.npy", mmap_mode="r+")
    with threadpool_limits(1):
        for a in range(lo, hi, 256):
            b = min(a + 256, hi)
            pages = [page_vectors(real, order, i)[0] for i in range(a, b)]
            o = np.cumsum([0] + [len(p) for p in pages])
            m = np.maximum.reduceat(np.concatenate(pages) @ qv.T, o[:-1], axis=0)
            exact[:, a:b] = np.add.reduceat(m, qoff, axis=1).T
            # the stored centroids, as schema.build_point makes them: a fused page's windows kept whole
            cs = [pool_vectors(p, 32, keep=torch.from_numpy(p[:, -1] < -0.5) if muv.fused else None).numpy()
                  for p in pages]
            oc = np.cumsum([0] + [len(c) for c in cs])
            m = np.maximum.reduceat(np.concatenate(cs) @ qv.T, oc[:-1], axis=0)
            cent[:, a:b] = np.add.reduceat(m, qoff, axis=1).T
            fde[a:b] = np.stack([muv.encode_document(p) for p in pages]).astype(np.float16)
    fde.flush(), exact.flush(), cent.flush()
    return hi - lo


def make(n: int, workers: int, n_queries: int) -> None:
    from multiprocessing import get_context

    import bench_first_stage as bfs
    from agree_core.encoders import load_encoder
    from agree_core.index.first_stage import muvera_of, new_settings

    d = ROOT / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    enc = load_encoder("text-layer")
    real, _, df = bfs.base_pages(enc)
    qs, encode_ms = bfs.queries(enc, df, len(real), n_queries)
    np.savez(d / "base.npz", offsets=np.cumsum([0] + [len(p) for p in real]), vectors=np.concatenate(real))
    np.savez(d / "queries.npz", offsets=np.cumsum([0] + [len(x) for x in qs]), vectors=np.concatenate(qs))
    settings = new_settings(enc.config)
    (d / "settings.json").write_text(json.dumps(settings))
    size = muvera_of(real[0].shape[1], settings).size
    np.lib.format.open_memmap(d / "fde.npy", "w+", np.float16, (n, size)).flush()
    for name in ("exact", "centroids"):
        np.lib.format.open_memmap(d / f"{name}.npy", "w+", np.float32, (len(qs), n)).flush()
    t = time.perf_counter()
    step = 4096
    jobs = [(d, n, lo, min(lo + step, n)) for lo in range(0, n, step)]
    done = 0
    with get_context("spawn").Pool(workers) as pool:
        for k in pool.imap_unordered(_work, jobs):
            done += k
            log(f"  {done:,}/{n:,} pages, {time.perf_counter() - t:.0f} s")
    meta = {"pages": n, "queries": len(qs), "dim": int(real[0].shape[1]), "fde_dims": size,
            "vectors_per_page": float(np.mean([len(p) for p in real])), "make_s": round(time.perf_counter() - t, 1),
            "query_tokens": float(np.mean([len(x) for x in qs])), "encode_ms": encode_ms, "machine": machine()}
    (d / "meta.json").write_text(json.dumps(meta))
    log(json.dumps(meta))


def cascade(order: np.ndarray, cent: np.ndarray, exact: np.ndarray, c: int | None) -> float:
    """recall@10 of exact MaxSim over ``c`` pages picked by centroid MaxSim out of the
    candidates ``order`` (all of them when ``c`` is None), against exact over every page."""
    ref = np.argsort(-exact, axis=1)[:, :10]
    out = []
    for i, cand in enumerate(order):
        if c is not None and c < len(cand):
            cand = cand[np.argsort(-cent[i, cand], kind="stable")[:c]]
        top = cand[np.argsort(-exact[i, cand], kind="stable")[:10]]
        out.append(len(set(top.tolist()) & set(ref[i].tolist())) / 10)
    return float(np.mean(out))


def ideal(n: int, cs: list[int], rescore: list[int]) -> None:
    d, meta = load(n)
    fde = np.load(d / "fde.npy", mmap_mode="r")
    exact, cent = np.load(d / "exact.npy"), np.load(d / "centroids.npy")
    qz = np.load(d / "queries.npz")
    from agree_core.index.first_stage import muvera_of

    muv = muvera_of(meta["dim"], json.loads((d / "settings.json").read_text()))
    qv, qo = qz["vectors"], qz["offsets"]
    qf = np.stack([muv.encode_query(qv[qo[i]:qo[i + 1]]) for i in range(len(qo) - 1)]).astype(np.float32)
    scores = np.zeros((len(qf), n), np.float32)
    for a in range(0, n, 16384):
        scores[:, a:a + 16384] = qf @ np.asarray(fde[a:a + 16384], np.float32).T
    np.save(d / "fde_scores.npy", scores)
    rank = np.argsort(-scores, axis=1)
    print(f"## {n:,} pages, ideal graph (numpy dot over the float16 encodings), {len(qf)} queries\n")
    print(f"{machine()}; load {os.getloadavg()[0]:.1f}\n")
    print("| candidates C | recall@10, exact over C | " + " | ".join(f"-> {c} by centroids -> exact" for c in rescore) + " |")
    print("|---|---|" + "---|" * len(rescore))
    for c in cs:
        row = [cascade(rank[:, :c], cent, exact, None)] + [cascade(rank[:, :c], cent, exact, r) if r < c else float("nan") for r in rescore]
        print(f"| {c} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
    cr = np.argsort(-cent, axis=1)
    print("\ncentroid scan (every page's 32 centroids) -> c -> exact: " +
          ", ".join(f"c={c}: {cascade(cr[:, :c], cent, exact, None):.3f}" for c in rescore), flush=True)


def graph(n: int, m: int, ef_construct: int, efs: list[int], cs: list[int], rescore: list[int],
          keep: bool) -> None:
    from agree_core.index.engines.base import Point, VectorSpec
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.first_stage import FDE, muvera_of

    d, meta = load(n)
    fde = np.load(d / "fde.npy", mmap_mode="r")
    exact, cent = np.load(d / "exact.npy"), np.load(d / "centroids.npy")
    ideal_rank = np.argsort(-np.load(d / "fde_scores.npy"), axis=1)
    spec = VectorSpec(FDE, meta["fde_dims"], "float16", index=True, on_disk=False, multivector=False,
                      m=m, ef_construct=ef_construct)
    sd = d / f"shard-m{m}-ef{ef_construct}"
    info_path = sd.with_suffix(".json")
    if not info_path.exists():
        shutil.rmtree(sd, ignore_errors=True)
        engine = EdgeEngine(sd, [spec])
        t = time.perf_counter()
        for a in range(0, n, 512):
            block = np.asarray(fde[a:a + 512], np.float32)
            engine.upsert([Point(str(uuid.UUID(int=a + j + 1)), {FDE: v}, {}) for j, v in enumerate(block)])
        engine.flush()
        t_write = time.perf_counter() - t
        log(f"  written in {t_write:.0f} s, optimizing (m={m}, ef_construct={ef_construct}) ...")
        t = time.perf_counter()
        engine.optimize()
        info = {"write_s": round(t_write, 1), "optimize_s": round(time.perf_counter() - t, 1),
                "load_after": os.getloadavg()[0]}
        engine.close()
        from bench_search import dir_bytes
        info["disk_bytes"] = dir_bytes(sd)
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text())
    engine = EdgeEngine(sd, [spec])
    muv = muvera_of(meta["dim"], json.loads((d / "settings.json").read_text()))
    qz = np.load(d / "queries.npz")
    qv, qo = qz["vectors"], qz["offsets"]
    qf = [muv.encode_query(qv[qo[i]:qo[i + 1]]) for i in range(len(qo) - 1)]
    print(f"## {n:,} pages, Edge HNSW m={m} ef_construct={ef_construct}: write {info['write_s']:.0f} s, "
          f"optimize {info['optimize_s']:.0f} s, {info['disk_bytes'] / 1e9:.2f} GB "
          f"(load at the end of the build {info['load_after']:.1f})\n")
    print(f"{machine()}; load {os.getloadavg()[0]:.1f} before the searches\n")
    print("| C | hnsw_ef | p50 ms | p90 ms | graph's C vs ideal C | recall@10, exact over C | "
          + " | ".join(f"-> {c} by centroids -> exact" for c in rescore) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(rescore))
    for c in cs:
        for ef in efs:
            if ef < c:
                continue
            engine.search(qf[0], c, using=FDE, hnsw_ef=ef)
            found, ms = [], []
            for q in qf:
                t = time.perf_counter()
                hits = engine.search(q, c, using=FDE, hnsw_ef=ef)
                ms.append((time.perf_counter() - t) * 1000)
                found.append(np.array([uuid.UUID(h.id).int - 1 for h in hits]))
            overlap = np.mean([len(set(f.tolist()) & set(ideal_rank[i, :c].tolist())) / c for i, f in enumerate(found)])
            row = [cascade(found, cent, exact, None)] + [cascade(found, cent, exact, r) if r < c else float("nan") for r in rescore]
            print(f"| {c} | {ef} | {statistics.median(ms):.0f} | {np.percentile(ms, 90):.0f} | {overlap:.3f} | "
                  + " | ".join(f"{x:.3f}" for x in row) + " |", flush=True)
    engine.close()
    if not keep:
        shutil.rmtree(sd, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["make", "ideal", "graph"])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--candidates", default="400,800,1600,3200,6400")
    ap.add_argument("--rescore", default="100,200,400,800")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construct", type=int, default=100)
    ap.add_argument("--hnsw-ef", default="800,1600,3200,6400")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    cs, rs = [int(x) for x in a.candidates.split(",")], [int(x) for x in a.rescore.split(",")]
    if a.what == "make":
        make(a.pages, a.workers, a.queries)
    elif a.what == "ideal":
        ideal(a.pages, cs, rs)
    else:
        graph(a.pages, a.m, a.ef_construct, [int(x) for x in a.hnsw_ef.split(",")], cs, rs, a.keep)


if __name__ == "__main__":
    main()
