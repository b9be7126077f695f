"""Where `agree index` spends its CPU, stage by stage, in this process.

    .venv/bin/python benchmarks/profile_indexing.py PDF_OR_FOLDER... --index DIR

Runs the real command (``agree_core.cli.main``) with timers wrapped around its stages and
prints, per stage, the CPU seconds of the thread that ran it and the wall seconds: start-up
(imports, opening the index, loading the encoder), the encoder (``encode_pages``; ONNX
Runtime's own threads are counted only in the process total), building the points (pooled
centroids, MUVERA encodings, payload), the engine's upserts, flushes and optimize; and the
CPU of the poppler processes (rendering, text layer). The page producer thread and ONNX
Runtime's pool are the process total less the stages on the main thread. Prints the CPU
kind and the load average: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

START = time.perf_counter()


def _cpu() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--index", required=True)
    args = ap.parse_args()
    import torch  # noqa: F401 - timed on its own: every agree command pays it

    torch_cpu = _cpu()[0]
    from agree_core import cli
    from agree_core.encoders import text_layer
    from agree_core.index import ingest, page_index
    from agree_core.index.engines import edge

    stats: dict[str, list[float]] = {}

    def wrap(owner, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*a, **kw):
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return real(*a, **kw)
            finally:
                s = stats.setdefault(label, [0.0, 0.0, 0])
                s[0] += time.thread_time() - cpu
                s[1] += time.perf_counter() - wall
                s[2] += 1

        setattr(owner, name, timed)

    wrap(text_layer.TextLayerEncoder, "encode_pages", "encoder: encode_pages")
    wrap(ingest, "_points", "points: centroids, MUVERA, payload")
    wrap(edge.EdgeEngine, "upsert", "engine: upsert")
    wrap(edge.EdgeEngine, "flush", "engine: flush")
    wrap(edge.EdgeEngine, "optimize", "engine: optimize")
    marks: dict[str, tuple] = {}
    real_add = page_index.PageIndex.add

    def add(self, *a, **kw):
        marks["start"] = (*_cpu(), time.perf_counter())
        try:
            return real_add(self, *a, **kw)
        finally:
            marks["end"] = (*_cpu(), time.perf_counter())

    page_index.PageIndex.add = add
    rc = cli.main(["-q", "index", *args.paths, "--index", args.index])
    own, kids = _cpu()
    (own0, kids0, wall0), (own1, kids1, wall1) = marks["start"], marks["end"]
    from common import machine

    print(f"{machine()}; exit code {rc}\n")
    print(f"start-up (imports, index, encoder): {own0:.2f} CPU s ({torch_cpu:.2f} of it importing torch), "
          f"{wall0 - START:.1f} s wall")
    print(f"add: {own1 - own0:.2f} CPU s in this process, {kids1 - kids0:.2f} in poppler, {wall1 - wall0:.1f} s wall")
    main_thread = 0.0
    for label, (cpu, wall, calls) in stats.items():
        main_thread += cpu
        print(f"  {label}: {cpu:.2f} CPU s (its thread), {wall:.2f} s wall, {calls} calls")
    print(f"  the rest (page producer thread, ONNX Runtime's pool, bookkeeping): {own1 - own0 - main_thread:.2f} CPU s")
    print(f"total: {own + kids:.2f} CPU s, {time.perf_counter() - START:.1f} s wall; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
