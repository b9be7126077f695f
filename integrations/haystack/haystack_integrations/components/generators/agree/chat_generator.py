"""AgreeQwenVLChatGenerator: a local Qwen2.5-VL / Qwen2-VL chat generator that reads the
ImageContent parts of its messages (the retrieved pages)."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from haystack import component, default_from_dict
from haystack.dataclasses import (
    ChatMessage,
    ComponentInfo,
    StreamingCallbackT,
    StreamingChunk,
    select_streaming_callback,
)
from haystack.utils import deserialize_callable, serialize_callable
from PIL import Image

from agree_core.generation.pages import DEFAULT_MAX_PIXELS
from agree_core.generation.qwen import DEFAULT_GENERATOR, QwenVLGenerator
from haystack_integrations.document_stores.agree._convert import init_to_dict


@component
class AgreeQwenVLChatGenerator:
    """Answers chat messages with a Qwen2.5-VL or Qwen2-VL instruct model run here (no API),
    reading every ``ImageContent`` of the messages as an image. A drop-in for
    ``OpenAIChatGenerator`` after a ``ChatPromptBuilder`` whose template holds page images.

    The reply's ``meta`` has ``model``, ``finish_reason``, ``usage`` (prompt, completion and
    image tokens) and ``citations``: the ``meta`` of each image the model read (source, page,
    evidence... as :class:`AgreeDocumentToImageContent` sets it), in order.

    ```python
    generator = AgreeQwenVLChatGenerator(model="Qwen/Qwen2.5-VL-3B-Instruct")
    generator.warm_up()
    reply = generator.run(messages)["replies"][0]
    reply.text, reply.meta["citations"]
    ```

    :param model: hub id or local checkpoint directory.
    :param device: ``cpu``, ``cuda``, ``cuda:1``... (default cuda when available).
    :param dtype: ``auto`` (bf16 on CUDA, float32 on CPU), ``float32`` or ``bfloat16``.
    :param max_pixels: each image is resized to at most this many pixels (28 x 28 per token).
    :param generation_kwargs: ``max_new_tokens`` (512), ``temperature`` (0: greedy).
    :param streaming_callback: called with each ``StreamingChunk`` as text is decoded.
    """

    def __init__(self, model: str = DEFAULT_GENERATOR, *, device: str | None = None, dtype: str = "auto",
                 max_pixels: int = DEFAULT_MAX_PIXELS, generation_kwargs: dict[str, Any] | None = None,
                 streaming_callback: StreamingCallbackT | None = None):
        kwargs = dict(generation_kwargs or {})
        self.generator = QwenVLGenerator(model, device=device, dtype=dtype, max_pixels=max_pixels,
                                          max_new_tokens=kwargs.pop("max_new_tokens", 512),
                                          temperature=kwargs.pop("temperature", 0.0))
        if kwargs:
            raise ValueError(f"unknown generation_kwargs {sorted(kwargs)}; known: max_new_tokens, temperature")
        self.model, self.device, self.dtype, self.max_pixels = model, device, dtype, max_pixels
        self.generation_kwargs = generation_kwargs
        self.streaming_callback = streaming_callback

    def warm_up(self) -> None:
        """Load the model (once): ``self.generator``, the agree_core ``QwenVLGenerator``."""
        self.generator.warm_up()

    def to_dict(self) -> dict[str, Any]:
        data = init_to_dict(self)
        if self.streaming_callback is not None:
            data["init_parameters"]["streaming_callback"] = serialize_callable(self.streaming_callback)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeQwenVLChatGenerator":
        params = data.get("init_parameters", {})
        if params.get("streaming_callback"):
            params["streaming_callback"] = deserialize_callable(params["streaming_callback"])
        return default_from_dict(cls, data)

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage], streaming_callback: StreamingCallbackT | None = None,
            generation_kwargs: dict[str, Any] | None = None) -> dict[str, list[ChatMessage]]:
        """The model's reply to ``messages``.

        :param messages: chat messages; user messages may hold ``ImageContent`` parts.
        :param streaming_callback: overrides the init callback.
        :param generation_kwargs: overrides of ``max_new_tokens`` and ``temperature``.
        """
        callback = select_streaming_callback(self.streaming_callback, streaming_callback, requires_async=False)
        plain = to_plain_messages(messages)
        kwargs = generation_kwargs or {}
        if callback is None:
            result = self.generator.generate(plain, **kwargs)
            return {"replies": [self._reply(messages, result.text, result.finish_reason, result.usage)]}
        info = ComponentInfo.from_component(self)
        chunks = []
        for n, text in enumerate(self.generator.stream(plain, **kwargs)):
            chunks.append(text)
            callback(StreamingChunk(content=text, component_info=info, index=0, start=n == 0,
                                    meta={"model": self.model}))
        return {"replies": [self._reply(messages, "".join(chunks), "stop", {})]}

    @component.output_types(replies=list[ChatMessage])
    async def run_async(self, messages: list[ChatMessage], streaming_callback: StreamingCallbackT | None = None,
                        generation_kwargs: dict[str, Any] | None = None) -> dict[str, list[ChatMessage]]:
        """:meth:`run` in a worker thread, so the event loop keeps running while the model generates."""
        if streaming_callback is not None or self.streaming_callback is not None:
            callback = select_streaming_callback(self.streaming_callback, streaming_callback, requires_async=True)
            loop = asyncio.get_running_loop()

            def forward(chunk: StreamingChunk) -> None:  # chunks are handed to the loop as they come
                result = callback(chunk)
                if asyncio.iscoroutine(result):
                    asyncio.run_coroutine_threadsafe(result, loop).result()

            return await asyncio.to_thread(self.run, messages, forward, generation_kwargs)
        return await asyncio.to_thread(self.run, messages, None, generation_kwargs)

    def _reply(self, messages: list[ChatMessage], text: str, finish: str, usage: dict[str, Any]) -> ChatMessage:
        citations = [dict(img.meta) for m in messages for img in m.images]
        return ChatMessage.from_assistant(text, meta={"model": self.model, "index": 0, "finish_reason": finish,
                                                      "usage": usage, "citations": citations})


def to_plain_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Haystack ChatMessages -> the plain messages of :mod:`agree_core.generation.prompt`,
    parts in order, images decoded."""
    if not isinstance(messages, list) or not all(isinstance(m, ChatMessage) for m in messages):
        raise ValueError("messages must be a list of ChatMessage (from a ChatPromptBuilder)")
    out = []
    for m in messages:
        if m.tool_calls or m.tool_call_results:
            raise ValueError("AgreeQwenVLChatGenerator does not call tools: give it text and image messages")
        openai_form = m.to_openai_dict_format(require_tool_call_ids=False)
        content = openai_form.get("content")
        parts: list[dict[str, Any]] = []
        for p in [content] if isinstance(content, str) else content or []:
            if isinstance(p, str):
                parts.append({"type": "text", "text": p})
            elif p.get("type") == "text":
                parts.append({"type": "text", "text": p["text"]})
            elif p.get("type") == "image_url":
                url = p["image_url"]["url"]
                data = base64.b64decode(url.split(",", 1)[1])
                with Image.open(io.BytesIO(data)) as img:
                    parts.append({"type": "image", "image": img.convert("RGB")})
        out.append({"role": m.role.value, "content": parts})
    return out
