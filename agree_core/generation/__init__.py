"""Answering with the pages: the retrieved page images (from the index), their text and
evidence in a prompt, a vision-language model that reads them, and citations.

- :mod:`~agree_core.generation.pages`: :class:`PageContext` (page, image, citation), evidence.
- :mod:`~agree_core.generation.prompt`: the messages sent (one shape for every generator).
- :mod:`~agree_core.generation.qwen`: a local Qwen2.5-VL / Qwen2-VL generator.
- :mod:`~agree_core.generation.openai_compat`: any OpenAI-compatible endpoint (OpenAI, vLLM...).
- :mod:`~agree_core.generation.ask`: retrieve, prompt, answer (``agree ask``).
"""

from __future__ import annotations

from typing import Any

from agree_core.generation.pages import DEFAULT_MAX_PIXELS, PageContext, fit_image, page_contexts
from agree_core.generation.prompt import SYSTEM_PROMPT, build_messages, render_prompt

__all__ = ["PageContext", "page_contexts", "fit_image", "build_messages", "render_prompt",
           "SYSTEM_PROMPT", "DEFAULT_MAX_PIXELS", "load_generator", "LLM_SCHEMES"]

LLM_SCHEMES = ("openai", "local")


def load_generator(spec: str, **options: Any):
    """A generator from ``openai:MODEL`` (an OpenAI-compatible endpoint, configured by
    ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``) or ``local:ID_OR_PATH`` (a Qwen2.5-VL /
    Qwen2-VL instruct checkpoint run here). ``options`` go to its constructor."""
    scheme, sep, rest = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or scheme not in LLM_SCHEMES or not rest.strip():
        raise ValueError(f"--llm must be openai:MODEL or local:ID_OR_PATH "
                         f"(e.g. openai:gpt-4o-mini, local:Qwen/Qwen2.5-VL-3B-Instruct), got {spec!r}")
    if scheme == "openai":
        from agree_core.generation.openai_compat import OpenAICompatibleGenerator

        options.pop("device", None)
        options.pop("dtype", None)
        if "max_new_tokens" in options:
            options["max_tokens"] = options.pop("max_new_tokens")
        return OpenAICompatibleGenerator(rest, **options)
    from agree_core.generation.qwen import QwenVLGenerator

    return QwenVLGenerator(rest, **options)
