"""Encoders by name: ``"text-layer"``, or ``"NAME:PATH_OR_ID"`` for a specific checkpoint."""

from __future__ import annotations

from typing import Any, Callable

from agree_core.encoders.base import MultiVectorEncoder

__all__ = ["register_encoder", "load_encoder", "available_encoders", "encoder_info", "recorded_config",
           "DEFAULT_ENCODER"]

DEFAULT_ENCODER = "text-layer"

# name -> factory(checkpoint: str | None, **options) -> encoder
_FACTORIES: dict[str, Callable[..., MultiVectorEncoder]] = {}
# name -> what `agree encoders` shows (default checkpoint, dim, gpu, layouts, parameters)
_INFO: dict[str, dict[str, Any]] = {}
# name -> upgrade(config) -> config: the options an index recorded, completed with the values
# that applied before an option existed (an index built then keeps its vectors' meaning)
_RECORDED: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
# name -> upgrade(checkpoint, options) -> options: the same for the encoder options a training run
# recorded (train_config.yaml), so that a fine-tuned model loads with the settings it was trained with
_TRAINED: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {}


def register_encoder(name: str, *, default_checkpoint: str | None = None, dim: int | None = None,
                     gpu: bool | None = None, layouts: str = "", parameters: str = "",
                     recorded: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                     trained: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
                     ) -> Callable[[Callable[..., MultiVectorEncoder]], Callable[..., MultiVectorEncoder]]:
    """Register ``factory(checkpoint, **options)`` under ``name``, with what ``agree encoders``
    lists about it: the default checkpoint (``None``: a checkpoint must be given), the vector
    dim (``None``: the checkpoint's), whether a GPU is needed to be practical (``None``: it
    depends on the checkpoint), the checkpoint layouts accepted and the model size.
    ``recorded(config)`` completes the encoder config an older index recorded (see
    :func:`recorded_config`); ``trained(checkpoint, options)`` completes the encoder options an
    older run of ``training/train.py`` recorded for ``checkpoint``."""
    def wrap(factory: Callable[..., MultiVectorEncoder]) -> Callable[..., MultiVectorEncoder]:
        _FACTORIES[name] = factory
        if recorded is not None:
            _RECORDED[name] = recorded
        if trained is not None:
            _TRAINED[name] = trained
        _INFO[name] = {"name": name, "default_checkpoint": default_checkpoint, "dim": dim, "gpu": gpu,
                       "layouts": layouts, "parameters": parameters}
        return factory

    return wrap


def encoder_info() -> list[dict[str, Any]]:
    """What is known about each registered encoder without loading it (default first)."""
    _register_builtins()
    return [_INFO[n] for n in sorted(_INFO, key=lambda n: (n != DEFAULT_ENCODER, n))]


def available_encoders() -> list[str]:
    _register_builtins()
    return sorted(_FACTORIES)


def load_encoder(spec: str = DEFAULT_ENCODER, **options: Any) -> MultiVectorEncoder:
    """Build the encoder named by ``spec`` (``"NAME"`` or ``"NAME:PATH_OR_ID"``).

    Options are passed to the encoder (device, dtype, batch sizes...).

    >>> load_encoder("no-such-encoder")
    Traceback (most recent call last):
    ...
    ValueError: unknown encoder 'no-such-encoder'; available: text-layer, colmodernvbert, colpali, colqwen2, colqwen2.5, colqwen3, jina-v4, st
    """
    _register_builtins()
    name, _, checkpoint = spec.partition(":")
    if name not in _FACTORIES:
        names = sorted(available_encoders(), key=lambda n: (n != DEFAULT_ENCODER, n))  # default first
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(names)}")
    return _FACTORIES[name](checkpoint or None, **{**_trained_with(name, checkpoint), **options})


def recorded_config(spec: str, config: dict[str, Any]) -> dict[str, Any]:
    """The encoder config an index recorded for ``spec``, with each option it lacks (an index
    built before the option existed) set to the value that built its vectors, not today's default.

    >>> recorded_config("text-layer", {"window": 256, "skip_stopwords": True})["sentence_weight"]
    0.0
    """
    _register_builtins()
    upgrade = _RECORDED.get(spec.partition(":")[0])
    return upgrade(dict(config)) if upgrade is not None else dict(config)


def _trained_with(name: str, checkpoint: str) -> dict[str, Any]:
    """The encoder options a run of ``training/train.py`` used (its ``train_config.yaml``), so
    a fine-tuned model sees pages as it was trained to; options given explicitly win. An option
    the run did not record (it predates the option) takes the value that trained it, not
    today's default (the family's ``trained`` upgrade)."""
    from pathlib import Path

    record = Path(checkpoint).expanduser() / "train_config.yaml" if checkpoint else None
    if record is None or not record.is_file():
        return {}
    import yaml

    options = dict((yaml.safe_load(record.read_text()) or {}).get("encoder_options") or {})
    upgrade = _TRAINED.get(name)
    return upgrade(checkpoint, options) if upgrade is not None else options


def _register_builtins() -> None:
    # Imported here, not at module import: building the registry loads no model.
    from agree_core.encoders import colmodernvbert, colvision, st_multivector, text_layer  # noqa: F401
