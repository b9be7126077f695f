"""The index config: what built an index, saved beside it and checked on every open."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agree_core.index.first_stage import DEFAULT_MUVERA

FORMAT_VERSION = 1
# bytes per stored value: floats, and Qdrant's TurboQuant codes (8 and 4 bits per dimension)
VECTOR_DATATYPES = {"float32": 4.0, "float16": 2.0, "turbo8": 1.0, "turbo4": 0.5}
# The score a hit reports is the engine's: MaxSim over the vectors as it stores them (TurboQuant
# scores the float query against the codes). What is recomputed from the stored vectors read
# back (evidence, heatmaps, the reranker's stored pages) and what a copy scores after `agree
# migrate` re-stores them agree with it to within this relative difference per datatype: turbo4
# decodes its codes with an error the engine's own scoring does not make (BENCHMARKS.md, "The
# storage default": at most 2.1% over the 1,430 scores of the dev set's top 10s, p99 1.3%; 3% for
# pages with fewer vectors). turbo8: 1.4e-5 read back, 1.0e-3 against float16; floats: 4e-5
SCORE_TOLERANCE = {"float32": 1e-4, "float16": 1e-3, "turbo8": 2e-3, "turbo4": 0.03}
# the oldest Qdrant server that stores each TurboQuant datatype
SERVER_MIN_VERSION = {"turbo4": (1, 19), "turbo8": (1, 20)}
CONFIG_FILE = "agree-index.json"
# The pool factor of a new index that asks for none, by encoder. text-layer: 5, the curve's pick
# with turbo4 (BENCHMARKS.md, "Pool factor 5 with turbo4: the default"): 29 KB of vectors a page,
# MUVERA encoding included (25 KB since the encodings are stored turbo8, session 10), against
# float16's 271 KB, at float16's nDCG@5 (0.798 vs 0.797; pool 6 loses 1.6 points, pool 4 took
# 32-34 KB with float16 encodings). Other encoders (visual, ColBERT checkpoints) were
# not measured here and keep every vector (1).
DEFAULT_POOL_FACTOR = {"text-layer": 5}

__all__ = ["IndexConfig", "IndexError_", "IndexBusyError", "IndexConfigError", "FORMAT_VERSION",
           "VECTOR_DATATYPES", "SCORE_TOLERANCE", "SERVER_MIN_VERSION", "DEFAULT_POOL_FACTOR"]


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
    # storage of the vectors: one of VECTOR_DATATYPES, and pool_factor: stored vectors per page
    # about n / pool_factor (hierarchical pooling; None: DEFAULT_POOL_FACTOR). Indexes keep the
    # settings they were built with; those built before the settings existed open as 1 / float16
    vector_datatype: str = "turbo4"
    pool_factor: int | None = None
    pooled_vectors: int = 32  # per page, for the first search stage (0: exact search only)
    # the first stage of large searches: MUVERA encodings in an HNSW graph (agree_core.index.
    # first_stage); {} for indexes built before it (they scan the pooled centroids)
    first_stage: dict[str, Any] = field(default_factory=lambda: {"kind": "muvera", **DEFAULT_MUVERA})
    term_weighting: str = "idf"  # "idf": weight query tokens by IDF (encoders with a vocabulary); "none"
    image_format: str = "jpeg"
    image_quality: int = 85
    dpi: int = 100
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pool_factor is None:
            self.pool_factor = DEFAULT_POOL_FACTOR.get(self.encoder, 1)
        if self.term_weighting not in ("idf", "none"):
            raise ValueError(f"term_weighting must be 'idf' or 'none', got {self.term_weighting!r}")
        if self.vector_datatype not in VECTOR_DATATYPES:
            raise ValueError(f"vector_datatype must be one of {', '.join(VECTOR_DATATYPES)}, "
                             f"got {self.vector_datatype!r}")
        if not isinstance(self.pool_factor, int) or self.pool_factor < 1:
            raise ValueError(f"pool_factor must be an integer >= 1 (1: no pooling), got {self.pool_factor!r}")
        if self.first_stage and self.first_stage.get("kind") != "muvera":
            raise ValueError(f"first_stage must be {{}} or a MUVERA config ({{'kind': 'muvera', ...}}), "
                             f"got {self.first_stage!r}")
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
        defaults = {"pool_factor": 1, "vector_datatype": "float16", "first_stage": {}}
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
