"""Where the first stage loses recall at 100k-1M pages, and what it costs to win it back
(issue 13, sessions 6-7): brute-force MUVERA recall (an ideal graph), the centroid cascade, HNSW
graphs and quantized scans of the encodings, and the whole search through a real index.

    .venv/bin/python benchmarks/first_stage_curve.py make --pages 100000 --workers 2
    .venv/bin/python benchmarks/first_stage_curve.py ideal --pages 100000
    .venv/bin/python benchmarks/first_stage_curve.py graph --pages 100000 --m 16 --ef-construct 100
    .venv/bin/python benchmarks/first_stage_curve.py graph --pages 100000 --m 0 --quantization binary
    .venv/bin/python benchmarks/first_stage_curve.py full --pages 100000 --plans 2800:300,0:400 --keep
    .venv/bin/python benchmarks/first_stage_curve.py full --pages 100000 --plans 2800:300 --stages --text-queries 10 --keep
    .venv/bin/python benchmarks/first_stage_curve.py full --pages 100000 --plans 2800:300,3200:400 --rounds 3 --keep
    .venv/bin/python benchmarks/first_stage_curve.py make --pages 1000000 --fde-only   # then ideal, graph

``make`` writes, per collection page (``bench_search.page_vectors`` over the 400 real dev-set
pages pooled by 3, as bench_first_stage.py makes them), chunk by chunk in worker processes:
its MUVERA encoding (float16, memory-mapped ``fde.npy``; ``Muvera.encode_documents``, 256 pages
at a time), and for each IDF-weighted dev-set query its exact float32 MaxSim score and its
MaxSim over the page's 32 centroids (``pooling.pool_vectors``, what the index stores as
``pooled``); ``--fde-only`` the encodings alone (1M pages: the full vectors' scores are not
needed for the first stage's own recall). ``ideal`` ranks by numpy dot products over the
encodings (no graph) and replays the cascades on those scores: encodings -> C -> centroids ->
c -> exact. ``graph`` writes the encodings into a Qdrant Edge shard with the given HNSW
parameters (``--m 0``: none, every page scanned) and quantized copy (``--quantization``,
searched with ``--oversampling``), optimizes it (timed) and measures, for each search-time
``hnsw_ef``, the candidates against the ideal ones and the cascade recall@10 on top. ``full``
builds a real index folder of the pages (the product's point vectors, the encodings of
``make``; kept for later runs with ``--keep``) and times ``PageIndex.search_vectors`` for each
``--plans`` cascade; ``--stages`` times each stage of the engine query alone (where a search's
time goes), ``--profile`` runs cProfile over the first plan's searches, ``--text-queries N``
registers the synthetic documents in the catalog (IDF statistics, as the product's writes do)
and runs N dev-set questions through ``PageIndex.search_batch``, query encoding timed apart,
against exact MaxSim of the vectors the index weighted; ``--rounds R`` then times the scan plans
interleaved query by query (R rounds), with recall against the index's own exact search too.

Large files go under ``$AGREE_BENCH_DATA`` (default ``benchmarks/data``)."""

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
    d, n, lo, hi, fde_only = args
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
    if not fde_only:
        exact = np.load(d / "exact.npy", mmap_mode="r+")
        cent = np.load(d / "centroids.npy", mmap_mode="r+")
    with threadpool_limits(1):
        for a in range(lo, hi, 256):
            b = min(a + 256, hi)
            pages = [page_vectors(real, order, i)[0] for i in range(a, b)]
            fde[a:b] = muv.encode_documents(pages).astype(np.float16)
            if fde_only:
                continue
            o = np.cumsum([0] + [len(p) for p in pages])
            m = np.maximum.reduceat(np.concatenate(pages) @ qv.T, o[:-1], axis=0)
            exact[:, a:b] = np.add.reduceat(m, qoff, axis=1).T
            # the stored centroids, as schema.build_point makes them: a fused page's windows kept whole
            cs = [pool_vectors(p, 32, keep=torch.from_numpy(p[:, -1] < -0.5) if muv.fused else None).numpy()
                  for p in pages]
            oc = np.cumsum([0] + [len(c) for c in cs])
            m = np.maximum.reduceat(np.concatenate(cs) @ qv.T, oc[:-1], axis=0)
            cent[:, a:b] = np.add.reduceat(m, qoff, axis=1).T
    fde.flush()
    if not fde_only:
        exact.flush(), cent.flush()
    return hi - lo


