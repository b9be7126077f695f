"""The end-to-end demo (`make demo`, `agree demo`): PDFs in, ranked pages and their evidence boxes out."""

from __future__ import annotations

import hashlib
import logging
import random
import sys
import time
from pathlib import Path

from PIL import Image

from agree_core.evidence import evidence_by_id
from agree_core.heatmaps import contact_sheet, draw_evidence
from agree_core.index import PageIndex
from agree_core.pages import require_poppler

log = logging.getLogger("agree.demo")


def _probe_questions(index: PageIndex, n: int = 5) -> list[tuple[str, str, int]]:
    """Known-item questions for the user's own PDFs: a phrase from a page, which should
    bring that page back first."""
    rng = random.Random(0)
    docs = index.info()["documents"]
    picked: list[tuple[str, str, int]] = []
    hits = index.search_batch(["introduction overview summary"], k=50)[0]
    rng.shuffle(hits)
    for hit in hits:
        words = index.page_text(hit.page_id).split()
        if len(words) < 30:
            continue
        start = rng.randrange(0, len(words) - 12)
        picked.append((" ".join(words[start : start + 10]), hit.source, hit.page))
        if len(picked) == n:
            break
    if not picked and docs:
        log.warning("no page has enough text to make a demo question; pass --question")
    return picked


def run_demo(pdfs: str | None, out: Path, questions: list[str], quiet: bool = False) -> int:
    require_poppler()
    out.mkdir(parents=True, exist_ok=True)
    if pdfs is None:
        from agree_core.samples import SAMPLE_QUESTIONS, build_samples

        folder = out / "samples"
        files = build_samples(folder)
        log.info("wrote sample PDFs: %s", ", ".join(f.name for f in files))
        expected = {q: (str((folder / f).absolute()), p) for q, f, p in SAMPLE_QUESTIONS}
        questions = questions or [q for q, _, _ in SAMPLE_QUESTIONS]
        paths = [str(folder)]
    else:
        expected = {}
        paths = [pdfs]
    # one index per input folder, so the samples and your own PDFs never mix
    name = "samples" if pdfs is None else (
        f"{Path(pdfs).absolute().name}-{hashlib.sha1(str(Path(pdfs).absolute()).encode()).hexdigest()[:8]}")
    index_dir = out / "indexes" / name
    with PageIndex.open(index_dir) as index:
        t0 = time.perf_counter()
        report = index.add(paths, progress=not quiet)
        took = time.perf_counter() - t0
        info = index.info()
        log.info("index %s: %d pages in %d documents (%d pages encoded now in %.1f s)",
                 index_dir, info["pages"], len(info["documents"]), report.pages, took)
        for e in report.skipped:
            sys.stderr.write(f"skipped: {e.path}: {e.reason}\n")
        if not questions:
            probes = _probe_questions(index)
            questions = [q for q, _, _ in probes]
            expected = {q: (s, p) for q, s, p in probes}
        heat_dir = out / "heatmaps"
        heat_dir.mkdir(exist_ok=True)
        found = 0
        for i, question in enumerate(questions, start=1):
            hits = index.search(question, k=3)
            boxes = evidence_by_id(index, question, [h.page_id for h in hits])
            want = expected.get(question)
            sys.stdout.write(f"\nQ{i}: {question}\n")
            for rank, h in enumerate(hits, start=1):
                mark = "  <- expected" if want and (h.source, h.page) == want else ""
                sys.stdout.write(f"   {rank}. {h.score:7.3f}  {Path(h.source).name} page {h.page}{mark}\n")
            if want and hits and (hits[0].source, hits[0].page) == want:
                found += 1
            panels = [(draw_evidence(Image.open(h.image), boxes.get(h.page_id, [])),
                       f"#{r} {Path(h.source).name} p.{h.page}\nscore {h.score:.2f}")
                      for r, h in enumerate(hits, start=1)]
            if panels:
                path = heat_dir / f"q{i:02d}.png"
                contact_sheet(panels).save(path)
                sys.stdout.write(f"   heatmaps: {path}\n")
    if expected:
        sys.stdout.write(f"\n{found} of {len(questions)} questions found the expected page first.\n")
    return 0 if not report.skipped else 3
