"""Find and load ColVision checkpoints in the layout the published ones use.

A published checkpoint (``vidore/colqwen2.5-v0.2``, ``vidore/colqwen2-v1.0``,
``vidore/colpali-v1.3``) is a LoRA adapter repo (``adapter_config.json``,
``adapter_model.safetensors``, tokenizer and preprocessor files) over a *base* repo
(``vidore/colqwen2.5-base``...) that holds the backbone plus the 128-d ``custom_text_proj``.
The base repos were saved by transformers 4.4x, whose weight names differ from 5.x's:

==========================  =====================================  ===========================
                            on disk (4.4x save)                    in memory (our classes, 5.x)
==========================  =====================================  ===========================
ColQwen text layers         ``model.{embed_tokens,layers,norm}``   ``language_model.*``
ColQwen vision tower        ``visual.*``                           ``visual.*``
ColPali text layers         ``model.language_model.model.*``       ``model.language_model.*``
ColPali SigLIP              ``model.vision_tower.vision_model.*``  ``model.vision_tower.*``
projection                  ``custom_text_proj.*``                 ``custom_text_proj.*``
==========================  =====================================  ===========================

Adapter keys (``base_model.model.<name>.lora_{A,B}.weight``) get the same renaming. Weights are
loaded by our own explicit renaming, never by transformers' automatic conversion registry, and
any weight of the model left unloaded is an error: a silently random ``embed_tokens`` or
projection (colpali issues #413, #414 and the 0.3.14 changelog) cannot happen here.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "resolve", "rename_key", "QWEN_KEYS", "JINA_KEYS", "PALIGEMMA_KEYS", "TO_PUBLISHED",
           "load_weights", "apply_lora_adapter", "read_json", "LORA_TARGET_MODULES"]

# (pattern, replacement), applied in order as a chain (each may rewrite the previous result)
QWEN_KEYS: list[tuple[str, str]] = [
    (r"^base_model\.model\.custom_text_proj\.", "custom_text_proj."),
    (r"^model\.language_model\.", "language_model."),  # a ...ForConditionalGeneration saved by 5.x
    (r"^model\.visual\.", "visual."),
    (r"^model\.(?=(layers|embed_tokens|norm)\.)", "language_model."),  # transformers 4.4x
]
# jina-embeddings-v4: Qwen2.5-VL + ``multi_vector_projector`` (our ``custom_text_proj``)
JINA_KEYS: list[tuple[str, str]] = [(r"^(base_model\.model\.)?multi_vector_projector\.", "custom_text_proj."),
                                    *QWEN_KEYS]
PALIGEMMA_KEYS: list[tuple[str, str]] = [
    (r"^base_model\.model\.custom_text_proj\.", "custom_text_proj."),
    (r"^model\.model\.", "model."),  # a PaliGemmaForConditionalGeneration wrapper saved by 5.x
    (r"^model\.language_model\.model\.", "model.language_model."),  # transformers 4.4x
    (r"^model\.vision_tower\.vision_model\.", "model.vision_tower."),  # 4.4x SigLIP
]
# our in-memory names -> the published (transformers 4.4x) ones, to save adapters in that layout
TO_PUBLISHED: dict[str, list[tuple[str, str]]] = {
    "qwen": [(r"^language_model\.", "model.")],
    # ColQwen3 was published from transformers 5.x (colpali-engine's qwen3_vl key map)
    "qwen3": [(r"^language_model\.", "model.language_model."), (r"^visual\.", "model.visual.")],
    "jina": [(r"^language_model\.", "model.language_model."), (r"^visual\.", "model.visual."),
             (r"^custom_text_proj\.", "multi_vector_projector.")],
    "paligemma": [(r"^model\.language_model\.", "model.language_model.model."),
                  (r"^model\.vision_tower\.", "model.vision_tower.vision_model.")],
}
_PROJ = "(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj)"
# The published adapters' target_modules (their adapter_config.json): the language model's
# projections and the output projection, never the vision tower. The regexes match our
# in-memory names as well as the published ones.
LORA_TARGET_MODULES = {
    "colqwen2.5": f"(.*(model)(?!.*visual).*{_PROJ}.*$|.*(custom_text_proj).*$)",
    "colqwen2": f"(.*(model).*{_PROJ}.*$|.*(custom_text_proj).*$)",
    "colpali": f"(.*(language_model).*{_PROJ}.*$|.*(custom_text_proj).*$)",
    "colqwen3": f"(.*(model)(?!.*visual).*{_PROJ}.*$|.*(custom_text_proj).*$)",
    "jina-v4": f"(.*(model)(?!.*visual).*{_PROJ}.*$|.*(custom_text_proj).*$)",
}
# the language-model heads are not used by a retriever (and are often absent: tied weights)
_DROPPED = re.compile(r"^(lm_head|model\.lm_head|model\.language_model\.lm_head)\.")

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or is not of the kind asked for."""


def rename_key(key: str, rules: Sequence[tuple[str, str]]) -> str:
    """Our in-memory name for a weight saved under ``key``.

    >>> rename_key("model.layers.0.mlp.up_proj.weight", QWEN_KEYS)
    'language_model.layers.0.mlp.up_proj.weight'
    >>> rename_key("model.vision_tower.vision_model.post_layernorm.bias", PALIGEMMA_KEYS)
    'model.vision_tower.post_layernorm.bias'
    """
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e


