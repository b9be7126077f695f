"""Teacher-map extraction: peak memory and time, memory-lean path vs ``output_attentions=True``.

Workload: a random Qwen2.5-VL of a small config (default 8 text layers, hidden 512, 8 heads,
2 KV heads; vision depth 2) built from its config, one page of about 1,250 image tokens (a US
letter page at 150 dpi, capped at 1,280 tokens: 1,240 tokens, as ENV.md measured) and a query
of about 20 tokens. Random weights change nothing here: memory and time depend on shapes.

Each variant runs in a fresh process (one warm-up map on a small page, then the timed map on the
real one); peak memory is the process's resident set sampled every millisecond during the
timed map, above what it held just before. The attention-matrix line is the arithmetic size of
what ``output_attentions=True`` keeps: layers x heads x L x L float32.

    .venv/bin/python benchmarks/bench_teacher.py
    .venv/bin/python benchmarks/bench_teacher.py --layers 16 --hidden 1024 --heads 16
    .venv/bin/python benchmarks/bench_teacher.py --architecture qwen2.5-vl-7b   # the published
        teacher at full size, random weights (refused on a CPU without the memory for it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERY = "what is the revenue growth in the year shown in the report figure"  # 21 tokens here


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    import torch

    from agree_core.teacher import QwenVLTeacher
    from benchmarks.bench_visual_encoding import letter_page

    torch.set_num_threads(args.threads)
    teacher = QwenVLTeacher(args.checkpoint, device="cpu", max_image_tokens=args.max_image_tokens,
                            dtype="float32")
    lean = args.variant == "lean"
    teacher.map(QUERY, letter_page(300, 400), lean=lean)  # warm-up: kernels, allocator
    page = letter_page(1275, 1650)
    before = rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    values = teacher.map(QUERY, page, lean=lean)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    n_query = len(teacher._tokens(QUERY))
    print(json.dumps({"variant": args.variant, "seconds": seconds, "peak_mb": peak[0] - before,
                      "image_tokens": values.numel(), "query_tokens": n_query, "grid": list(values.shape)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--max-image-tokens", type=int, default=1280)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", choices=["lean", "eager"], help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--architecture", default=None,
                   help="a published architecture at full size with random weights (qwen2.5-vl-7b, "
                        "qwen2.5-vl-3b, qwen2-vl-2b) instead of the small config")
    args = p.parse_args()
    if args.variant:
        return child(args)

    from agree_core.encoders.colvision.testing import save_tiny_teacher
    from benchmarks.common import machine

    if args.architecture:
        import torch

        from agree_core.encoders.published_sizes import ARCHITECTURES, check_fits

        try:
            check_fits(args.architecture, torch.float32, torch.device("cpu"))
        except (MemoryError, ValueError) as e:
            sys.exit(f"bench_teacher: {e}")
        text = ARCHITECTURES[args.architecture][1]
        args.layers, args.hidden = text["num_hidden_layers"], text["hidden_size"]
        args.heads, args.kv_heads = text["num_attention_heads"], text["num_key_value_heads"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.architecture:
            from agree_core.encoders.published_sizes import save_random_published

            ckpt = save_random_published(args.architecture, Path(tmp) / "teacher", dtype=torch.float32,
                                         teacher=True)
        else:
            ckpt = save_tiny_teacher("colqwen2.5", Path(tmp) / "teacher", hidden=args.hidden,
                                     layers=args.layers, heads=args.heads, kv_heads=args.kv_heads)
        rows = []
        for variant in ("lean", "eager"):
            cmd = [sys.executable, __file__, "--variant", variant, "--checkpoint", str(ckpt),
                   "--max-image-tokens", str(args.max_image_tokens), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    lean, eager = rows
    length = lean["image_tokens"] + lean["query_tokens"] + 30  # + template tokens (about 30)
    matrices = args.layers * args.heads * length**2 * 4 / 2**20
    print(f"Teacher map, Qwen2.5-VL small config ({args.layers} layers, hidden {args.hidden}, "
          f"{args.heads} heads / {args.kv_heads} KV), float32 CPU, {args.threads} threads")
    print(f"page: {lean['image_tokens']} image tokens (grid {lean['grid'][0]}x{lean['grid'][1]}), "
          f"query: {lean['query_tokens']} tokens; {machine()}\n")
    print("| path | peak memory above baseline | time per map |")
    print("|---|---|---|")
    names = {"lean": "memory-lean (sdpa + query rows only)", "eager": "output_attentions=True (eager)"}
    for r in rows:
        print(f"| {names[r['variant']]} | {r['peak_mb']:.0f} MB | {r['seconds']:.2f} s |")
    print(f"\nlean / eager peak memory: {lean['peak_mb'] / eager['peak_mb']:.2f}; all layers' attention "
          f"matrices at L~{length}: {matrices:.0f} MB")


if __name__ == "__main__":
    main()
