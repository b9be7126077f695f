"""``colmodernvbert``: ColModernVBERT (about 250M parameters: a visual retriever a CPU can run),
through transformers' own ``ColModernVBertForRetrieval`` and ``ColModernVBertProcessor``.

Checkpoint layouts (``--encoder colmodernvbert[:PATH_OR_ID]``):

- a transformers-native checkpoint (``config.json`` with ``model_type: colmodernvbert``, weights
  ``vlm.*`` + ``embedding_proj_layer.*``), e.g. ``ModernVBERT/colmodernvbert-merged``;
- a LoRA adapter over one (``adapter_config.json`` naming it), as ``training/train.py`` writes.

Pages are cut into tiles as Idefics3 does (the page resized to ``size.longest_edge``, tiles of
``max_image_size``), each tile ``image_seq_len`` tokens (8 x 8 for the published model), plus a
global view. Tile tokens keep their cells on the page grid (``R*8`` rows by ``C*8`` columns);
the global view and the prompt have cell ``-1`` (:func:`~agree_core.encoders.image_cells.tile_cells`).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from agree_core.encoders.base import PageEmbedding, VectorBatch, check_options, local_spec
from agree_core.encoders.colvision import checkpoint as ckpt
from agree_core.encoders.image_cells import tile_cells, tile_layout
from agree_core.encoders.registry import register_encoder
from agree_core.pages import Page

log = logging.getLogger(__name__)

__all__ = ["ColModernVBertConfig", "ColModernVBertEncoder", "DEFAULT_CHECKPOINT"]

DEFAULT_CHECKPOINT = "ModernVBERT/colmodernvbert-merged"
# ModernBERT's attention and feed-forward projections, and the output projection
LORA_TARGETS = r"(.*text_model.*\.(Wqkv|Wo|Wi)$|.*embedding_proj_layer$)"


@dataclass
class ColModernVBertConfig:
    """Everything that changes the vectors (saved in the index config)."""

    model: str  # checkpoint or adapter: local path (absolute) or hub id
    base: str | None = None  # base checkpoint of an adapter; default: the adapter's own record
    longest_edge: int | None = None  # page resize before tiling; default the checkpoint's
    query_prefix: str = ""  # the processor's default
    query_augmentation: int = 10  # <end_of_utterance> tokens after the query, as trained
    image_tokens_only: bool = False  # keep only the tiles' vectors


class ColModernVBertEncoder:
    """ColModernVBERT pages and queries as L2-normalised 128-d vectors."""

    needs_images = True
    full_finetuning = False
    lora_targets = LORA_TARGETS

    def __init__(self, checkpoint: str | None = None, *, device: str | None = None, dtype: str = "auto",
                 batch_size: int = 4, query_batch_size: int = 32, progress: bool | None = None,
                 **config: Any):
        from agree_core.encoders.colvision.encoder import _dtype

        check_options("colmodernvbert", list(ColModernVBertConfig.__dataclass_fields__), config, dtype,
                      batch_size, query_batch_size)
        spec = local_spec(config.pop("model", None) or checkpoint or DEFAULT_CHECKPOINT)
        self.cfg = ColModernVBertConfig(model=spec, **config)
        if self.cfg.query_augmentation < 0:
            raise ValueError(f"query_augmentation must be >= 0, got {self.cfg.query_augmentation}")
        self.name = "colmodernvbert" if spec == DEFAULT_CHECKPOINT else f"colmodernvbert:{spec}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(dtype, self.device)
        self.batch_size, self.query_batch_size, self.progress = batch_size, query_batch_size, progress
        self._model = None
        self._processor = None
        self.base_spec: str | None = None

    # -- contract ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._load(merge_adapter=True)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.config.embedding_dim)

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        self.model  # noqa: B018
        out = []
        with torch.inference_mode():
            for lo in range(0, len(pages), self.batch_size):
                batch = self.embed_pages(pages[lo : lo + self.batch_size])
                for v, m, c, g in zip(batch.vectors, batch.mask, batch.cells, batch.grids):
                    out.append(PageEmbedding(v[m].cpu(), g, c[m].cpu()))
        return out

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        self.model  # noqa: B018
        out = []
        with torch.inference_mode():
            for lo in range(0, len(queries), self.query_batch_size):
                batch = self.embed_queries(queries[lo : lo + self.query_batch_size])
                out += [v[m].cpu() for v, m in zip(batch.vectors, batch.mask)]
        return out

    # -- training (agree_core.encoders.base.TrainableMultiVectorEncoder) ----------------------
    def load_trainable(self) -> torch.nn.Module:
        if self._model is None:
            self._load(merge_adapter=False)
        return self._model

    def use_module(self, module: torch.nn.Module) -> None:
        self._model = module

    def embed_pages(self, pages: Sequence[Page]) -> VectorBatch:
        from agree_core.encoders.colvision.processing import page_images

        self.model  # noqa: B018
        batch = self._processor.process_images(page_images(pages))
        vectors, mask = self._forward(batch)
        ids = batch["input_ids"]
        cells, grids = torch.full_like(ids, -1), []
        for row in range(len(ids)):
            is_image = (ids[row] == self._processor.image_token_id) & mask[row].cpu()
            tiles = tile_layout(self._processor.tokenizer.decode(ids[row][~is_image].tolist()))
            grid, cells[row] = tile_cells(is_image, tiles, self._processor.image_seq_len)
            grids.append(grid)
        cells = cells.to(vectors.device)
        if self.cfg.image_tokens_only:
            mask = mask & (cells >= 0)
        return VectorBatch(vectors, mask, cells, grids)

    def embed_queries(self, queries: Sequence[str]) -> VectorBatch:
        self.model  # noqa: B018
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"queries must be non-empty strings, got {q!r}")
        suffix = self._processor.query_augmentation_token * self.cfg.query_augmentation
        batch = self._processor.process_queries(list(queries), suffix=suffix)
        vectors, mask = self._forward(batch)
        return VectorBatch(vectors, mask, torch.full(mask.shape, -1, dtype=torch.long, device=mask.device))

    def save_trained(self, directory: str | Path) -> None:
        """A LoRA adapter over ``base_spec`` (peft's layout): ``colmodernvbert:DIR`` loads it."""
        directory = Path(directory)
        self._model.save_pretrained(str(directory))
        config_file = directory / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = self.base_spec
        config_file.write_text(json.dumps(config, indent=2))
        self._processor.save_pretrained(str(directory))

    # -- internals --------------------------------------------------------------------------
    def _forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in
                  ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask")}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        vectors = self._model(**inputs).embeddings.float()  # (b, L, dim), zero on padding
        return vectors, inputs["attention_mask"].bool()

    def _load(self, *, merge_adapter: bool) -> None:
        from transformers import ColModernVBertForRetrieval
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = ckpt.resolve(self.cfg.model, "colmodernvbert checkpoint")
        adapter = (path / "adapter_config.json").is_file()
        base = path
        if adapter:
            base_spec = self.cfg.base or ckpt.read_json(path / "adapter_config.json").get("base_model_name_or_path")
            if not base_spec:
                raise ckpt.CheckpointError(f"{path}/adapter_config.json names no base model: pass base=PATH_OR_ID")
            base = ckpt.resolve(base_spec, f"base model of {path}")
            self.base_spec = base_spec if not Path(base_spec).expanduser().exists() else str(base)
        else:
            self.base_spec = self.cfg.model
        if not (base / "config.json").is_file():
            raise ckpt.CheckpointError(f"{base} is not a colmodernvbert checkpoint: expected config.json "
                                       "with weights, or adapter_config.json over one")
        found = ckpt.read_json(base / "config.json").get("model_type")
        if found != "colmodernvbert":
            hint = {"modernvbert": ": the colpali-engine layout (ModernVBertModel + custom_text_proj); use its "
                                   "transformers conversion, e.g. ModernVBERT/colmodernvbert-merged",
                    "modernbert": ": a text-only ModernBERT; use --encoder st:PATH if it is a ColBERT model"}.get(found, "")
            raise ckpt.CheckpointError(f"{base} holds a {found!r} model; colmodernvbert needs 'colmodernvbert'{hint}")
        model, info = ColModernVBertForRetrieval.from_pretrained(str(base), dtype=self.dtype,
                                                                 output_loading_info=True)
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ckpt.CheckpointError(f"{base} is not a complete colmodernvbert checkpoint: {len(missing)} "
                                       f"weights missing, e.g. {', '.join(missing[:3])}")
        model = model.to(self.device)
        if adapter:
            try:
                from peft import PeftModel
            except ImportError as e:
                raise ImportError(f"{path} is a LoRA adapter and needs peft: pip install 'agree[visual]'") from e
            if not (path / "adapter_model.safetensors").is_file():
                raise ckpt.CheckpointError(f"{path} has adapter_config.json but no adapter_model.safetensors")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, str(path), is_trainable=not merge_adapter)
            if merge_adapter:
                model = model.merge_and_unload()
        self._model = model.eval()
        self._processor = _processor(path if (path / "tokenizer_config.json").is_file() else base, base,
                                     self.cfg)
        log.info("loaded colmodernvbert from %s (%s, %s)", path, self.device, self.dtype)


