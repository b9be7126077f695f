"""Stored bytes per page against dev-set quality: token pooling and vector datatypes.

    .venv/bin/python benchmarks/bench_storage.py                       # every variant
    .venv/bin/python benchmarks/bench_storage.py --factors 1,2,3 --datatypes float16,turbo8

The dev-set pages (``common.corpus_pages()``) are encoded once with the default encoder and
cached (vectors, cells, terms: ``benchmarks/data/cache/storage_corpus_*``). For each variant
(``pool_factor`` x ``vector_datatype``) a Qdrant Edge shard is built through the product's
point schema (``schema.build_point``: pooling, first-stage centroids, payload), every dev-set
question is IDF-weighted as ``PageIndex.encode_queries`` does (term counts from the stored
pages' terms, ``scoring.idf_weights``) and answered by ``EdgeEngine.search_batch`` (exact
MaxSim: the dev set is under the two-stage threshold), then scored with the metrics of
``agree eval``. Bytes: vector bytes per page as ``agree info --json`` reports them
(``vector_bytes_per_page``) and the allocated bytes of the shard's segments. Top-10 overlap:
against the float32, unpooled variant. Score consistency (``--consistency``): for every
question's top 10, the relative difference between the engine's score and MaxSim recomputed
from the vectors the engine returns (what evidence, heatmaps and the reranker read), and the
engine's scores after the stored vectors are written again into a new shard (what ``agree
migrate`` does): the tolerances of ``agree_core.index.config.SCORE_TOLERANCE``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, corpus_pages, evaluate, load_questions, machine, table  # noqa: E402

CACHE = DATA / "cache"
SHARDS = DATA / "storage-shards"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def subset(pages: list, questions: list[dict], n: int) -> list:
    """Every page a question names, then pages drawn at random (fixed seed) up to ``n``
    (0: all pages)."""
    if not n or n >= len(pages):
        return pages
    relevant = {(r["doc"], int(r["page"])) for q in questions for r in q["relevant"]}
    keep = [i for i, p in enumerate(pages) if (p.source.name, p.page_no) in relevant]
    rest = [i for i in range(len(pages)) if i not in set(keep)]
    rng = np.random.default_rng(1234)
    extra = rng.choice(len(rest), max(0, n - len(keep)), replace=False) if n > len(keep) else []
    return [pages[i] for i in sorted(keep + [rest[j] for j in extra])]


def corpus(enc, n_pages: int, batch: int = 32) -> tuple[list, list[dict]]:
    """(PageEmbedding per dev-set page, their keys), encoded once and cached."""
    import torch
    from safetensors.numpy import load_file, save_file

    from agree_core.encoders import PageEmbedding

    tag = hashlib.sha1(json.dumps([enc.name, enc.config], sort_keys=True).encode()).hexdigest()[:10]
    path = CACHE / f"storage_corpus_{tag}_n{n_pages}_v2.safetensors"  # v2: with the unpooled mask
    if not path.exists():
        pages = subset(corpus_pages(), load_questions(), n_pages)
        vecs, cells, terms, unpooled, meta = [], [], [], [], []
        t0 = time.perf_counter()
        for i in range(0, len(pages), batch):
            chunk = pages[i:i + batch]
            for p, e in zip(chunk, enc.encode_pages(chunk)):
                vecs.append(e.vectors.float().numpy())
                cells.append(e.cells.numpy().astype(np.int64))
                terms.append(e.terms.numpy().astype(np.int64) if e.terms is not None
                             else np.full(len(e.cells), -1, np.int64))
                unpooled.append(e.unpooled.numpy().astype(np.uint8) if e.unpooled is not None
                                else np.zeros(len(e.cells), np.uint8))
                meta.append({"source": p.source.name, "page": p.page_no, "grid": list(e.grid),
                             "text": e.text or ""})
            log(f"  encoded {len(vecs)}/{len(pages)} pages ({time.perf_counter() - t0:.0f} s)")
        off = np.cumsum([0] + [len(v) for v in vecs]).astype(np.int64)
        CACHE.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": np.concatenate(vecs).astype(np.float32), "offsets": off,
                   "cells": np.concatenate(cells), "terms": np.concatenate(terms),
                   "unpooled": np.concatenate(unpooled)}, str(path))
        path.with_suffix(".json").write_text(json.dumps(meta))
    t = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    off = t["offsets"]
    embs = []
    for i, m in enumerate(meta):
        a, b = int(off[i]), int(off[i + 1])
        tr = torch.from_numpy(t["terms"][a:b].copy())
        keep = torch.from_numpy(t["unpooled"][a:b].astype(bool))  # a window's sentence vector
        embs.append(PageEmbedding(torch.from_numpy(t["vectors"][a:b].copy()), tuple(m["grid"]),
                                  torch.from_numpy(t["cells"][a:b].copy()), m["text"],
                                  tr if (b == a or int(tr[0]) >= 0) else None, keep if keep.any() else None))
    return embs, meta


def build(name: str, embs: list, meta: list[dict], factor: int, datatype: str, pooled: int,
          dim: int, first_stage: dict | None = None) -> tuple[object, dict]:
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.schema import INTEGER_FIELDS, KEYWORD_FIELDS, build_point, vector_specs

    d = SHARDS / name
    shutil.rmtree(d, ignore_errors=True)
    engine = EdgeEngine(d, vector_specs(dim, datatype, pooled > 0, first_stage), KEYWORD_FIELDS, INTEGER_FIELDS)
    t0 = time.perf_counter()
    t_pool = 0.0
    vectors = 0
    for i in range(0, len(embs), 64):
        t = time.perf_counter()
        points = [build_point(str(uuid.UUID(int=j + 1)), embs[j], pooled=pooled, pool_factor=factor,
                              text=meta[j]["text"], source=meta[j]["source"], page=int(meta[j]["page"]),
                              doc_id=meta[j]["source"], meta={}, image={"image": ""},
                              first_stage=first_stage)
                  for j in range(i, min(i + 64, len(embs)))]
        t_pool += time.perf_counter() - t
        vectors += sum(p.payload["nvec"] for p in points)
        engine.upsert(points)
    engine.flush()
    build_s = time.perf_counter() - t0
    from types import SimpleNamespace

    from agree_core.index.config import VECTOR_DATATYPES
    from agree_core.index.sizes import allocated_bytes, fde_bytes

    fde = fde_bytes(SimpleNamespace(dim=dim, first_stage=first_stage or {}))  # as agree info counts it
    return engine, {"build_s": build_s, "point_s": t_pool, "vectors": vectors,
                    "vector_bytes_per_page": vectors * dim * VECTOR_DATATYPES[datatype] / len(embs) + fde,
                    "segments_bytes": allocated_bytes(d / "segments") if (d / "segments").exists()
                    else allocated_bytes(d)}


def score_consistency(engine, queries: list, found: list, name: str, datatype: str, dim: int) -> dict:
    """Relative differences over every question's top 10: the engine's score against MaxSim
    over the vectors it returns, and against its score once those vectors are stored again
    (a migration), with the top-10 overlap of the re-stored shard."""
    from agree_core.index.engines.base import Point
    from agree_core.index.engines.edge import EdgeEngine
    from agree_core.index.schema import POOLED, SEARCH_EXCLUDE, TOKENS, vector_specs

    ids = sorted({h.id for hits in found for h in hits})
    stored = engine.retrieve(ids, payload=False, vectors=[TOKENS])
    read = []
    for q, hits in zip(queries, found):
        for h in hits:
            v = stored[h.id].vectors[TOKENS]
            read.append(abs(float((q @ v.T).max(axis=1).sum()) - h.score) / abs(h.score))
    again = SHARDS / (name + "-again")
    shutil.rmtree(again, ignore_errors=True)
    copy = EdgeEngine(again, vector_specs(dim, datatype, True))
    batch = []
    for p in engine.scroll(vectors=[TOKENS, POOLED], payload=False):
        batch.append(Point(p.id, p.vectors, {}))
        if len(batch) == 256:
            copy.upsert(batch)
            batch = []
    copy.upsert(batch)
    found2 = copy.search_batch(queries, 10, using=TOKENS, exclude=SEARCH_EXCLUDE)
    copy.close()
    shutil.rmtree(again, ignore_errors=True)
    moved, overlap = [], []
    for a, b in zip(found, found2):
        by_id = {h.id: h.score for h in b}
        moved += [abs(by_id[h.id] - h.score) / abs(h.score) for h in a if h.id in by_id]
        overlap.append(len({h.id for h in a} & set(by_id)) / max(1, len(a)))
    return {"read vs engine max rel": f"{max(read):.1e}", "read p99": f"{np.quantile(read, 0.99):.1e}",
            "re-stored max rel": f"{max(moved):.1e}", "re-stored p99": f"{np.quantile(moved, 0.99):.1e}",
            "re-stored top-10 overlap": round(float(np.mean(overlap)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", default="1,2,3")
    ap.add_argument("--datatypes", default="float32,float16,turbo8,turbo4")
    ap.add_argument("--pooled", type=int, default=32, help="first-stage centroids per page")
    ap.add_argument("--no-fde", action="store_true",
                    help="without the MUVERA encoding new indexes store (IndexConfig.first_stage)")
    ap.add_argument("--pages", type=int, default=400,
                    help="dev-set pages: every page a question names plus random others (0: all 1,816)")
    ap.add_argument("--encode-only", action="store_true")
    ap.add_argument("--consistency", action="store_true",
                    help="also measure engine score vs stored-vector MaxSim and after a re-store")
    args = ap.parse_args()

    import torch

    from agree_core.encoders import load_encoder
    from agree_core.index.config import IndexConfig
    from agree_core.index.schema import SEARCH_EXCLUDE, TOKENS
    from agree_core.scoring import idf_weights

    print(f"# Storage vs quality\n\n{machine()}\n")
    enc = load_encoder("text-layer")
    embs, meta = corpus(enc, args.pages)
    if args.encode_only:
        return
    questions = load_questions()
    df: dict[int, int] = {}
    for e in embs:
        for t in set(e.terms.tolist() if e.terms is not None else ()):
            df[t] = df.get(t, 0) + 1
    qtexts = [q["query"] for q in questions]
    t = time.perf_counter()
    qv = enc.encode_queries(qtexts)
    encode_ms = (time.perf_counter() - t) * 1000 / len(qtexts)
    # as PageIndex.encode_queries: vectors past the terms (the window-fused sentence vector) keep their scale
    queries = [torch.cat([v[:len(tt)] * idf_weights(tt, df, len(embs))[:, None], v[len(tt):]]).float().numpy()
               for v, tt in zip(qv, enc.encode_query_terms(qtexts))]
    keys = [(m["source"], int(m["page"])) for m in meta]
    counts = np.array([len(e.cells) for e in embs])
    print(f"{len(embs)} real pages, {counts.mean():.0f} vectors/page (median {np.median(counts):.0f}); "
          f"{len(questions)} dev-set questions, IDF-weighted; query encoding {encode_ms:.0f} ms/query "
          "(batched, reported apart).\n")
    rows, ref = [], None
    float_scores: dict[int, list[dict[str, float]]] = {}  # pool factor -> the float16 run's scores
    for dt in args.datatypes.split(","):
        for f in (int(x) for x in args.factors.split(",")):
            if dt == "float32" and f > 1 and rows:
                continue  # float32 is the reference, unpooled
            name = f"p{f}-{dt}"
            log(f"building {name} ...")
            first_stage = None if args.no_fde else IndexConfig("x", {}, enc.dim).first_stage  # the default
            engine, b = build(name, embs, meta, f, dt, args.pooled, enc.dim, first_stage)
            t = time.perf_counter()
            found = engine.search_batch(queries, 10, using=TOKENS, exclude=SEARCH_EXCLUDE)
            search_ms = (time.perf_counter() - t) * 1000 / len(queries)
            consistency = score_consistency(engine, queries, found, name, dt, enc.dim) if args.consistency else {}
            engine.close()
            shutil.rmtree(SHARDS / name, ignore_errors=True)
            if args.consistency:
                scores = [{h.id: h.score for h in r} for r in found]
                if dt == "float16":
                    float_scores[f] = scores
                elif f in float_scores:  # the same pages scored from float16 vectors
                    moved = [abs(a[i] - b[i]) / abs(b[i]) for a, b in zip(scores, float_scores[f])
                             for i in a if i in b]
                    consistency["vs float16 max rel"] = f"{max(moved):.1e}"
                    consistency["vs float16 p99"] = f"{np.quantile(moved, 0.99):.1e}"
            ranked = [[uuid.UUID(s.id).int - 1 for s in r] for r in found]
            if ref is None:
                ref = ranked
            ev = evaluate({q["qid"]: [keys[j] for j in r] for q, r in zip(questions, ranked)}, questions)
            overlap = np.mean([len(set(a) & set(r)) / 10 for a, r in zip(ranked, ref)])
            rows.append({"pool factor": f, "datatype": dt,
                         "vectors/page": round(b["vectors"] / len(embs)),
                         "vector KB/page": round(b["vector_bytes_per_page"] / 1e3, 1),
                         "segments KB/page": round(b["segments_bytes"] / len(embs) / 1e3, 1),
                         "nDCG@5": round(ev["nDCG@5"], 3), "recall@10": round(ev["recall@10"], 3),
                         "nDCG@1": round(ev["nDCG@1"], 3),
                         **{k: round(v, 3) for k, v in ev.items() if k.startswith("nDCG@5 ")},
                         "top-10 overlap vs first row": round(overlap, 3),
                         "build s": round(b["build_s"], 1), "of it pooling s": round(b["point_s"], 1),
                         "exact search ms/query": round(search_ms), **consistency})
            log(json.dumps(rows[-1]))
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
