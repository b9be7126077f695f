"""The ingest pipeline behind :meth:`PageIndex.add`: plan, produce, write.

- :func:`plan` decides per file what is left to do: nothing when it is indexed already,
  else the pages still missing (an interrupted add) or that failed last time (a retry);
- :func:`produce` renders pages, reads their text layer and, for scans, runs OCR in a small
  pool of worker processes, all in a background thread that overlaps with encoding;
- :func:`write` encodes a batch of pages and upserts their points.

Isolation: a failure in any stage (render, text layer, OCR, image write, encode, vector
write) costs one page, which is recorded in the catalog with a reason code and retried by
the next add; a file none of whose pages can be indexed is skipped as a whole; nothing
stops the run but an interrupt. Unexpected errors (bugs) are logged at WARNING with their
traceback.

Storage is used through a few narrow calls on the index: upsert points (built by
:func:`~agree_core.index.schema.build_point`, the one point schema) into its engine, the
pages already written for a document, replace a document's metadata, abandon a document,
mark it ready. Page images go to the index's image store (files, or payload bytes for a
server index).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from agree_core.cpu import torch_threads
from agree_core.evidence import word_rows
from agree_core.index.schema import build_point
from agree_core.pages import (DEFAULT_PAGE_TIMEOUT, Page, PdfError, PdfInfo, file_sha256, find_pdfs,
                              inspect_pdf, iter_pages)
from agree_core.pooling import one_blas_thread

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
    failed_pages: list[PdfError] = field(default_factory=list)  # pages of indexed files
    pages: int = 0  # pages encoded now

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.failed_pages

    def problems(self) -> list[PdfError]:
        """Skipped files, then failed pages: each has ``to_json()`` (source, page, code, message)."""
        return [*self.skipped, *self.failed_pages]


@dataclass
class Plan:
    source: Path
    sha256: str
    doc_id: str
    info: PdfInfo
    pages: list[int]
    had_pages: bool = False  # pages of this document were indexed before this add
    written: int = 0
    failed: list[PdfError] = field(default_factory=list)


def add(index: "PageIndex", paths: Sequence[str | Path], metadata: dict[str, Any] | None,
        batch_size: int, progress: bool, page_timeout: float = DEFAULT_PAGE_TIMEOUT,
        ocr_workers: int | None = None,
        on_progress: Callable[[int, int], None] | None = None) -> AddReport:
    """See :meth:`PageIndex.add`."""
    from tqdm import tqdm

    if page_timeout <= 0:
        raise ValueError(f"page_timeout must be > 0 seconds, got {page_timeout}")
    report = AddReport()
    files, missing = find_pdfs(paths)  # one path alone is one path, never its characters
    report.skipped.extend(missing)
    plans = []
    for f in tqdm(files, desc="checking files", unit="file", disable=not progress or len(files) < 20):
        try:
            p = plan(index, f, metadata, page_timeout)
        except PdfError as e:
            report.skipped.append(e)
            continue
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the rest
            report.skipped.append(_unexpected(f, None, "checking", e))
            continue
        if p is None:
            report.unchanged.append(str(f))
        else:
            plans.append(p)
    total = sum(len(p.pages) for p in plans)
    bar = tqdm(total=total, desc="indexing", unit="page", disable=not progress, dynamic_ncols=True)
    notify = on_progress or (lambda done, todo: None)
    tried = 0  # pages written or failed so far, for on_progress
    try:
        notify(0, total)
        for p, pages, error in produce(index, plans, batch_size, page_timeout, ocr_workers):
            if error is not None:
                index._abandon(p.doc_id)
                report.skipped.append(error)
                continue
            if pages:
                _write_batch(index, p, pages)
                bar.update(len(pages))
                tried += len(pages)
                notify(tried, total)
                continue
            # every page of this document has been tried
            if p.failed and not p.written and not p.had_pages:
                index._abandon(p.doc_id)
                first = p.failed[0]
                report.skipped.append(PdfError(p.source, first.code, "no page could be indexed "
                                               f"(page {first.page}: {first.reason})"))
                continue
            index._set_ready(p.doc_id)
            report.pages += p.written
            report.failed_pages.extend(p.failed)
            if p.written or not p.failed:
                report.added.append(str(p.source))
            notify(tried, total)
    finally:
        bar.close()
    for e in report.problems():
        log.info("skipped %s [%s]", e, e.code)  # the report holds them; the CLI names them
    return report


def plan(index: "PageIndex", source: Path, metadata: dict[str, Any] | None,
         page_timeout: float = DEFAULT_PAGE_TIMEOUT) -> Plan | None:
    """What to do with one file: ``None`` when it is indexed already (metadata, if given
    and different, is updated in place), else the pages still to write: missing ones, or
    the ones that failed last time."""
    info = inspect_pdf(source, timeout=page_timeout)
    sha = file_sha256(source)
    doc_id = doc_id_for(source, sha)
    doc = index.catalog.get(doc_id)
    if doc is not None and metadata is None:
        metadata = doc.meta  # no metadata given: keep what the document has
    metadata = metadata or {}
    if doc is not None and doc.state == "ready":
        if doc.meta != metadata:
            index._set_document_meta(doc_id, metadata)
            index.catalog.set_meta(doc_id, metadata)
        failed = sorted(f.page for f in index.catalog.failed_pages(doc_id))
        return Plan(source, sha, doc_id, info, failed, had_pages=True) if failed else None
    done = index._written_pages(doc_id) if doc is not None else set()
    index.catalog.begin(doc_id, str(source), sha, info.pages, metadata)
    if done and doc is not None and doc.meta != metadata:
        index._set_document_meta(doc_id, metadata)
    for old in index.catalog.documents(state="deleting", source=str(source)):
        index._purge(old.doc_id)  # the previous version of a changed file
    return Plan(source, sha, doc_id, info, [p for p in range(1, info.pages + 1) if p not in done],
                had_pages=bool(done))


def produce(index: "PageIndex", plans: list[Plan], batch_size: int,
            page_timeout: float = DEFAULT_PAGE_TIMEOUT, ocr_workers: int | None = None,
            ) -> Iterator[tuple[Plan, list[Page], PdfError | None]]:
    """Batches of pages per plan (``[]`` closes a plan; a page that failed carries its
    ``error``), made in a background thread so that rendering, text extraction, OCR and
    image writing overlap with encoding. ``ocr_workers=0`` leaves OCR to the encoder."""
    q: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    dpi = index.config.dpi
    ocr_dpi_for = getattr(index.encoder, "ocr_dpi_for", None) if ocr_workers != 0 else None
    ocr = _Ocr(ocr_workers, page_timeout) if ocr_dpi_for is not None else None

    def work() -> None:
        try:
            for plan in plans:
                try:
                    batch: list[Page] = []

                    def emit(page: Page) -> None:
                        nonlocal batch
                        batch.append(page)
                        if len(batch) == batch_size:
                            q.put((plan, batch, None))
                            batch = []

                    for page in iter_pages(plan.source, dpi=dpi, pages=plan.pages,
                                           sha256=plan.sha256, info=plan.info,
                                           skip_bad_pages=True, timeout=page_timeout):
                        _save_image(index, plan, page)
                        want = (ocr_dpi_for(page) if ocr is not None and page.error is None
                                else None)
                        if want is None:
                            emit(page)
                        else:
                            for done in ocr.submit(page, want):
                                emit(done)
                        if stop.is_set():
                            return
                    if ocr is not None:
                        for done in ocr.drain():
                            emit(done)
                    if batch:
                        q.put((plan, batch, None))
                    q.put((plan, [], None))
                except PdfError as e:
                    if ocr is not None:
                        ocr.drop()
                    q.put((plan, [], e))
                except Exception as e:  # noqa: BLE001 - one bad file must not stop the rest
                    if ocr is not None:
                        ocr.drop()
                    q.put((plan, [], _unexpected(plan.source, None, "reading", e)))
        finally:
            if ocr is not None:
                ocr.close()
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
    index.engine.upsert(_points(index, plan, pages, index.encoder.encode_pages(pages)))


def _write_batch(index: "PageIndex", plan: Plan, pages: list[Page]) -> None:
    """Write the good pages of a batch; a batch that fails is written page by page, so a
    failure costs only the page that caused it. Outcomes go to ``plan`` and the catalog."""
    failed = [p.error for p in pages if p.error is not None]
    good = [p for p in pages if p.error is None]
    written: list[int] = []
    if good:
        try:
            write(index, plan, good)
            written = [p.page_no for p in good]
        except Exception as e:  # noqa: BLE001 - retried page by page below
            log.info("%s: writing pages one by one after %r", plan.source, e)
            for page in good:
                try:
                    embeddings = _stage("encode", page, index.encoder.encode_pages, [page])
                    _stage("vector_write", page, index.engine.upsert,
                           _points(index, plan, [page], embeddings))
                    written.append(page.page_no)
                except PdfError as pe:
                    failed.append(pe)
    plan.written += len(written)
    plan.failed.extend(failed)
    index.catalog.clear_failed(plan.doc_id, written)
    index.catalog.set_failed(plan.doc_id, [(e.page, e.code, e.reason) for e in failed])


def _stage(code: str, page: Page, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - costs this page only
        raise _unexpected(page.source, page.page_no, code, e, code) from e


def _unexpected(source: Path, page: int | None, doing: str, e: Exception,
                code: str = "failed") -> PdfError:
    where = f"{source}" + (f" page {page}" if page else "")
    log.warning("unexpected error while %s %s", doing, where, exc_info=e)
    return PdfError(source, code, f"{doing} failed: {e!r}", page)


def _save_image(index: "PageIndex", plan: Plan, page: Page) -> None:
    if page.error is not None or page.image is None:
        return
    try:
        index.images.save(plan.doc_id, page.page_no, page.image)
    except OSError as e:
        page.error = PdfError(plan.source, "image_write", f"the page image cannot be written: "
                              f"{e.strerror or e}", page.page_no)
        page.image = None


def _points(index: "PageIndex", plan: Plan, pages: list[Page], embeddings: list) -> list:
    """The engine points of written pages (:func:`~agree_core.index.schema.build_point`), made
    on one torch and one BLAS thread: a page's products are small, and threads spread over the
    cores cost more than they save (the MUVERA encoding: 35 -> 8.5 ms a page on a loaded machine)."""
    with torch_threads(1), one_blas_thread():
        return _build_points(index, plan, pages, embeddings)


def _build_points(index: "PageIndex", plan: Plan, pages: list[Page], embeddings: list) -> list:
    doc = index.catalog.get(plan.doc_id)
    return [build_point(
        page.id, emb, pooled=index.config.pooled_vectors, pool_factor=index.config.pool_factor,
        first_stage=index.config.first_stage,
        text=emb.text if emb.text is not None else page.text, source=str(plan.source),
        page=page.page_no, doc_id=plan.doc_id, meta=doc.meta if doc else {},
        image=index.images.page_fields(plan.doc_id, page.page_no),
        sha256=plan.sha256, width_pt=page.width_pt, height_pt=page.height_pt,
        words=word_rows(page.words))  # evidence boxes read them (agree_core.evidence)
        for page, emb in zip(pages, embeddings)]


class _Ocr:
    """Scans read ahead of encoding by an :class:`~agree_core.ocr.OcrPool`, started on the
    first page that needs it (a folder without scans starts no process)."""

    def __init__(self, workers: int | None, timeout: float):
        self.workers, self.timeout = workers, timeout
        self._pool: Any = None

    def submit(self, page: Page, dpi: int) -> list[Page]:
        """Queue ``page``; returns the pages whose OCR finished meanwhile (to make room)."""
        from agree_core.ocr import OcrPool, is_blank

        if page.image is not None and is_blank(page.image):
            page.ocr_done = True
            return [page]
        if self._pool is None:
            self._pool = OcrPool(self.workers, self.timeout)
        done = [self._finish(*self._pool.next())] if self._pool.full else []
        try:  # the stored render is reused when its dpi is enough for OCR
            image = (page.image if page.dpi >= dpi or not page.from_pdf
                     else page.render(dpi, timeout=self.timeout))
        except PdfError as e:
            page.error = e
            return [*done, page]
        self._pool.submit(page, image)
        return done

    def drain(self) -> list[Page]:
        return [self._finish(k, r) for k, r in self._pool.drain()] if self._pool else []

    def drop(self) -> None:
        if self._pool is not None:
            list(self._pool.drain())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @staticmethod
    def _finish(page: Page, got: Any) -> Page:
        if isinstance(got, BaseException):
            from agree_core.ocr import OcrTimeout

            code = "timeout" if isinstance(got, OcrTimeout) else "ocr"
            if code == "ocr":
                log.warning("OCR failed on %s page %d", page.source, page.page_no, exc_info=got)
            page.error = PdfError(page.source, code, f"OCR failed: {got}", page.page_no)
        else:
            page.words, page.ocr_done = got, True
        return page
