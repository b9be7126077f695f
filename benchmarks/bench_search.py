"""Search latency, memory and storage of the page shard (Qdrant Edge) at 1k / 10k / 100k pages.

    .venv/bin/python benchmarks/bench_search.py                       # 1k, 10k, 100k (+ quality)
    .venv/bin/python benchmarks/bench_search.py --sizes 1000,10000 --queries 10
    .venv/bin/python benchmarks/bench_search.py --sizes 100000 --max-build-minutes 60 --quality-pages 0
    .venv/bin/python benchmarks/bench_search.py --sizes "" --quality-pages 100000  # quality only
    .venv/bin/python benchmarks/bench_search.py --rebuild             # rebuild cached shards

First run: ~7 min to encode the corpus (cached), ~3 min to build 10k pages, ~35 min for 100k
full pages (~26 GB; by default 100k falls back to "first stage only", see below); later runs
reuse the shards in ``benchmarks/data/search-shards/`` (delete them to free the disk).

What it does:

1. Page vectors. The dev-set corpus (1,560 real pages, ``common.corpus_pages()``) is encoded once
   with the default encoder (``text-layer``) and cached in ``benchmarks/data/cache/``. Larger
   collections are synthesised from it: a synthetic page is a random real page with 20-50 % of
   its tokens replaced by tokens of another random real page, plus Gaussian noise (sigma 0.02
   per dimension, cosine ~0.93 to the original token), re-normalised. It has as many vectors as
   its base page, so the vectors-per-page distribution stays the real one (printed). Collections
   of N <= 1,560 pages are real pages only; larger ones hold all 1,560 real pages first.
2. Scale (tables 1 and 2). For each size a shard is built through the product path
   (``EdgeEngine(dir, vector_specs(384, datatype, pooled=True)).upsert(Point...)`` in batches of 64,
   flushed every 1,024 pages; pooled = the ``pool_vectors`` k-means centroids; payload like the
   real one: source, page, doc_id, text, cells). A fresh process per shard then loads the
   encoder model, opens the shard and times, for real dev-set queries: exact MaxSim
   (``candidates=None``) and the pooled first stage + exact rescoring for each ``--candidates``,
   round-robin over the candidate counts (one call of each per query, so noise hits them alike),
   then exact MaxSim (last: beyond RAM it evicts the page cache); median over queries; query
   encoding is timed apart. Top-10 agreement is against exact MaxSim on the
   same shard. Memory: the process RSS with the model loaded, and what the shard added (heap,
   and resident pages of its memory-mapped files). Exact MaxSim runs for at most
   ``--exact-budget`` seconds per size (fewer queries when it is slow).
   A size whose build would not fit the disk (leaving ``--min-free-gb``) or would take more
   than ``--max-build-minutes`` (estimated from the previous size) is measured as a "first stage
   only" shard instead: each page stored as its pooled centroids only, i.e. what the first stage
   scans; the output says so and estimates the two-stage latency from it. Such a shard, when
   cached, is also measured next to the full one (the first stage's share of the latency).
3. Storage vs quality (table 3). Computed in memory (MaxSim over the values the shard would
   store, float32 arithmetic): float32 vs float16 storage, a 128-d projection (top principal
   directions of the corpus vectors, uncentred, re-normalised), and the pooled first stage with
   16/32/64 centroids and each candidate count. Quality: nDCG@5 / recall@10 on the dev set (88
   questions, 1,560 real pages) and top-10 agreement with exact float32 MaxSim over
   ``--quality-pages`` pages (all 88 questions).

Timings are noisy when something else runs on the machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, corpus_pages, evaluate, load_questions, machine, table  # noqa: E402

CACHE = DATA / "cache"
SHARDS = DATA / "search-shards"
DIM = 384
SEED = 1234
NOISE = 0.02  # per-dimension sigma of the noise added to synthetic tokens
MIX = (0.2, 0.5)  # fraction of a synthetic page's tokens taken from a second page
SYNTH_VERSION = 2  # bump when the synthesis changes (cached shards are keyed by it)
BATCH = 64  # pages per upsert
FLUSH_EVERY = 1024  # pages between flushes (the product flushes after each document): the
# write-ahead log holds every unflushed page as float32 (~0.6 MB a page here)
GB = 1e9


@contextlib.contextmanager
def single_threaded_children():
    """Processes started inside use one BLAS/OpenMP thread each: on a small shared CPU, several
    processes with a thread per core each slow everything down many times over."""
    saved = dict(os.environ)
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- vectors ----------------------------------------------------------------------------------
def corpus_cache_path(enc) -> Path:
    tag = hashlib.sha1(json.dumps([enc.name, enc.config], sort_keys=True).encode()).hexdigest()[:10]
    return CACHE / f"search_corpus_{tag}.safetensors"


def load_corpus(path: Path) -> tuple[list[np.ndarray], list[dict]]:
    from safetensors.numpy import load_file

    t = load_file(str(path))
    off, vecs = t["offsets"], t["vectors"]
    meta = json.loads(path.with_suffix(".json").read_text())
    return [vecs[off[i]:off[i + 1]] for i in range(len(off) - 1)], meta


def real_corpus(enc, batch: int = 32) -> tuple[Path, list[np.ndarray], list[dict]]:
    """The dev-set pages encoded with ``enc`` (float32 arrays) and their keys, cached."""
    from safetensors.numpy import save_file

    path = corpus_cache_path(enc)
    if path.exists() and path.with_suffix(".json").exists():
        return path, *load_corpus(path)
    pages = corpus_pages()
    out, meta = [], []
    t0 = time.perf_counter()
    for i in range(0, len(pages), batch):
        chunk = pages[i:i + batch]
        for p, e in zip(chunk, enc.encode_pages(chunk)):
            out.append(e.vectors.float().numpy())
            meta.append({"source": p.source.name, "page": p.page_no, "text": e.text or ""})
        log(f"  encoded {len(out)}/{len(pages)} pages ({time.perf_counter() - t0:.0f} s)")
    offsets = np.cumsum([0] + [len(v) for v in out]).astype(np.int64)
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({"vectors": np.concatenate(out).astype(np.float32), "offsets": offsets}, str(path))
    path.with_suffix(".json").write_text(json.dumps(meta))
    log(f"encoded {len(out)} pages in {time.perf_counter() - t0:.0f} s -> {path}")
    return path, out, meta


def real_order(n_real: int) -> np.ndarray:
    """The order real pages enter a collection (a fixed shuffle: 1,000 pages span all PDFs)."""
    return np.random.default_rng(SEED).permutation(n_real)


def base_page(n_real: int, order: np.ndarray, i: int) -> int:
    """The real page collection page ``i`` is based on (:func:`page_vectors`' second value,
    without making the page): what it inherits its terms from."""
    if i < n_real:
        return int(order[i])
    return int(np.random.default_rng([SEED, SYNTH_VERSION, i]).integers(n_real, size=2)[0])


def page_vectors(real: list[np.ndarray], order: np.ndarray, i: int) -> tuple[np.ndarray, int]:
    """Vectors of collection page ``i`` (deterministic) and the real page it is based on."""
    if i < len(real):
        a = int(order[i])
        return real[a], a
    rng = np.random.default_rng([SEED, SYNTH_VERSION, i])
    a, b = (int(x) for x in rng.integers(len(real), size=2))
    base, other = real[a], real[b]
    n = len(base)
    if n < 2 or len(other) < 2:  # blank page: keep it blank
        return base.copy(), a
    m = min(int(round(rng.uniform(*MIX) * n)), len(other))
    keep = np.sort(rng.choice(n, n - m, replace=False))
    take = np.sort(rng.choice(len(other), m, replace=False))
    pos = np.concatenate([keep / n, rng.random(m)])  # the mixed-in tokens land anywhere in reading order
    v = np.concatenate([base[keep], other[take]])[np.argsort(pos, kind="stable")]
    norms = np.linalg.norm(v, axis=1, keepdims=True)  # 1 for tokens, sqrt(2) for a fused encoder's windows
    v = v + NOISE * rng.standard_normal(v.shape, dtype=np.float32)
    v *= norms / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v.astype(np.float32), a


# -- shards -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    size: int
    datatype: str = "float16"
    pooled: int = 32  # centroids per page for the first stage
    first_stage_only: bool = False  # pages stored as their centroids only (scale proxy)

    @property
    def name(self) -> str:
        kind = "firststage" if self.first_stage_only else "full"
        return f"n{self.size}-{self.datatype}-k{self.pooled}-{kind}-s{SYNTH_VERSION}"

    def bytes_per_page(self, mean_vectors: float) -> float:
        """Vector bytes per page, before engine overhead."""
        width = 2 if self.datatype == "float16" else 4
        n = 0 if self.first_stage_only else mean_vectors
        return (n + self.pooled) * DIM * width


_P: dict = {}


def _init_producer(corpus_path: str, k: int, first_stage_only: bool) -> None:
    import torch

    torch.set_num_threads(1)  # two busy threads on 2 shared cores make k-means ~100x slower
    real, meta = load_corpus(Path(corpus_path))
    _P.update(real=real, meta=meta, order=real_order(len(real)), k=k, fso=first_stage_only)


def _produce(bounds: tuple[int, int]) -> list[tuple[int, np.ndarray, np.ndarray, dict]]:
    import torch

    from agree_core.pooling import pool_vectors

    real, meta, order, k = _P["real"], _P["meta"], _P["order"], _P["k"]
    out = []
    for i in range(*bounds):
        v, a = page_vectors(real, order, i)
        pooled = pool_vectors(torch.from_numpy(v), k).numpy()
        m = meta[a]
        source = m["source"] if i < len(real) else f"synthetic-{i // 500:04d}.pdf"
        payload = {"source": source, "page": int(m["page"]) if i < len(real) else i % 500 + 1,
                   "doc_id": str(uuid.uuid5(uuid.NAMESPACE_URL, source)), "text": m["text"],
                   "cells": [int(x) for x in np.arange(len(v)) % 1024], "grid": [32, 32]}
        out.append((i, pooled if _P["fso"] else v, pooled, payload))
    return out


def dir_bytes(path: Path) -> int:
    """Allocated bytes (like du): the engine preallocates sparse files."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def build_shard(spec: Spec, corpus_path: Path, rebuild: bool, min_free: float) -> dict:
    """Build (or reuse) the shard of ``spec``; returns its build record. An interrupted build
    resumes after the last flushed page (``progress.json`` keeps the time spent so far)."""
    from agree_core.index.engines.base import Point
    from agree_core.index.schema import POOLED, TOKENS

    d = SHARDS / spec.name
    record, progress = d / "build.json", d / "progress.json"
    if record.exists() and not rebuild:
        return {**json.loads(record.read_text()), "reused": True}
    prev = {"done": 0, "build_s": 0.0, "upsert_s": 0.0, "vectors": 0, "sessions": 0}
    if not rebuild and (d / "shard").exists() and progress.exists():
        prev = json.loads(progress.read_text())
    else:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    shard = _engine(d, spec)
    start = min(prev["done"], shard.count()) // BATCH * BATCH
    log(f"building {spec.name}" + (f", resuming at page {start:,}" if start else "") + " ...")
    batches = deque((lo, min(lo + BATCH, spec.size)) for lo in range(start, spec.size, BATCH))
    t0 = time.perf_counter()
    t_upsert, vectors, last_log = 0.0, 0, t0

    def save_progress(done: int) -> None:
        progress.write_text(json.dumps({
            "done": done, "build_s": prev["build_s"] + time.perf_counter() - t0,
            "upsert_s": prev["upsert_s"] + t_upsert, "vectors": prev["vectors"] + vectors,
            "sessions": prev["sessions"] + 1}))

    ctx = mp.get_context("spawn")
    with single_threaded_children(), ctx.Pool(1, initializer=_init_producer, initargs=(
            str(corpus_path), spec.pooled, spec.first_stage_only)) as pool:
        pending = deque(pool.apply_async(_produce, (batches.popleft(),))
                        for _ in range(min(3, len(batches))))  # bounded read-ahead
        while pending:
            made = pending.popleft().get()
            if batches:
                pending.append(pool.apply_async(_produce, (batches.popleft(),)))
            t = time.perf_counter()
            shard.upsert([Point(str(uuid.UUID(int=i + 1)),
                                {TOKENS: v} if spec.first_stage_only else {TOKENS: v, POOLED: p}, pl)
                          for i, v, p, pl in made])
            done = made[-1][0] + 1
            flushed = done % FLUSH_EVERY < BATCH
            if flushed:
                shard.flush()
            t_upsert += time.perf_counter() - t
            vectors += sum(len(v) for _, v, _, _ in made)
            if flushed:
                save_progress(done)
            free = shutil.disk_usage(d).free
            if free < min_free:
                shard.close()
                shutil.rmtree(d, ignore_errors=True)
                raise RuntimeError(f"stopped building {spec.name} at {done:,} pages: "
                                   f"{free / GB:.1f} GB free < {min_free / GB:.0f} GB")
            if time.perf_counter() - last_log > 60 or done == spec.size:
                last_log = time.perf_counter()
                st = _status()
                log(f"  {done}/{spec.size} pages, {last_log - t0:.0f} s, "
                    f"{(done - start) / t_upsert:.0f} pages/s in upsert, {free / GB:.1f} GB free, "
                    f"RSS anon {st['RssAnon'] / GB:.1f} GB + file {st['RssFile'] / GB:.1f} GB")
    t = time.perf_counter()
    shard.flush()
    shard.close()
    t_flush = time.perf_counter() - t
    t_upsert += t_flush
    save_progress(spec.size)
    total = json.loads(progress.read_text())
    info = {"spec": asdict(spec), "pages": spec.size, "vectors": total["vectors"],
            "build_s": round(total["build_s"], 1), "upsert_s": round(total["upsert_s"], 1),
            "sessions": total["sessions"], "flush_s": round(t_flush, 1),
            "upsert_pages_per_s": round(spec.size / total["upsert_s"], 1),
            "build_pages_per_s": round(spec.size / total["build_s"], 1),
            "disk_bytes": dir_bytes(d / "shard"), "segments_bytes": dir_bytes(d / "shard" / "segments"),
            "wal_bytes": dir_bytes(d / "shard" / "wal")}
    record.write_text(json.dumps(info, indent=1))
    log(f"built {spec.name} in {info['build_s'] / 60:.1f} min ({info['disk_bytes'] / GB:.2f} GB)")
    return {**info, "reused": False}


