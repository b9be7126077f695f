"""Trainable forms of the encoders: differentiable page and query vectors, LoRA through peft,
and saving the result where ``load_encoder("NAME:RUN_DIR")`` finds it.

A trainable encoder wraps the inference encoder of the same name, so training sees exactly
the inputs (prompts, image sizes, windows, kept tokens) that indexing and search will see.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from agree_core.pages import Page

__all__ = ["LoraSettings", "VectorBatch", "TrainableEncoder", "TrainableTextLayer",
           "TrainableColVision", "load_trainable"]

# BERT-style encoders (the text layer's MiniLM): attention and feed-forward projections
TEXT_LAYER_TARGETS = ["query", "key", "value", "dense"]


@dataclass
class LoraSettings:
    """LoRA hyperparameters (ColPali's recipe by default: r 32, alpha 32, dropout 0.1).
    ``target_modules=None`` takes the encoder's default (the published adapters' targets for
    ColVision models, every attention and feed-forward projection for the text layer)."""

    r: int = 32
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] | str | None = None
    init: str = "gaussian"  # peft's init_lora_weights; B starts at zero either way


@dataclass
class VectorBatch:
    """Padded vectors of a batch of pages or queries.

    ``cells``: flat grid cell of each vector, -1 off the grid (prompt tokens, padding);
    ``grids``: each page's ``(rows, cols)`` (empty for queries)."""

    vectors: torch.Tensor  # (n, L, dim)
    mask: torch.Tensor  # (n, L) bool
    cells: torch.Tensor  # (n, L) long
    grids: list[tuple[int, int]] = field(default_factory=list)