def make(n: int, workers: int, n_queries: int, fde_only: bool = False) -> None:
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
    for name in () if fde_only else ("exact", "centroids"):
        np.lib.format.open_memmap(d / f"{name}.npy", "w+", np.float32, (len(qs), n)).flush()
    t = time.perf_counter()
    step = 4096
    jobs = [(d, n, lo, min(lo + step, n), fde_only) for lo in range(0, n, step)]
    done = 0
    with get_context("spawn").Pool(workers) as pool:
        for k in pool.imap_unordered(_work, jobs):
            done += k
            log(f"  {done:,}/{n:,} pages, {time.perf_counter() - t:.0f} s")
    meta = {"pages": n, "queries": len(qs), "dim": int(real[0].shape[1]), "fde_dims": size,
            "vectors_per_page": float(np.mean([len(p) for p in real])), "make_s": round(time.perf_counter() - t, 1),
            "query_tokens": float(np.mean([len(x) for x in qs])), "encode_ms": encode_ms, "machine": machine(),
            "fde_only": fde_only, "load_after": os.getloadavg()[0]}
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
    qz = np.load(d / "queries.npz")
    from agree_core.index.first_stage import muvera_of

    muv = muvera_of(meta["dim"], json.loads((d / "settings.json").read_text()))
    qv, qo = qz["vectors"], qz["offsets"]
    qf = np.stack([muv.encode_query(qv[qo[i]:qo[i + 1]]) for i in range(len(qo) - 1)]).astype(np.float32)
    scores = np.zeros((len(qf), n), np.float32)
    for a in range(0, n, 16384):
        scores[:, a:a + 16384] = qf @ np.asarray(fde[a:a + 16384], np.float32).T
    np.save(d / "fde_scores.npy", scores)
    if not (d / "exact.npy").exists():  # --fde-only: the encodings' own top C is the reference
        log(f"{d / 'fde_scores.npy'} written (no exact scores for the cascade)")
        return
    exact, cent = np.load(d / "exact.npy"), np.load(d / "centroids.npy")
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
          keep: bool, quantization: str = "", oversampling: list[float] | None = None,
          optimize_every: int = 0, datatype: str = "float16") -> None:
    """The encodings in an Edge shard, stored as ``datatype``: an HNSW graph (``m`` > 0) or,
    with ``m`` 0, a scan of every page, of the quantized copy when ``quantization`` is given
    (each ``oversampling`` times the candidates kept by it, then rescored by the stored encodings)."""
    from bench_search import _mapped, _status
    from agree_core.index.engines.base import Point, VectorSpec
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.first_stage import FDE, muvera_of

    d, meta = load(n)
    fde = np.load(d / "fde.npy", mmap_mode="r")
    scored = (d / "exact.npy").exists()  # else (1M pages) only the encodings' own top C is known
    exact, cent = (np.load(d / "exact.npy"), np.load(d / "centroids.npy")) if scored else (None, None)
    ideal_rank = np.argsort(-np.load(d / "fde_scores.npy"), axis=1)[:, :max(cs)]
    # as schema.fde_spec: with a quantized copy (in RAM, what a scan reads) the encodings stay on disk
    spec = VectorSpec(FDE, meta["fde_dims"], datatype, index=m > 0, on_disk=bool(quantization), multivector=False,
                      m=m, ef_construct=ef_construct, quantization=quantization)
    sd = d / (f"shard-m{m}-ef{ef_construct}{'-' + quantization if quantization else ''}"
              f"{'-' + datatype if datatype != 'float16' else ''}")
    info_path = sd.with_suffix(".json")
    if not info_path.exists():
        shutil.rmtree(sd, ignore_errors=True)
        engine = EdgeEngine(sd, [spec])
        t, cpu = time.perf_counter(), time.process_time()
        for a in range(0, n, 512):
            block = np.asarray(fde[a:a + 512], np.float32)
            engine.upsert([Point(str(uuid.UUID(int=a + j + 1)), {FDE: v}, {}) for j, v in enumerate(block)])
            if (a // 512) % 16 == 15:
                engine.flush()  # the write-ahead log holds what is not flushed
                if optimize_every and (a + 512) % optimize_every == 0 and a + 512 < n:
                    engine.optimize()
                    log(f"  optimized at {a + 512:,} points, {time.perf_counter() - t:.0f} s")
        engine.flush()
        t_write, cpu_write = time.perf_counter() - t, time.process_time() - cpu
        log(f"  written in {t_write:.0f} s, optimizing (m={m}, ef_construct={ef_construct}, "
            f"quantization={quantization or 'none'}) ...")
        t, cpu = time.perf_counter(), time.process_time()
        engine.optimize()
        info = {"write_s": round(t_write, 1), "write_cpu_s": round(cpu_write, 1),
                "optimize_s": round(time.perf_counter() - t, 1), "optimize_cpu_s": round(time.process_time() - cpu, 1),
                "load_after": os.getloadavg()[0]}
        engine.close()
        from bench_search import dir_bytes
        info["disk_bytes"] = dir_bytes(sd)
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text())
    mem0 = _status()
    engine = EdgeEngine(sd, [spec])
    muv = muvera_of(meta["dim"], json.loads((d / "settings.json").read_text()))
    qz = np.load(d / "queries.npz")
    qv, qo = qz["vectors"], qz["offsets"]
    qf = [muv.encode_query(qv[qo[i]:qo[i + 1]]) for i in range(len(qo) - 1)]
    kind = (f"HNSW m={m} ef_construct={ef_construct}" if m else "scan (no graph)") + \
        (f" over {quantization} quantization" if quantization else "") + f", encodings stored {datatype}"
    print(f"## {n:,} pages, Edge {kind}: write {info['write_s']:.0f} s, optimize {info['optimize_s']:.0f} s "
          f"({info['optimize_cpu_s']:.0f} CPU s), {info['disk_bytes'] / 1e9:.2f} GB "
          f"(load at the end of the build {info['load_after']:.1f})\n")
    print(f"{machine()}; load {os.getloadavg()[0]:.1f} before the searches\n")
    cols = ["C", "hnsw_ef", "oversampling", "p50 ms", "p90 ms", "CPU ms p50", "C vs ideal C"]
    if scored:
        cols += ["recall@10, exact over C"] + [f"-> {c} by centroids -> exact" for c in rescore]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for c in cs:
        for ef in efs if m else [0]:
            if m and ef < c:
                continue
            for o in oversampling or [None]:
                kw = dict(hnsw_ef=ef or None, oversampling=o if quantization else None)
                engine.search(qf[0], c, using=FDE, **kw)
                found, ms, cpu = [], [], []
                for q in qf:
                    t, t_cpu = time.perf_counter(), time.process_time()
                    hits = engine.search(q, c, using=FDE, **kw)
                    ms.append((time.perf_counter() - t) * 1000)
                    cpu.append((time.process_time() - t_cpu) * 1000)
                    found.append(np.array([uuid.UUID(h.id).int - 1 for h in hits]))
                overlap = np.mean([len(set(f.tolist()) & set(ideal_rank[i, :c].tolist())) / c
                                   for i, f in enumerate(found)])
                row = [f"{c}", f"{ef or '-'}", f"{o if quantization and o else '-'}",
                       f"{statistics.median(ms):.0f}", f"{np.percentile(ms, 90):.0f}",
                       f"{statistics.median(cpu):.0f}", f"{overlap:.3f}"]
                if scored:
                    row += [f"{x:.3f}" for x in [cascade(found, cent, exact, None)] +
                            [cascade(found, cent, exact, r) if r < c else float("nan") for r in rescore]]
                print("| " + " | ".join(row) + " |", flush=True)
    mem = _status()
    print(f"\nsearch process: +{(mem['RssAnon'] - mem0['RssAnon']) / 2**20:.0f} MB heap, "
          f"{_mapped(str(sd)) / 2**20:.0f} MB of shard files resident; load {os.getloadavg()[0]:.1f}\n", flush=True)
    engine.close()
    if not keep:
        shutil.rmtree(sd, ignore_errors=True)
        info_path.unlink()