# -- the search worker (a fresh process per shard) ----------------------------------------------
def _status() -> dict[str, int]:
    out = {}
    for line in open("/proc/self/status"):
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) * 1024
    return out


def _mapped(prefix: str) -> int:
    """Resident bytes of the files under ``prefix`` mapped by this process (from smaps; a
    file mapped twice counts once)."""
    per_file: dict[str, int] = {}
    name = None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if not parts:
            continue
        if not parts[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
            name = parts[5] if len(parts) > 5 else None
        elif parts[0] == "Rss:" and name and name.startswith(prefix):
            per_file[name] = max(per_file.get(name, 0), int(parts[1]) * 1024)
    return sum(per_file.values())


def _engine(d: Path, spec: Spec):
    """The embedded engine of a benchmark shard (the index's own schema)."""
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.schema import vector_specs

    return EdgeEngine(d / "shard", vector_specs(DIM, spec.datatype, pooled=not spec.first_stage_only))


def _search(shard, q: np.ndarray, candidates: int | None):
    """As ``PageIndex.search_vectors`` searches an index without encodings: the centroid scan
    with the query's heaviest rows (session 11), then exact MaxSim."""
    from agree_core.index.first_stage import middle_rows
    from agree_core.index.schema import POOLED, TOKENS

    return shard.search(q, 10, using=TOKENS, prefetch=POOLED if candidates else None,
                        candidates=candidates or 0, exclude=["cells", "text", "terms"],
                        coarse_queries=[middle_rows(q)] if candidates else None)


def worker(spec: Spec, qids: list[str], candidates: list[int], exact_budget: float) -> dict:
    from agree_core.encoders import load_encoder

    qs = {q["qid"]: q["query"] for q in load_questions()}
    mem = {"start": _status()}
    import torch

    enc = load_encoder("text-layer")
    enc.encode_queries(["warm up"])  # loads the model
    threads = torch.get_num_threads()
    encode_ms: dict[int, list[float]] = {threads: [], 1: []}
    vectors = []
    for n in dict.fromkeys([threads, 1]):  # torch's default threads, then one
        torch.set_num_threads(n)
        vectors = []
        for qid in qids:
            t = time.perf_counter()
            vectors.append(enc.encode_queries([qs[qid]])[0].float().numpy())
            encode_ms[n].append((time.perf_counter() - t) * 1000)
    torch.set_num_threads(threads)
    mem["model"] = _status()
    t = time.perf_counter()
    shard = _engine(SHARDS / spec.name, spec)
    open_ms = (time.perf_counter() - t) * 1000
    mem["open"] = _status()
    methods = {"exact": None, **{f"c{c}": c for c in ([] if spec.first_stage_only else candidates)}}
    times = {m: [] for m in methods}
    tops: dict[str, list[list[str]]] = {m: [] for m in methods}
    first_ms = {}
    two = {m: c for m, c in methods.items() if m != "exact"}
    # The two-stage searches first, round-robin; exact MaxSim last: at sizes beyond RAM each exact
    # query evicts the page cache and would make the next call look cold.
    for m, c in [*two.items(), ("exact", None)]:  # first call, kept apart: first touch of the files
        t = time.perf_counter()
        _search(shard, vectors[0], c)
        first_ms[m] = (time.perf_counter() - t) * 1000

    def timed(m: str, q: np.ndarray) -> float:
        t = time.perf_counter()
        hits = _search(shard, q, methods[m])
        dt = time.perf_counter() - t
        times[m].append(dt * 1000)
        tops[m].append([h.id for h in hits])
        return dt

    for q in vectors:
        for m in two:
            timed(m, q)
    spent_exact = 0.0
    for q in vectors:
        spent_exact += timed("exact", q)
        if spent_exact > exact_budget:
            break  # exact MaxSim too slow at this size for every query
    mem["end"] = _status()
    mem["shard_files"] = _mapped(str(SHARDS / spec.name))
    shard.close()
    out = {"open_ms": open_ms, "encode_ms": statistics.median(encode_ms[threads]),
           "encode_ms_1t": statistics.median(encode_ms[1]), "threads": threads, "mem": mem,
           "query_tokens": float(np.mean([len(v) for v in vectors])), "methods": {}}
    ref = tops["exact"]
    for m in methods:
        overlap = [len(set(a) & set(b)) / 10 for a, b in zip(tops[m], ref)]
        out["methods"][m] = {
            "n": len(times[m]), "median_ms": statistics.median(times[m]),
            "p90_ms": float(np.percentile(times[m], 90)), "first_ms": first_ms[m],
            "overlap": float(np.mean(overlap)), "identical": float(np.mean([o == 1.0 for o in overlap])),
            "n_ref": len(ref)}
    return out


def run_worker(spec: Spec, qids: list[str], candidates: list[int], exact_budget: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps({"spec": asdict(spec), "qids": qids,
                                                             "candidates": candidates,
                                                             "exact_budget": exact_budget})]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if res.returncode:
        raise RuntimeError(f"search worker failed for {spec.name}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- storage vs quality, in memory -------------------------------------------------------------
_Q: dict = {}


def _init_quality(corpus_path: str, queries: list[np.ndarray], proj: np.ndarray,
                  pooled: list[int]) -> None:
    import torch

    torch.set_num_threads(1)
    real, _ = load_corpus(Path(corpus_path))
    q = np.concatenate(queries)
    offsets = np.cumsum([0] + [len(x) for x in queries])[:-1]
    qp = q @ proj
    qp /= np.linalg.norm(qp, axis=1, keepdims=True)
    _Q.update(real=real, order=real_order(len(real)), q=q, qp=qp, off=offsets, proj=proj, pooled=pooled)


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _quality_chunk(bounds: tuple[int, int]) -> dict[str, np.ndarray]:
    """MaxSim scores (pages, queries) of every storage variant for pages ``bounds``."""
    import torch

    from agree_core.pooling import pool_vectors

    q, qp, off = _Q["q"], _Q["qp"], _Q["off"]

    def maxsim(v: np.ndarray, qq: np.ndarray) -> np.ndarray:
        return np.add.reduceat((v @ qq.T).max(axis=0), off)

    out: dict[str, list] = {}
    for i in range(*bounds):
        v, _ = page_vectors(_Q["real"], _Q["order"], i)
        vp = v @ _Q["proj"]
        vp /= np.maximum(np.linalg.norm(vp, axis=1, keepdims=True), 1e-12)
        row = {"f32": maxsim(v, q), "f16": maxsim(_f16(v), q), "pca128-f16": maxsim(_f16(vp), qp)}
        for k in _Q["pooled"]:
            row[f"pool{k}"] = maxsim(_f16(pool_vectors(torch.from_numpy(v), k).numpy()), q)
        row["pca128-pool32"] = maxsim(_f16(pool_vectors(torch.from_numpy(vp), 32).numpy()), qp)
        for name, s in row.items():
            out.setdefault(name, []).append(s)
    return {name: np.stack(rows) for name, rows in out.items()}


def quality_scores(corpus_path: Path, n_pages: int, queries: list[np.ndarray], proj: np.ndarray,
                   pooled: list[int], processes: int = 2) -> dict[str, np.ndarray]:
    chunks = [(lo, min(lo + 250, n_pages)) for lo in range(0, n_pages, 250)]
    ctx = mp.get_context("spawn")
    with single_threaded_children(), ctx.Pool(processes, initializer=_init_quality,
                                              initargs=(str(corpus_path), queries, proj, pooled)) as pool:
        parts = pool.map(_quality_chunk, chunks)
    return {name: np.concatenate([p[name] for p in parts]).T for name in parts[0]}  # (queries, pages)


def projection(real: list[np.ndarray], dim: int = 128) -> np.ndarray:
    """(384, dim): top principal directions of the corpus token vectors (uncentred)."""
    x = np.concatenate(real)
    w, v = np.linalg.eigh(x.T @ x)
    return v[:, np.argsort(w)[::-1][:dim]].astype(np.float32)


def top(scores: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(idx, np.argsort(-np.take_along_axis(scores, idx, 1), axis=1), 1)


def two_stage(first: np.ndarray, full: np.ndarray, candidates: int, k: int = 10) -> np.ndarray:
    cand = top(first, min(candidates, first.shape[1]))
    rescored = np.take_along_axis(full, cand, 1)
    return np.take_along_axis(cand, top(rescored, k), 1)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    ov = np.array([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)])
    return float(ov.mean()), float((ov == 1).mean())


# -- main -------------------------------------------------------------------------------------
def mem_info() -> dict[str, int]:
    out = {}
    for line in open("/proc/meminfo"):
        name, _, value = line.partition(":")
        out[name] = int(value.split()[0]) * 1024
    return out


def limits(results: list, rate: float | None, per_page: float | None, args) -> str:
    """Lines on how the cost grows with size, with the measured numbers."""
    mi = mem_info()
    out = []
    full = [(sp, b, r) for sp, b, r in results if not sp.first_stage_only and sp.datatype == args.datatype]
    for sp, b, r in full:
        m = r["methods"]
        two = ", ".join(f"{k[1:]} candidates {v['median_ms']:.0f} ms" for k, v in m.items() if k != "exact")
        out.append(f"- {sp.size:,} pages: exact MaxSim {m['exact']['median_ms']:.0f} ms "
                   f"({m['exact']['median_ms'] / sp.size * 1000:.0f} ms per 1,000 pages); two-stage: {two}; "
                   f"shard {b['disk_bytes'] / GB:.1f} GB on disk, {r['mem']['shard_files'] / GB:.1f} GB of it "
                   f"resident after the searches, opened in {r['open_ms'] / 1000:.1f} s.")
    for sp, b, r in results:
        if sp.first_stage_only:
            fs = r["methods"]["exact"]["median_ms"]
            line = (f"- {sp.size:,} pages, first stage only ({sp.size * sp.pooled / 1e6:.1f} M centroids): "
                    f"{fs:.0f} ms per query")
            if full:
                per = min(r2["methods"]["exact"]["median_ms"] / sp2.size for sp2, _, r2 in full)
                line += (f"; rescoring C pages adds about C x {per:.3f} ms while their vectors are in "
                         f"RAM (the lowest exact cost per page measured), so ~{fs + 400 * per:.0f} ms "
                         "for a two-stage search with 400 candidates")
            out.append(line + ".")
    largest = max(results, key=lambda x: x[0].size)[0].size
    if per_page:
        out.append(f"- Full vectors at {largest:,} pages: ~{largest * per_page / GB:.1f} GB on disk "
                   f"({per_page / 1e3:.0f} KB/page measured at {full[-1][0].size:,}), "
                   + (f"~{largest / rate / 60:.1f} min to build at {rate:.0f} pages/s, " if rate else "")
                   + f"against {mi['MemTotal'] / 2**30:.1f} GiB of RAM. The shard memory-maps its vectors "
                   "and reads them in at open; exact MaxSim touches every vector of every page per "
                   "query, so once they outgrow the page cache exact search is bound by disk reads, and "
                   "the pooled first stage (all centroids of all pages, brute force) grows linearly "
                   "with the page count.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="collection sizes (pages)")
    ap.add_argument("--queries", type=int, default=10, help="dev-set queries timed per size")
    ap.add_argument("--candidates", default="100,200,400,800", help="first-stage candidate counts")
    ap.add_argument("--datatype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--pooled", type=int, default=32, help="centroids per page (first stage)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild cached shards of these sizes")
    ap.add_argument("--max-build-minutes", type=float, default=25.0,
                    help="above this estimated build time a size is measured first-stage only")
    ap.add_argument("--min-free-gb", type=float, default=15.0, help="disk to leave free")
    ap.add_argument("--exact-budget", type=float, default=240.0,
                    help="seconds of exact MaxSim per size (fewer queries when exact is slow)")
    ap.add_argument("--quality-pages", type=int, default=10000,
                    help="pages for the storage/quality table (0: skip it)")
    ap.add_argument("--no-float32-check", action="store_true",
                    help="skip the float32 shard at 1,000 pages")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        w = json.loads(args.worker)
        print(json.dumps(worker(Spec(**w["spec"]), w["qids"], w["candidates"], w["exact_budget"])))
        return

    from agree_core.encoders import load_encoder

    sizes = [int(s) for s in args.sizes.split(",") if s]
    candidates = [int(c) for c in args.candidates.split(",") if c]
    min_free = args.min_free_gb * GB
    print(f"# Search benchmark\n\n{machine()}; RAM {mem_info()['MemTotal'] / 2**30:.1f} GiB, "
          f"{shutil.disk_usage(DATA).free / GB:.0f} GB free disk\n")
    enc = load_encoder("text-layer")
    corpus_path, real, meta = real_corpus(enc)
    counts = np.array([len(v) for v in real])
    mean_vectors = float(counts.mean())
    questions = load_questions()
    step = max(1, len(questions) // max(args.queries, 1))
    qids = [q["qid"] for q in questions[::step][:args.queries]]
    print(f"Corpus: {len(real)} real pages, {counts.mean():.0f} vectors/page (median "
          f"{np.median(counts):.0f}, p90 {np.percentile(counts, 90):.0f}, max {counts.max()}) of "
          f"{DIM} dims; synthetic pages keep that distribution. Queries: {len(qids)} dev-set "
          "questions.\n")

    # 1. scale
    specs = [Spec(s, args.datatype, args.pooled) for s in sizes]
    if 1000 in sizes and args.datatype != "float32" and not args.no_float32_check:
        specs.insert(1, Spec(1000, "float32", args.pooled))
    for size in sizes:  # a cached first-stage-only shard next to the full one: the first stage alone
        fso = Spec(size, args.datatype, args.pooled, first_stage_only=True)
        if all((SHARDS / x.name / "build.json").exists() for x in (fso, Spec(size, args.datatype, args.pooled))):
            specs.append(fso)
    rows, size_rows, notes, results = [], [], [], []
    rate, per_page = None, None  # build pages/s and disk bytes/page measured so far
    for spec in specs:
        if not (SHARDS / spec.name / "build.json").exists() or args.rebuild:
            est_disk = spec.size * (per_page or spec.bytes_per_page(mean_vectors) * 1.3)
            est_min = spec.size / (rate or 40.0) / 60
            free = shutil.disk_usage(DATA).free
            why = []
            if free - est_disk < min_free:
                why.append(f"needs ~{est_disk / GB:.0f} GB of disk, {free / GB:.0f} GB free "
                           f"(leaving {args.min_free_gb:.0f} GB)")
            if est_min > args.max_build_minutes:
                why.append(f"would take ~{est_min:.0f} min to build at {rate or 40.0:.0f} pages/s "
                           f"(limit {args.max_build_minutes:.0f} min)")
            if why:
                notes.append(f"{spec.size:,} pages, full vectors: not built: " + "; ".join(why) +
                             f". Measured first-stage only ({spec.pooled} centroids per page).")
                spec = Spec(spec.size, spec.datatype, spec.pooled, first_stage_only=True)
        try:
            b = build_shard(spec, corpus_path, args.rebuild, min_free)
        except RuntimeError as e:
            notes.append(str(e))
            continue
        if not spec.first_stage_only and spec.datatype == args.datatype:
            rate = b["build_pages_per_s"]
            per_page = b["disk_bytes"] / spec.size
        log(f"searching {spec.name} ...")
        r = run_worker(spec, qids, candidates, args.exact_budget)
        mem = r["mem"]
        label = f"{spec.size:,}" + ("" if spec.datatype == args.datatype else f" {spec.datatype}") + \
            (" first stage only" if spec.first_stage_only else "")
        size_rows.append({
            "pages": label,
            "build min": f"{b['build_s'] / 60:.1f}" + (" (cached)" if b["reused"] else ""),
            "upsert pages/s": f"{b['upsert_pages_per_s']:.0f}",
            "disk GB": f"{b['disk_bytes'] / GB:.2f}",
            "KB/page": f"{b['disk_bytes'] / spec.size / 1e3:.0f}",
            "WAL MB": f"{b['wal_bytes'] / 1e6:.0f}",
            "open ms": round(r["open_ms"]),
            "RSS model MB": round(mem["model"]["VmRSS"] / 2**20),
            "+ shard heap MB": round((mem["end"]["RssAnon"] - mem["model"]["RssAnon"]) / 2**20),
            "+ shard files resident MB": round(mem["shard_files"] / 2**20),
            "query encode ms": f"{r['encode_ms']:.0f} ({r['encode_ms_1t']:.0f})",
        })
        for m, s in r["methods"].items():
            rows.append({"pages": label, "search": "exact MaxSim" if m == "exact" else
                         f"pooled {spec.pooled} -> {m[1:]} -> exact",
                         "median ms": round(s["median_ms"]), "p90 ms": round(s["p90_ms"]),
                         "1st call ms": round(s["first_ms"]), "queries": s["n"],
                         "top-10 overlap": round(s["overlap"], 3) if m != "exact" else "ref",
                         "same top-10": round(s["identical"], 2) if m != "exact" else "ref"})
        if spec.first_stage_only:
            rows[-1]["search"] = f"first stage: exact over {spec.pooled} centroids/page"
        results.append((spec, b, r))
        print(f"\n(done {label}: {json.dumps(size_rows[-1])})", file=sys.stderr)

    if rows:
        print("## Search latency (one query, model loaded, query encoding excluded)\n")
        print(table(rows, ["pages", "search", "median ms", "p90 ms", "1st call ms", "queries",
                           "top-10 overlap", "same top-10"]))
        print("\n## Build, storage and memory\n")
        print(table(size_rows, list(size_rows[0]) if size_rows else []))
        print("\nMemory of the search process: 'RSS model' after loading the encoder and encoding the "
              "queries; then what opening and searching the shard added: heap (anonymous memory) and "
              "resident pages of the memory-mapped shard files (page cache: shared, and dropped by the "
              "kernel under pressure, at the cost of disk reads). Disk: allocated bytes of the shard "
              "directory (vectors, payload, indexes, write-ahead log). Query encode: median with "
              "torch's default threads (one thread in brackets).")
    if notes:
        print("\nNot measured as asked:\n" + "\n".join(f"- {n}" for n in notes))
    if results:
        print("\n## What limits the largest size\n")
        print(limits(results, rate, per_page, args))

    # 3. storage vs quality
    if args.quality_pages:
        n = max(args.quality_pages, len(real))
        pooled = sorted({16, 32, 64, args.pooled})
        cache = CACHE / (f"search_quality_{corpus_path.stem}_n{n}_s{SYNTH_VERSION}_"
                         f"k{'-'.join(map(str, pooled))}.npz")
        if cache.exists():
            s = dict(np.load(cache))
        else:
            log(f"storage/quality: scoring {n} pages x {len(questions)} queries in memory ...")
            t = time.perf_counter()
            qv = [x.float().numpy() for x in enc.encode_queries([q["query"] for q in questions])]
            s = quality_scores(corpus_path, n, qv, projection(real), pooled)
            np.savez(cache, **s)
            log(f"  {time.perf_counter() - t:.0f} s (scores cached in {cache})")
        order = real_order(len(real))
        keys = [(meta[int(order[i])]["source"], int(meta[int(order[i])]["page"])) for i in range(len(real))]
        keys += [("synthetic", i) for i in range(len(real), n)]  # distractors: never relevant
        ref = top(s["f32"], 10)

        def metrics(ranked: np.ndarray) -> dict[str, float]:
            return evaluate({q["qid"]: [keys[j] for j in ranked[i]] for i, q in enumerate(questions)}, questions)

        def row(name, full, first=None, c=None, bytes_pp=0.0):
            r10 = two_stage(first, full, c) if first is not None else top(full, 10)
            sr = full[:, :len(real)]
            ev = metrics(two_stage(first[:, :len(real)], sr, c) if first is not None else top(sr, 10))
            ev_n = metrics(r10)
            ov, same = agreement(r10, ref)
            return {"variant": name, "KB/page": f"{bytes_pp / 1e3:.0f}",
                    f"nDCG@5 ({len(real):,})": round(ev["nDCG@5"], 3),
                    f"recall@10 ({len(real):,})": round(ev["recall@10"], 3),
                    f"nDCG@5 ({n:,})": round(ev_n["nDCG@5"], 3), f"recall@10 ({n:,})": round(ev_n["recall@10"], 3),
                    f"top-10 overlap ({n:,})": round(ov, 3), f"same top-10 ({n:,})": round(same, 2)}

        mv = mean_vectors
        q_rows = [row("exact float32", s["f32"], bytes_pp=mv * DIM * 4),
                  row("exact float16", s["f16"], bytes_pp=mv * DIM * 2),
                  row("exact 128-d float16", s["pca128-f16"], bytes_pp=mv * 128 * 2)]
        for k in pooled:
            for c in candidates:
                q_rows.append(row(f"float16, pooled {k} -> {c} -> exact", s["f16"], s[f"pool{k}"], c,
                                  (mv + k) * DIM * 2))
        q_rows.append(row("128-d float16, pooled 32 -> 400 -> exact", s["pca128-f16"],
                          s["pca128-pool32"], 400, (mv + 32) * 128 * 2))
        q_rows.append(row(f"pooled {args.pooled} only (no rescoring)", s[f"pool{args.pooled}"],
                          bytes_pp=args.pooled * DIM * 2))
        print(f"\n## Storage vs quality (in memory; {len(questions)} dev-set queries)\n")
        print(f"KB/page: vector bytes only (the shard adds payload and index overhead, see above). "
              f"nDCG@5 / recall@10: dev-set labels, over the {len(real):,} real pages alone and over "
              f"{n:,} pages (synthetic pages count as irrelevant; many are near-duplicates of real "
              f"pages, so they can push the labelled page down). Overlap and same top-10: against "
              f"exact float32 MaxSim over the {n:,} pages.\n")
        print(table(q_rows, list(q_rows[0])))


if __name__ == "__main__":
    main()
