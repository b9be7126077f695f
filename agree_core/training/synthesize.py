"""Synthetic training queries: a vision-language model reads sampled pages and writes the
questions they answer (``agree dataset synthesize``), as the ColPali training set was made.

Pages are sampled (seeded) from the given PDFs; a Qwen2.5-VL or Qwen2-VL instruct model (the
teacher's family, default ``Qwen/Qwen2.5-VL-7B-Instruct``) gets the page image and
:data:`PROMPT`, and :func:`parse_questions` keeps one question per output line. Each question
becomes a line of the training format (:mod:`agree_core.training.data`)::

    {"qid": "syn-<page id>-1", "query": "...", "pdf": "/abs/doc.pdf", "page": 4, "synthetic": true}

Unreadable PDFs and pages whose output holds no question are reported and skipped. Lines are
written as they are made; rerunning with the same arguments skips the pages already in the
output, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from agree_core.generation.qwen import QwenVLGenerator
from agree_core.teacher.qwen import DEFAULT_TEACHER

log = logging.getLogger(__name__)

__all__ = ["QuestionWriter", "SynthesisReport", "parse_questions", "sample_pages", "synthesize",
           "PROMPT"]

PROMPT = ("This is a page from a document collection. Write {k} different questions that a person "
          "searching the collection could ask and that this page answers. Each question must make "
          "sense without seeing the page: name the subject instead of saying 'this page' or 'the "
          "figure'. Ask about the facts, numbers, tables and figures on the page, neither too "
          "specific nor too general. Write one question per line, with no numbering and no answers.")
SYSTEM_PROMPT = "You are a helpful assistant."  # the Qwen chat template's default

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):]|\(?[a-z]\)|Q\d*[.:)]|Question\s*\d*[.:)])\s*")


def parse_questions(text: str, k: int | None = None) -> list[str]:
    """Questions from a model's output: one per line, numbering and bullets stripped; empty
    lines, preambles ending in ":", answers and repeats dropped; a line is kept if it ends in
    "?" or has at least 3 words.

    >>> parse_questions("1. What was the revenue in 2023?\\n2) What was the revenue in 2023?\\n"
    ...                 "- Who wrote it\\n\\n**Answer**: 12\\nok")
    ['What was the revenue in 2023?', 'Who wrote it']
    """
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        for _ in range(2):  # "- **1. What ...?**"
            line = _BULLET.sub("", line.strip().strip('*_"').strip())
        if not line or line.endswith(":") or line.lower().startswith(("answer", "a:")):
            continue  # empty, a preamble ("Here are 3 questions:"), an answer
        if not (line.endswith("?") or len(line.split()) >= 3):
            continue
        norm = " ".join(line.lower().split())
        if norm not in seen:
            seen.add(norm)
            out.append(line)
    return out[:k] if k is not None else out


class QuestionWriter:
    """Questions about a page image from a Qwen2.5-VL / Qwen2-VL instruct model (loaded on first
    use, through :class:`agree_core.generation.qwen.QwenVLGenerator`).

    Args:
        model: hub id or local checkpoint directory.
        device: default cuda when available. dtype: ``auto`` is bfloat16 on CUDA, float32 on CPU.
        max_image_tokens: page image cap (Qwen image tokens after the 2 x 2 merge).
        max_new_tokens: generation budget for all the questions of one page.
        temperature: 0 decodes greedily; above 0 samples (seeded by :func:`synthesize`).
    """

    def __init__(self, model: str = DEFAULT_TEACHER, *, device: str | None = None, dtype: str = "auto",
                 max_image_tokens: int = 1024, max_new_tokens: int = 256, temperature: float = 0.0,
                 prompt: str = PROMPT):
        if max_image_tokens < 4:
            raise ValueError(f"max_image_tokens must be >= 4, got {max_image_tokens}")
        if "{k}" not in prompt:
            raise ValueError("prompt must contain {k} (the number of questions)")
        self.model_spec, self.prompt, self.max_image_tokens = model, prompt, max_image_tokens
        self._generator = QwenVLGenerator(model, device=device, dtype=dtype,
                                          max_pixels=max_image_tokens * 28 * 28,
                                          max_new_tokens=max_new_tokens, temperature=temperature)

    @property
    def model(self) -> torch.nn.Module:
        """The loaded Qwen2(.5)-VL model."""
        return self._generator.model

    def generate(self, image: Image.Image, k: int) -> str:
        """The model's raw answer to the prompt for ``k`` questions about ``image``."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": self.prompt.format(k=k)}]}]
        return self._generator.generate(messages).text

    def questions(self, image: Image.Image, k: int) -> list[str]:
        return parse_questions(self.generate(image, k), k)


