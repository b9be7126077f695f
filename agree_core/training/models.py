"""Trainable forms of the encoders: differentiable page and query vectors, LoRA through peft,
and saving the result where ``load_encoder("NAME:RUN_DIR")`` finds it.

Every encoder family is trained by the same code: :class:`TrainableEncoder` wraps the inference
encoder of the same name through its public training interface
(:class:`agree_core.encoders.base.TrainableMultiVectorEncoder`), so training sees exactly the
inputs (prompts, image sizes, windows, kept tokens) that indexing and search will see.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from agree_core.encoders.base import TrainableMultiVectorEncoder, VectorBatch
from agree_core.pages import Page

__all__ = ["LoraSettings", "VectorBatch", "TrainableEncoder", "load_trainable"]


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


class TrainableEncoder:
    """What ``training/train.py`` needs from an encoder, for every registered family.

    Args:
        spec: registry spec (``"text-layer"``, ``"colqwen2.5:PATH_OR_ID"``, ``"st:PATH"``...).
        lora: LoRA settings, or ``None`` for full fine-tuning (families that offer it).
        device, dtype, options: passed to the encoder.
    """

    def __init__(self, spec: str, *, lora: LoraSettings | None = LoraSettings(),
                 device: str | None = None, dtype: str = "auto", **options: Any):
        from agree_core.encoders import load_encoder

        name = spec.partition(":")[0]
        encoder = load_encoder(spec, device=device, dtype=dtype, **options)
        if not isinstance(encoder, TrainableMultiVectorEncoder):
            raise ValueError(f"encoder {name!r} has no training interface (load_trainable, use_module, "
                             "embed_pages, embed_queries, save_trained)")
        if lora is None and not encoder.full_finetuning:
            raise ValueError(f"{name} trains through LoRA: full fine-tuning is not offered for it")
        module = encoder.load_trainable()
        if lora is None:
            module.requires_grad_(True)
        elif not hasattr(module, "peft_config"):  # a published adapter is trained further as is
            module = _lora(module, lora, encoder.lora_targets)
        encoder.use_module(module)
        self.name, self.encoder, self.module, self.lora = name, encoder, module, lora
        self.options = dict(options)
        self.device = encoder.device
        self.needs_images = encoder.needs_images

    @property
    def recorded_options(self) -> dict[str, Any]:
        """The encoder options to record next to the trained model (``train_config.yaml``):
        those given, and the encoder's settings whose default has changed over time
        (``checkpoint_options()``, where the encoder has it), so that loading the result
        rebuilds the encoder it was trained as, whatever the defaults are then."""
        extra = getattr(self.encoder, "checkpoint_options", None)
        return {**(extra() if extra is not None else {}), **self.options}

    def encode_pages(self, pages: Sequence[Page]) -> VectorBatch:
        return self.encoder.embed_pages(pages)

    def encode_queries(self, queries: Sequence[str]) -> VectorBatch:
        return self.encoder.embed_queries(queries)

    def save(self, directory: str | Path) -> None:
        self.encoder.save_trained(directory)

    def enable_gradient_checkpointing(self) -> None:
        base = self.module.get_base_model() if hasattr(self.module, "get_base_model") else self.module
        # the model itself, or (a wrapper such as ColModernVBertForRetrieval) its backbone
        found = [m for m in base.modules() if getattr(m, "supports_gradient_checkpointing", False)]
        if not found:
            raise ValueError(f"{self.name} does not support gradient checkpointing: "
                             "set gradient_checkpointing: false")
        target = found[0]
        if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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


def load_trainable(spec: str, *, lora: LoraSettings | None, device: str | None = None,
                   dtype: str = "auto", **options: Any) -> TrainableEncoder:
    """A trainable encoder by registry spec (``"text-layer"``, ``"colqwen2.5:PATH_OR_ID"``...)."""
    return TrainableEncoder(spec, lora=lora, device=device, dtype=dtype, **options)
