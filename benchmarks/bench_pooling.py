"""Cost of token pooling at indexing time: CPU ms per page of ``schema.build_point`` (token
pooling, the 32 first-stage centroids and the payload; no MUVERA encoding) and of
``pool_tokens`` alone, on the dev-set pages ``bench_storage.py`` caches.

    .venv/bin/python benchmarks/bench_pooling.py                 # this tree
    .venv/bin/python benchmarks/bench_pooling.py --before 35954e0  # and agree_core/pooling.py at a git revision, interleaved

CPU time of the process (all its threads), not wall time: on a machine shared with other
jobs wall time says more about the load than about the code. Each variant runs three passes
over the pages, interleaved with the others; the median pass is reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_storage import corpus  # noqa: E402
from common import machine, table  # noqa: E402


def pooling_at(rev: str):
    """``agree_core/pooling.py`` as it was at git revision ``rev``, as a module."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:agree_core/pooling.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"pooling_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"pooling_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=400, help="as bench_storage.py --pages (its cache)")
    ap.add_argument("--before", default=None, metavar="REV", help="also time pooling.py at this git revision")
    ap.add_argument("--factors", default="1,3")
    args = ap.parse_args()

    import agree_core.index.schema as schema
    import agree_core.pooling as current
    from agree_core.encoders import load_encoder

    embs, meta = corpus(load_encoder("text-layer"), args.pages)
    print(f"# Pooling cost\n\n{machine()}; load average at start {os.getloadavg()[0]:.1f}\n")
    variants = {"this tree": current}
    if args.before:
        variants = {f"at {args.before}": pooling_at(args.before), **variants}

    def build_points(mod, factor: int) -> float:
        schema.pool_tokens, schema.pool_vectors = mod.pool_tokens, mod.pool_vectors
        t = time.process_time()
        for j, e in enumerate(embs):
            schema.build_point("00000000-0000-0000-0000-000000000001", e, pooled=32, pool_factor=factor,
                               text=meta[j]["text"], source="x", page=1, doc_id="x", meta={}, image={"image": ""})
        return (time.process_time() - t) * 1000 / len(embs)

    def pool_alone(mod, factor: int) -> float:
        t = time.process_time()
        for e in embs:
            mod.pool_tokens(e.vectors, factor, keep=e.unpooled)
        return (time.process_time() - t) * 1000 / len(embs)

    factors = [int(f) for f in args.factors.split(",")]
    runs: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(3):
        for name, mod in variants.items():
            for f in factors:
                runs.setdefault((name, "build_point", f), []).append(build_points(mod, f))
                if f > 1:
                    runs.setdefault((name, "pool_tokens", f), []).append(pool_alone(mod, f))
    schema.pool_tokens, schema.pool_vectors = current.pool_tokens, current.pool_vectors
    rows = [{"pooling.py": name, "what": what, "pool factor": f, "CPU ms/page (median)": round(float(np.median(v)), 2),
             "passes": ", ".join(f"{x:.1f}" for x in v)} for (name, what, f), v in runs.items()]
    print(table(rows, list(rows[0])))
    print(f"\n{len(embs)} pages, {np.mean([len(e.vectors) for e in embs]):.0f} vectors/page; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
