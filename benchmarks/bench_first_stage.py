"""The first stage of large searches: MUVERA encodings in an HNSW graph against the pooled
centroids scan, at 10k / 100k pages (issue 13, item 3).

    .venv/bin/python benchmarks/bench_first_stage.py --sizes 10000 --queries 40
    .venv/bin/python benchmarks/bench_first_stage.py --sizes 100000 --first-stage-only --queries 30

Pages: the 400 real dev-set pages of bench_storage.py (its cached encoding), pooled by 3
(``pool_tokens``, the recommended storage), and synthetic pages made from them as
bench_search.py makes them (``page_vectors``: a real page with 20-50 % of its vectors swapped
for another's, plus noise), generated chunk by chunk from a seed. Queries: dev-set questions
encoded by the default encoder and IDF-weighted with ``scoring.idf_weights`` over the real
pages' terms (what ``PageIndex.encode_queries`` does; synthetic pages inherit their base
pages' terms, so the weights are the collection's in expectation); query encoding is timed
apart. Reference: exact MaxSim in float32 numpy over every page, chunk-wise.

A full size is a real index folder (``PageIndex.open`` with ``pool_factor=3``,
``vector_datatype="turbo4"`` and the default first stage; points written through
``EdgeEngine.upsert`` with the product's vectors: tokens, 32 centroids, the MUVERA encoding
from ``first_stage.muvera_of``), optimized once (the HNSW graph), then searched through
``PageIndex.search_vectors`` (the one query path behind ``search_batch``): the MUVERA first
stage with C candidates, the pooled-centroid first stage with C candidates, and exact MaxSim.
``--first-stage-only`` stores the encodings alone and times the HNSW search for C candidates;
its recall@10 is the share of the exact top 10 among the candidates, which is what exact
rescoring of those candidates returns (up to the turbo4 storage).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import _mapped, _status, dir_bytes, page_vectors, real_order  # noqa: E402
from common import DATA, load_questions, machine  # noqa: E402

SHARDS = DATA / "first-stage-shards"
CACHE = DATA / "cache"
FACTOR = 3
GB = 1e9


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def base_pages(enc) -> tuple[list[np.ndarray], list[np.ndarray], dict[int, int]]:
    """The real pages pooled by 3 (cached), their terms, and the terms' page counts."""
    import torch

    import bench_storage
    from agree_core.pooling import pool_tokens

    embs, _ = bench_storage.corpus(enc, 400)
    path = CACHE / f"first_stage_pooled{FACTOR}_n{len(embs)}_d{embs[0].vectors.shape[1]}.npz"
    if path.exists():
        z = np.load(path)
        off, v = z["offsets"], z["vectors"]
        pooled = [v[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    else:
        torch.set_num_threads(1)
        from agree_core.encoders.text_layer import sentence_rows

        fused = float(enc.config.get("sentence_weight") or 0) > 0  # its windows are never pooled
        pooled = [pool_tokens(e.vectors.float(), FACTOR, sentence_rows(e.vectors) if fused else None)[0].numpy()
                  if len(e.vectors) > FACTOR else e.vectors.float().numpy() for e in embs]
        np.savez(path, offsets=np.cumsum([0] + [len(p) for p in pooled]), vectors=np.concatenate(pooled))
    terms = [e.terms.numpy() if e.terms is not None else np.zeros(0, np.int64) for e in embs]
    df: dict[int, int] = {}
    for t in terms:
        for x in set(t.tolist()):
            df[x] = df.get(x, 0) + 1
    return pooled, terms, df


def queries(enc, df: dict[int, int], n_pages: int, n: int) -> tuple[list[np.ndarray], float]:
    import torch

    from agree_core.scoring import idf_weights

    qs = load_questions()
    qs = qs[::max(1, len(qs) // n)][:n]
    texts = [q["query"] for q in qs]
    enc.encode_queries(["warm up"])  # loads the model
    t = time.perf_counter()
    vecs = [enc.encode_queries([x])[0] for x in texts]
    encode_ms = (time.perf_counter() - t) / len(texts) * 1000
    # as PageIndex.encode_queries: rows past the terms (the fused sentence vector) keep their scale
    out = [torch.cat([v[:len(tt)] * idf_weights(tt, df, n_pages)[:, None], v[len(tt):]]).float().numpy()
           for v, tt in zip(vecs, enc.encode_query_terms(texts))]
    return out, encode_ms


def build(d: Path, n: int, real: list[np.ndarray], qs: list[np.ndarray], first_stage_only: bool, enc) -> dict:
    """Write ``n`` pages (chunk by chunk) and return the build record with the exact scores."""
    import torch

    from agree_core.index import PageIndex
    from agree_core.index.engines.base import Point
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.first_stage import DEFAULT_MUVERA, FDE, muvera_of
    from agree_core.index.schema import POOLED, TOKENS, fde_spec
    from agree_core.pooling import pool_vectors

    torch.set_num_threads(1)
    shutil.rmtree(d, ignore_errors=True)
    settings = {"kind": "muvera", **DEFAULT_MUVERA}
    muv = muvera_of(384, settings)
    if first_stage_only:
        d.mkdir(parents=True)
        engine, index = EdgeEngine(d / "shard", [fde_spec(384, settings)]), None
    else:
        index = PageIndex.open(d, enc, pool_factor=FACTOR, vector_datatype="turbo4")
        engine = index.engine
    order = real_order(len(real))
    q = np.concatenate(qs)
    qoff = np.cumsum([0] + [len(x) for x in qs])[:-1]
    exact = np.zeros((len(qs), n), np.float32)
    t0 = time.perf_counter()
    t_write, t_fde = 0.0, 0.0
    for lo in range(0, n, 256):
        pages = [page_vectors(real, order, i)[0] for i in range(lo, min(lo + 256, n))]
        o = np.cumsum([0] + [len(p) for p in pages])
        m = np.maximum.reduceat(np.concatenate(pages) @ q.T, o[:-1], axis=0)
        exact[:, lo:lo + len(pages)] = np.add.reduceat(m, qoff, axis=1).T
        t = time.perf_counter()
        fdes = [muv.encode_document(p) for p in pages]
        t_fde += time.perf_counter() - t
        points = []
        for j, (p, f) in enumerate(zip(pages, fdes)):
            vec = {FDE: f} if first_stage_only else {
                TOKENS: p, POOLED: pool_vectors(torch.from_numpy(p), 32).numpy(), FDE: f}
            points.append(Point(str(uuid.UUID(int=lo + j + 1)), vec,
                                {"doc_id": f"d{(lo + j) // 500}", "source": f"s{(lo + j) // 500}.pdf",
                                 "page": (lo + j) % 500 + 1, "nvec": len(p) + 32}))
        t = time.perf_counter()
        for k in range(0, len(points), 64):
            engine.upsert(points[k:k + 64])
        if (lo // 256) % 4 == 3:
            engine.flush()
        t_write += time.perf_counter() - t
        if lo % 10240 == 0:
            log(f"  {lo + len(pages):,}/{n:,} pages, {time.perf_counter() - t0:.0f} s")
    engine.flush()
    t = time.perf_counter()
    engine.optimize()
    t_opt = time.perf_counter() - t
    info = {"pages": n, "build_s": round(time.perf_counter() - t0, 1), "write_s": round(t_write, 1),
            "fde_s": round(t_fde, 1), "optimize_s": round(t_opt, 1),
            "vectors_per_page": float(np.mean([len(page_vectors(real, order, i)[0]) for i in range(0, n, max(1, n // 500))]))}
    (index.close() if index is not None else engine.close())
    info["disk_bytes"] = dir_bytes(d)
    np.save(d / "exact.npy", exact)
    (d / "build.json").write_text(json.dumps(info))
    return info


def timed(fn, reps: list) -> tuple[list, list[float]]:
    out, ms = [], []
    for r in reps:
        t = time.perf_counter()
        out.append(fn(r))
        ms.append((time.perf_counter() - t) * 1000)
    return out, ms


def recall(found: list[list[str]], exact: np.ndarray) -> float:
    ref = np.argsort(-exact, axis=1)[:, :10]
    return float(np.mean([len({str(uuid.UUID(int=int(j) + 1)) for j in ref[i]} & set(found[i])) / 10
                          for i in range(len(found))]))


def search(d: Path, qs: list[np.ndarray], candidates: list[int], first_stage_only: bool, enc,
           exact_budget: float) -> list[dict]:
    from agree_core.index import PageIndex
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.first_stage import DEFAULT_MUVERA, FDE, HNSW_EF, muvera_of
    from agree_core.index.schema import fde_spec

    exact = np.load(d / "exact.npy")
    mem0 = _status()
    rows = []
    settings = {"kind": "muvera", **DEFAULT_MUVERA}
    muv = muvera_of(384, settings)
    if first_stage_only:
        engine = EdgeEngine(d / "shard", [fde_spec(384, settings)])
        for c in candidates:
            def run(q, c=c):
                return engine.search(muv.encode_query(q), c, using=FDE, hnsw_ef=max(HNSW_EF, c))
            run(qs[0])
            found, ms = timed(run, qs)
            rows.append({"search": f"MUVERA HNSW, {c} candidates (first stage only)", "ms": ms,
                         "recall": recall([[h.id for h in f] for f in found], exact)})
        mem = _status()
        files = _mapped(str(d))
        engine.close()
    else:
        import agree_core.index.first_stage as first_stage_module

        first_stage_module.FIRST_STAGE_MIN_PAGES = 0  # every size searches through the encodings here
        index = PageIndex.open(d, enc)
        where = index.scope(None, pdf_pages_only=True)
        plans = [(f"MUVERA HNSW -> {c} -> exact", dict(candidates=c), True) for c in candidates]
        plans += [(f"pooled 32 centroids -> {c} -> exact", dict(candidates=c), False) for c in candidates[:2]]
        for name, kw, fs in plans:
            saved = index.config.first_stage
            if not fs:
                index.config.first_stage = {}  # the old path: scan every pooled centroid
            run = lambda q: index.search_vectors([q], 10, where, **kw)[0]  # noqa: E731
            run(qs[0])
            found, ms = timed(run, qs)
            index.config.first_stage = saved
            rows.append({"search": name, "ms": ms, "recall": recall([[h.id for h in f] for f in found], exact)})
        n_exact = 0
        found, ms = [], []
        for q in qs:  # exact MaxSim over every page's stored (turbo4) vectors, within a budget
            t = time.perf_counter()
            found.append(index.search_vectors([q], 10, where, candidates=0)[0])
            ms.append((time.perf_counter() - t) * 1000)
            n_exact += 1
            if sum(ms) > exact_budget * 1000:
                break
        rows.append({"search": "exact MaxSim (turbo4 stored vectors)", "ms": ms,
                     "recall": recall([[h.id for h in f] for f in found], exact[:n_exact])})
        mem = _status()
        files = _mapped(str(d))
        index.close()
    for r in rows:
        r.update(p50=statistics.median(r["ms"]), p90=float(np.percentile(r["ms"], 90)), n=len(r["ms"]))
    return rows, {"heap_mb": (mem["RssAnon"] - mem0["RssAnon"]) / 2**20, "files_mb": files / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--candidates", default="400,800,1600")
    ap.add_argument("--first-stage-only", action="store_true")
    ap.add_argument("--exact-budget", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="keep the shards (else deleted after)")
    args = ap.parse_args()
    from agree_core.encoders import load_encoder

    print(f"# First-stage benchmark\n\n{machine()}\n")
    enc = load_encoder("text-layer")
    real, _, df = base_pages(enc)
    qs, encode_ms = queries(enc, df, len(real), args.queries)
    print(f"{len(real)} real pages pooled by {FACTOR}: {np.mean([len(p) for p in real]):.0f} vectors/page; "
          f"{len(qs)} queries, {np.mean([len(q) for q in qs]):.1f} weighted tokens, encoding "
          f"{encode_ms:.0f} ms/query (model loaded)\n")
    for n in (int(s) for s in args.sizes.split(",") if s):
        d = SHARDS / f"n{n}-{'fde' if args.first_stage_only else 'full'}"
        if (d / "build.json").exists():
            b = json.loads((d / "build.json").read_text())
        else:
            log(f"building {d.name} ...")
            b = build(d, n, real, qs, args.first_stage_only, enc)
        log(f"built: {json.dumps(b)}")
        rows, mem = search(d, qs, [int(c) for c in args.candidates.split(",")], args.first_stage_only,
                           enc, args.exact_budget)
        print(f"## {n:,} pages{' (encodings only)' if args.first_stage_only else ''}\n")
        print(f"build {b['build_s'] / 60:.1f} min (encodings {b['fde_s']:.0f} s, writes {b['write_s']:.0f} s, "
              f"optimize/HNSW {b['optimize_s']:.0f} s), {b['disk_bytes'] / GB:.2f} GB on disk = "
              f"{b['disk_bytes'] / n / 1e3:.1f} KB/page; search process: +{mem['heap_mb']:.0f} MB heap, "
              f"{mem['files_mb']:.0f} MB of index files resident\n")
        print("| search | p50 ms | p90 ms | queries | recall@10 vs exact float32 |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['search']} | {r['p50']:.0f} | {r['p90']:.0f} | {r['n']} | {r['recall']:.3f} |")
        print(flush=True)
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