class TrainableEncoder:
    """What ``training/train.py`` needs from an encoder."""

    name: str  # the registry name ("text-layer", "colqwen2.5", ...)
    module: torch.nn.Module  # what the optimizer trains (a peft model with LoRA)
    device: torch.device
    needs_images: bool  # pages must be rendered

    def encode_pages(self, pages: Sequence[Page]) -> VectorBatch: ...

    def encode_queries(self, queries: Sequence[str]) -> VectorBatch: ...

    def enable_gradient_checkpointing(self) -> None:
        base = self.module.get_base_model() if hasattr(self.module, "get_base_model") else self.module
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(self.module, "enable_input_require_grads"):
            self.module.enable_input_require_grads()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters by name (checkpoints for ``--resume``)."""
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.module.named_parameters())
        missing = sorted(set(n for n, p in params.items() if p.requires_grad) - set(state))
        unknown = sorted(set(state) - set(params))
        if missing or unknown:
            raise ValueError(f"the checkpoint does not fit this model: {len(missing)} trained "
                             f"parameters missing (e.g. {missing[:2]}), {len(unknown)} unknown "
                             f"(e.g. {unknown[:2]}); was it written with another encoder or LoRA config?")
        with torch.no_grad():
            for n, value in state.items():
                params[n].copy_(value)

    def save(self, directory: str | Path) -> None: ...


def _lora(module: torch.nn.Module, settings: LoraSettings, targets: Any) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("training with LoRA needs peft: pip install 'agree[train]'") from e
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules or targets, bias="none",
                        init_lora_weights=settings.init,
                        task_type="FEATURE_EXTRACTION")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(module, config)


def _pad(vectors: list[torch.Tensor], cells: list[torch.Tensor], grids: list[tuple[int, int]]) -> VectorBatch:
    lengths = torch.tensor([len(v) for v in vectors])
    padded = torch.nn.utils.rnn.pad_sequence(vectors, batch_first=True)  # (n, L, dim)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    cell = torch.nn.utils.rnn.pad_sequence(cells, batch_first=True, padding_value=-1)
    return VectorBatch(padded, mask.to(padded.device), cell.to(padded.device), grids)


class TrainableTextLayer(TrainableEncoder):
    """The text-layer encoder (MiniLM over the page's words), LoRA or full fine-tuning."""

    name = "text-layer"
    needs_images = False

    def __init__(self, checkpoint: str | None = None, *, lora: LoraSettings | None = LoraSettings(),
                 device: str | None = None, **options: Any):
        from agree_core.encoders.text_layer import TextLayerEncoder

        self.encoder = TextLayerEncoder(checkpoint, device=device, dtype="float32", **options)
        self.encoder._load(merge_adapter=False)  # an adapter given as checkpoint stays trainable
        self.device = self.encoder.device
        model = self.encoder._model
        if lora is not None and not hasattr(model, "peft_config"):
            model = _lora(model, lora, TEXT_LAYER_TARGETS)
        elif lora is None:
            model.requires_grad_(True)
        self.encoder._model = self.module = model
        self.lora = lora

    def encode_pages(self, pages: Sequence[Page]) -> VectorBatch:
        from agree_core.encoders.base import cell_of, page_grid

        enc = self.encoder
        words = [enc._words(p) for p in pages]
        tokens = [enc._tokenize_words(ws) for ws in words]
        vectors = enc._encode_token_lists([ids for ids, _ in tokens], grad=torch.is_grad_enabled())
        out_v, out_c, grids = [], [], []
        for page, ws, (ids, word_idx), vecs in zip(pages, words, tokens, vectors):
            grid = page_grid(page.width_pt, page.height_pt, enc.cfg.grid_cells)
            keep = enc._keep_mask(ids).to(vecs.device)
            grids.append(grid)
            if not bool(keep.any()):  # a blank page: one zero vector off the grid
                out_v.append(torch.zeros(1, vecs.shape[1], device=self.device))
                out_c.append(torch.full((1,), -1, dtype=torch.long, device=self.device))
                continue
            word_cells = torch.tensor([cell_of(w.box, grid) for w in ws], dtype=torch.long)
            out_v.append(vecs[keep])
            out_c.append(word_cells[torch.as_tensor(word_idx)[keep.cpu()]].to(self.device))
        return _pad(out_v, out_c, grids)

    def encode_queries(self, queries: Sequence[str]) -> VectorBatch:
        enc = self.encoder
        ids = enc._query_ids(queries)
        vectors = enc._encode_token_lists(ids, grad=torch.is_grad_enabled())
        kept = [v[enc._query_keep(q).to(v.device)] for q, v in zip(ids, vectors)]
        return _pad(kept, [torch.full((len(v),), -1, dtype=torch.long) for v in kept], [])

    def save(self, directory: str | Path) -> None:
        """An adapter directory (``text-layer:DIR`` loads it over its base) or, after full
        fine-tuning, a complete model directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if hasattr(self.module, "peft_config"):
            self.module.save_pretrained(str(directory))
            config_file = directory / "adapter_config.json"
            config = json.loads(config_file.read_text())
            config["base_model_name_or_path"] = self.encoder.base_spec  # the registry name, not the wheel path
            config_file.write_text(json.dumps(config, indent=2))
        else:
            self.module.save_pretrained(str(directory))
            self.encoder._tokenizer.save_pretrained(str(directory))


class TrainableColVision(TrainableEncoder):
    """ColQwen2.5 / ColQwen2 / ColPali with LoRA: from a base checkpoint (new adapter, the
    AGREE recipe) or from a published adapter (trained further)."""

    needs_images = True

    def __init__(self, family: str, checkpoint: str | None = None, *,
                 lora: LoraSettings | None = LoraSettings(), device: str | None = None,
                 dtype: str = "auto", **options: Any):
        from agree_core.encoders.colvision import checkpoint as ckpt
        from agree_core.encoders.colvision.encoder import ColVisionEncoder

        if lora is None:
            raise ValueError(f"{family} trains through LoRA: full fine-tuning of a VLM is not offered")
        self.name = family
        self.encoder = ColVisionEncoder(family, checkpoint, device=device, dtype=dtype, **options)
        self.encoder._load(merge_adapter=False)
        self.device = self.encoder.device
        model = self.encoder._model
        if not hasattr(model, "peft_config"):
            model = _lora(model, lora, ckpt.LORA_TARGET_MODULES[family])
        self.encoder._model = self.module = model
        self.kind = "paligemma" if family == "colpali" else "qwen"

    def _forward(self, items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from agree_core.encoders.colvision.processing import collate

        inputs = self.encoder._inputs
        batch = collate(items, inputs.pad_id, inputs.padding_side)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.encoder.dtype)
        vectors = self.module(**batch).float()  # (n, L, dim)
        return vectors, batch["attention_mask"].bool(), batch["input_ids"]

    def encode_pages(self, pages: Sequence[Page]) -> VectorBatch:
        items = [self.encoder._page_inputs(p, i) for i, p in enumerate(pages)]
        vectors, mask, ids = self._forward(items)
        is_image = ids == self.encoder._inputs.image_token_id  # (n, L)
        cells = torch.where(is_image, is_image.long().cumsum(1) - 1, torch.full_like(ids, -1))
        return VectorBatch(vectors, mask, cells, [x.grid for x in items])

    def encode_queries(self, queries: Sequence[str]) -> VectorBatch:
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"queries must be non-empty strings, got {q!r}")
        vectors, mask, ids = self._forward([self.encoder._inputs.query(q) for q in queries])
        return VectorBatch(vectors, mask, torch.full_like(ids, -1))

    def save(self, directory: str | Path) -> None:
        """A LoRA adapter in the published layout over ``base_spec``: ``NAME:DIR`` loads it."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from agree_core.encoders.colvision import checkpoint as ckpt

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        prefix = "base_model.model."
        rules = ckpt.TO_PUBLISHED[self.kind]
        weights = {prefix + ckpt.rename_key(k[len(prefix):], rules): v.detach().cpu().contiguous()
                   for k, v in get_peft_model_state_dict(self.module).items()}
        save_file(weights, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = self.module.peft_config["default"].to_dict()
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        config.update(base_model_name_or_path=self.encoder.base_spec, peft_type="LORA",
                      task_type="FEATURE_EXTRACTION", inference_mode=True)
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
        tokenizer = self.encoder._inputs.tokenizer
        tokenizer.save_pretrained(str(directory))


def load_trainable(spec: str, *, lora: LoraSettings | None, device: str | None = None,
                   dtype: str = "auto", **options: Any) -> TrainableEncoder:
    """A trainable encoder by registry spec (``"text-layer"``, ``"colqwen2.5:PATH_OR_ID"``...)."""
    from agree_core.encoders.colvision.encoder import FAMILIES

    name, _, checkpoint = spec.partition(":")
    if name == "text-layer":
        if dtype not in ("auto", "float32"):
            raise ValueError("the text layer trains in float32 (it is small; bf16 autocast applies on GPU)")
        return TrainableTextLayer(checkpoint or None, lora=lora, device=device, **options)
    if name in FAMILIES:
        return TrainableColVision(name, checkpoint or None, lora=lora, device=device, dtype=dtype, **options)
    raise ValueError(f"cannot train encoder {name!r}; trainable: text-layer, {', '.join(FAMILIES)}")
