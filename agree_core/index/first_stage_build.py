"""Give an existing index the MUVERA first stage: ``agree first-stage --index DIR``.

Indexes built before the first stage existed have no ``fde`` vector and search large
collections by scanning every pooled centroid, and so do indexes of a window-fused encoder
whose encodings were made before ``fused`` was recorded (:func:`first_stage.usable`). This adds the vector to the collection,
encodes every point's stored vectors (no re-encoding of pages: the encodings are made from
what the index stores), writes them in batches, records the settings in the index config
and builds what they ask for (the quantized copy, or the HNSW graph of stale encodings). Interrupted, it is rerun from the start (points that have an
encoding are simply written again); searches keep the old first stage until it finishes.
"""

from __future__ import annotations

import logging
from typing import Any

from agree_core.index.first_stage import FDE, fde_datatype, graph_of, muvera_of, new_settings, usable
from agree_core.index.schema import TOKENS, fde_spec

__all__ = ["build_first_stage"]

log = logging.getLogger(__name__)


def build_first_stage(index: Any, *, batch: int = 256, progress: bool = True) -> int:
    """Encode every point of ``index`` (an open :class:`~agree_core.index.PageIndex`) for
    the first stage; returns the number of points encoded. An index whose encodings are
    usable already is left as it is (0)."""
    from tqdm import tqdm

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if usable(index.config):
        log.info("%s already has the MUVERA first stage", index.location)
        return 0
    settings = new_settings(index.config.encoder_config, index.storage.first_stage_datatype())
    if index.config.first_stage:  # stale encodings (usable() says why): new ones, the same graph
        settings.pop("quantization", None)
        settings.update(graph_of(index.config.first_stage))
        settings["datatype"] = fde_datatype(index.config.first_stage)  # written into the vector it has
    muv = muvera_of(index.config.dim, settings)
    try:
        index.engine.add_dense_vector(fde_spec(index.config.dim, settings))
    except Exception as e:  # a rerun after an interruption: the vector is there already
        if "exist" not in str(e).lower():
            raise
    done = 0
    bar = tqdm(total=index.engine.count(), desc="first stage", unit="point", disable=not progress)
    pending: list = []

    def write() -> None:
        nonlocal done
        fdes = muv.encode_documents([p.vectors[TOKENS] for p in pending])  # (batch, size)
        index.engine.update_vectors({p.id: {FDE: f} for p, f in zip(pending, fdes)})
        done += len(pending)
        bar.update(len(pending))
        pending.clear()

    for p in index.engine.scroll(payload=False, vectors=[TOKENS], batch=batch):
        pending.append(p)
        if len(pending) == batch:
            write()
    if pending:
        write()
    bar.close()
    index.engine.flush()
    index.engine.optimize()
    index.config.first_stage = settings
    index.storage.save_config(index.config)
    return done

