"""Where a served search's CPU time goes: in process step by step, in the server thread by
thread, and in a client.

    .venv/bin/python benchmarks/profile_serve.py --pages 100 --queries 100 --clients 4
    .venv/bin/python benchmarks/profile_serve.py --cprofile      # + cProfile of the server's reader,
                                                                 #   event loop and one client

1. In process, on the index bench_serve builds: the steps of ``PageIndex.search_batch`` and of
   the server's answer (``search_lines``' evidence, the /search JSON), called one after the
   other as they run there, for batches of 1, 4 and 100 queries: CPU time per query
   (``time.process_time``: this process, all its threads), the memo of the last query vectors
   cleared before each batch as a new batch finds it.
2. The real ``agree serve`` (``agree_core.cli.main``, in a child process of this script that
   also writes which thread is which) under ``--clients`` client processes sending single-query
   ``/search`` requests (bench_serve's client): CPU per query of each server thread (from
   ``/proc/PID/task/TID/schedstat``) and of the clients.

Numbers are CPU time, which load inflates less than wall time; print them with the load.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_serve import _healthy, free_port, make_corpus, wait_until  # noqa: E402


# -- 1. in process -----------------------------------------------------------------------------
def in_process(index_dir: Path, queries: list[str], sizes: list[int]) -> list[dict]:
    from agree_core.evidence import PageCache
    from agree_core.index import PageIndex
    from agree_core.search_json import search_lines
    from agree_core.serve.app import _json_bytes

    index = PageIndex.open(index_dir, create=False)
    enc = index.encoder
    enc.encode_queries(queries[:2])  # loads the model
    fast = enc._fast
    spent = {"forward": 0.0}
    if fast is not None:  # the ONNX Runtime forward, timed apart
        def timed_forward(*args):
            c = time.process_time()
            try:
                return fast(*args)
            finally:
                spent["forward"] += time.process_time() - c
        enc._fast = timed_forward
    cache = PageCache()
    search_lines(index, [(1, q) for q in queries], index.search_batch(queries, 5), cache=cache)  # warm pages
    rows = []
    for size in sizes:
        steps: dict[str, float] = {}

        def step(name, fn, *args, **kw):
            c = time.process_time()
            out = fn(*args, **kw)
            steps[name] = steps.get(name, 0.0) + time.process_time() - c
            return out

        n = 0
        for rep in range(2):  # the second pass is reported
            steps.clear()
            spent["forward"] = 0.0
            rotated = queries[rep * 7:] + queries[:rep * 7]
            n = 0
            for start in range(0, len(rotated), size):
                batch = rotated[start:start + size]
                n += len(batch)
                index._last_queries = None  # a new batch: no memo
                # PageIndex.search_batch, step by step
                where = step("scope (catalog)", index.scope, None, pdf_pages_only=True)
                vectors = step("encode_queries", index.encode_queries, batch)
                vectors = step("to numpy", lambda: [q.float().numpy() for q in vectors])
                found = step("engine", index.search_vectors, vectors, 5, where, None)
                hits = step("hits (images, Hit)", lambda: (
                    lambda images: [[index._hit(s.id, s.score, s.payload, images[s.id]) for s in scored]
                                    for scored in found])(
                    index.images.local_paths({s.id: s.payload for scored in found for s in scored})))
                # what the server adds: the lines with evidence, the /search JSON
                lines = step("evidence (search_lines)", search_lines, index,
                             [(i, q) for i, q in enumerate(batch, 1)], hits, cache=cache)
                step("response JSON", lambda: _json_bytes({"results": [
                    {**line, "hits": [{**h, "image_url": f"/pages/{hit.page_id}/image"}
                                      for h, hit in zip(line["hits"], got)]}
                    for line, got in zip(lines, hits)]}))
        row = {"batch": size, **{k: 1000 * v / n for k, v in steps.items()}}
        row["of which ONNX forward"] = 1000 * spent["forward"] / n
        row["search_batch total"] = sum(row[k] for k in ("scope (catalog)", "encode_queries", "to numpy",
                                                        "engine", "hits (images, Hit)"))
        row["server answer total"] = row["search_batch total"] + row["evidence (search_lines)"] + row["response JSON"]
        # search_batch itself, as a whole, for comparison with the steps' sum
        c = time.process_time()
        for start in range(0, len(queries), size):
            index._last_queries = None
            index.search_batch(queries[start:start + size], 5)
        row["search_batch (called whole)"] = 1000 * (time.process_time() - c) / len(queries)
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    index.close()
    return rows


# -- 2. the server, thread by thread -------------------------------------------------------------
def serve_child(argv: list[str], threads_file: str, profile_dir: str | None) -> None:
    """Run ``agree serve`` (argv) in this process, writing ``{native thread id: name}`` of its
    Python threads to ``threads_file`` every 0.5 s; with ``profile_dir``, cProfile of the
    reader thread and of the main thread (the event loop) written there on exit."""
    def names() -> None:
        while True:
            Path(threads_file).write_text(json.dumps({t.native_id: t.name for t in threading.enumerate()}))
            time.sleep(0.5)

    threading.Thread(target=names, name="thread-names", daemon=True).start()
    if profile_dir:
        from agree_core.serve.host import IndexHost

        loop = IndexHost._read_loop

        def profiled(self):
            prof = cProfile.Profile(time.thread_time)  # CPU time, not waits
            prof.enable()
            try:
                loop(self)
            finally:
                prof.disable()
                prof.dump_stats(str(Path(profile_dir) / "reader.prof"))

        IndexHost._read_loop = profiled
        main_prof = cProfile.Profile(time.thread_time)
        main_prof.enable()
    from agree_core.cli import main

    try:
        main(argv)
    finally:
        if profile_dir:
            main_prof.disable()
            main_prof.dump_stats(str(Path(profile_dir) / "main.prof"))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of process ``pid`` (schedstat: nanoseconds on a CPU)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return out


def profiled_client(url: str, queries: list[str], barrier, results, profile: str | None) -> None:
    """bench_serve's client, with a cProfile of its loop when ``profile`` names a file."""
    from bench_serve import client

    if not profile:
        return client(url, queries, barrier, results)
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    try:
        client(url, queries, barrier, results)
    finally:
        prof.disable()
        prof.dump_stats(profile)


