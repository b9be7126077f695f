"""A local vision-language answerer: Qwen2.5-VL or Qwen2-VL instruct (hub id or path), loaded
through the teacher's loader (:func:`agree_core.teacher.qwen.load_qwen_vl`).

Messages (:mod:`agree_core.generation.prompt`) are laid out as Qwen's chat template does::

    <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n[1] a.pdf, page 3\\n
    <|vision_start|><|image_pad|> x n<|vision_end|>...Question: ...<|im_end|>\\n<|im_start|>assistant\\n

with each image resized for the model (``smart_resize`` to multiples of 28, at most
``max_pixels``) and fed as its own pixel patches: one ``<|image_pad|>`` token per 2 x 2 merged
patch. Devices and dtypes as for the encoders: cuda and bf16 when present, float32 on CPU
(bf16 on request), never fp16.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from agree_core.generation.pages import DEFAULT_MAX_PIXELS
from agree_core.generation.prompt import message_parts

log = logging.getLogger(__name__)

__all__ = ["QwenVLGenerator", "Generation", "DEFAULT_GENERATOR"]

DEFAULT_GENERATOR = "Qwen/Qwen2.5-VL-7B-Instruct"


@dataclass
class Generation:
    """A model's answer and what it cost."""

    text: str
    model: str
    finish_reason: str = "stop"  # "stop" (end of turn) or "length" (max_new_tokens reached)
    usage: dict[str, Any] = field(default_factory=dict)  # prompt/completion tokens, image tokens


