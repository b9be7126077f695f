"""A jina-reranker-m0-style multimodal reranker: a Qwen2-VL reads the page image and the query
in one sequence, and an MLP head on the last token's hidden state returns the relevance score.

The published checkpoint ``jinaai/jina-reranker-m0`` (see docs/MODELS.md for the sources):

- backbone Qwen2-VL-2B; weights ``model.*`` (text, transformers 4.4x names) or
  ``model.language_model.*`` (saved by >= 4.52), ``visual.*``, ``lm_head.*`` (unused here);
- head ``score.0`` (``Linear(hidden, hidden)``), ReLU, ``score.2`` (``Linear(hidden, 1)``);
- input ``**Document**:\\n<|vision_start|><|image_pad|>...<|vision_end|>\\n**Query**:\\n{query}``
  followed by the score token (id 100); the score is the head's output at that last token;
- images between 3136 and 602112 pixels (<= 768 visual tokens).

Scores are the head's raw output (higher is more relevant); only their order matters here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from agree_core.encoders.colvision import checkpoint as ckpt

log = logging.getLogger(__name__)

__all__ = ["VLMReranker", "RerankerModel", "load_reranker", "RERANKERS", "DOCUMENT_PREFIX", "QUERY_PREFIX"]

DOCUMENT_PREFIX = "**Document**:\n"
QUERY_PREFIX = "\n**Query**:\n"


@dataclass(frozen=True)
class RerankerFamily:
    name: str
    default_checkpoint: str
    score_token_id: int
    max_visual_tokens: int


RERANKERS = {f.name: f for f in (RerankerFamily("jina-m0", "jinaai/jina-reranker-m0", 100, 768),)}


def load_reranker(spec: str, **options: Any) -> "VLMReranker":
    """A reranker by ``"NAME"`` or ``"NAME:PATH_OR_ID"``.

    >>> load_reranker("no-such-reranker")
    Traceback (most recent call last):
    ...
    ValueError: unknown reranker 'no-such-reranker'; available: jina-m0
    """
    name, _, checkpoint = spec.partition(":")
    if name not in RERANKERS:
        raise ValueError(f"unknown reranker {name!r}; available: {', '.join(sorted(RERANKERS))}")
    return VLMReranker(checkpoint or None, family=name, **options)


class RerankerModel(nn.Module):
    """Qwen2-VL backbone + the two-layer scoring head (published names ``score.0``, ``score.2``)."""

    def __init__(self, config):
        super().__init__()
        from transformers import Qwen2VLModel

        hidden = config.text_config.hidden_size
        self.config = config
        self.backbone = Qwen2VLModel(config)
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,  # (batch, n_tokens), left-padded
                pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` scores at the last position (the score token)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                            image_grid_thw=image_grid_thw, use_cache=False,
                            mm_token_type_ids=(input_ids == self.config.image_token_id).int())
        return self.score(out.last_hidden_state[:, -1]).squeeze(-1)  # (batch,)


# published names -> ours: the Qwen2-VL text and vision weights under ``backbone.``
RERANKER_KEYS = [(r"^(?!score\.|lm_head\.)", "backbone."),
                 *[(r"^backbone\." + p[1:], "backbone." + r) for p, r in ckpt.QWEN_KEYS[1:]]]


class VLMReranker:
    """Scores (query, page image) pairs with a jina-reranker-m0-style model.

    Args:
        checkpoint: path or hub id; default the family's published checkpoint.
        device: default cuda when available; dtype: ``"auto"`` (bf16 on CUDA GPUs with bf16,
            float32 elsewhere), ``"float32"`` or ``"bfloat16"``; never float16.
        batch_size: pairs per forward pass.
        max_visual_tokens: cap on image tokens per page (768, as published).
    """

    def __init__(self, checkpoint: str | None = None, *, family: str = "jina-m0", device: str | None = None,
                 dtype: str = "auto", batch_size: int = 4, max_visual_tokens: int | None = None):
        from agree_core.encoders.colvision.encoder import _dtype

        if family not in RERANKERS:
            raise ValueError(f"unknown reranker {family!r}; available: {', '.join(sorted(RERANKERS))}")
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.family = RERANKERS[family]
        spec = checkpoint or self.family.default_checkpoint
        self.checkpoint = str(Path(spec).expanduser().absolute()) if Path(spec).expanduser().exists() else spec
        self.name = family if spec == self.family.default_checkpoint else f"{family}:{self.checkpoint}"
        self.max_visual_tokens = max_visual_tokens or self.family.max_visual_tokens
        if self.max_visual_tokens < 4:
            raise ValueError(f"max_visual_tokens must be >= 4, got {self.max_visual_tokens}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(dtype, self.device)
        self.batch_size = batch_size
        self._model: RerankerModel | None = None

    @property
    def model(self) -> RerankerModel:
        if self._model is None:
            self._load()
        return self._model

    def score(self, query: str, images: Sequence[Image.Image]) -> list[float]:
        """One score per page image for ``query`` (higher is more relevant)."""
        from agree_core.encoders.colvision.processing import collate

        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"the query must be a non-empty string, got {query!r}")
        self.model  # noqa: B018
        items = [self._inputs(query, image) for image in images]
        scores: list[float] = []
        for lo in range(0, len(items), self.batch_size):
            batch = collate(items[lo : lo + self.batch_size], self._pad_id, "left")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
            with torch.inference_mode():
                scores += self._model(**batch).float().cpu().tolist()
        return scores

    def score_refs(self, query: str, refs: Sequence[Any], *, dpi: int = 100) -> list[float | None]:
        """Scores of candidate pages given as :class:`agree_core.rerank.PageRef` (a page image,
        or a PDF ``source`` and ``page`` rendered at ``dpi``), ``None`` for one that names no
        readable page (the reason is logged): what the framework rerankers call."""
        from agree_core.pages import PdfError, iter_pages

        images: list[Image.Image | None] = [None] * len(refs)
        by_pdf: dict[str, list[int]] = {}
        for i, ref in enumerate(refs):
            if ref.image is not None:
                images[i] = ref.image if isinstance(ref.image, Image.Image) else Image.open(ref.image)
            elif ref.source and ref.page and Path(ref.source).is_file():
                by_pdf.setdefault(str(Path(ref.source).absolute()), []).append(i)
            else:
                log.warning("cannot rerank candidate %r: no page image and no existing PDF with a page number",
                            ref.key if ref.key is not None else ref)
        for source, positions in by_pdf.items():
            try:
                pages = {p.page_no: p for p in iter_pages(source, dpi=dpi, text=False,
                                                          pages=sorted({refs[i].page for i in positions}))}
            except (PdfError, ValueError) as e:
                log.warning("cannot rerank pages of %s: %s", source, e)
                continue
            for i in positions:
                images[i] = pages[refs[i].page].image if refs[i].page in pages else None
        found = [i for i, im in enumerate(images) if im is not None]
        out: list[float | None] = [None] * len(refs)
        for i, s in zip(found, self.score(query, [images[i].convert("RGB") for i in found]) if found else []):
            out[i] = s
        return out

    def rerank(self, query: str, hits: Sequence[Any], top_n: int | None = None) -> list[Any]:
        """``hits`` (anything with an ``image`` path and a ``score``, e.g. ``PageIndex`` hits)
        sorted by this model's score, which replaces theirs; the first-stage score is kept in
        ``meta["first_stage_score"]`` when the hit has a ``meta`` dict."""
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        images = []
        for h in hits:
            try:
                with Image.open(h.image) as im:
                    images.append(im.convert("RGB"))
            except (OSError, AttributeError, TypeError) as e:
                raise ValueError(f"cannot read the page image of hit {getattr(h, 'source', h)!r} "
                                 f"page {getattr(h, 'page', '?')}: {e}") from e
        scores = self.score(query, images) if images else []
        out = []
        for h, s in zip(hits, scores):
            meta = getattr(h, "meta", None)
            extra = {"meta": {**meta, "first_stage_score": h.score}} if isinstance(meta, dict) else {}
            out.append(replace(h, score=float(s), **extra))
        out.sort(key=lambda h: -h.score)
        return out[:top_n] if top_n else out

    # -- internals --------------------------------------------------------------------------
    def _inputs(self, query: str, image: Image.Image):
        from agree_core.encoders.colvision.processing import Inputs, qwen_pixels

        pixels, (t, gh, gw) = qwen_pixels(image, self._image_processor, self._min_pixels, self._max_pixels)
        n = t * gh * gw // self._image_processor.merge_size ** 2
        ids = (self._head + [self._vision_start] + [self._image_id] * n + [self._vision_end]
               + self._tokens(QUERY_PREFIX + query) + [self.family.score_token_id])
        return Inputs(ids, pixels, (t, gh, gw))

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _load(self) -> None:
        from transformers import AutoTokenizer, Qwen2VLConfig
        from transformers.utils import logging as hf_logging

        from agree_core.encoders.colvision.processing import _token_id, qwen_image_processor, qwen_min_pixels

        hf_logging.disable_progress_bar()
        path = ckpt.resolve(self.checkpoint, f"{self.family.name} reranker checkpoint")
        if not (path / "config.json").is_file():
            raise ckpt.CheckpointError(f"{path} is not a reranker checkpoint: no config.json")
        found = ckpt.read_json(path / "config.json").get("model_type")
        if found != "qwen2_vl":
            raise ckpt.CheckpointError(f"{path} holds a {found!r} model; the {self.family.name} reranker "
                                       "is a Qwen2-VL ('qwen2_vl') with a score head")
        config = Qwen2VLConfig.from_pretrained(str(path))
        model = ckpt.build_model(lambda: RerankerModel(config), self.dtype, self.device)
        ckpt.load_weights(model, path, RERANKER_KEYS, f"{self.family.name} reranker")
        self._model = model.eval()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        pre_file = path / "preprocessor_config.json"
        preprocessor = ckpt.read_json(pre_file) if pre_file.is_file() else {}
        self._image_processor = qwen_image_processor(preprocessor)
        unit = (self._image_processor.patch_size * self._image_processor.merge_size) ** 2
        self._max_pixels = self.max_visual_tokens * unit
        self._min_pixels = min(qwen_min_pixels(preprocessor), self._max_pixels)
        tok = self._tokenizer
        self._image_id = _token_id(tok, "<|image_pad|>")
        if self._image_id != config.image_token_id:
            raise ckpt.CheckpointError(f"{path}: the tokenizer's image token id {self._image_id} differs from "
                                       f"the model's {config.image_token_id}")
        self._vision_start, self._vision_end = _token_id(tok, "<|vision_start|>"), _token_id(tok, "<|vision_end|>")
        self._pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else _token_id(tok, "<|endoftext|>"))
        self._head = self._tokens(DOCUMENT_PREFIX)
        log.info("loaded %s from %s (%s, %s)", self.family.name, path, self.device, self.dtype)


_SHARED: dict[tuple, "VLMReranker"] = {}


def shared_reranker(spec: str, **options: Any) -> "VLMReranker":
    """The reranker ``load_reranker(spec, **options)`` builds, loaded once per process."""
    key = (spec, tuple(sorted(options.items())))
    if key not in _SHARED:
        _SHARED[key] = load_reranker(spec, **options)
    return _SHARED[key]


def rerank_batch(spec: str, queries: Sequence[str], results: Sequence[Sequence[Any]], k: int,
                 top: int, **options: Any) -> list[list[Any]]:
    """Rerank each query's first ``top`` hits with the reranker ``spec`` and keep ``k``."""
    if k < 1 or top < 1:
        raise ValueError(f"k and the rerank depth must be >= 1, got {k} and {top}")
    reranker = load_reranker(spec, **options)
    return [reranker.rerank(q, list(hits)[:top], top_n=k) for q, hits in zip(queries, results)]
