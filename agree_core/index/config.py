"""The index config: what built an index, saved beside it and checked on every open."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
# bytes per stored value: floats, and Qdrant's TurboQuant codes (8 and 4 bits per dimension)
VECTOR_DATATYPES = {"float32": 4.0, "float16": 2.0, "turbo8": 1.0, "turbo4": 0.5}
CONFIG_FILE = "agree-index.json"

__all__ = ["IndexConfig", "IndexError_", "IndexBusyError", "IndexConfigError", "FORMAT_VERSION",
           "VECTOR_DATATYPES"]


class IndexError_(Exception):
    """Base class of the index's errors (named so it does not shadow the builtin IndexError)."""


class IndexConfigError(IndexError_):
    """The index on disk does not match what the caller asked for, or is not an index."""


class IndexBusyError(IndexError_):
    """Another process holds the index."""


@dataclass
class IndexConfig:
    encoder: str  # registry spec, e.g. "text-layer" or "colqwen2.5:/runs/x"
    encoder_config: dict[str, Any]
    dim: int
    # storage of the vectors: one of VECTOR_DATATYPES. pool_factor 3 with turbo4 keeps the
    # dev-set nDCG@5 at 25 KB of vectors a page instead of 255 KB (BENCHMARKS.md); not yet the
    # default: the reranker and migration compare stored with freshly encoded vectors
    vector_datatype: str = "float16"
    pool_factor: int = 1  # stored vectors per page: about n / pool_factor (hierarchical pooling)
    pooled_vectors: int = 32  # per page, for the first search stage (0: exact search only)
    term_weighting: str = "idf"  # "idf": weight query tokens by IDF (encoders with a vocabulary); "none"
    image_format: str = "jpeg"
    image_quality: int = 85
    dpi: int = 100
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.term_weighting not in ("idf", "none"):
            raise ValueError(f"term_weighting must be 'idf' or 'none', got {self.term_weighting!r}")
        if self.vector_datatype not in VECTOR_DATATYPES:
            raise ValueError(f"vector_datatype must be one of {', '.join(VECTOR_DATATYPES)}, "
                             f"got {self.vector_datatype!r}")
        if not isinstance(self.pool_factor, int) or self.pool_factor < 1:
            raise ValueError(f"pool_factor must be an integer >= 1 (1: no pooling), got {self.pool_factor!r}")
        if self.pooled_vectors < 0:
            raise ValueError(f"pooled_vectors must be >= 0, got {self.pooled_vectors}")

    def save(self, directory: Path) -> None:
        tmp = directory / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, directory / CONFIG_FILE)

    @classmethod
    def load(cls, directory: Path) -> "IndexConfig":
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise IndexConfigError(
                f"{directory} is not an agree index ({CONFIG_FILE} is missing); "
                "create one with `agree index PDF... --index DIR`"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise IndexConfigError(f"{path} is not valid JSON ({e}); the index is damaged") from e
        return cls.from_dict(data, str(directory))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "IndexConfig":
        """The config saved as ``data`` by the index at ``where`` (checks its version)."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexConfigError(
                f"{where} has index format version {version}; this agree reads version "
                f"{FORMAT_VERSION}: rebuild the index with this version (`agree index ...`)"
            )
        if isinstance(data.get("encoder"), str) and isinstance(data.get("encoder_config"), dict):
            from agree_core.encoders.registry import recorded_config  # options added since it was built

            data = {**data, "encoder_config": recorded_config(data["encoder"], data["encoder_config"])}
        known = set(cls.__dataclass_fields__)
        # indexes written before a setting existed were built without it
        defaults = {"pool_factor": 1, "vector_datatype": "float16"}
        return cls(**{**defaults, **{k: v for k, v in data.items() if k in known}})

    def check_encoder(self, encoder_name: str, encoder_config: dict[str, Any], dim: int) -> None:
        """Raise when vectors from this encoder would not be comparable with the index's."""
        if encoder_name != self.encoder:
            raise IndexConfigError(
                f"the index was built with encoder {self.encoder!r}, not {encoder_name!r}: "
                f"search it with --encoder {self.encoder} (or omit --encoder), or build a new "
                "index for the other encoder"
            )
        diff = sorted(k for k in set(self.encoder_config) | set(encoder_config)
                      if self.encoder_config.get(k) != encoder_config.get(k))
        if diff or dim != self.dim:
            details = ", ".join(f"{k}: index has {self.encoder_config.get(k)!r}, encoder has "
                                f"{encoder_config.get(k)!r}" for k in diff)
            if dim != self.dim:
                details = ", ".join(filter(None, [details, f"dim: index has {self.dim}, encoder has {dim}"]))
            raise IndexConfigError(
                f"encoder {encoder_name!r} is configured differently from the one that built the "
                f"index ({details}); use the index's settings or rebuild the index"
            )
