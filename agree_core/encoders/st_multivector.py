"""``st:ID_OR_PATH``: any Sentence Transformers ``MultiVectorEncoder`` checkpoint, text or visual.

Sentence Transformers 6 loads ColBERT-style text models (its own saves, PyLate, Stanford
ColBERT) and the transformers-native visual retrievers (``*ForRetrieval``: ColPali, ColQwen2,
ColModernVBert ``-hf`` conversions) through one class; this encoder runs them behind the
:class:`~agree_core.encoders.base.MultiVectorEncoder` protocol, with every vector tied to its
place on the page:

- **text models** read the page's text layer (OCR for scans, as the text layer does), in
  chunks that fit the model's ``document_length``; each kept token vector takes the grid cell
  of the word it came from;
- **visual models** read the page image; image-token vectors take their patch cell
  (:mod:`agree_core.encoders.image_cells`), the prompt's tokens cell ``-1``.

Queries and pages go through the model's own ``query`` and ``document`` prompts, lengths,
expansion and skiplist masks (``MultiVectorEncoder.preprocess`` and its forward pass), so the
vectors are the ones ``encode_query`` / ``encode_document`` return.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from agree_core.encoders.base import (PageEmbedding, VectorBatch, cell_of, check_options, local_spec, page_grid,
                                     pad_vectors)
from agree_core.encoders.colvision.checkpoint import CheckpointError
from agree_core.encoders.image_cells import sequence_cells, tile_cells, tile_layout
from agree_core.encoders.registry import register_encoder
from agree_core.pages import Page, Word

log = logging.getLogger(__name__)

__all__ = ["SentenceTransformersConfig", "SentenceTransformersEncoder"]


@dataclass
class SentenceTransformersConfig:
    """Everything that changes the vectors (saved in the index config)."""

    model: str  # local directory (absolute) or hub id
    grid_cells: int = 1024  # text models: about this many cells per page grid
    ocr: str = "auto"  # text models: OCR pages without a text layer ("auto", "on", "off")
    ocr_dpi: int = 200


class SentenceTransformersEncoder:
    """A Sentence Transformers multi-vector model as an AGREE encoder.

    Args:
        checkpoint: a ``MultiVectorEncoder`` directory or hub id (``st:lightonai/LateOn``).
        device: ``"cpu"``, ``"cuda"``...; default cuda when available.
        dtype: ``"auto"`` (bf16 on CUDA GPUs with bf16, else float32), ``"float32"`` or ``"bfloat16"``.
        batch_size: pages (or text chunks) per forward pass; ``query_batch_size``: queries.
        config: :class:`SentenceTransformersConfig` fields.
    """

    full_finetuning = True

    def __init__(self, checkpoint: str | None = None, *, device: str | None = None, dtype: str = "auto",
                 batch_size: int = 8, query_batch_size: int = 32, progress: bool | None = None,
                 **config: Any):
        if not checkpoint and not config.get("model"):
            raise ValueError("the st encoder needs a checkpoint: --encoder st:ID_OR_PATH (a Sentence "
                             "Transformers MultiVectorEncoder directory or hub id)")
        check_options("st", list(SentenceTransformersConfig.__dataclass_fields__), config, dtype,
                      batch_size, query_batch_size)
        spec = local_spec(config.pop("model", None) or checkpoint)
        self.cfg = SentenceTransformersConfig(model=spec, **config)
        if self.cfg.ocr not in ("auto", "on", "off"):
            raise ValueError(f"ocr must be 'auto', 'on' or 'off', got {self.cfg.ocr!r}")
        self.name = f"st:{spec}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        from agree_core.encoders.colvision.encoder import _dtype

        self.dtype = _dtype(dtype, self.device)
        self.batch_size, self.query_batch_size, self.progress = batch_size, query_batch_size, progress
        self._st = None
        self._trainable: torch.nn.Module | None = None

    # -- contract ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def model(self):
        """The loaded ``sentence_transformers.MultiVectorEncoder`` (loaded on first use)."""
        if self._st is None:
            self._load()
        return self._st

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def needs_images(self) -> bool:
        return "image" in self.model.modalities

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        self.model  # noqa: B018 - loaded outside inference mode, so it stays trainable
        with torch.inference_mode():
            return [PageEmbedding(v.cpu(), grid, c.cpu(), text)
                    for v, c, grid, text in self._pages(pages, self.batch_size)]

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        _check_queries(queries)
        self.model  # noqa: B018
        with torch.inference_mode():
            return [r[0].float().cpu() for r in self._run(list(queries), "query", self.query_batch_size)]

    # -- training (agree_core.encoders.base.TrainableMultiVectorEncoder) ----------------------
    @property
    def lora_targets(self) -> list[str]:
        """Every linear layer of the backbone (attention, feed-forward) and the projection."""
        return sorted({n.rsplit(".", 1)[-1] for n, m in self.model.named_modules()
                       if isinstance(m, torch.nn.Linear)})

    def load_trainable(self) -> torch.nn.Module:
        return self.model

    def use_module(self, module: torch.nn.Module) -> None:
        """``module``: the model itself or a peft wrapper of it (LoRA is injected in place)."""
        self._trainable = module

    def embed_pages(self, pages: Sequence[Page]) -> VectorBatch:
        out = self._pages(pages, max(len(pages), 1))
        return pad_vectors([v.float() for v, _, _, _ in out], [c for _, c, _, _ in out], [g for _, _, g, _ in out])

    def embed_queries(self, queries: Sequence[str]) -> VectorBatch:
        _check_queries(queries)
        return pad_vectors([r[0].float() for r in self._run(list(queries), "query", max(len(queries), 1))])

    def save_trained(self, directory: str | Path) -> None:
        """A complete ``MultiVectorEncoder`` directory (LoRA merged): ``st:DIR`` loads it."""
        module = self._trainable
        if module is not None and hasattr(module, "merge_and_unload"):
            module.merge_and_unload()  # LoRA folded into the model's own layers, in place
            self._trainable = None
        self.model.save(str(directory))

    # -- internals --------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            from sentence_transformers import MultiVectorEncoder
        except ImportError as e:
            raise ImportError("st: encoders need sentence-transformers 6: pip install 'agree[st]'") from e
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        spec = self.cfg.model
        local = Path(spec).expanduser()
        if local.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
            _check_directory(local, spec)
        try:
            st = MultiVectorEncoder(spec, device=str(self.device), local_files_only=local.is_dir(),
                                    model_kwargs={"dtype": self.dtype})
        except OSError as e:  # the hub: offline, unknown repo, no access
            raise CheckpointError(f"st checkpoint {spec!r} is not a local directory and could not be "
                                  f"loaded from the Hugging Face hub ({str(e).splitlines()[0]}); on a "
                                  f"machine with access run `hf download {spec}` and pass the directory") from e
        self._st = st.eval()
        self._visual = "image" in st.modalities
        if self._visual:
            self._layout = _ImageLayout(st)
        log.info("loaded %s (%s, %s, %s)", spec, "visual" if self._visual else "text", self.device, self.dtype)

    def _prompt(self, task: str) -> str | None:
        names = ("query",) if task == "query" else ("document", "passage", "corpus")
        prompts = self.model.prompts or {}
        return next((prompts[n] for n in names if prompts.get(n)), None)

    def _run(self, inputs: list, task: str, batch_size: int) -> list[tuple]:
        """``(vectors (n_i, dim), input_ids (L_i,), kept (L_i,) bool, image_grid_thw or None)``
        per input, in order; differentiable when autograd is enabled, on the model's device."""
        from sentence_transformers.util import batch_to_device

        st = self.model
        prompt = self._prompt(task)
        out: list = [None] * len(inputs)
        order = sorted(range(len(inputs)), key=lambda i: -_length(inputs[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            features = st.preprocess([inputs[i] for i in chunk], prompt=prompt, task=task)
            if "input_ids" not in features:
                name = type(st[0].processor).__name__
                raise ValueError(f"{self.cfg.model}: sentence-transformers gives its {name} page images without a "
                                 "prompt (no input_ids), so the model cannot run on them; load this checkpoint "
                                 "with its own family instead (e.g. --encoder colmodernvbert:PATH)")
            features = st(batch_to_device(features, self.device), task=task)
            tokens = features["token_embeddings"]  # (b, L, dim)
            kept = features["attention_mask"].bool()  # (b, L): the model's scoring mask
            ids = features["input_ids"]
            thw = features.get("image_grid_thw")  # (b, 3): Qwen-VL image grids
            for row, i in enumerate(chunk):
                out[i] = (tokens[row][kept[row]], ids[row].cpu(), kept[row].cpu(),
                          None if thw is None else thw[row].tolist())
        return out

    def _pages(self, pages: Sequence[Page], batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor, tuple[int, int], str | None]]:
        """``(vectors, cells, grid, text)`` per page."""
        self.model  # noqa: B018
        if self._visual:
            from agree_core.encoders.colvision.processing import page_images

            images = page_images(pages)
            out = []
            for vectors, ids, kept, thw in self._run(images, "document", batch_size):
                grid, cells = self._layout.cells(ids, thw)
                out.append((vectors, cells[kept].to(vectors.device), grid, None))
            return out
        return self._text_pages(pages, batch_size)

    def _text_pages(self, pages: Sequence[Page], batch_size: int):
        tokenizer = self.model.tokenizer
        budget = max(8, _document_length(self.model) - 8 - len(tokenizer(self._prompt("document") or "",
                                                                            add_special_tokens=False)["input_ids"]))
        chunks: list[str] = []
        owners: list[tuple[int, list[int], list[int]]] = []  # page, chunk token ids, word of each token
        words_of = [_page_words(p, self.cfg) for p in pages]
        for p, words in enumerate(words_of):
            for text, ids, word_idx in _chunks(tokenizer, words, budget):
                chunks.append(text)
                owners.append((p, ids, word_idx))
        results = self._run(chunks, "document", batch_size) if chunks else []
        vecs: list[list[torch.Tensor]] = [[] for _ in pages]
        cells: list[list[torch.Tensor]] = [[] for _ in pages]
        grids = [page_grid(p.width_pt, p.height_pt, self.cfg.grid_cells) for p in pages]
        word_cells = [torch.tensor([cell_of(w.box, g) for w in ws], dtype=torch.long)
                      for ws, g in zip(words_of, grids)]
        for (p, ids, word_idx), (vectors, st_ids, kept, _) in zip(owners, results):
            token_cells = torch.full((len(st_ids),), -1, dtype=torch.long)
            at, n = _align(st_ids.tolist(), ids)
            token_cells[at : at + n] = word_cells[p][torch.tensor(word_idx[:n], dtype=torch.long)]
            vecs[p].append(vectors)
            cells[p].append(token_cells[kept].to(vectors.device))
        out = []
        for p, page in enumerate(pages):
            text = " ".join(w.text for w in words_of[p]) or None
            if not vecs[p]:  # a blank page: one zero vector off the grid, scoring 0
                out.append((torch.zeros(1, self.dim, device=self.device), torch.full((1,), -1, dtype=torch.long),
                            grids[p], text))
                continue
            out.append((torch.cat(vecs[p]), torch.cat(cells[p]), grids[p], text))
        return out


class _ImageLayout:
    """Cells of a visual ``MultiVectorEncoder``'s image tokens, by the backbone's layout."""

    def __init__(self, st):
        config = st.transformers_model.config
        vlm = getattr(config, "vlm_config", None) or config
        self.kind = vlm.model_type
        token = getattr(vlm, "image_token_id", None)
        self.image_token_id = int(token if token is not None else vlm.image_token_index)
        vision = getattr(vlm, "vision_config", None)
        self.merge = int(getattr(vision, "spatial_merge_size", 2) or 2)
        processor = st.processor
        self.seq_len = getattr(processor, "image_seq_len", None)
        self.tokenizer = st.tokenizer

    def cells(self, ids: torch.Tensor, grid_thw: list[int] | None) -> tuple[tuple[int, int], torch.Tensor]:
        is_image = ids == self.image_token_id
        if grid_thw is not None:  # Qwen-VL: row-major over the merged patch grid
            t, h, w = (int(x) for x in grid_thw)
            grid = (h // self.merge, w // self.merge)
            return grid, sequence_cells(is_image, grid)
        if self.kind in ("idefics3", "modernvbert") and self.seq_len:
            tiles = tile_layout(self.tokenizer.decode(ids[~is_image].tolist()))
            return tile_cells(is_image, tiles, int(self.seq_len))
        side = int(round(int(is_image.sum()) ** 0.5))  # fixed-size square images (PaliGemma)
        return (side, side), sequence_cells(is_image, (side, side))


def _check_directory(path: Path, spec: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"st checkpoint {spec} does not exist: give a Sentence Transformers "
                              "MultiVectorEncoder directory or a hub id such as lightonai/LateOn")
    st_config = path / "config_sentence_transformers.json"
    kind = json.loads(st_config.read_text()).get("model_type") if st_config.is_file() else None
    architectures = []
    if (path / "config.json").is_file():
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    multi = kind in ("MultiVectorEncoder", "ColBERT") or "HF_ColBERT" in architectures or any(
        a.endswith("ForRetrieval") for a in architectures)
    if multi:
        return
    if kind or (path / "modules.json").is_file():
        raise CheckpointError(f"{path} is a {kind or 'SentenceTransformer'} checkpoint (one vector per text), "
                              "not a multi-vector one: loading it would add an untrained projection. Use a "
                              "MultiVectorEncoder/ColBERT checkpoint, or train one first")
    raise CheckpointError(f"{path} is not a Sentence Transformers multi-vector checkpoint: expected "
                          "config_sentence_transformers.json of a MultiVectorEncoder, a ColBERT save, or a "
                          "transformers *ForRetrieval model")


def _document_length(st) -> int:
    first = st[0]
    for attr in ("document_length", "max_seq_length"):
        value = getattr(first, attr, None)
        if value:
            return int(value)
    return min(512, int(getattr(st.tokenizer, "model_max_length", 512)))


def _page_words(page: Page, cfg: SentenceTransformersConfig) -> list[Word]:
    if page.words or cfg.ocr == "off":
        return page.words
    from agree_core.ocr import is_blank, ocr_available, ocr_words

    if page.image is not None and is_blank(page.image):
        return []
    if not ocr_available():
        if cfg.ocr == "on":
            raise ImportError("ocr='on' needs rapidocr and onnxruntime: pip install 'agree[ocr]'")
        return []
    return ocr_words(page.render(cfg.ocr_dpi))


def _chunks(tokenizer, words: list[Word], budget: int) -> list[tuple[str, list[int], list[int]]]:
    """Consecutive words in pieces of at most ``budget`` tokens: ``(text, token ids, word index
    of each token)``, tokenised as the model will tokenise the joined text."""
    out, start = [], 0
    while start < len(words):
        end = min(len(words), start + budget)  # a word is at least one token
        while True:
            text = " ".join(w.text for w in words[start:end])
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            if len(enc["input_ids"]) <= budget or end - start == 1:
                break
            end = start + max(1, (end - start) * budget // len(enc["input_ids"]))
        bounds, pos = [], 0
        for w in words[start:end]:
            bounds.append(pos + len(w.text))
            pos += len(w.text) + 1
        word_idx = [start + _word_at(bounds, s) for s, _ in enc["offset_mapping"]]
        out.append((text, list(enc["input_ids"]), word_idx))
        start = end
    return out


def _word_at(ends: list[int], char: int) -> int:
    import bisect

    return min(bisect.bisect_right(ends, char), len(ends) - 1)


def _align(full: list[int], part: list[int]) -> tuple[int, int]:
    """Where the longest prefix of ``part`` occurs in ``full``: ``(start, length)``.

    >>> _align([101, 7, 8, 5, 6, 102], [5, 6, 9])
    (3, 2)
    """
    best = (0, 0)
    for i in range(len(full)):
        n = 0
        while i + n < len(full) and n < len(part) and full[i + n] == part[n]:
            n += 1
        if n > best[1]:
            best = (i, n)
    return best


def _length(x) -> int:
    return len(x) if isinstance(x, str) else 0


def _check_queries(queries: Sequence[str]) -> None:
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"queries must be non-empty strings, got {q!r}")


@register_encoder("st", layouts="a Sentence Transformers MultiVectorEncoder save, PyLate or Stanford ColBERT "
                                "(text), transformers *ForRetrieval (visual)")
def _build(checkpoint: str | None = None, **options: Any) -> SentenceTransformersEncoder:
    return SentenceTransformersEncoder(checkpoint, **options)
