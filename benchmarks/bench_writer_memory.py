"""The writing process's memory during one long `agree index` run (``PageIndex.add``).

    .venv/bin/python benchmarks/bench_writer_memory.py --docs 40        # 4,000 pages

Writes ``--docs`` synthetic text PDFs of ``--pages-per-doc`` pages (bench_serve's seeded
words), then indexes the folder in one ``PageIndex.add`` call with the defaults, as ``agree
index FOLDER`` does, and prints the process's anonymous resident memory (RssAnon: the heap,
not the index files in the page cache) every ``--every`` pages written. A writer whose heap
grows with the pages written would run out of memory on a large folder; one whose heap stays
flat can index any number of pages in one run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import write_pdf  # noqa: E402
from common import machine  # noqa: E402


def rss_anon_mb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--pages-per-doc", type=int, default=100)
    ap.add_argument("--every", type=int, default=500, help="pages between two readings")
    args = ap.parse_args()
    from agree_core.index import PageIndex

    print(machine(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-writer-memory-"))
    try:
        docs = work / "docs"
        docs.mkdir()
        rng = random.Random(1)
        for d in range(args.docs):
            write_pdf(docs / f"d{d:03d}.pdf", args.pages_per_doc, rng)
        rows: list[tuple[int, int, float, float]] = []
        t0, c0, last = time.perf_counter(), time.process_time(), -args.every

        def progress(done: int, total: int) -> None:
            nonlocal last
            if done - last >= args.every or (done == total and done != last):
                last = done
                rows.append((done, rss_anon_mb(), time.perf_counter() - t0, os.getloadavg()[0]))

        before = rss_anon_mb()
        with PageIndex.open(work / "index") as index:
            opened = rss_anon_mb()
            report = index.add([docs], progress=False, on_progress=progress)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"\n{report.pages} pages in one add: {wall:.0f} s, {cpu:.0f} CPU s; RssAnon {before} MB before "
              f"opening the index, {opened} MB open\n")
        print("| pages written | RssAnon MB | s | load |\n|---:|---:|---:|---:|")
        for done, mb, s, load in rows:
            print(f"| {done:,} | {mb} | {s:.0f} | {load:.1f} |")
        # from the first reading after pages were written (the model and the pipeline loaded)
        # to the highest one after it
        steady = [r for r in rows if r[0] > 0]
        if len(steady) > 1:
            top = max(steady[1:], key=lambda r: r[1])
            grown = (top[1] - steady[0][1]) * 1024 / max(1, top[0] - steady[0][0])
            print(f"\nheap growth from {steady[0][0]:,} pages ({steady[0][1]} MB) to the highest reading after "
                  f"({top[1]} MB at {top[0]:,}): {grown:.1f} KB a page written")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
