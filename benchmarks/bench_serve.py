"""`agree serve` under load, next to in-process search on the same index, in the same run.

    .venv/bin/python benchmarks/bench_serve.py                 # 1, 4, 16 clients x 100 queries
    .venv/bin/python benchmarks/bench_serve.py --clients 1,4 --queries 50 --pages 100

What it does (loopback only, every loop bounded):

1. Writes a corpus of synthetic text PDFs (``--pages`` pages over 10 files, seeded words) and
   indexes it with ``PageIndex.add`` (the default encoder, ``text-layer``). Queries are 4 words
   drawn from one random page each (seeded).
2. In-process: ``PageIndex.search_batch`` over the queries (best of 3 runs, each over the
   same queries rotated so that each run encodes them; k=5), then the
   same through an in-process :class:`IndexHost` while it indexes a large PDF in its writer
   thread (the server's code without HTTP).
   Both sides use ``--torch-threads`` (default 1) torch threads.
3. Starts the real ``agree serve`` (a subprocess on 127.0.0.1) and, for 1, 4 and 16 client
   processes, each sends ``--queries`` single-query ``POST /search`` requests one after the
   other with :class:`RemoteIndex` (no torch in the clients); all start together at a
   barrier. Throughput = all queries / (last answer - first request); latency per request
   as the client sees it. Then the same while a job indexes a large PDF (posted before the
   clients start; the table says how many pages it wrote during the measurement and whether
   it was still running at the end). Errors (any exception or non-2xx) are counted.
4. SIGTERM to the server; it must exit 0.

Prints the CPU kind; absolute numbers are noisy on a shared machine: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("river bridge lantern orchard granite falcon meadow harbor compass velvet summit canyon "
         "ember glacier willow copper prairie thunder marble aardvark badger camel dolphin elephant "
         "flamingo giraffe hedgehog iguana jaguar kangaroo lemur mongoose narwhal ocelot penguin "
         "quokka raccoon salamander tortoise urchin vulture walrus yak zebra albatross bison cheetah "
         "dingo ermine turbine ledger invoice reactor solvent beacon quarry pylon ferry tunnel "
         "vineyard cellar furnace anvil spindle loom kiln mortar trowel chisel").split()


def write_pdf(path: Path, n_pages: int, rng: random.Random) -> list[str]:
    """A PDF of ``n_pages`` pages of seeded words; returns each page's text."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=(612, 792))
    texts = []
    for _ in range(n_pages):
        words = [rng.choice(WORDS) for _ in range(90)]
        texts.append(" ".join(words))
        for line_no in range(0, 90, 10):
            c.setFont("Helvetica", 11)
            c.drawString(72, 720 - line_no * 2, " ".join(words[line_no:line_no + 10]))
        c.showPage()
    c.save()
    return texts