def grow(n: int, base_n: int) -> None:
    """``n`` pages' encodings without making ``n`` pages (1M: 40 CPU minutes here): the
    ``base_n`` encodings ``make`` wrote from synthetic pages, then, for page i past them, a mix
    of two of those, ``(1 - w) fde[a] + w fde[b]`` with ``w`` uniform in 0.2-0.5 (as
    ``page_vectors`` swaps 20-50 % of a page's vectors for another page's; the bucket means of
    such a page are close to that mix) plus Gaussian noise of 2 % of the encodings' RMS, seeded
    per block. Only the encodings' own top C can be the reference (``--fde-only``)."""
    src, meta = load(base_n)
    d = ROOT / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("base.npz", "queries.npz", "settings.json"):
        shutil.copy(src / name, d / name)
    base = np.load(src / "fde.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(d / "fde.npy", "w+", np.float16, (n, base.shape[1]))
    t = time.perf_counter()
    out[:base_n] = base
    rms = float(np.sqrt(np.mean(np.asarray(base[:4096], np.float32) ** 2)))
    for lo in range(base_n, n, 4096):
        hi = min(lo + 4096, n)
        rng = np.random.default_rng([4321, lo])
        a, b = rng.integers(base_n, size=(2, hi - lo))
        w = rng.uniform(0.2, 0.5, size=(hi - lo, 1)).astype(np.float32)
        mix = (1 - w) * np.asarray(base[np.sort(a)], np.float32)[np.argsort(np.argsort(a))] + \
            w * np.asarray(base[np.sort(b)], np.float32)[np.argsort(np.argsort(b))]
        out[lo:hi] = mix + 0.02 * rms * rng.standard_normal(mix.shape, dtype=np.float32)
    out.flush()
    meta = {**meta, "pages": n, "grown_from": base_n, "make_s": round(time.perf_counter() - t, 1),
            "fde_only": True, "machine": machine()}
    (d / "meta.json").write_text(json.dumps(meta))
    log(json.dumps(meta))


_FULL: dict = {}


def _full_init(d: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from bench_search import real_order

    z = np.load(Path(d) / "base.npz")
    off, v = z["offsets"], z["vectors"]
    real = [v[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    _FULL.update(real=real, order=real_order(len(real)), d=Path(d))


def _full_points(bounds: tuple[int, int]) -> tuple[int, list[np.ndarray], list[np.ndarray]]:
    """A chunk's stored vectors as ``schema.build_point`` makes them from pooled pages: the
    tokens, and 32 centroids with a fused page's window vectors kept whole."""
    import torch
    from threadpoolctl import threadpool_limits

    from bench_search import page_vectors
    from agree_core.pooling import pool_vectors

    lo, hi = bounds
    tokens, cents = [], []
    with threadpool_limits(1):
        for i in range(lo, hi):
            v = page_vectors(_FULL["real"], _FULL["order"], i)[0]
            tokens.append(v)
            cents.append(pool_vectors(v, 32, keep=torch.from_numpy(v[:, -1] < -0.5)).numpy())
    return lo, tokens, cents


def _full_exact(bounds: tuple[int, int], qv: np.ndarray, qoff: np.ndarray) -> tuple[int, np.ndarray]:
    """Exact float32 MaxSim of the queries ``qv`` (rows, split at ``qoff``) over a chunk of pages."""
    from threadpoolctl import threadpool_limits

    from bench_search import page_vectors

    lo, hi = bounds
    with threadpool_limits(1):
        pages = [page_vectors(_FULL["real"], _FULL["order"], i)[0] for i in range(lo, hi)]
        o = np.cumsum([0] + [len(p) for p in pages])
        m = np.maximum.reduceat(np.concatenate(pages) @ qv.T, o[:-1], axis=0)
        return lo, np.add.reduceat(m, qoff, axis=1).T


def exact_scores(d: Path, n: int, workers: int, queries: list[np.ndarray]) -> np.ndarray:
    """``(len(queries), n)`` exact float32 MaxSim over every page, made again chunk by chunk
    (for queries ``make`` did not score: the text queries as the index weights them)."""
    from functools import partial
    from multiprocessing import get_context

    qv = np.concatenate(queries).astype(np.float32)
    qoff = np.cumsum([0] + [len(q) for q in queries])[:-1]
    out = np.zeros((len(queries), n), np.float32)
    jobs = [(lo, min(lo + 4096, n)) for lo in range(0, n, 4096)]
    with get_context("spawn").Pool(workers, initializer=_full_init, initargs=(str(d),)) as pool:
        for lo, sc in pool.imap_unordered(partial(_full_exact, qv=qv, qoff=qoff), jobs):
            out[:, lo:lo + sc.shape[1]] = sc
    return out


def register_documents(index, d: Path, n: int, enc) -> None:
    """The catalog rows the product writes after a document's pages (``_set_ready``): the
    synthetic documents of 500 pages ``full`` wrote, ready, with each page's terms those of
    the real page it is based on (``bench_search.base_page``), so that ``search_batch``
    weights text queries by IDF over the collection as the product does."""
    import bench_first_stage as bfs
    from bench_search import base_page, page_vectors, real_order

    if index.catalog.documents(state="ready"):
        return
    real, terms, _ = bfs.base_pages(enc)
    order = real_order(len(real))
    for i in (0, len(real), n // 2, n - 1):  # the same base page as the synthesis
        assert base_page(len(real), order, i) == page_vectors(real, order, i)[1]
    sets = [set(t.tolist()) for t in terms]
    for k in range(0, n, 500):
        counts: dict[int, int] = {}
        for i in range(k, min(k + 500, n)):
            for t in sets[base_page(len(real), order, i)]:
                counts[t] = counts.get(t, 0) + 1
        doc = f"d{k // 500}"
        index.catalog.begin(doc, f"/synthetic/s{k // 500}.pdf", "synthetic", min(k + 500, n) - k, {})
        index.catalog.set_ready(doc, counts)


def stage_times(index, qs: list[np.ndarray], where, wide: int, c: int) -> dict[str, float]:
    """Where one search's time goes: each stage of the product's engine query run alone (no
    payload), and the Python steps around it; p50 ms per query."""
    from agree_core.index import first_stage
    from agree_core.index.engines.edge import _qe, to_edge
    from agree_core.index.schema import FDE, POOLED, TOKENS

    qe = _qe()
    shard = index.engine._shard
    muv = first_stage.muvera_of(index.config.dim, index.config.first_stage)
    flt = to_edge(where)
    exact = qe.SearchParams(exact=True)

    def scan(rescore: bool) -> object:
        return qe.SearchParams(quantization=qe.QuantizationSearchParams(
            rescore=rescore, oversampling=first_stage.oversampling_of(index.config.first_stage)))

    def stage1(q, fq, f=flt, rescore=True):
        return qe.Prefetch(limit=wide, filter=f, params=scan(rescore), query=qe.Query.Nearest(fq, using=FDE))

    def req(limit, q, using, prefetches, f=flt, params=exact):
        return qe.QueryRequest(limit=limit, query=qe.Query.Nearest(q, using=using), prefetches=prefetches,
                               filter=f, params=params, with_payload=False)

    mid = first_stage.middle_rows
    steps = {
        "scope (catalog)": lambda q, fq: index.scope(None, pdf_pages_only=True),
        "count()": lambda q, fq: index.engine.count(),
        "count, not exact": lambda q, fq: shard.count(qe.CountRequest(exact=False)),
        "MUVERA encode_query": lambda q, fq: muv.encode_query(q),
        "quantized scan -> C (no rescoring)": lambda q, fq: shard.query(req(wide, fq, FDE, None, params=scan(False))),
        "the same without the filter": lambda q, fq: shard.query(req(wide, fq, FDE, None, f=None, params=scan(False))),
        "quantized scan -> C rescored by the stored encodings (stage 1)": lambda q, fq: shard.query(req(wide, fq, FDE, None, params=scan(True))),
        "stage 1 -> c by centroid MaxSim (the query's middle rows)": lambda q, fq: shard.query(req(c, mid(q), POOLED, [stage1(q, fq)])),
        "the same, stage 1 not rescored": lambda q, fq: shard.query(req(c, mid(q), POOLED, [stage1(q, fq, rescore=False)])),
        "... -> exact top 10 over the tokens (the engine query, no payload)": lambda q, fq: shard.query(req(10, q, TOKENS, [
            qe.Prefetch(limit=c, filter=flt, params=exact, query=qe.Query.Nearest(mid(q), using=POOLED), prefetches=[stage1(q, fq)])])),
        "the whole query without the filter": lambda q, fq: shard.query(req(10, q, TOKENS, [
            qe.Prefetch(limit=c, params=exact, query=qe.Query.Nearest(mid(q), using=POOLED), prefetches=[stage1(q, fq, f=None)])], f=None)),
        "search_vectors (the product call)": lambda q, fq: index.search_vectors([q], 10, where, candidates=c),
    }
    pairs = [(np.ascontiguousarray(q, np.float32), np.ascontiguousarray(muv.encode_query(q), np.float32)) for q in qs]
    out = {}
    for name, fn in steps.items():
        fn(*pairs[0])
        ms = []
        for q, fq in pairs:
            t = time.perf_counter()
            fn(q, fq)
            ms.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(ms)
    return out


def decompose(index, qs: list[np.ndarray], where, exact: np.ndarray, cent: np.ndarray, wide: int, c: int,
              n_exact: int) -> None:
    """Where recall@10 against exact float32 MaxSim is lost: the engine's candidates after each
    stage replayed with ``make``'s float32 scores (numpy) for the stages after it, and exact MaxSim
    over every page's stored (turbo4) vectors for the first ``n_exact`` queries (the index's own
    best answer, a ceiling for any first stage)."""
    from agree_core.index import first_stage
    from agree_core.index.engines.edge import _qe, to_edge
    from agree_core.index.schema import FDE, POOLED

    qe = _qe()
    shard = index.engine._shard
    muv = first_stage.muvera_of(index.config.dim, index.config.first_stage)
    flt = to_edge(where)
    exact_p, scan = qe.SearchParams(exact=True), qe.SearchParams(quantization=qe.QuantizationSearchParams(
        rescore=True, oversampling=first_stage.oversampling_of(index.config.first_stage)))
    ids = lambda pts: np.array([uuid.UUID(str(p.id)).int - 1 for p in pts])  # noqa: E731
    ref = np.argsort(-exact, axis=1)[:, :10]
    s1, s2, final = [], [], []
    for q in qs:
        q = np.ascontiguousarray(q, np.float32)
        fq = np.ascontiguousarray(muv.encode_query(q), np.float32)
        pre = qe.Prefetch(limit=wide, filter=flt, params=scan, query=qe.Query.Nearest(fq, using=FDE))
        s1.append(ids(shard.query(qe.QueryRequest(limit=wide, query=qe.Query.Nearest(fq, using=FDE), filter=flt,
                                                  params=scan, with_payload=False))))
        s2.append(ids(shard.query(qe.QueryRequest(limit=c, query=qe.Query.Nearest(first_stage.middle_rows(q), using=POOLED), prefetches=[pre],
                                                  filter=flt, params=exact_p, with_payload=False))))
        final.append(np.array([uuid.UUID(h.id).int - 1 for h in index.search_vectors([q], 10, where, candidates=c)[0]]))
    fde_scores = np.load(index.directory.parent / "fde_scores.npy") if (index.directory.parent / "fde_scores.npy").exists() else None
    rec = lambda found, r=ref: float(np.mean([len(set(f[:10].tolist()) & set(r[i].tolist())) / 10 for i, f in enumerate(found)]))  # noqa: E731
    print(f"\nRecall@10 against exact float32, by stage ({wide} -> {c}; {len(qs)} queries; load {os.getloadavg()[0]:.1f}):\n")
    print("| what | recall@10 |\n|---|---|")
    if fde_scores is not None:
        ideal = np.argsort(-fde_scores, axis=1)[:, :wide]
        print(f"| the float16 encodings' own top {wide} (numpy) -> {c} by float32 centroids -> float32 exact | {cascade(ideal, cent, exact, c):.3f} |")
        print(f"| share of that top {wide} the engine's stage 1 returns | "
              f"{np.mean([len(set(a.tolist()) & set(b.tolist())) / wide for a, b in zip(s1, ideal)]):.3f} |")
    print(f"| engine stage 1 (1-bit scan, rescored) -> {c} by float32 centroids -> float32 exact | {cascade(s1, cent, exact, c):.3f} |")
    print(f"| engine stages 1-2 (turbo4 centroids) -> float32 exact | {cascade(s2, cent, exact, None):.3f} |")
    print(f"| engine stages 1-3 (turbo4 tokens): what search_vectors returns | {rec(final):.3f} |", flush=True)
    if n_exact:
        t = time.perf_counter()
        full_ex = [np.array([uuid.UUID(h.id).int - 1 for h in index.search_vectors([q], 10, where, candidates=0)[0]])
                   for q in qs[:n_exact]]
        ms = (time.perf_counter() - t) / n_exact * 1000
        own = np.stack([f[:10] for f in full_ex])
        print(f"| exact MaxSim over every page's stored turbo4 vectors (first {n_exact} queries, {ms:,.0f} ms a query) | "
              f"{rec(full_ex):.3f} |")
        print(f"| search_vectors against that turbo4 exact top 10 (same {n_exact} queries) | {rec(final[:n_exact], own):.3f} |", flush=True)


def own_exact(index, ix: Path, qs: list[np.ndarray], where) -> list[list[int]]:
    """Each query's top 10 by exact MaxSim over every page's stored vectors (the index's own
    best answer), computed once per built index (about 2 minutes at 100,000 pages) and kept
    in its folder."""
    f = ix / "own_exact.json"
    if f.exists() and len(got := json.loads(f.read_text())) >= len(qs):
        return got[:len(qs)]
    t = time.perf_counter()
    got = [[uuid.UUID(h.id).int - 1 for h in index.search_vectors([q], 10, where, candidates=0)[0]] for q in qs]
    log(f"  the index's own exact top 10 of {len(qs)} queries: {time.perf_counter() - t:.0f} s")
    f.write_text(json.dumps(got))
    return got


def interleaved(index, qs: list[np.ndarray], where, plans: list[tuple[int, int]], rounds: int,
                ref: np.ndarray, own: list[list[int]]) -> None:
    """The scan plans timed query by query in turn (every plan sees the same load), ``rounds``
    times, through ``PageIndex.search_vectors``; recall against exact float32 and against the
    index's own exact search."""
    from agree_core.index import first_stage

    saved = (first_stage.SCAN_CANDIDATES, first_stage.GRAPH_FANOUT)
    plans = [p for p in plans if p[0]]
    ms: dict[tuple[int, int], list[list[float]]] = {p: [[] for _ in range(rounds)] for p in plans}
    found: dict[tuple[int, int], list[set[int]]] = {p: [] for p in plans}
    first_stage.GRAPH_FANOUT = 1
    for r in range(rounds + 1):  # round 0 warms up
        for i, q in enumerate(qs):
            for p in plans:
                first_stage.SCAN_CANDIDATES = p[0]
                t = time.perf_counter()
                hits = index.search_vectors([q], 10, where, candidates=p[1])[0]
                if r:
                    ms[p][r - 1].append((time.perf_counter() - t) * 1000)
                else:
                    found[p].append({uuid.UUID(h.id).int - 1 for h in hits})
    first_stage.SCAN_CANDIDATES, first_stage.GRAPH_FANOUT = saved
    print(f"\nThe scan plans interleaved ({len(qs)} queries, {rounds} rounds after a warm-up; "
          f"load {os.getloadavg()[0]:.1f} at the end):\n")
    print("| plan C:c | p50 ms by round | p90 ms (all rounds) | recall@10 vs exact float32 | vs the index's own exact |\n"
          "|---|---|---|---|---|")
    for p in plans:
        f32 = np.mean([len(f & set(ref[i].tolist())) / 10 for i, f in enumerate(found[p])])
        o = np.mean([len(f & set(own[i])) / 10 for i, f in enumerate(found[p])])
        print(f"| {p[0]}:{p[1]} | {' / '.join(f'{statistics.median(m):.1f}' for m in ms[p])} | "
              f"{np.percentile(sum(ms[p], []), 90):.1f} | {f32:.3f} | {o:.3f} |", flush=True)


def _ahead(pool, fn, jobs, ahead: int):
    """``fn(job)`` for each job in order, run by ``pool`` at most ``ahead`` jobs ahead of the
    caller. (``Pool.imap`` hands out every job at once and keeps the results until they are
    taken: with workers faster than this writer, 180 KB a page piled up here, BENCHMARKS.md,
    sessions 9 and 10.)"""
    from collections import deque

    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(fn, (job,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def full(n: int, workers: int, plans: list[tuple[int, int]], keep: bool, n_queries: int,
         text_queries: int = 0, stages: bool = False, profile: bool = False, optimize_every: int = 0,
         decompose_exact: int = -1, ab_count: bool = False, rounds: int = 0) -> None:
    """A real index folder of the ``n`` pages (``PageIndex.open`` with the defaults but pool
    factor 3, as the encodings were made; points as ``schema.build_point`` stores them, their
    encodings the ones ``make`` wrote), searched through ``PageIndex.search_vectors``."""
    from multiprocessing import get_context

    from bench_search import _mapped, _status, dir_bytes
    from agree_core.encoders import load_encoder
    from agree_core.index import PageIndex, first_stage
    from agree_core.index.engines.base import Point
    from agree_core.index.schema import FDE, POOLED, TOKENS

    d, meta = load(n)
    settings = json.loads((d / "settings.json").read_text())
    ix = d / "index"
    enc = load_encoder("text-layer")
    if not (ix / "build.json").exists():
        progress = ix / "progress.json"
        # an interrupted build resumes after its last flushed chunk (pages are deterministic)
        prev = json.loads(progress.read_text()) if progress.exists() else None
        if prev is None:
            shutil.rmtree(ix, ignore_errors=True)
        index = PageIndex.open(ix, enc, pool_factor=3, vector_datatype="turbo4")
        fs = index.config.first_stage
        assert all(fs[k] == v for k, v in settings.items() if k in ("k_sim", "dim_proj", "reps", "seed", "fused")), (fs, settings)
        prev = prev or {"write_s": 0.0, "upsert_s": 0.0, "write_cpu_s": 0.0, "mid_optimize_s": 0.0,
                        "mid_optimize_cpu_s": 0.0, "runs": 0}
        start = min(index.engine.count(), prev.get("done", 0)) // 2048 * 2048
        if start:
            log(f"  resuming at page {start:,} ({index.engine.count():,} points in the shard)")
        fde = np.load(d / "fde.npy", mmap_mode="r")
        t0, cpu0 = time.perf_counter(), time.process_time()
        t_write, t_mid, cpu_mid = 0.0, 0.0, 0.0
        jobs = [(lo, min(lo + 512, n)) for lo in range(start, n, 512)]
        with get_context("spawn").Pool(workers, initializer=_full_init, initargs=(str(d),)) as pool:
            for lo, tokens, cents in _ahead(pool, _full_points, jobs, 2 * workers):
                t = time.perf_counter()
                points = [Point(str(uuid.UUID(int=lo + j + 1)),
                                {TOKENS: v, POOLED: c, FDE: np.asarray(fde[lo + j], np.float32)},
                                {"doc_id": f"d{(lo + j) // 500}", "source": f"/synthetic/s{(lo + j) // 500}.pdf",
                                 "page": (lo + j) % 500 + 1, "nvec": len(v) + len(c)})
                          for j, (v, c) in enumerate(zip(tokens, cents))]
                for k in range(0, len(points), 64):
                    index.engine.upsert(points[k:k + 64])
                t_write += time.perf_counter() - t
                if (lo // 512) % 4 == 3:
                    index.engine.flush()
                    if optimize_every and (lo + 512) % optimize_every == 0 and lo + 512 < n:
                        t, c = time.perf_counter(), time.process_time()
                        index.engine.optimize()
                        t_mid += time.perf_counter() - t
                        cpu_mid += time.process_time() - c
                        log(f"  optimized at {lo + 512:,} pages in {time.perf_counter() - t:.0f} s")
                    done = {"done": lo + 512, "write_s": prev["write_s"] + time.perf_counter() - t0,
                            "upsert_s": prev["upsert_s"] + t_write,
                            "write_cpu_s": prev["write_cpu_s"] + time.process_time() - cpu0,
                            "mid_optimize_s": prev["mid_optimize_s"] + t_mid,
                            "mid_optimize_cpu_s": prev["mid_optimize_cpu_s"] + cpu_mid, "runs": prev["runs"] + 1}
                    progress.write_text(json.dumps(done))
                if lo % 10240 == 0:
                    log(f"  {lo + len(points):,}/{n:,} pages, {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}, "
                        f"{_status()['RssAnon'] / 2**30:.1f} GB heap")
        index.engine.flush()
        t_all, cpu_write = time.perf_counter() - t0, time.process_time() - cpu0
        t, cpu = time.perf_counter(), time.process_time()
        index.engine.optimize()
        info = {"write_s": round(prev["write_s"] + t_all, 1), "upsert_s": round(prev["upsert_s"] + t_write, 1),
                "write_cpu_s": round(prev["write_cpu_s"] + cpu_write, 1),
                "mid_optimize_s": round(prev["mid_optimize_s"] + t_mid, 1),
                "mid_optimize_cpu_s": round(prev["mid_optimize_cpu_s"] + cpu_mid, 1), "runs": prev["runs"] + 1,
                "optimize_s": round(time.perf_counter() - t, 1), "optimize_cpu_s": round(time.process_time() - cpu, 1),
                "load_after": os.getloadavg()[0], "optimize_every": optimize_every}
        index.close()
        info["disk_bytes"] = dir_bytes(ix)
        (ix / "build.json").write_text(json.dumps(info))
        log(json.dumps(info))
    info = json.loads((ix / "build.json").read_text())
    exact = np.load(d / "exact.npy")
    ref = np.argsort(-exact, axis=1)[:, :10]
    qz = np.load(d / "queries.npz")
    qv, qo = qz["vectors"], qz["offsets"]
    qs = [qv[qo[i]:qo[i + 1]] for i in range(len(qo) - 1)][:n_queries]
    mem0 = _status()
    index = PageIndex.open(ix, enc)
    if text_queries:
        register_documents(index, d, n, enc)
    where = index.scope(None, pdf_pages_only=True)
    print(f"## {n:,} pages through PageIndex.search_vectors: a real index folder (tokens turbo4 pooled by 3, "
          f"32 centroids, first stage {json.dumps({k: index.config.first_stage[k] for k in ('m', 'quantization') if k in index.config.first_stage})})\n")
    mid = (f" including {info['mid_optimize_s']:.0f} s ({info['mid_optimize_cpu_s']:.0f} CPU s) of optimizes every "
           f"{info.get('optimize_every', optimize_every):,} pages" if info.get("mid_optimize_s") else "")
    print(f"build: writes {info['write_s']:.0f} s ({n / info['write_s']:.0f} pages/s; {info['write_cpu_s']:.0f} CPU s in the "
          f"writing process{mid}; {info.get('runs', 1)} run(s)), final optimize {info['optimize_s']:.0f} s ({info['optimize_cpu_s']:.0f} CPU s), "
          f"{info['disk_bytes'] / 1e9:.2f} GB = {info['disk_bytes'] / n / 1e3:.1f} KB/page on disk "
          f"(load at the end {info['load_after']:.1f}); queries {len(qs)}, query encoding {meta['encode_ms']:.0f} ms "
          f"apart\n\n{machine()}; load {os.getloadavg()[0]:.1f} before the searches\n")
    for name, size in _disk_parts(ix).items():
        print(f"- on disk: {name}: {size / 1e6:,.0f} MB = {size / n / 1e3:.2f} KB/page")
    print("\n| search | p50 ms | p90 ms | CPU ms p50 | recall@10 vs exact float32 | load |\n|---|---|---|---|---|---|")
    saved = (first_stage.SCAN_CANDIDATES, first_stage.GRAPH_FANOUT)
    breakdown: dict[str, dict[str, float]] = {}
    for wide, c in plans:
        if wide:  # the encodings' C pages -> c by centroids -> exact
            first_stage.SCAN_CANDIDATES, first_stage.GRAPH_FANOUT = wide, 1
            name = f"quantized scan of the encodings -> {wide} -> {c} by centroids -> exact"
        else:  # the session-1 path: every page's centroids scanned
            fs, index.config.first_stage = index.config.first_stage, {}
            name = f"centroid scan of every page -> {c} -> exact"
        run = lambda q: index.search_vectors([q], 10, where, candidates=c)[0]  # noqa: E731
        run(qs[0])
        ms, cpu, rec = [], [], []
        for i, q in enumerate(qs):
            t, t_cpu = time.perf_counter(), time.process_time()
            hits = run(q)
            ms.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - t_cpu) * 1000)
            rec.append(len({uuid.UUID(h.id).int - 1 for h in hits} & set(ref[i].tolist())) / 10)
        if not wide:
            index.config.first_stage = fs
        print(f"| {name} | {statistics.median(ms):.0f} | {np.percentile(ms, 90):.0f} | {statistics.median(cpu):.0f} | "
              f"{np.mean(rec):.3f} | {os.getloadavg()[0]:.1f} |", flush=True)
        if wide and ab_count:  # the same searches with the exact count each one made before session 9
            exact_count, cheap_count = index.engine.count, index.engine.point_count
            both: dict[str, list[float]] = {"exact count()": [], "point_count()": []}
            for q in qs:  # interleaved, so that both see the same load
                for name, fn in (("exact count()", exact_count), ("point_count()", cheap_count)):
                    index.engine.point_count = fn
                    t = time.perf_counter()
                    run(q)
                    both[name].append((time.perf_counter() - t) * 1000)
            index.engine.point_count = cheap_count
            print("| ... A/B, interleaved: " + "; ".join(f"with {k} p50 {statistics.median(v):.0f} ms, p90 "
                                                     f"{np.percentile(v, 90):.0f}" for k, v in both.items()) +
                  f" | | | | | {os.getloadavg()[0]:.1f} |", flush=True)
        if wide and stages:
            breakdown[f"{wide}:{c}"] = stage_times(index, qs, where, wide, c)
        if wide and decompose_exact >= 0:
            decompose(index, qs, where, exact, np.load(d / "centroids.npy"), wide, c, decompose_exact)
            decompose_exact = -1  # the first plan only
        if wide and profile:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile(time.process_time)
            pr.enable()
            for q in qs:
                run(q)
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("cumulative").print_stats(14)
            log(f"cProfile (CPU time) of {len(qs)} searches, plan {wide}:{c}:\n{out.getvalue()}")
            profile = False
    first_stage.SCAN_CANDIDATES, first_stage.GRAPH_FANOUT = saved
    if rounds:
        interleaved(index, qs, where, plans, rounds, ref, own_exact(index, ix, qs, where))
    if breakdown:
        names = list(next(iter(breakdown.values())))
        print(f"\nWhere a search's time goes (p50 ms per query of each step run alone, {len(qs)} queries; "
              f"columns C:c; engine steps without payload; load {os.getloadavg()[0]:.1f}):\n")
        print("| step | " + " | ".join(breakdown) + " |\n|---|" + "---|" * len(breakdown))
        for j, step in enumerate(names):
            print(f"| {step} | " +
                  " | ".join(f"{list(b.values())[j]:.1f}" for b in breakdown.values()) + " |")
    if text_queries:
        text_search(index, d, n, workers, meta, text_queries)
    mem = _status()
    print(f"\nsearch process: {mem['VmRSS'] / 2**20:,.0f} MB resident ({mem['RssAnon'] / 2**20:,.0f} MB heap, "
          f"+{(mem['RssAnon'] - mem0['RssAnon']) / 2**20:.0f} MB since before the index opened, model loaded before), "
          f"{_mapped(str(ix)) / 2**20:,.0f} MB of index files resident; peak {mem['VmHWM'] / 2**20:,.0f} MB; "
          f"load {os.getloadavg()[0]:.1f}\n", flush=True)
    index.close()
    if not keep:
        shutil.rmtree(ix, ignore_errors=True)


def _disk_parts(ix: Path) -> dict[str, int]:
    """Allocated bytes of an index folder by part: each named vector's storage in the shard's
    segments (their folders name them), the rest of the shard, the catalog and config."""
    from bench_search import dir_bytes

    parts: dict[str, int] = {}
    for f in ix.rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(ix).parts
        key = "shard (other)" if rel[0] == "shard" else rel[0]
        for p in rel:
            for name in ("tokens", "pooled", "fde"):
                if name in p:
                    key = f"shard: {p}"
        parts[key] = parts.get(key, 0) + f.stat().st_blocks * 512
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def text_search(index, d: Path, n: int, workers: int, meta: dict, count: int) -> None:
    """``count`` dev-set questions (those ``make`` scored) through ``PageIndex.search_batch``:
    query encoding with IDF weights from the catalog (``register_documents``) timed apart,
    then the search of the encoded query; recall@10 against exact float32 MaxSim of those
    very vectors over every page (made again: the catalog's IDF over the collection differs
    from ``make``'s over the real pages)."""
    from common import load_questions

    qs = load_questions()
    texts = [q["query"] for q in qs[::max(1, len(qs) // meta["queries"])][:meta["queries"]]][:count]
    index.encode_queries(["warm up"])
    enc_ms, search_ms, batch_ms, vecs, found = [], [], [], [], []
    for text in texts:
        index._last_queries = None  # a fresh query (the index keeps the last one for its evidence)
        t = time.perf_counter()
        v = index.encode_queries([text])
        enc_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        index.search_encoded(v, 10, index.search_scope(None))
        search_ms.append((time.perf_counter() - t) * 1000)
        index._last_queries = None
        t = time.perf_counter()
        hits = index.search_batch([text], 10)[0]
        batch_ms.append((time.perf_counter() - t) * 1000)
        vecs.append(v[0].float().numpy())
        found.append({uuid.UUID(h.page_id).int - 1 for h in hits})
    t = time.perf_counter()
    ex = exact_scores(d, n, workers, vecs)
    ref = np.argsort(-ex, axis=1)[:, :10]
    rec = np.mean([len(f & set(ref[i].tolist())) / 10 for i, f in enumerate(found)])
    n_pages, df = index.catalog.term_stats()
    print(f"\n{len(texts)} text queries through PageIndex.search_batch (the defaults: 2,800 -> 300 -> exact; IDF over "
          f"the catalog's {n_pages:,} pages, {len(df):,} terms; {np.mean([len(v) for v in vecs]):.1f} rows a query; "
          f"reference made again in {time.perf_counter() - t:.0f} s; load {os.getloadavg()[0]:.1f}):\n")
    print("| step | p50 ms | p90 ms |\n|---|---|---|")
    for name, ms in (("encode_queries (model + IDF weights)", enc_ms), ("search_encoded (scope, search, hits)", search_ms),
                     ("search_batch (all of it)", batch_ms)):
        print(f"| {name} | {statistics.median(ms):.0f} | {np.percentile(ms, 90):.0f} |")
    print(f"\nrecall@10 of search_batch against exact float32 MaxSim of the same query vectors: {rec:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["make", "grow", "ideal", "graph", "full"])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--candidates", default="400,800,1600,3200,6400")
    ap.add_argument("--rescore", default="100,200,400,800")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construct", type=int, default=100)
    ap.add_argument("--hnsw-ef", default="800,1600,3200,6400")
    ap.add_argument("--quantization", default="", help="graph: a quantized copy of the encodings "
                    "(agree_core.index.engines.base.QUANTIZATIONS); with --m 0 a scan of it")
    ap.add_argument("--oversampling", default="1,2,4", help="with --quantization")
    ap.add_argument("--base-pages", type=int, default=100_000, help="grow: the pages `make` encoded")
    ap.add_argument("--plans", default="2800:300,3200:400,0:400",
                    help="full: C:c pairs (C encodings -> c by centroids -> exact; C 0: the centroid scan)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--fde-datatype", default="float16", choices=["float16", "turbo8"],
                    help="graph: how the shard stores the encodings (the product's default since session 10: turbo8)")
    ap.add_argument("--text-queries", type=int, default=0,
                    help="full: this many dev-set questions through search_batch (IDF from the catalog)")
    ap.add_argument("--optimize-every", type=int, default=0,
                    help="full, graph: optimize the shard every this many pages while writing (a multiple of 8192)")
    ap.add_argument("--decompose", type=int, default=-1, metavar="N_EXACT",
                    help="full: recall lost per stage for the first plan, and exact MaxSim over the stored "
                         "vectors of every page for N_EXACT queries")
    ap.add_argument("--ab-count", action="store_true",
                    help="full: each plan's searches also with the exact count() of before session 9, interleaved")
    ap.add_argument("--stages", action="store_true", help="full: time each stage of a search alone")
    ap.add_argument("--rounds", type=int, default=0,
                    help="full: then the scan plans interleaved query by query, this many rounds, with recall "
                         "against the index's own exact search too (computed once and kept in the index folder)")
    ap.add_argument("--profile", action="store_true", help="full: cProfile the first plan's searches (stderr)")
    ap.add_argument("--fde-only", action="store_true",
                    help="make: the encodings only (no exact / centroid scores: 1M pages)")
    a = ap.parse_args()
    cs, rs = [int(x) for x in a.candidates.split(",")], [int(x) for x in a.rescore.split(",")]
    if a.what == "make":
        make(a.pages, a.workers, a.queries, a.fde_only)
    elif a.what == "ideal":
        ideal(a.pages, cs, rs)
    elif a.what == "grow":
        grow(a.pages, a.base_pages)
    elif a.what == "full":
        full(a.pages, a.workers, [tuple(int(x) for x in p.split(":")) for p in a.plans.split(",")], a.keep, a.queries,
             a.text_queries, a.stages, a.profile, a.optimize_every, a.decompose, a.ab_count, a.rounds)
    else:
        graph(a.pages, a.m, a.ef_construct, [int(x) for x in a.hnsw_ef.split(",")], cs, rs, a.keep,
              a.quantization, [float(x) for x in a.oversampling.split(",")], a.optimize_every, a.fde_datatype)


if __name__ == "__main__":
    main()
