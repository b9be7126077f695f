"""Search latency, memory and storage of the Qdrant Edge shard at 1k / 10k / 100k pages.

(WIP)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, corpus_pages, key, load_questions, machine  # noqa: E402

CACHE = DATA / "cache"
DIM = 384


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _enc_tag(enc) -> str:
    return hashlib.sha1(json.dumps([enc.name, enc.config], sort_keys=True).encode()).hexdigest()[:10]


def real_corpus(enc, batch: int = 32) -> tuple[list[np.ndarray], list[dict]]:
    """The dev-set pages encoded with ``enc`` (float32, one array per page) and their keys,
    cached in benchmarks/data/cache/ (a few minutes to make on a 2-core CPU)."""
    from safetensors.numpy import load_file, save_file

    tag = _enc_tag(enc)
    path = CACHE / f"search_corpus_{tag}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        t = load_file(str(path))
        off = t["offsets"]
        vecs = t["vectors"]
        meta = json.loads(meta_path.read_text())
        return [vecs[off[i]:off[i + 1]] for i in range(len(off) - 1)], meta
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
    meta_path.write_text(json.dumps(meta))
    log(f"encoded {len(out)} pages in {time.perf_counter() - t0:.0f} s -> {path}")
    return out, meta


if __name__ == "__main__":
    from agree_core.encoders import load_encoder

    enc = load_encoder("text-layer")
    vecs, meta = real_corpus(enc)
    n = np.array([len(v) for v in vecs])
    print(len(vecs), n.mean(), np.median(n), n.min(), n.max())
