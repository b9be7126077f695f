"""Hostile folders and scans: `agree index` over PDFs from the wild, and OCR throughput.

    .venv/bin/python benchmarks/bench_hostile.py [--copies 4] [--junk 24] [--scans 12]

1. hostile: a folder built by hostile_folder.py (every hostile case ``--copies`` times plus
   ``--junk`` junk files), indexed by the `agree index` command in a fresh process, then
   again. Reported: files, pages pdftoppm renders (the denominator: every page for which
   ``pdftoppm -r 100`` writes a non-empty image), pages indexed, files and pages named,
   exit codes, whether stderr holds a traceback, wall time of both runs.
2. scans: ``--scans`` image-only pages (no text layer), indexed with OCR on the producer
   side (the default pool) and with OCR inside encoding on the main thread (what `agree
   index` did before), one after the other in this process; pages/s of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_folder  # noqa: E402
from common import machine  # noqa: E402


def renderable_pages(pdf: Path, dpi: int = 100, timeout: float = 120) -> int:
    """Pages ``pdftoppm`` renders to a non-empty image (0 for a file it cannot open)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["pdftoppm", "-r", str(dpi), str(pdf), f"{tmp}/p"], capture_output=True,
                           timeout=timeout)
        except subprocess.TimeoutExpired:
            return 0
        n = 0
        for f in Path(tmp).glob("p-*.ppm"):
            try:
                with Image.open(f) as img:
                    n += img.width * img.height > 0
            except Exception:  # noqa: BLE001 - an unreadable output is no rendered page
                pass
        return n


def hostile(args: argparse.Namespace, work: Path) -> dict:
    folder = hostile_folder.build(work / "hostile", copies=args.copies, junk=args.junk)
    files = [Path(root) / n for root, _, names in os.walk(folder) for n in names
             if n.lower().endswith(".pdf")]
    rendered = {os.fsdecode(f): renderable_pages(f) for f in files if f.is_file()}
    agree = [sys.executable, "-m", "agree_core.cli", "-q"]
    runs = []
    for n in (1, 2):
        start = time.perf_counter()
        proc = subprocess.run([*agree, "index", str(folder), "--index", str(work / "ix"),
                               "--report", str(work / f"report{n}.jsonl")],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        report = [json.loads(x) for x in (work / f"report{n}.jsonl").read_text().splitlines()]
        runs.append({"exit": proc.returncode, "wall_s": round(wall, 1),
                     "traceback": "Traceback" in proc.stderr,
                     "named_files": sum(r["page"] is None for r in report),
                     "named_pages": sum(r["page"] is not None for r in report),
                     "named": sorted((r["source"], r["page"], r["code"]) for r in report),
                     "stderr_lines": len([x for x in proc.stderr.splitlines()
                                          if x.startswith(("skipped:", "failed:"))])})
    info = json.loads(subprocess.run([*agree, "info", "--index", str(work / "ix"), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    indexed = {d["source"]: d["pages"] for d in info["documents"]}
    covered = sum(min(indexed.get(src, 0), n) for src, n in rendered.items())
    total = sum(rendered.values())
    lost = sorted(f"{Path(s).name} ({indexed.get(s, 0)}/{n})" for s, n in rendered.items()
                  if indexed.get(s, 0) < n)
    codes: dict[str, int] = {}
    for _, _, code in runs[0]["named"]:
        codes[code] = codes.get(code, 0) + 1
    return {
        "files": len(files), "pages_pdftoppm_renders": total, "pages_indexed": info["pages"],
        "rendered_pages_indexed": covered, "share": round(covered / max(1, total), 4),
        "first": {k: v for k, v in runs[0].items() if k != "named"},
        "rerun": {k: v for k, v in runs[1].items() if k != "named"},
        "rerun_names_the_same": runs[0]["named"] == runs[1]["named"],
        "codes": codes, "rendered_but_not_indexed": lost,
    }


def scans(args: argparse.Namespace, work: Path) -> dict:
    from agree_core.encoders import load_encoder
    from agree_core.index import PageIndex

    folder = work / "scans"
    folder.mkdir()
    words = "river bridge lantern orchard granite falcon meadow harbor compass velvet".split()
    for i in range(args.scans):
        text = "\n".join(" ".join(words[(i + j + k) % 10] for k in range(5)) for j in range(8))
        hostile_folder.image_pdf(folder / f"scan{i:03d}.pdf",
                                 [hostile_folder.scan_image(f"memo {i}\n{text}", seed=i)])
    encoder = load_encoder("text-layer")
    out = {}
    for name, workers in (("ocr_in_encoding (before)", 0), ("ocr_on_producer_side (pool)", None)):
        start = time.perf_counter()
        with PageIndex.open(work / f"ix-{workers}", encoder) as index:
            report = index.add([folder], progress=False, ocr_workers=workers)
            hit = index.search("memo 3", k=1)[0]
        wall = time.perf_counter() - start
        assert report.pages == args.scans and not report.problems(), report.problems()
        out[name] = {"pages": report.pages, "wall_s": round(wall, 1),
                     "pages_per_s": round(report.pages / wall, 3),
                     "top_hit_for_memo_3": Path(hit.source).name}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--junk", type=int, default=24)
    ap.add_argument("--scans", type=int, default=12)
    ap.add_argument("--skip", choices=["hostile", "scans"], default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "hostile.json"))
    args = ap.parse_args()
    print(machine(), flush=True)
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="agree-hostile-") as tmp:
        try:
            if args.skip != "hostile":
                results["hostile"] = hostile(args, Path(tmp))
                print(json.dumps(results["hostile"], indent=1), flush=True)
            if args.skip != "scans":
                results["scans"] = scans(args, Path(tmp))
                print(json.dumps(results["scans"], indent=1), flush=True)
        finally:
            for f in Path(tmp).rglob("unreadable.pdf"):
                f.chmod(0o600)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
