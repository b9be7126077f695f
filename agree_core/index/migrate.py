"""Copy an index to another engine without re-encoding: ``agree migrate SRC DST``.

Any index form to any other (a folder, ``qdrant://HOST:PORT/COLLECTION``,
``qdrant-local:PATH``). Vectors, payloads, page images and the catalog are copied as they
are stored; the destination gets the source's config (encoder, dim, datatype, pooling), so
it answers queries exactly as the source does. Only ready documents and records are copied
(an unfinished document would be resumed in the source with ``agree index``). Each document
is written ``indexing`` first and turns ``ready`` after its last page, as ``agree index``
does, so an interrupted migration leaves a destination that a rerun completes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agree_core.index import filters as F
from agree_core.index.config import IndexConfigError
from agree_core.index.engines.base import Point
from agree_core.index.images import IMAGE_DATA
from agree_core.index.page_index import PageIndex
from agree_core.index.schema import FDE, IS_RECORD, POOLED, TOKENS
from agree_core.index.storage import Storage

__all__ = ["migrate", "MigrateReport"]

log = logging.getLogger(__name__)


@dataclass
class MigrateReport:
    documents: int = 0
    pages: int = 0
    records: int = 0


def migrate(source: str | Path, destination: str | Path, *, batch_size: int = 64,
            wait: float = 0.0, progress: bool = True) -> MigrateReport:
    """Copy the index at ``source`` into ``destination`` (new, or holding an earlier,
    interrupted copy of the same index).

    Raises:
        IndexConfigError: ``source`` is not an index, or ``destination`` holds an index of
            another configuration.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with PageIndex.open(source, create=False, wait=wait) as src:
        storage = Storage.open(destination, create=True, wait=wait)
        try:
            existing = storage.load_config()
            if existing is not None and existing != src.config:
                raise IndexConfigError(f"{storage.location} holds another index (encoder "
                                       f"{existing.encoder}); migrate into a new location")
            if existing is None:
                storage.save_config(src.config)
            dst = PageIndex(storage, src.config, None)
        except BaseException:
            storage.close()
            raise
        with dst:
            report = MigrateReport()
            docs = src.catalog.documents(state="ready")
            bar = tqdm(total=sum(d.pages for d in docs), desc="copying", unit="page", disable=not progress)
            for doc in docs:
                if (done := dst.catalog.get(doc.doc_id)) is not None and done.state == "ready":
                    bar.update(doc.pages)
                    continue
                dst.catalog.begin(doc.doc_id, doc.source, doc.sha256, doc.pages, doc.meta)
                for points in _batches(src, F.Match("doc_id", doc.doc_id), batch_size):
                    dst.engine.upsert([_moved(p, src, dst) for p in points])
                    report.pages += len(points)
                    bar.update(len(points))
                dst._set_ready(doc.doc_id)
                report.documents += 1
            bar.close()
            for points in _batches(src, IS_RECORD, batch_size):
                dst.engine.upsert([_moved(p, src, dst) for p in points])
                report.records += len(points)
            dst.engine.flush()
    log.info("copied %d documents (%d pages) and %d records", report.documents, report.pages,
             report.records)
    return report


def _batches(src: PageIndex, where: F.Node, size: int) -> Iterator[list[Point]]:
    vectors = [TOKENS, POOLED] if src.config.pooled_vectors > 0 else [TOKENS]
    if src.config.first_stage:
        vectors.append(FDE)
    batch: list[Point] = []
    for p in src.engine.scroll(where, vectors=vectors, batch=size):
        batch.append(p)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _moved(p: Point, src: PageIndex, dst: PageIndex) -> Point:
    """The point as the destination stores it: same vectors and payload, its file moved from
    the source's image store to the destination's."""
    payload = {k: v for k, v in p.payload.items() if k != IMAGE_DATA}
    if payload.get("image"):
        data = src.images.read(p.id, p.payload)
        if data is None:
            log.warning("the image of point %s (%s) is missing in the source", p.id, payload["image"])
            payload["image"] = ""
        else:
            payload.update(dst.images.put(payload["image"], data))
    return Point(p.id, p.vectors, payload)