def make_corpus(work: Path, pages: int, job_pages: int, n_queries: int, rng: random.Random):
    """The searched index (``pages`` pages over 10 PDFs, indexed in ``work/index``), the
    queries (4 words of one random page each), 4 job PDFs of ``job_pages`` pages, and the
    indexing report."""
    from agree_core.index import PageIndex

    docs, jobs = work / "docs", work / "jobs"
    docs.mkdir()
    jobs.mkdir()
    texts = []
    for d in range(10):
        texts += write_pdf(docs / f"doc{d:02d}.pdf", pages // 10, rng)
    job_pdfs = [jobs / f"job{i}.pdf" for i in range(4)]
    for p in job_pdfs:
        write_pdf(p, job_pages, rng)
    queries = [" ".join(rng.sample(t.split(), 4)) for t in (rng.choice(texts) for _ in range(n_queries))]
    index_dir = work / "index"
    t0 = time.perf_counter()
    with PageIndex.open(index_dir) as index:
        report = index.add([docs], progress=False)
    print(f"indexed {report.pages} pages in {time.perf_counter() - t0:.1f} s", flush=True)
    return index_dir, queries, job_pdfs, report


def cpu_kind() -> str:
    import torch

    flags = open("/proc/cpuinfo").read()
    kind = "AVX-512 + bf16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2"
    return f"{kind} (torch capability {torch.backends.cpu.get_cpu_capability()})"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def client(url: str, queries: list[str], barrier, results) -> None:
    """One client process: warm up, wait for the others, send the queries one by one."""
    from agree_core.serve.client import RemoteIndex

    latencies, errors = [], 0
    with RemoteIndex(url, timeout=120) as index:
        index.search(queries[0], k=5)
        barrier.wait(timeout=300)
        start, cpu = time.perf_counter(), time.process_time()
        for q in queries:
            t0 = time.perf_counter()
            try:
                if len(index.search(q, k=5)) != 5:
                    errors += 1
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            latencies.append(time.perf_counter() - t0)
        end, cpu = time.perf_counter(), time.process_time() - cpu
    results.put((start, end, latencies, errors, "torch" in sys.modules, cpu))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, n_clients: int, queries: list[str], rng: random.Random, server_pid: int) -> dict:
    """``n_clients`` client processes x ``queries``: rate, latency, errors, and the CPU time
    per query of the server process and of the clients (they share the same cores)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_clients), ctx.Queue()
    procs = []
    for _ in range(n_clients):
        mine = [rng.choice(queries) for _ in range(len(queries))]
        procs.append(ctx.Process(target=client, args=(url, mine, barrier, results)))
    for p in procs:
        p.start()
    server_cpu = process_cpu(server_pid)  # the clients warm up before the barrier: a few queries counted
    got = [results.get(timeout=900) for _ in procs]
    server_cpu = process_cpu(server_pid) - server_cpu
    for p in procs:
        p.join(60)
    starts, ends = [g[0] for g in got], [g[1] for g in got]
    lat = [x for g in got for x in g[2]]
    assert not any(g[4] for g in got), "a client imported torch"
    return {"clients": n_clients, "queries": len(lat), "qps": len(lat) / (max(ends) - min(starts)),
            "load": round(os.getloadavg()[0], 1),  # other sessions share the machine
            "p50_ms": 1000 * percentile(lat, 0.5), "p99_ms": 1000 * percentile(lat, 0.99),
            "errors": sum(g[3] for g in got),
            "server_cpu_ms": 1000 * server_cpu / len(lat), "client_cpu_ms": 1000 * sum(g[5] for g in got) / len(lat)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=200, help="pages in the searched index (default 200)")
    ap.add_argument("--job-pages", type=int, default=600, help="pages of each background job's PDF (0: no rows with a job)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--queries", type=int, default=100, help="queries per client (default 100)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads of both sides (default 1: on a shared, oversubscribed "
                         "machine, 2 OpenMP threads waking each other made query encoding 6x slower)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = ap.parse_args()

    import httpx
    import torch

    torch.set_num_threads(args.torch_threads)
    os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # the server inherits it
    from agree_core.index import PageIndex
    from agree_core.serve.host import IndexHost

    print(f"CPU: {cpu_kind()}; {__import__('common').machine()}", flush=True)
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    index_dir, queries, job_pdfs, report = make_corpus(work, args.pages, args.job_pages, args.queries, rng)
    jobs = job_pdfs[0].parent

    # the in-process side runs on a copy, so that it can be measured next to each server row
    # (this machine is shared: load drifts within minutes)
    local_dir = work / "index-local"
    shutil.copytree(index_dir, local_dir)
    local = PageIndex.open(local_dir, create=False)
    local.search_batch(queries[:4], 5)  # warm-up

    def in_process() -> dict:
        runs = [_timed(lambda: local.search_batch(rotated, 5)) for rotated in _rotations(queries)]
        best = min(runs)
        return {"mode": "in-process search_batch", "job": False, "qps": len(queries) / best[0],
                "batch_s": best[0], "cpu_ms": 1000 * best[1] / len(queries), "errors": 0,
                "load": round(os.getloadavg()[0], 1)}

    rows = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "agree_core.cli", "-q", "serve", "--index",
                               str(index_dir), "--port", str(port), "--allow-dir", str(jobs)])
    try:
        wait_until(lambda: _healthy(url), 300, "agree serve")
        counts = [int(c) for c in args.clients.split(",") if c]
        for n in counts:
            rows.append(in_process())
            rows.append({"mode": "agree serve", "job": False, **load(url, n, queries, rng, server.pid)})
            print(rows[-2], rows[-1], flush=True)
        local.close()
        if args.job_pages < 1:  # no rows with a job
            counts = []
        if counts:
            host = IndexHost(local_dir).start()  # the server's code without HTTP, with a job
            try:
                host.search(queries[:4], 5).result()
                job = host.submit_job([str(job_pdfs[0])], batch_size=4)
                wait_until(lambda: job.state == "running" and job.pages_done > 0, 600, "the in-process job")
                before = job.pages_done
                best = min(_timed(lambda: host.search(rotated, 5).result()) for rotated in _rotations(queries))
                rows.append({"mode": "in-process search_batch (IndexHost)", "job": True,
                             "qps": len(queries) / best[0], "batch_s": best[0],
                             "cpu_ms": None, "errors": 0,  # this process's CPU includes the job's encoding
                             "load": round(os.getloadavg()[0], 1),
                             "job_pages": job.pages_done - before, "job_running": job.state == "running"})
                print(rows[-1], flush=True)
            finally:
                host.close()  # stops its job after the current batch
        for n, pdf in zip(counts, job_pdfs[1:]):
            job = httpx.post(url + "/documents", json={"paths": [str(pdf)], "batch_size": 4}).json()["job"]
            state = lambda: httpx.get(f"{url}/jobs/{job}").json()  # noqa: E731
            before = wait_until(lambda: (s := state())["state"] == "running" and s["pages_done"] > 0 and s,
                                600, "the job")["pages_done"]
            row = load(url, n, queries, rng, server.pid)
            end = state()
            rows.append({"mode": "agree serve", "job": True, **row,
                         "job_pages": end["pages_done"] - before, "job_running": end["state"] == "running"})
            print(rows[-1], flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(300)
    print(f"agree serve exited {code} on SIGTERM")
    shutil.rmtree(work, ignore_errors=True)
    _table(rows, len(queries))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cpu": cpu_kind(), "pages": report.pages,
                                          "torch_threads": args.torch_threads,
                                          "queries_per_client": len(queries), "rows": rows,
                                          "sigterm_exit": code}, indent=2) + "\n")


def _rotations(queries: list[str], n: int = 3) -> list[list[str]]:
    """``n`` orders of the same queries, one per timed run: a search repeated with the very
    same list is answered from the index's memo of its last query vectors (the evidence's
    second ask), which would time the engine without the query encoding."""
    step = max(1, len(queries) // n)
    return [queries[i * step:] + queries[:i * step] for i in range(n)]


def _timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all its threads) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _table(rows: list[dict], n_queries: int) -> None:
    base: dict[bool, float] = {}
    print("\n| mode | clients | job indexing | queries | queries/s | x in-process | p50 ms | p99 ms | p99/p50 | errors "
          "| CPU ms/query server (+ clients) | load |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        job = "no"
        if r["job"]:
            job = f"yes ({r['job_pages']} pages written{'' if r['job_running'] else ', finished early'})"
        if r["mode"].startswith("in-process"):
            base[r["job"]] = r["qps"]
            print(f"| {r['mode']} | - | {job} | {n_queries} (one batch) | {r['qps']:.1f} | 1.00 | - | - | - | 0 | "
                  f"{'-' if r['cpu_ms'] is None else format(r['cpu_ms'], '.2f')} | {r['load']} |")
        else:
            print(f"| {r['mode']} | {r['clients']} | {job} | {r['queries']} | {r['qps']:.1f} | "
                  f"{r['qps'] / base[r['job']]:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                  f"{r['p99_ms'] / r['p50_ms']:.1f} | {r['errors']} | "
                  f"{r['server_cpu_ms']:.2f} (+ {r['client_cpu_ms']:.2f}) | {r['load']} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
