"""AGREE's teacher: a Qwen2.5-VL (or Qwen2-VL) instruct model reading a page, then a query.

Query-token map (AGREE's default): the input is the chat prompt

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|> IMAGE TOKENS <|vision_end|> QUERY <|im_end|>\\n<|im_start|>assistant\\n

and, in every text layer, the attention from each token of QUERY (only the query's own
tokens: not the template, not special tokens) to each image token is averaged over heads and
query tokens; the layers are then averaged (all of them, or ``layers``). No top-k, threshold
or renormalisation.

Answer-token map (AGREE's ablation): the same prompt with QUERY replaced by
``answer_prompt`` (the question plus "Point out all content ... single word or phrase."); the
last input token's attention, divided element-wise by the same attention under
``baseline_prompt`` ("Write a general description of the image ..."), plus ``eps``.

The map comes back on the teacher's token grid: ``(grid_h / 2, grid_w / 2)`` of the resized
page (Qwen merges 2 x 2 patches into one token, row-major). :func:`align_to_grid` takes it to
any retriever's grid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from agree_core.encoders.colvision import checkpoint as ckpt
from agree_core.encoders.colvision.processing import qwen_image_processor, qwen_min_pixels, qwen_pixels
from agree_core.teacher.attention import column_attention, column_attention_eager, lean_implementation

log = logging.getLogger(__name__)

__all__ = ["TeacherConfig", "QwenVLTeacher", "DEFAULT_TEACHER", "load_qwen_vl", "image_bounds"]

DEFAULT_TEACHER = "Qwen/Qwen2.5-VL-7B-Instruct"


@dataclass
class TeacherConfig:
    """Everything that changes a teacher map (recorded with every cached map)."""

    model: str = DEFAULT_TEACHER
    variant: str = "query"  # "query": query tokens -> image; "answer": last token, divided by baseline
    layers: list[int] | None = None  # text layers averaged (negative from the end); None: all
    max_image_tokens: int = 2048  # AGREE caps the page at 2,048 image tokens
    system_prompt: str | None = "You are a helpful assistant."  # the Qwen chat template's default
    answer_prompt: str = ("Question: {query} Point out all content in the image that is helpful in "
                          "answering the question, response in a single word or phrase.")
    baseline_prompt: str = "Write a general description of the image, response in a single word or phrase."
    eps: float = 1e-8  # answer variant: map = A_answer / (A_baseline + eps)
    dtype: str = "auto"  # auto: bf16 on CUDA, float32 on CPU

    def key(self) -> str:
        """A short digest of the config: maps with different keys are different maps."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class QwenVLTeacher:
    """Teacher attention maps from a Qwen2.5-VL or Qwen2-VL checkpoint (hub id or local path).

    Args:
        device: default cuda when available (each process of a torchrun job uses its own GPU,
            ``cuda:LOCAL_RANK``).
        attn_implementation: the kernel the forward keeps using (``sdpa``, ``flash_attention_2``).
        config: :class:`TeacherConfig` fields.
    """

    def __init__(self, model: str | None = None, *, device: str | None = None,
                 attn_implementation: str = "sdpa", **config: Any):
        self.cfg = TeacherConfig(**({"model": model} if model else {}), **config)
        if self.cfg.variant not in ("query", "answer"):
            raise ValueError(f"variant must be 'query' or 'answer', got {self.cfg.variant!r}")
        if self.cfg.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {self.cfg.dtype!r}")
        if self.cfg.max_image_tokens < 4:
            raise ValueError(f"max_image_tokens must be >= 4, got {self.cfg.max_image_tokens}")
        if "{query}" not in self.cfg.answer_prompt:
            raise ValueError("answer_prompt must contain {query}")
        if Path(self.cfg.model).expanduser().exists():
            self.cfg.model = str(Path(self.cfg.model).expanduser().absolute())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.attn_implementation = attn_implementation
        self._model = None

    @property
    def model(self) -> torch.nn.Module:
        """The Qwen2(.5)-VL ``...Model`` (no language-model head), loaded on first use."""
        if self._model is None:
            self._load()
        return self._model

    def map(self, query: str, image: Image.Image, *, lean: bool = True) -> torch.Tensor:
        """The teacher map of ``query`` over the page ``image``: ``(rows, cols)`` float32 on
        the teacher's token grid. ``lean=False`` computes it from ``output_attentions=True``
        (the reference: every layer's full attention matrix in memory)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"the query must be a non-empty string, got {query!r}")
        self.model  # noqa: B018
        pixels, thw = qwen_pixels(image, self._image_processor, self._min_pixels, self._max_pixels)
        grid = (thw[1] // self._merge, thw[2] // self._merge)
        if self.cfg.variant == "query":
            values = self._attention(query, pixels, thw, lean, rows="text")
        else:
            prompt = self.cfg.answer_prompt.format(query=query)
            answer = self._attention(prompt, pixels, thw, lean, rows="last")
            baseline = self._attention(self.cfg.baseline_prompt, pixels, thw, lean, rows="last")
            values = answer / (baseline + self.cfg.eps)
        return values.view(grid)

    # -- internals --------------------------------------------------------------------------
    def _attention(self, text: str, pixels: torch.Tensor, thw: tuple[int, int, int], lean: bool,
                   rows: str) -> torch.Tensor:
        """Mean over layers of the selected rows' attention to the image tokens: ``(n_image,)``."""
        n_image = thw[0] * thw[1] * thw[2] // self._merge**2
        head, text_ids, tail = self._ids(text)
        ids = head + [self._image_id] * n_image + self._vision_end + text_ids + tail
        input_ids = torch.tensor([ids], device=self.device)  # (1, L)
        start = len(head) + n_image + len(self._vision_end)
        if rows == "text":
            row_pos = torch.arange(start, start + len(text_ids))
        else:
            row_pos = torch.tensor([len(ids) - 1])
        cols = torch.arange(len(head), len(head) + n_image)
        inputs = {"input_ids": input_ids, "pixel_values": pixels.to(self.device, self._dtype),
                  "image_grid_thw": torch.tensor([thw], device=self.device),
                  "mm_token_type_ids": (input_ids == self._image_id).int()}
        run = column_attention if lean else column_attention_eager
        per_layer = run(self._model, inputs, row_pos, cols, self.cfg.layers)  # (n_layers, n_image)
        return per_layer.mean(dim=0)

    def _ids(self, text: str) -> tuple[list[int], list[int], list[int]]:
        system = (f"<|im_start|>system\n{self.cfg.system_prompt}<|im_end|>\n"
                  if self.cfg.system_prompt else "")
        head = self._tokens(system + "<|im_start|>user\n<|vision_start|>")
        text_ids = self._tokens(text)
        if not text_ids:
            raise ValueError(f"the query {text!r} has no tokens")
        tail = self._tokens("<|im_end|>\n<|im_start|>assistant\n")
        return head, text_ids, tail

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _load(self) -> None:
        full, self._tokenizer, preprocessor, self._dtype = load_qwen_vl(
            self.cfg.model, "teacher", self.device, self.cfg.dtype,
            attn_implementation=self.attn_implementation)
        model = full.model  # the language-model head is never needed: drop it
        del full
        model.set_attn_implementation({"text_config": lean_implementation(self.attn_implementation)})
        self._model = model.to(self.device).eval()
        self._image_processor, self._min_pixels, self._max_pixels = image_bounds(preprocessor,
                                                                                 self.cfg.max_image_tokens)
        self._merge = self._image_processor.merge_size
        self._image_id = int(model.config.image_token_id)
        self._vision_end = self._tokens("<|vision_end|>")
        log.info("loaded teacher %s (%s, %s)", self.cfg.model, self.device, self._dtype)


