"""The ingest pipeline behind :meth:`PageIndex.add`: plan, produce, write.

- :func:`plan` decides per file what is left to do (nothing when it is indexed already,
  else the pages still missing);
- :func:`produce` renders pages and reads their text layer in a background thread, so
  that rendering overlaps with encoding;
- :func:`write` encodes a batch of pages and upserts their points.

Storage is used through a few narrow calls on the index: upsert points, the pages already
written for a document, abandon a document, mark it ready.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from agree_core.index.shard import PageRecord
from agree_core.pages import Page, PdfError, PdfInfo, file_sha256, find_pdfs, inspect_pdf, iter_pages
from agree_core.pooling import pool_vectors

if TYPE_CHECKING:
    from agree_core.index.page_index import PageIndex

log = logging.getLogger(__name__)

DOC_ID_NAMESPACE = uuid.UUID("0b9f5a55-2a4e-4a3c-8f0e-5c1f2d7e9b31")


def doc_id_for(source: Path, sha256: str) -> str:
    return str(uuid.uuid5(DOC_ID_NAMESPACE, f"{source}\x00{sha256}"))


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)  # sources indexed (or resumed) now
    unchanged: list[str] = field(default_factory=list)  # already indexed with the same content
    skipped: list[PdfError] = field(default_factory=list)  # files that could not be indexed
    pages: int = 0  # pages encoded now

    @property
    def ok(self) -> bool:
        return not self.skipped


@dataclass
class Plan:
    source: Path
    sha256: str
    doc_id: str
    info: PdfInfo
    pages: list[int]


def add(index: "PageIndex", paths: Sequence[str | Path], metadata: dict[str, Any] | None,
        batch_size: int, progress: bool,
        on_progress: Callable[[int, int], None] | None = None) -> AddReport:
    """See :meth:`PageIndex.add`."""
    from tqdm import tqdm

    report = AddReport()
    files, missing = find_pdfs(paths)  # one path alone is one path, never its characters
    report.skipped.extend(missing)
    plans = []
    for f in tqdm(files, desc="checking files", unit="file", disable=not progress or len(files) < 20):
        try:
            p = plan(index, f, metadata)
        except PdfError as e:
            report.skipped.append(e)
            continue
        if p is None:
            report.unchanged.append(str(f))
        else:
            plans.append(p)
    total = sum(len(p.pages) for p in plans)
    bar = tqdm(total=total, desc="indexing", unit="page", disable=not progress, dynamic_ncols=True)
    notify = on_progress or (lambda done, todo: None)
    try:
        notify(0, total)
        for p, pages, error in produce(index, plans, batch_size):
            if error is not None:
                index._abandon(p.doc_id)
                report.skipped.append(error)
                log.error("skipped %s", error)
                continue
            if pages:
                write(index, p, pages)
                report.pages += len(pages)
                bar.update(len(pages))
            else:  # every page of this document is written
                index._set_ready(p.doc_id)
                report.added.append(str(p.source))
            notify(report.pages, total)
    finally:
        bar.close()
    for e in report.skipped:
        log.warning("skipped %s", e)
    return report


def plan(index: "PageIndex", source: Path, metadata: dict[str, Any] | None) -> Plan | None:
    """What to do with one file: ``None`` when it is indexed already (metadata, if given
    and different, is updated in place), else the pages still to write."""
    info = inspect_pdf(source)
    sha = file_sha256(source)
    doc_id = doc_id_for(source, sha)
    doc = index.catalog.get(doc_id)
    if doc is not None and metadata is None:
        metadata = doc.meta  # no metadata given: keep what the document has
    metadata = metadata or {}
    if doc is not None and doc.state == "ready":
        if doc.meta != metadata:
            index.shard.set_meta(doc_id, metadata)
            index.catalog.set_meta(doc_id, metadata)
        return None
    done = index.shard.page_numbers(doc_id) if doc is not None else set()
    index.catalog.begin(doc_id, str(source), sha, info.pages, metadata)
    if done and doc is not None and doc.meta != metadata:
        index.shard.set_meta(doc_id, metadata)
    for old in index.catalog.documents(state="deleting", source=str(source)):
        index._purge(old.doc_id)  # the previous version of a changed file
    return Plan(source, sha, doc_id, info, [p for p in range(1, info.pages + 1) if p not in done])


def produce(index: "PageIndex", plans: list[Plan], batch_size: int
            ) -> Iterator[tuple[Plan, list[Page], PdfError | None]]:
    """Batches of rendered pages per plan (``[]`` closes a plan), made in a background
    thread so that rendering, text extraction and image writing overlap with encoding."""
    q: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    dpi = index.config.dpi

    def work() -> None:
        try:
            for plan in plans:
                try:
                    batch: list[Page] = []
                    for page in iter_pages(plan.source, dpi=dpi, pages=plan.pages,
                                           sha256=plan.sha256, info=plan.info):
                        index.images.save(plan.doc_id, page.page_no, page.image)
                        batch.append(page)
                        if len(batch) == batch_size:
                            q.put((plan, batch, None))
                            batch = []
                        if stop.is_set():
                            return
                    if batch:
                        q.put((plan, batch, None))
                    q.put((plan, [], None))
                except PdfError as e:
                    q.put((plan, [], e))
                except Exception as e:  # noqa: BLE001 - one bad file must not stop the rest
                    log.debug("unexpected error on %s", plan.source, exc_info=True)
                    q.put((plan, [], PdfError(plan.source, "failed", f"failed: {e!r}")))
        finally:
            q.put(None)

    thread = threading.Thread(target=work, name="agree-pages", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def write(index: "PageIndex", plan: Plan, pages: list[Page]) -> None:
    """Encode ``pages`` of ``plan``'s document and upsert their points."""
    config = index.config
    embeddings = index.encoder.encode_pages(pages)
    doc = index.catalog.get(plan.doc_id)
    records = []
    for page, emb in zip(pages, embeddings):
        vectors = emb.vectors.float()
        pooled = (pool_vectors(vectors, config.pooled_vectors).numpy()
                  if config.pooled_vectors > 0 else None)
        payload = {
            "doc_id": plan.doc_id, "source": str(plan.source), "sha256": plan.sha256,
            "page": page.page_no, "image": str(index.images.path(plan.doc_id, page.page_no)
                                               .relative_to(index.directory)),
            "grid": list(emb.grid), "cells": emb.cells.tolist(),
            "terms": emb.terms.tolist() if emb.terms is not None else None,
            "text": emb.text if emb.text is not None else page.text,
            "width_pt": page.width_pt, "height_pt": page.height_pt,
            "meta": doc.meta if doc else {},
        }
        records.append(PageRecord(page.id, vectors.numpy().astype(np.float32), pooled, payload))
    index.shard.upsert(records)
