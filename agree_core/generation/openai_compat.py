"""Answers from any OpenAI-compatible chat completions endpoint: OpenAI itself, or a local
server speaking the same API (vLLM, llama.cpp's server, Ollama, LM Studio, ...).

Configuration comes from the environment, as the OpenAI clients read it: ``OPENAI_API_KEY``
and ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``). A server of your own at
``OPENAI_BASE_URL`` may need no key. Page images travel as base64 JPEG ``image_url`` parts.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from typing import Any, Iterator, Sequence

from agree_core.generation.pages import DEFAULT_MAX_PIXELS, fit_image
from agree_core.generation.prompt import message_parts
from agree_core.generation.qwen import Generation

log = logging.getLogger(__name__)

__all__ = ["OpenAICompatibleGenerator", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatibleGenerator:
    """Chat completions with page images over HTTP (``httpx``).

    Args:
        model: the model name the endpoint serves (``gpt-4o-mini``, ``Qwen/Qwen2.5-VL-7B-Instruct``...).
        base_url, api_key: default ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` from the environment.
        max_pixels: each image is scaled down to at most this many pixels before it is sent.
        detail: OpenAI's image ``detail`` (``auto``, ``low``, ``high``).
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, max_tokens: int = 512,
                 temperature: float = 0.0, detail: str = "auto", timeout: float = 120.0,
                 transport: Any = None):
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"give the model the endpoint serves, e.g. openai:gpt-4o-mini; got {model!r}")
        if detail not in ("auto", "low", "high"):
            raise ValueError(f"detail must be 'auto', 'low' or 'high', got {detail!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        env_url = os.environ.get("OPENAI_BASE_URL") or None
        self.base_url = (base_url or env_url or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
            raise ValueError("OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-... for OpenAI, "
                             "or export OPENAI_BASE_URL=http://HOST:PORT/v1 for a server of your own "
                             "(vLLM, llama.cpp, Ollama), which may need no key")
        self.model, self.max_pixels, self.max_tokens = model, max_pixels, max_tokens
        self.name = model  # what answers say they came from
        self.temperature, self.detail, self.timeout, self.transport = temperature, detail, timeout, transport

    def payload(self, messages: Sequence[dict[str, Any]], stream: bool = False, **kwargs: Any) -> dict[str, Any]:
        """The JSON body sent for ``messages``."""
        unknown = set(kwargs) - {"max_tokens", "temperature"}
        if unknown:
            raise ValueError(f"unknown generation settings {sorted(unknown)}; known: max_tokens, temperature")
        body: dict[str, Any] = {
            "model": self.model, "messages": [self._message(m) for m in messages],
            "max_tokens": int(kwargs.get("max_tokens", self.max_tokens)),
            "temperature": float(kwargs.get("temperature", self.temperature)),
        }
        if stream:
            body["stream"] = True
        return body

    def generate(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Generation:
        with self._client() as client:
            response = client.post("/chat/completions", json=self.payload(messages, **kwargs))
            self._check(response)
            data = response.json()
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"{self.base_url} answered without a chat completion: {str(data)[:300]}") from e
        return Generation(text, data.get("model", self.model), choice.get("finish_reason") or "stop",
                          dict(data.get("usage") or {}))

    def stream(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Iterator[str]:
        """The answer in chunks as the server sends them (server-sent events)."""
        with self._client() as client:
            with client.stream("POST", "/chat/completions",
                               json=self.payload(messages, stream=True, **kwargs)) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        return
                    try:
                        delta = json.loads(data)["choices"][0].get("delta") or {}
                    except (json.JSONDecodeError, KeyError, IndexError) as e:
                        raise RuntimeError(f"{self.base_url} sent a malformed stream event: {data[:200]}") from e
                    if delta.get("content"):
                        yield delta["content"]

    # -- internals --------------------------------------------------------------------------
    def _client(self):  # noqa: ANN202
        try:
            import httpx
        except ImportError as e:
            raise ImportError("the OpenAI-compatible client needs httpx: pip install 'agree[openai]'") from e

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout,
                            transport=self.transport)

    def _check(self, response: Any) -> None:
        if response.status_code < 400:
            return
        try:
            detail = response.json().get("error", {})
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except (ValueError, AttributeError):
            detail = response.text[:300]
        hint = " (check OPENAI_API_KEY)" if response.status_code in (401, 403) else ""
        raise RuntimeError(f"{self.base_url}/chat/completions answered HTTP {response.status_code}"
                           f"{hint}: {detail}")

    def _message(self, m: dict[str, Any]) -> dict[str, Any]:
        if isinstance(m.get("content"), str):
            return {"role": m["role"], "content": m["content"]}
        parts = []
        for p in message_parts(m):
            if p.get("type") == "image":
                url = "data:image/jpeg;base64," + jpeg_base64(fit_image(p["image"], self.max_pixels))
                parts.append({"type": "image_url", "image_url": {"url": url, "detail": self.detail}})
            else:
                parts.append({"type": "text", "text": p["text"]})
        return {"role": m["role"], "content": parts}


def jpeg_base64(image: Any, quality: int = 90) -> str:
    """A PIL image as base64 JPEG."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")