@dataclass
class SynthesisReport:
    pages: int = 0  # pages sampled
    done: int = 0  # pages already in the output (a resumed run)
    written: int = 0  # questions written now
    new_pages: int = 0  # pages that got questions now
    skipped: list[str] = field(default_factory=list)  # files and pages, with the reason


def sample_pages(paths: list[str | Path], n: int, seed: int, report: SynthesisReport | None = None
                 ) -> list[tuple[Path, int]]:
    """``n`` distinct (PDF, page) pairs drawn uniformly (seeded) from every page of the PDFs
    under ``paths``, in file and page order. Unreadable files go to ``report.skipped``."""
    from agree_core.pages import PdfError, find_pdfs, inspect_pdf

    if n < 1:
        raise ValueError(f"the number of pages must be >= 1, got {n}")
    files, errors = find_pdfs(list(paths))
    population: list[tuple[Path, int]] = []
    for f in files:
        try:
            population += [(f, p) for p in range(1, inspect_pdf(f).pages + 1)]
        except PdfError as e:
            errors.append(e)
    for e in errors:
        log.warning("skipped %s", e)
        if report is not None:
            report.skipped.append(str(e))
    if not population:
        raise ValueError(f"no readable PDF pages under {', '.join(map(str, paths))}")
    return sorted(random.Random(seed).sample(population, min(n, len(population))))


def synthesize(paths: list[str | Path], out: str | Path, writer: QuestionWriter, *, pages: int,
               per_page: int = 3, seed: int = 0, dpi: int = 150, progress: bool = True
               ) -> SynthesisReport:
    """Sample ``pages`` pages from the PDFs under ``paths`` and append ``per_page`` questions
    per page to ``out`` (pages already in ``out`` are skipped: reruns resume)."""
    from tqdm import tqdm

    from agree_core.pages import PdfError, file_sha256, iter_pages

    if per_page < 1:
        raise ValueError(f"questions per page must be >= 1, got {per_page}")
    report = SynthesisReport()
    chosen = sample_pages(paths, pages, seed, report)
    report.pages = len(chosen)
    out = Path(out)
    done = _pages_done(out)
    todo = [(f, p) for f, p in chosen if (str(f), p) not in done]
    report.done = len(chosen) - len(todo)
    torch.manual_seed(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    by_file: dict[Path, list[int]] = {}
    for f, p in todo:
        by_file.setdefault(f, []).append(p)
    bar = tqdm(total=len(todo), desc="synthetic queries", unit="page", disable=not progress,
               dynamic_ncols=True)
    with open(out, "a", encoding="utf-8") as sink:
        for f, numbers in by_file.items():
            try:
                for page in iter_pages(f, dpi=dpi, text=False, pages=numbers, sha256=file_sha256(f)):
                    bar.update()
                    where = f"{f} page {page.page_no}"
                    try:
                        questions = writer.questions(page.image, per_page)
                    except ValueError as e:  # e.g. an image the vision encoder cannot take
                        report.skipped.append(f"{where}: {e}")
                        log.warning("skipped %s: %s", where, e)
                        continue
                    if not questions:
                        report.skipped.append(f"{where}: the model wrote no question")
                        log.warning("skipped %s: the model wrote no question", where)
                        continue
                    for k, q in enumerate(questions, start=1):
                        sink.write(json.dumps({"qid": f"syn-{page.id}-{k}", "query": q, "pdf": str(f),
                                               "page": page.page_no, "synthetic": True},
                                              ensure_ascii=False) + "\n")
                    sink.flush()
                    report.written += len(questions)
                    report.new_pages += 1
            except (PdfError, OSError, ValueError) as e:  # the rest of this file cannot be read
                report.skipped.append(str(e) if isinstance(e, PdfError) else f"{f}: {e}")
                log.warning("skipped %s", report.skipped[-1])
    bar.close()
    return report


def _pages_done(out: Path) -> set[tuple[str, int]]:
    """(pdf, page) of the synthetic lines already in ``out``; a torn last line is cut off."""
    if not out.is_file():
        return set()
    done, keep, torn = set(), [], False
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError:
            torn = True  # cut short by a kill
            continue
        keep.append(line)
        if isinstance(obj, dict) and obj.get("synthetic") and "pdf" in obj:
            done.add((obj["pdf"], obj.get("page")))
    if torn:
        out.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    return done