def _processor(tok_dir: Path, base: Path, cfg: ColModernVBertConfig):
    """``ColModernVBertProcessor`` built explicitly, over the PIL Idefics3 image processor
    (no torchvision), from the checkpoint's ``processor_config.json``."""
    from transformers import AutoTokenizer, ColModernVBertProcessor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    record: dict[str, Any] = {}
    for d in (tok_dir, base):
        for name in ("processor_config.json", "preprocessor_config.json"):
            if (d / name).is_file():
                record = {**ckpt.read_json(d / name), **record}
    image = dict(record.get("image_processor") or {k: v for k, v in record.items() if k not in
                                                   ("image_seq_len", "processor_class", "query_prefix",
                                                    "visual_prompt_prefix")})
    image.pop("image_processor_type", None)
    image.pop("processor_class", None)
    if cfg.longest_edge is not None:
        if cfg.longest_edge < 1:
            raise ValueError(f"longest_edge must be >= 1, got {cfg.longest_edge}")
        image["size"] = {"longest_edge": cfg.longest_edge}
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    tokenizer.padding_side = "left"  # as colpali-engine's ColModernVBertProcessor pads
    processor = ColModernVBertProcessor(image_processor=Idefics3ImageProcessorPil(**image), tokenizer=tokenizer,
                                        image_seq_len=int(record.get("image_seq_len", 64)),
                                        visual_prompt_prefix=record.get("visual_prompt_prefix"),
                                        query_prefix=cfg.query_prefix)
    return processor


@register_encoder("colmodernvbert", default_checkpoint=DEFAULT_CHECKPOINT, dim=128, gpu=False, parameters="250M",
                  layouts="transformers-native ColModernVBertForRetrieval (model_type colmodernvbert), "
                          "or a LoRA adapter over one")
def _build(checkpoint: str | None = None, **options: Any) -> ColModernVBertEncoder:
    return ColModernVBertEncoder(checkpoint, **options)
