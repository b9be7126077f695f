"""The visual late-interaction encoders: ``colqwen2.5``, ``colqwen2`` and ``colpali``.

Selected by name (``--encoder colqwen2.5``, the published checkpoint) or with a checkpoint
(``--encoder colqwen2.5:PATH_OR_HUB_ID``, e.g. a fine-tuned adapter). A checkpoint is either
a LoRA adapter directory (``adapter_config.json``: its ``base_model_name_or_path`` names the
base, which ``base=`` overrides) or a full directory (``config.json`` + weights with
``custom_text_proj``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from agree_core.encoders.base import PageEmbedding, VectorBatch
from agree_core.encoders.colvision import checkpoint as ckpt
from agree_core.encoders.colvision.processing import Inputs, PaliGemmaInputs, QwenInputs, collate
from agree_core.pages import Page

log = logging.getLogger(__name__)

__all__ = ["ColVisionConfig", "ColVisionEncoder", "FAMILIES"]

QWEN_PAGE_PROMPT = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                    "Describe the image.<|im_end|><|endoftext|>")


@dataclass(frozen=True)
class Family:
    name: str
    default_checkpoint: str
    model_type: str  # config.json model_type of the backbone
    page_prompt: str
    query_suffix: str
    max_visual_tokens: int | None  # None: fixed-size images (ColPali)
    query_prefix: str = "Query: "  # as ColQwen2 v1.0 / ColQwen2.5 v0.2 / ColPali v1.x were trained
    dim: int = 128  # the published projection size (the loaded weights decide)
    query_augmentation: int = 10  # augmentation tokens after the query
    adapters: str | None = None  # task adapters inside the checkpoint: "adapters/{task}" (jina-v4)
    kind: str = ""  # weight layout: "qwen", "qwen3", "paligemma", "jina" (default from model_type)


FAMILIES = {
    f.name: f for f in (
        Family("colqwen2.5", "vidore/colqwen2.5-v0.2", "qwen2_5_vl", QWEN_PAGE_PROMPT, "", 768),
        Family("colqwen2", "vidore/colqwen2-v1.0", "qwen2_vl", QWEN_PAGE_PROMPT, "", 768),
        Family("colpali", "vidore/colpali-v1.3", "paligemma", "<image><bos>Describe the image.", "\n", None),
        # colpali-engine >= 0.3.13 (ColQwen3's era) adds no query prefix; 320-d projection
        Family("colqwen3", "TomoroAI/tomoro-colqwen3-embed-4b", "qwen3_vl", QWEN_PAGE_PROMPT, "", 768,
               query_prefix="", dim=320, kind="qwen3"),
        # jina-embeddings-v4, multi-vector mode: Qwen2.5-VL-3B + multi_vector_projector (128-d), the
        # task's LoRA adapter from adapters/TASK, "Query: "/"Passage: " prompts, no augmentation
        Family("jina-v4", "jinaai/jina-embeddings-v4", "qwen2_5_vl",
               "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|>\n",
               "", 768, query_augmentation=0, adapters="adapters/{task}", kind="jina"),
    )
}


@dataclass
class ColVisionConfig:
    """Everything that changes the vectors (saved in the index config)."""

    model: str  # adapter or full checkpoint: local path (absolute) or hub id
    base: str | None = None  # base checkpoint of an adapter; default: the adapter's own record
    max_visual_tokens: int | None = None  # ColQwen: cap on image tokens per page (768)
    page_prompt: str | None = None
    query_prefix: str | None = None  # default: the family's ("Query: " up to ColQwen2.5, "" for ColQwen3)
    query_suffix: str | None = None  # ColPali: "\n", as in training; ColQwen: ""
    image_tokens_only: bool = False  # keep only image-patch vectors (colpali's mask_non_image_embeddings)
    task: str = "retrieval"  # jina-v4: the task adapter (adapters/TASK in the checkpoint)
    truncate_dim: int | None = None  # keep the first N dims of each vector (re-normalised); None: all
    query_augmentation: int | None = None  # default: the family's (10 for colpali-engine models)


class ColVisionEncoder:
    """ColQwen2.5 / ColQwen2 / ColPali pages and queries as L2-normalised 128-d vectors.

    Args:
        family: ``"colqwen2.5"``, ``"colqwen2"`` or ``"colpali"``.
        checkpoint: path or hub id; default the family's published checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default cuda when available.
        dtype: ``"auto"`` (bf16 on CUDA GPUs with bf16, float32 elsewhere), ``"float32"`` or
            ``"bfloat16"``. float16 is refused (Qwen2-VL overflows in it; CPUs emulate it).
        batch_size: pages per forward pass (pages are sorted by length, so little padding).
        query_batch_size: queries per forward pass.
        progress: show a progress bar over batches; default when encoding more than 64 pages.
        config: :class:`ColVisionConfig` fields.
    """

    needs_images = True
    full_finetuning = False  # a VLM trains through LoRA

    def __init__(self, family: str, checkpoint: str | None = None, *, device: str | None = None,
                 dtype: str = "auto", batch_size: int = 4, query_batch_size: int = 32,
                 progress: bool | None = None, **config: Any):
        if family not in FAMILIES:
            raise ValueError(f"unknown ColVision family {family!r}; choose one of {sorted(FAMILIES)}")
        self.family = FAMILIES[family]
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r} "
                             "(float16 overflows in Qwen2-VL and is emulated on CPUs)")
        if batch_size < 1 or query_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {query_batch_size}")
        unknown = set(config) - set(ColVisionConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown {family} options {sorted(unknown)}; known: device, dtype, "
                            f"batch_size, query_batch_size, progress, "
                            f"{', '.join(ColVisionConfig.__dataclass_fields__)}")
        spec = config.pop("model", None) or checkpoint or self.family.default_checkpoint
        if Path(spec).expanduser().exists():
            spec = str(Path(spec).expanduser().absolute())
        self.cfg = ColVisionConfig(model=spec, **config)
        if self.cfg.page_prompt is None:
            self.cfg.page_prompt = self.family.page_prompt
        if self.cfg.query_suffix is None:
            self.cfg.query_suffix = self.family.query_suffix
        if self.cfg.query_prefix is None:
            self.cfg.query_prefix = self.family.query_prefix
        if self.cfg.query_augmentation is None:
            self.cfg.query_augmentation = self.family.query_augmentation
        if self.cfg.truncate_dim is not None and self.cfg.truncate_dim < 1:
            raise ValueError(f"truncate_dim must be >= 1, got {self.cfg.truncate_dim}")
        if self.family.max_visual_tokens is None:
            if self.cfg.max_visual_tokens is not None:
                raise ValueError(f"{family} takes fixed-size images: max_visual_tokens does not apply")
        elif self.cfg.max_visual_tokens is None:
            self.cfg.max_visual_tokens = self.family.max_visual_tokens
        elif self.cfg.max_visual_tokens < 4:
            raise ValueError(f"max_visual_tokens must be >= 4, got {self.cfg.max_visual_tokens}")
        if self.cfg.query_augmentation < 0:
            raise ValueError(f"query_augmentation must be >= 0, got {self.cfg.query_augmentation}")
        self.name = family if spec == self.family.default_checkpoint else f"{family}:{spec}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(dtype, self.device)
        self.batch_size, self.query_batch_size, self.progress = batch_size, query_batch_size, progress
        self._model = None
        self.base_spec: str | None = None  # the base checkpoint (hub id or absolute path), once loaded
        self.adapter_dir: Path | None = None  # the LoRA adapter applied over it, if any
        self._inputs: QwenInputs | PaliGemmaInputs | None = None

    # -- contract ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def dim(self) -> int:
        full = int(self.model.custom_text_proj.out_features)
        return min(full, self.cfg.truncate_dim) if self.cfg.truncate_dim else full

    @property
    def model(self) -> torch.nn.Module:
        """The loaded model (loaded on first use)."""
        if self._model is None:
            self._load()
        return self._model

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        from tqdm import tqdm

        self.model  # noqa: B018 - load first, so input errors come after checkpoint errors
        show = self.progress if self.progress is not None else len(pages) > 64
        bar = tqdm(total=len(pages), desc="encoding pages", unit="page", disable=not show,
                   dynamic_ncols=True)
        window = max(32, 8 * self.batch_size)  # pages prepared at a time: bounded memory
        out = []
        for lo in range(0, len(pages), window):
            items = [self._page_inputs(page, lo + i) for i, page in enumerate(pages[lo : lo + window])]
            for x, vecs in zip(items, self._run(items, self.batch_size, bar)):
                cells = torch.full((len(x.input_ids),), -1, dtype=torch.long)
                is_image = torch.tensor(x.input_ids) == self._inputs.image_token_id
                cells[is_image] = torch.arange(int(is_image.sum()))  # row-major over x.grid
                if self.cfg.image_tokens_only:
                    vecs, cells = vecs[is_image], cells[is_image]
                out.append(PageEmbedding(vecs, x.grid, cells))
        bar.close()
        return out

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        self.model  # noqa: B018
        _check_queries(queries)
        return self._run([self._inputs.query(q) for q in queries], self.query_batch_size)

    # -- training (agree_core.encoders.base.TrainableMultiVectorEncoder) ----------------------
    @property
    def lora_targets(self) -> str:
        return ckpt.LORA_TARGET_MODULES[self.family.name]

    def load_trainable(self) -> torch.nn.Module:
        """The model for training; a published or fine-tuned adapter stays a trainable peft model."""
        if self._model is None:
            self._load(merge_adapter=False)
        return self._model

    def use_module(self, module: torch.nn.Module) -> None:
        self._model = module

    def embed_pages(self, pages: Sequence[Page]) -> VectorBatch:
        self.model  # noqa: B018
        items = [self._page_inputs(p, i) for i, p in enumerate(pages)]
        vectors, mask, ids = self._forward(items)
        is_image = ids == self._inputs.image_token_id  # (n, L)
        cells = torch.where(is_image, is_image.long().cumsum(1) - 1, torch.full_like(ids, -1))
        if self.cfg.image_tokens_only:
            mask = mask & is_image
        return VectorBatch(vectors, mask, cells, [x.grid for x in items])

    def embed_queries(self, queries: Sequence[str]) -> VectorBatch:
        self.model  # noqa: B018
        _check_queries(queries)
        vectors, mask, ids = self._forward([self._inputs.query(q) for q in queries])
        return VectorBatch(vectors, mask, torch.full_like(ids, -1))

    def save_trained(self, directory: str | Path) -> None:
        """A LoRA adapter in the published layout over ``base_spec``: ``NAME:DIR`` loads it."""
        ckpt.save_adapter(self._model, Path(directory), ckpt.TO_PUBLISHED[self._kind], self.base_spec,
                          self._inputs.tokenizer)

    # -- internals --------------------------------------------------------------------------
    @property
    def _kind(self) -> str:
        return self.family.kind or ("paligemma" if self.family.model_type == "paligemma" else "qwen")

    def _forward(self, items: list[Inputs]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(vectors (n, L, dim) float32, mask (n, L) bool, input_ids (n, L))`` on the device,
        differentiable when autograd is enabled."""
        batch = collate(items, self._inputs.pad_id, self._inputs.padding_side)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        vectors = self._model(**batch).float()  # (n, L, dim)
        if self.cfg.truncate_dim and self.cfg.truncate_dim < vectors.shape[-1]:  # Matryoshka-style prefix
            vectors = torch.nn.functional.normalize(vectors[..., : self.cfg.truncate_dim], dim=-1)
            vectors = vectors * batch["attention_mask"][..., None]
        return vectors, batch["attention_mask"].bool(), batch["input_ids"]

    def _page_inputs(self, page: Page, i: int) -> Inputs:
        try:
            return self._inputs.page(page.image)
        except ValueError as e:
            named = str(page.source) not in ("", ".")
            where = f"page {page.page_no} of {page.source}" if named else f"page {i + 1}"
            raise ValueError(f"{where}: {e}") from e

    def _run(self, items: list[Inputs], batch_size: int, bar=None) -> list[torch.Tensor]:
        """Vectors ``(n_tokens_i, dim)`` float32 on CPU per item, batched by length."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
        out: list[torch.Tensor | None] = [None] * len(items)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            with torch.inference_mode():
                vectors, mask, _ = self._forward([items[i] for i in chunk])  # (b, max_len, dim)
            vectors, mask = vectors.cpu(), mask.cpu()
            for row, i in enumerate(chunk):
                out[i] = vectors[row][mask[row]]  # padding dropped, order kept
            if bar is not None:
                bar.update(len(chunk))
        return out  # type: ignore[return-value]

    def _load(self, *, merge_adapter: bool = True) -> None:
        """Load the checkpoint; ``merge_adapter=False`` keeps a LoRA checkpoint as a trainable
        peft model (fine-tuning; see :mod:`agree_core.training.models`)."""
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        family = self.family
        what = family.name
        path = ckpt.resolve(self.cfg.model, f"{what} checkpoint")
        adapter = (path / "adapter_config.json").is_file()
        inner = path / family.adapters.format(task=self.cfg.task) if family.adapters else None
        if family.adapters and not adapter and (path / "config.json").is_file():
            if not (inner / "adapter_config.json").is_file():  # jina-v4: the task's adapter inside the repo
                found = sorted(p.name for p in (path / "adapters").glob("*/")) if (path / "adapters").is_dir() else []
                raise ckpt.CheckpointError(f"{path} has no {family.adapters.format(task=self.cfg.task)}"
                                           f"/adapter_config.json for task {self.cfg.task!r}"
                                           f"{'; it has ' + ', '.join(found) if found else ''}")
            base, self.base_spec = path, self.cfg.model
            path, adapter = inner, True
        elif adapter:
            recorded = ckpt.read_json(path / "adapter_config.json").get("base_model_name_or_path")
            base_spec = self.cfg.base or recorded
            if not base_spec:
                raise ckpt.CheckpointError(f"{path}/adapter_config.json names no base model: "
                                           "pass base=PATH_OR_ID")
            base = ckpt.resolve(base_spec, f"base model of {path}")
            self.base_spec = base_spec if not Path(base_spec).expanduser().exists() else str(base)
        elif (path / "config.json").is_file():
            base = path
            self.base_spec = self.cfg.model
        else:
            raise ckpt.CheckpointError(
                f"{path} is not a {family.name} checkpoint: expected adapter_config.json (a LoRA "
                "adapter over a base model) or config.json with model weights")
        config = _backbone_config(base, family)
        rules = {"paligemma": ckpt.PALIGEMMA_KEYS, "jina": ckpt.JINA_KEYS}.get(self._kind, ckpt.QWEN_KEYS)
        dim = _projection_dim(base, rules)
        model = ckpt.build_model(lambda: _model_class(family)(config, dim=dim), self.dtype, self.device)
        ckpt.load_weights(model, base, rules, what)
        if adapter:
            model = ckpt.apply_lora_adapter(model, path, rules, what, merge=merge_adapter,
                                            module_renames={"multi_vector_projector": "custom_text_proj"})
        self.adapter_dir = path if adapter else None
        self._model = model.eval()
        tok_dir = path if (path / "tokenizer_config.json").is_file() else base
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        pre_file = next((d / "preprocessor_config.json" for d in (path, base)
                         if (d / "preprocessor_config.json").is_file()), None)
        preprocessor = ckpt.read_json(pre_file) if pre_file else {}
        common = dict(page_prompt=self.cfg.page_prompt, query_prefix=self.cfg.query_prefix,
                      query_augmentation=self.cfg.query_augmentation)
        if family.model_type == "paligemma":
            vision = config.vision_config
            self._inputs = PaliGemmaInputs(tokenizer, preprocessor, image_size=vision.image_size,
                                           patch_size=vision.patch_size,
                                           query_suffix=self.cfg.query_suffix, **common)
        else:
            self._inputs = QwenInputs(tokenizer, preprocessor,
                                      max_visual_tokens=self.cfg.max_visual_tokens, **common)
            if self.cfg.query_suffix:
                self._inputs.query_suffix += self.cfg.query_suffix
        if self._inputs.image_token_id != _image_token_id(config):
            raise ckpt.CheckpointError(
                f"{tok_dir}: the tokenizer's image token id {self._inputs.image_token_id} differs "
                f"from the model's {_image_token_id(config)}: tokenizer and weights do not belong together")
        log.info("loaded %s from %s (%s, %s)", family.name, path, self.device, self.dtype)


def _check_queries(queries: Sequence[str]) -> None:
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"queries must be non-empty strings, got {q!r}")


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # CPU: fp32 by default (bf16 on request), never fp16


def _model_class(family: Family):
    from agree_core.encoders.colvision import modeling

    return {"qwen2_5_vl": modeling.ColQwen2_5, "qwen2_vl": modeling.ColQwen2,
            "qwen3_vl": modeling.ColQwen3, "paligemma": modeling.ColPali}[family.model_type]


def _backbone_config(base: Path, family: Family):
    from transformers import PaliGemmaConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    raw = ckpt.read_json(base / "config.json")
    found = raw.get("model_type")
    if found != family.model_type:
        owner = next((f.name for f in FAMILIES.values() if f.model_type == found), None)
        hint = f": use --encoder {owner}:{base}" if owner else ""
        if found in ("colqwen2", "colpali", "colmodernvbert"):  # transformers' own conversions (-hf)
            hint = (": a transformers-native conversion (a *-hf repo); load it with "
                    f"--encoder st:{base}, or use the adapter repo, e.g. {family.default_checkpoint}")
        raise ckpt.CheckpointError(f"{base} holds a {found!r} model; {family.name} needs "
                                   f"{family.model_type!r}{hint}")
    cls = {"qwen2_5_vl": Qwen2_5_VLConfig, "qwen2_vl": Qwen2VLConfig, "qwen3_vl": Qwen3VLConfig,
           "paligemma": PaliGemmaConfig}[found]
    return cls.from_pretrained(str(base))


def _projection_dim(base: Path, rules) -> int:
    """The output size of ``custom_text_proj`` as saved (128 for the published models)."""
    from safetensors import safe_open

    for file in ckpt._weight_files(base):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if ckpt.rename_key(key, rules) == "custom_text_proj.weight":
                    return int(f.get_slice(key).get_shape()[0])
    raise ckpt.CheckpointError(
        f"{base} has no custom_text_proj weights: it is a plain vision-language model, not a "
        "ColVision base (use the *-base repo, e.g. vidore/colqwen2.5-base, whose projection the "
        "adapter was trained with)")


def _image_token_id(config) -> int:
    return int(getattr(config, "image_token_id", None) or config.image_token_index)
