"""AgreeQwenVL: a local Qwen2.5-VL / Qwen2-VL chat LLM that reads the ImageBlocks of its
messages (the retrieved pages)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Sequence

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from PIL import Image

from agree_core.generation.pages import DEFAULT_MAX_PIXELS
from agree_core.generation.qwen import DEFAULT_GENERATOR, QwenVLGenerator


class AgreeQwenVL(CustomLLM):
    """A Qwen2.5-VL or Qwen2-VL instruct model run here (no API), as a LlamaIndex chat LLM:
    every ``ImageBlock`` of the messages is read as an image, ``TextBlock``s as text.

    ```python
    llm = AgreeQwenVL(model="Qwen/Qwen2.5-VL-3B-Instruct")
    llm.chat([ChatMessage(role="user", blocks=[ImageBlock(path="page.jpg"), TextBlock(text="What is shown?")])])
    ```

    ``ChatResponse.raw`` holds ``usage`` (prompt, completion and image tokens) and
    ``finish_reason``. Weights load on first use. Devices and dtypes as for the encoders.
    """

    model: str = Field(default=DEFAULT_GENERATOR, description="hub id or local checkpoint directory")
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1... (default cuda when available)")
    dtype: str = Field(default="auto", description="auto (bf16 on CUDA, float32 on CPU), float32 or bfloat16")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, description="largest image, in pixels (28 x 28 per token)")
    max_new_tokens: int = Field(default=512, description="answer budget")
    temperature: float = Field(default=0.0, description="0 decodes greedily; above 0 samples")
    context_window: int = Field(default=32768, description="the model's context, in tokens")

    _generator: QwenVLGenerator = PrivateAttr()

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._generator = QwenVLGenerator(self.model, device=self.device, dtype=self.dtype,
                                          max_pixels=self.max_pixels, max_new_tokens=self.max_new_tokens,
                                          temperature=self.temperature)

    @classmethod
    def class_name(cls) -> str:
        return "AgreeQwenVL"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.max_new_tokens,
                           is_chat_model=True, model_name=self.model)

    @property
    def generator(self) -> QwenVLGenerator:
        """The agree_core generator behind this LLM."""
        return self._generator

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        result = self._generator.generate(to_plain_messages(messages), **_settings(kwargs))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text),
                            raw={"usage": result.usage, "finish_reason": result.finish_reason,
                                 "model": result.model})

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        plain, settings = to_plain_messages(messages), _settings(kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            for delta in self._generator.stream(plain, **settings):
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` in a worker thread: the event loop runs on while the model generates."""
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Chunks as they are decoded, generated in a worker thread."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                for r in self.stream_chat(messages, **kwargs):
                    loop.call_soon_threadsafe(chunks.put_nowait, r)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(chunks.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, done)

        async def gen() -> ChatResponseAsyncGen:
            thread = threading.Thread(target=work, name="agree-generate", daemon=True)
            thread.start()
            while (item := await chunks.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self._generator.generate([{"role": "user", "content": prompt}], **_settings(kwargs))
        return CompletionResponse(text=result.text, raw={"usage": result.usage,
                                                         "finish_reason": result.finish_reason})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        settings = _settings(kwargs)

        def gen() -> CompletionResponseGen:
            text = ""
            for delta in self._generator.stream([{"role": "user", "content": prompt}], **settings):
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


def _settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Generation settings LlamaIndex callers pass (others, e.g. ``formatted``, are not ours)."""
    return {k: kwargs[k] for k in ("max_new_tokens", "temperature") if k in kwargs}


def to_plain_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex ChatMessages -> the plain messages of :mod:`agree_core.generation.prompt`
    (blocks in order, images decoded)."""
    out = []
    for m in messages:
        role = m.role.value if hasattr(m.role, "value") else str(m.role)
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"AgreeQwenVL reads system, user and assistant messages, got a {role!r} message")
        parts: list[dict[str, Any]] = []
        for block in m.blocks:
            if isinstance(block, TextBlock):
                parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ImageBlock):
                with Image.open(block.resolve_image()) as img:
                    parts.append({"type": "image", "image": img.convert("RGB")})
            else:
                raise ValueError(f"AgreeQwenVL reads text and image blocks, got a {type(block).__name__}")
        out.append({"role": role, "content": parts})
    return out
