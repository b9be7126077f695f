"""The prompt an answer is asked with: the question, then for each retrieved page in rank order
a numbered header, the page image, its text and its evidence regions.

Messages are plain dicts in the shape every chat API shares::

    [{"role": "system", "content": "..."},
     {"role": "user", "content": [{"type": "text", "text": "Question: ..."},
                                  {"type": "text", "text": "[1] report.pdf, page 3"},
                                  {"type": "image", "image": <PIL.Image>, "path": "..."}, ...]}]

The generators here (:mod:`~agree_core.generation.qwen`, :mod:`~agree_core.generation.openai_compat`)
take them as they are; the Haystack and LlamaIndex integrations build the same prompt from
their own message classes with :data:`SYSTEM_PROMPT` and :func:`page_header`.
"""

from __future__ import annotations

from typing import Any, Sequence

from agree_core.generation.pages import DEFAULT_MAX_PIXELS, PageContext

__all__ = ["SYSTEM_PROMPT", "build_messages", "page_header", "page_notes", "render_prompt",
           "message_images"]

SYSTEM_PROMPT = ("Answer the question from the document pages shown, and only from them. "
                 "Cite each page you used by its number in brackets, e.g. [1]. "
                 "If the pages do not hold the answer, say so.")
MAX_TEXT_CHARS = 1500  # page text sent next to the image (the image carries the rest)


def page_header(n: int, file_name: str, page: int) -> str:
    """``[n] file.pdf, page 3``: how a page is named in the prompt and cited in the answer.

    >>> page_header(2, "report.pdf", 7)
    '[2] report.pdf, page 7'
    """
    return f"[{n}] {file_name}, page {page}"


def page_notes(text: str, evidence: Sequence[dict[str, Any]], max_chars: int = MAX_TEXT_CHARS) -> str:
    """The page's text (cut at ``max_chars``) and its evidence regions, as prompt text.

    >>> print(page_notes("Revenue 2023: 4.1 M", [{"box": [0.1, 0.2, 0.5, 0.25], "text": "Revenue 2023", "score": 3.2}]))
    Page text: Revenue 2023: 4.1 M
    Regions matching the question (x0, y0, x1, y1 as fractions of the page): [0.1, 0.2, 0.5, 0.25] "Revenue 2023"
    """
    lines = []
    text = " ".join(text.split())
    if text:
        lines.append("Page text: " + (text if len(text) <= max_chars else text[:max_chars] + " ..."))
    if evidence:
        regions = "; ".join(f"{e['box']}" + (f' "{e["text"]}"' if e.get("text") else "")
                            for e in evidence)
        lines.append("Regions matching the question (x0, y0, x1, y1 as fractions of the page): "
                     + regions)
    return "\n".join(lines)


def build_messages(question: str, pages: Sequence[PageContext], *,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS, with_text: bool = True,
                   system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """The chat messages that ask ``question`` over ``pages`` (rank order), each page image
    read from the index and scaled to at most ``max_pixels``."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"the question must be a non-empty string, got {question!r}")
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"Question: {question.strip()}"}]
    for n, ctx in enumerate(pages, start=1):
        parts.append({"type": "text", "text": page_header(n, ctx.file_name, ctx.page)})
        parts.append({"type": "image", "image": ctx.image(max_pixels), "path": ctx.image_path})
        notes = page_notes(ctx.text if with_text else "", ctx.evidence)
        if notes:
            parts.append({"type": "text", "text": notes})
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": parts}]


def message_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content or [])


def message_images(messages: Sequence[dict[str, Any]]) -> list[Any]:
    """Every image of ``messages``, in order."""
    return [p["image"] for m in messages for p in message_parts(m) if p.get("type") == "image"]


def render_prompt(messages: Sequence[dict[str, Any]]) -> str:
    """The messages as text, images as ``<image: PATH, W x H px>``: what ``agree ask`` prints
    when no model is configured."""
    out = []
    for m in messages:
        out.append(f"--- {m['role']} ---")
        for p in message_parts(m):
            if p.get("type") == "image":
                w, h = p["image"].size
                out.append(f"<image: {p.get('path', 'inline')}, {w} x {h} px>")
            else:
                out.append(p["text"])
    return "\n".join(out)
