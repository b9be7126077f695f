"""How big an index is: the size fields of ``agree info --json`` (a contract checks rely on).

- ``bytes_on_disk``: allocated bytes of everything the index keeps (like ``du``: the engine
  preallocates sparse files), the whole folder of a folder index or a ``qdrant-local:``
  index; ``None`` for a ``qdrant://`` server, whose API does not report it.
- ``vector_bytes_per_page``: the vectors the engine stores (``tokens`` and the first-stage
  ``pooled`` centroids) times the bytes of one value in the index's datatype, divided by the
  points that hold them (PDF pages and records); ``None`` for an empty index. Points carry
  their vector count (``nvec``); points written before it existed count theirs from
  ``cells`` (they were never pooled).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agree_core.index.config import VECTOR_DATATYPES

if TYPE_CHECKING:
    from agree_core.index.page_index import PageIndex

__all__ = ["index_sizes", "allocated_bytes"]


def allocated_bytes(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (sparse files count what is allocated)."""
    total = 0
    for f in [path, *path.rglob("*")]:
        try:
            st = f.lstat()
        except OSError:  # removed while we walk (a compaction, a WAL segment)
            continue
        total += st.st_blocks * 512
    return total


def index_sizes(index: "PageIndex") -> dict[str, Any]:
    location = str(index.location)
    if index.directory is not None:
        on_disk: int | None = allocated_bytes(index.directory)
    elif location.startswith("qdrant-local:"):
        on_disk = allocated_bytes(Path(location[len("qdrant-local:"):]))
    else:
        on_disk = None
    vectors, points, missing = 0, 0, []
    for p in index.engine.scroll(payload=["nvec"], batch=2048):
        points += 1
        n = p.payload.get("nvec")
        if n is None:
            missing.append(p.id)
        else:
            vectors += int(n)
    for i in range(0, len(missing), 256):  # older points: one vector per cell, plus centroids
        for p in index.engine.retrieve(missing[i:i + 256], payload=["cells"]).values():
            n = len(p.payload.get("cells") or ())
            vectors += n + min(n, index.config.pooled_vectors)
    width = VECTOR_DATATYPES[index.config.vector_datatype] * index.config.dim
    fde = fde_bytes(index.config)  # every point's MUVERA encoding (the first stage)
    return {"bytes_on_disk": on_disk,
            "vector_bytes_per_page": round((vectors * width + points * fde) / points, 1) if points else None}


def fde_bytes(config: Any) -> float:
    """Bytes of one point's first-stage encoding, and of its quantized copy when the index
    scans one (0 for an index without a first stage)."""
    from agree_core.index.engines.base import QUANTIZATIONS
    from agree_core.index.first_stage import fde_datatype, muvera_of, quantization_of

    if not config.first_stage:
        return 0.0
    size = muvera_of(config.dim, config.first_stage).size
    bits = QUANTIZATIONS.get(quantization_of(config.first_stage), 0)
    return size * VECTOR_DATATYPES[fde_datatype(config.first_stage)] + size * bits / 8
