"""Visual encoding throughput on this CPU with TINY random models: a plumbing figure.

The models are ColQwen2.5 / ColQwen2 / ColPali built from tiny configs (hidden 64, 2 text
layers, vision depth 2) in the published checkpoint layout and loaded through the same path as
a real checkpoint. The figure measures everything around the transformer (image resizing,
patching, tokenisation, batching, the forward pass of a tiny model, unpadding, PageEmbedding):
it is NOT the speed of a real 3B model, which is dominated by the forward pass and belongs on a
GPU. Pages are US letter at 100 dpi (850 x 1100 px): ColQwen caps them at 768 visual tokens
(744 of them: a 31 x 24 grid after merging); ColPali resizes every page to 448 x 448 (32 x 32).

    .venv/bin/python benchmarks/bench_visual_encoding.py
    .venv/bin/python benchmarks/bench_visual_encoding.py --pages 32 --batch-sizes 1 8
    .venv/bin/python benchmarks/bench_visual_encoding.py --architecture qwen2.5-vl-3b --device cuda
        # ColQwen2.5 at its published size (random weights): memory and speed of the real shapes;
        # refused on a CPU that cannot hold it
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def letter_page(width: int, height: int, seed: int = 0) -> Image.Image:
    """A white page with dark text-like bars and a grey figure box."""
    rng = np.random.RandomState(seed)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    line = max(4, height // 60)
    for y in range(height // 12, height - height // 12, line * 2):
        x = width // 10
        while x < width * 0.9:
            w = int(rng.randint(2, 9) * line / 2)
            draw.rectangle([x, y, min(x + w, int(width * 0.9)), y + line], fill=(20, 20, 20))
            x += w + line
    draw.rectangle([width // 5, height // 2, width // 2, int(height * 0.7)], fill=(150, 160, 170))
    return image


def main() -> None:
    import torch

    from agree_core.encoders import load_encoder
    from agree_core.encoders.colvision.testing import save_published_checkpoint
    from agree_core.pages import Page
    from benchmarks.common import machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=16)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--architecture", default=None,
                   help="a published architecture at full size, random weights (qwen2.5-vl-3b for ColQwen2.5, "
                        "qwen2-vl-2b for ColQwen2) instead of the tiny models")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.architecture:
        return published(args, pages := [Page.from_image(letter_page(850, 1100, seed=i)) for i in range(args.pages)])
    pages = [Page.from_image(letter_page(850, 1100, seed=i)) for i in range(args.pages)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("colqwen2.5", "colqwen2", "colpali"):
            image_size = 448 if family == "colpali" else 112  # ColPali at its real 32 x 32 grid
            adapter, _ = save_published_checkpoint(family, Path(tmp) / family, image_size=image_size)
            for batch_size in args.batch_sizes:
                enc = load_encoder(f"{family}:{adapter}", device="cpu", dtype="float32",
                                   batch_size=batch_size)
                enc.encode_pages(pages[:2])  # warm-up
                t0 = time.perf_counter()
                embs = enc.encode_pages(pages)
                seconds = time.perf_counter() - t0
                rows.append((family, batch_size, embs[0].grid, len(embs[0].cells), args.pages / seconds))
    print(f"Visual encoding, TINY random models (plumbing figure, not real-model speed); "
          f"{args.pages} letter pages at 100 dpi, float32, {args.threads} threads; {machine()}\n")
    print("| encoder (tiny) | batch | grid | vectors/page | pages/s |")
    print("|---|---|---|---|---|")
    for family, bs, grid, n, speed in rows:
        print(f"| {family} | {bs} | {grid[0]}x{grid[1]} | {n} | {speed:.1f} |")


def published(args: argparse.Namespace, pages: list) -> None:
    """The same encoder path over a published architecture with random weights."""
    import torch

    from agree_core.encoders import load_encoder
    from agree_core.encoders.published_sizes import ARCHITECTURES, check_fits, save_random_published
    from benchmarks.common import machine

    dtype = getattr(torch, args.dtype)
    try:
        need = check_fits(args.architecture, dtype, torch.device(args.device))
    except (MemoryError, ValueError) as e:
        sys.exit(f"bench_visual_encoding: {e}")
    family = ARCHITECTURES[args.architecture][0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = save_random_published(args.architecture, Path(tmp) / "base", dtype=dtype, device=args.device)
        for batch_size in args.batch_sizes:
            enc = load_encoder(f"{family}:{base}", device=args.device, dtype=args.dtype, batch_size=batch_size)
            enc.encode_pages(pages[:1])  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            embs = enc.encode_pages(pages)
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
            rows.append((batch_size, embs[0].grid, len(embs[0].cells), args.pages / seconds, peak))
    print(f"Visual encoding, {family} at {args.architecture} size (random weights, {need / 2**30:.1f} GiB), "
          f"{args.pages} letter pages at 100 dpi, {args.dtype} on {args.device}; {machine()}\n")
    print("| batch | grid | vectors/page | pages/s | peak GPU memory |")
    print("|---|---|---|---|---|")
    for bs, grid, n, speed, peak in rows:
        print(f"| {bs} | {grid[0]}x{grid[1]} | {n} | {speed:.2f} | {peak:.1f} GiB |")


if __name__ == "__main__":
    main()