class QwenVLGenerator:
    """Answers chat messages with page images, from a Qwen2.5-VL / Qwen2-VL instruct checkpoint.

    Args:
        model: hub id or local checkpoint directory.
        device: default cuda when available. dtype: ``auto`` (bf16 on CUDA, float32 on CPU),
            ``float32`` or ``bfloat16``.
        max_pixels: each image is resized to at most this many pixels (28 x 28 per image token).
        max_new_tokens: generation budget. temperature: 0 decodes greedily; above 0 samples.
    """

    def __init__(self, model: str = DEFAULT_GENERATOR, *, device: str | None = None,
                 dtype: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_new_tokens: int = 512, temperature: float = 0.0):
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16' (never float16), got {dtype!r}")
        if not isinstance(max_pixels, int) or max_pixels < 4 * 28 * 28:
            raise ValueError(f"max_pixels must be an integer >= {4 * 28 * 28} (4 image tokens), "
                             f"got {max_pixels!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        self.model_spec, self.dtype_name = model, dtype
        self.name = model  # what answers say they came from
        self.max_pixels, self.max_new_tokens, self.temperature = max_pixels, max_new_tokens, temperature
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model = None
        self._lock = threading.Lock()  # one generation at a time per loaded model

    def warm_up(self) -> None:
        """Load the model now (it loads on first use otherwise)."""
        if self._model is None:
            self._load()

    @property
    def model(self) -> torch.nn.Module:
        """The Qwen2(.5)-VL ``...ForConditionalGeneration`` (loaded on first use)."""
        self.warm_up()
        return self._model

    def inputs(self, messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The model inputs for ``messages``: ``input_ids (1, L)``, ``pixel_values``,
        ``image_grid_thw (n_images, 3)``, ``mm_token_type_ids``, and ``image_tokens`` (the
        ``<|image_pad|>`` count of each image, in order)."""
        from agree_core.encoders.colvision.processing import qwen_pixels

        self.warm_up()
        ids: list[int] = []
        pixels, grids, image_tokens = [], [], []
        for m in messages:
            role = m.get("role")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"message roles must be system, user or assistant, got {role!r}")
            ids += self._tokens(f"<|im_start|>{role}\n")
            parts = message_parts(m)
            for i, part in enumerate(parts):
                if part.get("type") == "image":
                    px, thw = qwen_pixels(part["image"], self._processor, self._min_pixels, self._max_pixels)
                    n = thw[0] * thw[1] * thw[2] // self._merge**2
                    ids += self._vision_start + [self._image_id] * n + self._vision_end
                    pixels.append(px)
                    grids.append(thw)
                    image_tokens.append(n)
                elif part.get("type") == "text":  # a newline between parts, none before <|im_end|>
                    ids += self._tokens(part["text"] + ("\n" if i + 1 < len(parts) else ""))
                else:
                    raise ValueError(f"message parts must be text or image, got {part.get('type')!r}")
            ids += self._tokens("<|im_end|>\n")
        ids += self._tokens("<|im_start|>assistant\n")
        input_ids = torch.tensor([ids], device=self.device)  # (1, L)
        out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                               "mm_token_type_ids": (input_ids == self._image_id).int(),
                               "image_tokens": image_tokens}
        if pixels:
            out["pixel_values"] = torch.cat(pixels).to(self.device, self._dtype)  # (sum patches, patch_dim)
            out["image_grid_thw"] = torch.tensor(grids, device=self.device)  # (n_images, 3)
        return out

    def generate(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Generation:
        """The model's answer to ``messages`` (``kwargs``: ``max_new_tokens``, ``temperature``)."""
        chunks: list[str] = []
        result = self._run(messages, chunks.append, kwargs)
        result.text = "".join(chunks)
        return result

    def stream(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Iterator[str]:
        """The answer as it is decoded, in text chunks (generation runs in a thread)."""
        from transformers import TextIteratorStreamer

        self.warm_up()
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._run(messages, None, kwargs, streamer=streamer)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=work, name="agree-generate", daemon=True)
        thread.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            thread.join()
        if errors:
            raise errors[0]

    # -- internals --------------------------------------------------------------------------
    def _run(self, messages, on_text, kwargs, streamer=None) -> Generation:  # noqa: ANN001
        unknown = set(kwargs) - {"max_new_tokens", "temperature"}
        if unknown:
            raise ValueError(f"unknown generation settings {sorted(unknown)}; "
                             "known: max_new_tokens, temperature")
        max_new = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        temperature = float(kwargs.get("temperature", self.temperature))
        inputs = self.inputs(messages)
        image_tokens = inputs.pop("image_tokens")
        sampling = ({"do_sample": True, "temperature": temperature} if temperature > 0
                    else {"do_sample": False})
        n_prompt = inputs["input_ids"].shape[1]
        with self._lock, torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=max_new, pad_token_id=self._pad_id,
                                       eos_token_id=self._eos_ids, streamer=streamer, **sampling)
        new = out[0, n_prompt:]  # (n_new,)
        if on_text is not None:
            on_text(self._tokenizer.decode(new, skip_special_tokens=True))
        ended = bool(len(new)) and int(new[-1]) in self._eos_ids
        return Generation("", self.model_spec, "stop" if ended else "length",
                          {"prompt_tokens": n_prompt, "completion_tokens": int(len(new)),
                           "image_tokens": image_tokens})

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _load(self) -> None:
        from agree_core.teacher.qwen import image_bounds, load_qwen_vl

        model, self._tokenizer, preprocessor, self._dtype = load_qwen_vl(
            self.model_spec, "answer model", self.device, self.dtype_name)
        self._processor, self._min_pixels, self._max_pixels = image_bounds(
            preprocessor, self.max_pixels // (28 * 28))
        self._merge = self._processor.merge_size
        self._image_id = int(model.config.image_token_id)
        self._vision_start = self._tokens("<|vision_start|>")
        self._vision_end = self._tokens("<|vision_end|>")
        im_end = self._tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._eos_ids = sorted({i for i in (im_end, self._tokenizer.eos_token_id) if i is not None})
        pad = self._tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else self._eos_ids[0]
        self._model = model.to(self.device).eval()
        log.info("loaded answer model %s (%s, %s)", self.model_spec, self.device, self._dtype)