def resolve(spec: str, what: str) -> Path:
    """A local directory for ``spec``: a local path, or a hub id (downloaded once, then cached;
    ``HF_HUB_OFFLINE=1`` uses the cache only)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.absolute()
    if path.exists():
        raise CheckpointError(f"{what} {spec} is a file; give a checkpoint directory or a hub id")
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_local:
        raise CheckpointError(f"{what} {spec} does not exist: give a checkpoint directory or a "
                              "Hugging Face hub id such as vidore/colqwen2.5-v0.2")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 - network, auth, offline: all say the same to a user
        raise CheckpointError(
            f"{what} {spec!r} is not a local directory and could not be fetched from the Hugging "
            f"Face hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); on a "
            f"machine with access run `hf download {spec}` and pass the local directory") from e


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(read_json(index)["weight_map"].values()))
        return [directory / n for n in names]
    return sorted(p for p in directory.glob("*.safetensors") if p.name != "adapter_model.safetensors")


def load_weights(model: torch.nn.Module, directory: Path, rules: Sequence[tuple[str, str]],
                 what: str) -> None:
    """Load every safetensors shard of ``directory`` into ``model`` (renamed by ``rules``).

    Raises:
        CheckpointError: no weights, or a weight of the model missing from the checkpoint.
    """
    from safetensors import safe_open

    files = _weight_files(directory)
    if not files:
        raise CheckpointError(f"{directory} holds no *.safetensors weights for {what}")
    own = model.state_dict()
    loaded: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    name = rename_key(key, rules)
                    if _DROPPED.match(name):
                        continue
                    if name not in own:
                        unexpected.append(key)
                        continue
                    tensor = f.get_tensor(key)
                    if tensor.shape != own[name].shape:
                        raise CheckpointError(f"{file.name}: {key} has shape {tuple(tensor.shape)}, "
                                              f"the model expects {tuple(own[name].shape)}")
                    own[name].copy_(tensor)
                    loaded.add(name)
    missing = sorted(set(own) - loaded)
    if missing:
        hint = (" (a plain VLM checkpoint, not a ColVision base: load the *-base repo named in "
                "the adapter's adapter_config.json)" if any("custom_text_proj" in m for m in missing)
                else "")
        raise CheckpointError(f"{directory} is not a complete {what} checkpoint: {len(missing)} "
                              f"weights missing, e.g. {', '.join(missing[:3])}{hint}")
    if unexpected:
        log.warning("%s: ignored %d unknown weights, e.g. %s", directory, len(unexpected), unexpected[:3])


def apply_lora_adapter(model: torch.nn.Module, directory: Path, rules: Sequence[tuple[str, str]],
                       what: str, *, merge: bool = True,
                       module_renames: dict[str, str] | None = None) -> torch.nn.Module:
    """Load the LoRA adapter in ``directory`` through peft and merge it into ``model``
    (``merge=False``: return the peft model with the adapter trainable, to fine-tune it further).

    Raises:
        ImportError: peft is not installed.
        CheckpointError: not a LoRA adapter, or adapter weights that match no module.
    """
    try:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    except ImportError as e:
        raise ImportError("ColVision checkpoints are LoRA adapters and need peft: "
                          "pip install 'agree[visual]' (or pip install 'peft>=0.20')") from e
    from safetensors.torch import load_file

    config = read_json(directory / "adapter_config.json")
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{directory}: a {config.get('peft_type')} adapter; only LoRA is supported")
    lora = LoraConfig.from_pretrained(str(directory))
    for published, ours in (module_renames or {}).items():  # module names that differ from ours
        if isinstance(lora.target_modules, str):
            lora.target_modules = lora.target_modules.replace(published, ours)
        elif lora.target_modules:
            lora.target_modules = {ours if t == published else t for t in lora.target_modules}
    lora.inference_mode = merge
    lora.base_model_name_or_path = model.__dict__.get("name_or_path") or None  # base chosen already
    weights_file = directory / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise CheckpointError(f"{directory} has adapter_config.json but no adapter_model.safetensors")
    prefix = "base_model.model."
    weights = {}
    for key, value in load_file(str(weights_file)).items():
        inner = key[len(prefix):] if key.startswith(prefix) else key
        weights[prefix + rename_key(inner, rules)] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations seen by peft
        peft_model = get_peft_model(model, lora)
    result = set_peft_model_state_dict(peft_model, weights)
    wanted = {k for k in peft_model.state_dict() if ".lora_" in k}
    missing = sorted(k for k in result.missing_keys if k in wanted)
    if result.unexpected_keys or missing:
        bad = list(result.unexpected_keys)[:3] or missing[:3]
        raise CheckpointError(
            f"the adapter in {directory} does not fit this {what} model ("
            f"{len(result.unexpected_keys)} adapter weights match no module, {len(missing)} LoRA "
            f"weights not in the adapter; e.g. {', '.join(bad)})")
    return peft_model.merge_and_unload() if merge else peft_model


def save_adapter(model: torch.nn.Module, directory: Path, rules: Sequence[tuple[str, str]],
                 base_spec: str | None, tokenizer) -> None:
    """Save the LoRA adapter of a peft ``model`` in the published layout (weights renamed by
    ``rules``, ``base_model_name_or_path`` = ``base_spec``), so ``NAME:DIR`` loads it."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    prefix = "base_model.model."
    weights = {prefix + rename_key(k[len(prefix):], rules): v.detach().cpu().contiguous()
               for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = model.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    config.update(base_model_name_or_path=base_spec, peft_type="LORA",
                  task_type="FEATURE_EXTRACTION", inference_mode=True)
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
    tokenizer.save_pretrained(str(directory))


def build_model(factory: Callable[[], torch.nn.Module], dtype: torch.dtype,
                device: torch.device) -> torch.nn.Module:
    """Construct a model without random initialisation (the weights are loaded next)."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), device:
            return factory()
    finally:
        torch.set_default_dtype(previous)