def load_qwen_vl(spec: str, what: str, device: torch.device, dtype: str, **kwargs: Any):
    """A Qwen2.5-VL or Qwen2-VL instruct checkpoint (hub id or path) with its tokenizer and
    preprocessor config: ``(model, tokenizer, preprocessor dict, torch dtype)``. ``dtype``
    ``"auto"`` is bf16 on CUDA GPUs that have it, float32 elsewhere (never fp16)."""
    from transformers import AutoTokenizer
    from transformers import Qwen2_5_VLForConditionalGeneration as Qwen25VL
    from transformers import Qwen2VLForConditionalGeneration as Qwen2VL
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = ckpt.resolve(spec, f"{what} checkpoint")
    if not (path / "config.json").is_file():
        raise ckpt.CheckpointError(f"{path} is not a {what} checkpoint: no config.json "
                                   "(expected a Qwen2.5-VL or Qwen2-VL instruct model)")
    model_type = ckpt.read_json(path / "config.json").get("model_type")
    classes = {"qwen2_5_vl": Qwen25VL, "qwen2_vl": Qwen2VL}
    if model_type not in classes:
        raise ckpt.CheckpointError(f"{path} holds a {model_type!r} model; the {what} must be "
                                   "Qwen2.5-VL or Qwen2-VL (e.g. Qwen/Qwen2.5-VL-7B-Instruct)")
    if dtype in ("float32", "bfloat16"):
        torch_dtype = getattr(torch, dtype)
    else:
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        torch_dtype = torch.bfloat16 if cuda_bf16 else torch.float32
    model = classes[model_type].from_pretrained(str(path), dtype=torch_dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    pre_file = path / "preprocessor_config.json"
    preprocessor = ckpt.read_json(pre_file) if pre_file.is_file() else {}
    return model, tokenizer, preprocessor, torch_dtype


def image_bounds(preprocessor: dict[str, Any], max_image_tokens: int):
    """``(image processor, min pixels, max pixels)`` for pages of at most ``max_image_tokens``
    tokens (after the 2x2 merge)."""
    processor = qwen_image_processor(preprocessor)
    max_pixels = max_image_tokens * (processor.patch_size * processor.merge_size) ** 2
    return processor, min(qwen_min_pixels(preprocessor), max_pixels), max_pixels


def layer_list(text: str | None) -> list[int] | None:
    """``"0,1,-1"`` -> ``[0, 1, -1]``; ``"20-27"`` -> ``[20, ..., 27]``; empty -> None (all).

    >>> layer_list("0,2-4,-1")
    [0, 2, 3, 4, -1]
    """
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(part)])
        except ValueError as e:
            raise ValueError(f"layers must look like 0,1,-1 or 20-27, got {text!r}") from e
    return out

