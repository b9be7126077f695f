"""Ask a question over an index: retrieve the pages, show their images to a vision-language
model, answer with citations (``agree ask``).

    agree ask --index my.idx "Which site produced the most electricity?" --llm openai:gpt-4o-mini
    agree ask --index my.idx "..." --llm local:Qwen/Qwen2.5-VL-3B-Instruct -k 2
    agree ask --index my.idx "..."          # no model: prints the pages and the exact prompt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from agree_core.generation.pages import DEFAULT_MAX_PIXELS, PageContext, page_contexts
from agree_core.generation.prompt import build_messages, render_prompt

log = logging.getLogger(__name__)

__all__ = ["Answer", "ask", "register", "cmd_ask", "LLM_ENV"]

LLM_ENV = "AGREE_LLM"  # the default --llm
NO_LLM_HELP = ("no model is configured, so nothing was asked. To answer, pass --llm "
               "openai:MODEL (an OpenAI-compatible endpoint: OPENAI_API_KEY, and OPENAI_BASE_URL for "
               "a server of your own such as vLLM) or --llm local:ID_OR_PATH (a Qwen2.5-VL or "
               f"Qwen2-VL instruct checkpoint run here), or set {LLM_ENV}.")


@dataclass
class Answer:
    """An answer and the pages it was given, in rank order (the citations)."""

    question: str
    text: str | None  # None: no model was asked
    pages: list[PageContext]
    messages: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.question, "answer": self.text, "model": self.model,
                "citations": [p.citation() for p in self.pages], "usage": self.usage}


def ask(index: Any, question: str, generator: Any = None, *, k: int = 3,
        max_pixels: int | None = DEFAULT_MAX_PIXELS, filters: dict[str, Any] | None = None,
        on_text: Callable[[str], None] | None = None) -> Answer:
    """Retrieve the top ``k`` pages of ``question`` from ``index``, and answer from their
    images with ``generator`` (``None``: build the prompt only). ``on_text`` receives the
    answer as it streams."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = index.search(question, k, filters)
    if not hits:
        raise ValueError("the index has no pages to answer from: add PDFs with `agree index`")
    pages = page_contexts(index, question, hits)
    messages = build_messages(question, pages, max_pixels=max_pixels)
    answer = Answer(question, None, pages, messages)
    if generator is None:
        return answer
    if on_text is not None and hasattr(generator, "stream"):
        chunks = []
        for chunk in generator.stream(messages):
            chunks.append(chunk)
            on_text(chunk)
        answer.text, answer.model = "".join(chunks), generator.name
        return answer
    result = generator.generate(messages)
    answer.text, answer.model, answer.usage = result.text, result.model, result.usage
    return answer


def register(sub: Any) -> None:
    """The ``ask`` subcommand's arguments."""
    p = sub.add_parser("ask", help="answer a question from the pages of an index, with citations",
                       description="Retrieve the top pages for QUESTION, send their images (and text) "
                                   "to a vision-language model, print its answer and the pages it "
                                   "cites. With no --llm, print the pages and the exact prompt.")
    p.add_argument("question", help="the question")
    p.add_argument("--index", required=True, metavar="DIR", help="the index directory")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another process holds the index")
    p.add_argument("--llm", default=None, metavar="SPEC",
                   help="openai:MODEL (OpenAI-compatible endpoint: OPENAI_API_KEY, OPENAI_BASE_URL) or "
                        f"local:ID_OR_PATH (Qwen2.5-VL / Qwen2-VL); default ${LLM_ENV}; none: print the prompt")
    p.add_argument("-k", "--top-k", type=int, default=3, dest="k", help="pages shown to the model (default 3)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"each page image is scaled to at most this many pixels (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--max-new-tokens", type=int, default=512, help="answer budget (default 512)")
    p.add_argument("--device", default=None, help="local models: cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="local models: auto is bfloat16 on CUDA GPUs, float32 on CPU")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"query", "answer", "model", "citations": [{"source", "page", '
                        '"score", "image", "evidence"}], "usage"}')


def cmd_ask(args: argparse.Namespace) -> int:
    from agree_core.generation import load_generator
    from agree_core.index import PageIndex

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    spec = args.llm or os.environ.get(LLM_ENV) or None
    generator = None
    if spec:  # check the model settings before the index is opened
        options: dict[str, Any] = {"max_pixels": args.max_pixels, "max_new_tokens": args.max_new_tokens}
        if spec.startswith("local:"):
            options.update(device=args.device, dtype=args.dtype)
        generator = load_generator(spec, **options)
        if hasattr(generator, "warm_up"):
            generator.warm_up()  # a local model: a wrong path or a download failure is said now
    stream = None if args.json or generator is None else _write
    with PageIndex.open(args.index, create=False, wait=args.wait) as index:
        answer = ask(index, args.question, generator, k=args.k, max_pixels=args.max_pixels, on_text=stream)
    if args.json:
        sys.stdout.write(json.dumps(answer.to_json()) + "\n")
        return 0
    if generator is None:
        sys.stdout.write("Pages:\n" + _pages(answer) + "\nPrompt:\n" + render_prompt(answer.messages) + "\n")
        log.warning("%s", NO_LLM_HELP)
        return 0
    sys.stdout.write("\n\nSources:\n" + _pages(answer) + "\n")
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _pages(answer: Answer) -> str:
    lines = []
    for n, p in enumerate(answer.pages, start=1):
        lines.append(f"  [{n}] {p.source}  page {p.page}  score {p.score:.3f}  image {p.image_path}")
        for e in p.evidence:
            text = f'  "{e["text"]}"' if e.get("text") else ""
            lines.append(f"      evidence {e['box']}  score {e['score']}{text}")
    return "\n".join(lines)
