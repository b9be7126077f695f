"""Page image storage: size on disk and encode time per format, on real pages.

    .venv/bin/python benchmarks/bench_images.py [--pages 60] [--dpi 100]

Pages are taken evenly from every dev-set PDF and rendered the way the index renders them.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEVSET, ensure_devset, machine, table  # noqa: E402

FORMATS = {
    "PNG": ("PNG", {}),
    "PNG (optimize)": ("PNG", {"optimize": True}),
    "JPEG q85": ("JPEG", {"quality": 85}),
    "JPEG q75": ("JPEG", {"quality": 75}),
    "WebP q80": ("WEBP", {"quality": 80}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=60)
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args()
    ensure_devset()
    from agree_core.pages import inspect_pdf, iter_pages

    pdfs = sorted(DEVSET.glob("*.pdf"))
    per_pdf = max(1, args.pages // len(pdfs))
    images = []
    for pdf in pdfs:
        n = inspect_pdf(pdf).pages
        wanted = sorted({1 + i * n // per_pdf for i in range(per_pdf)})
        images += [p.image for p in iter_pages(pdf, dpi=args.dpi, text=False, pages=wanted)]
    print(f"{len(images)} pages at {args.dpi} dpi from {len(pdfs)} PDFs; {machine()}\n")
    rows = []
    for name, (fmt, options) in FORMATS.items():
        size, start = 0, time.perf_counter()
        for img in images:
            buf = io.BytesIO()
            img.save(buf, format=fmt, **options)
            size += buf.tell()
        took = time.perf_counter() - start
        rows.append({"format": name, "KiB/page": round(size / len(images) / 1024, 1),
                     "encode ms/page": round(1000 * took / len(images), 1)})
    print(table(rows, ["format", "KiB/page", "encode ms/page"]))


if __name__ == "__main__":
    main()