def server_threads(index_dir: Path, queries: list[str], n_clients: int, rng: random.Random,
                   profile_dir: Path | None) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    threads_file = index_dir.parent / "threads.json"
    cmd = [sys.executable, __file__, "--serve-child", str(threads_file)]
    if profile_dir:
        cmd += ["--profile-dir", str(profile_dir)]
    cmd += ["--", "-q", "serve", "--index", str(index_dir), "--port", str(port)]
    server = subprocess.Popen(cmd)
    try:
        wait_until(lambda: _healthy(url), 300, "agree serve")
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(n_clients), ctx.Queue()
        procs = [ctx.Process(target=profiled_client,
                             args=(url, [rng.choice(queries) for _ in queries], barrier, results,
                                   str(profile_dir / "client.prof") if profile_dir and i == 0 else None))
                 for i in range(n_clients)]
        for p in procs:
            p.start()
        before = thread_cpu(server.pid)
        got = [results.get(timeout=900) for _ in procs]
        after = thread_cpu(server.pid)
        for p in procs:
            p.join(60)
        names = {int(k): v for k, v in json.loads(threads_file.read_text()).items()}
    finally:
        server.terminate()
        server.wait(120)
    n = sum(len(g[2]) for g in got)
    wall = max(g[1] for g in got) - min(g[0] for g in got)
    per_thread: dict[str, float] = {}
    for tid, t in after.items():
        name = names.get(tid, "other (native: engine, runtime)")
        if tid == server.pid:
            name = "main (event loop: HTTP, FastAPI)"
        per_thread[name] = per_thread.get(name, 0.0) + 1000 * (t - before.get(tid, 0.0)) / n
    row = {"clients": n_clients, "queries": n, "qps": n / wall, "load": round(os.getloadavg()[0], 1),
           **{f"server {k}": v for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1])},
           "server total": sum(per_thread.values()), "clients total": 1000 * sum(g[5] for g in got) / n}
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return row


def print_profile(path: Path, title: str, top: int = 30) -> None:
    """The functions of a profile by their own CPU time, then by their CPU time with callees."""
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats(order).print_stats(top)
        print(f"\n== {title} (CPU, {order}) ==\n" + out.getvalue()[-9000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--sizes", default="1,4,100", help="in-process batch sizes")
    ap.add_argument("--cprofile", action="store_true", help="also cProfile the server and a client")
    ap.add_argument("--skip-in-process", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # as bench_serve: both sides on one torch thread
    os.environ["OMP_NUM_THREADS"] = "1"
    from common import machine

    print(f"CPU: {machine()}; load {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="profile-serve-"))
    try:
        rng = random.Random(0)
        index_dir, queries, _, _ = make_corpus(work, args.pages, 4, args.queries, rng)
        if not args.skip_in_process:
            in_process(index_dir, queries, [int(s) for s in args.sizes.split(",")])
        profile_dir = work / "profiles" if args.cprofile else None
        if profile_dir:
            profile_dir.mkdir()
        server_threads(index_dir, queries, args.clients, rng, profile_dir)
        if profile_dir:
            for name in ("reader", "main", "client"):
                if (profile_dir / f"{name}.prof").exists():
                    print_profile(profile_dir / f"{name}.prof", name)
        print(f"load {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        rest = sys.argv[2:]
        threads_file = rest.pop(0)
        profile_dir = None
        if rest[0] == "--profile-dir":
            profile_dir = rest[1]
            rest = rest[2:]
        serve_child(rest[1:], threads_file, profile_dir)  # rest[0] is "--"
    else:
        main()
