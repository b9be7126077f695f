"""IndexHost: the one open index of an ``agree serve`` process, its writer and its reader.

- The **writer thread** opened the index and is the only one that writes it: jobs (indexing
  PDFs) run there one at a time, in order. Between two batches of a job it runs the quick
  writes that came meanwhile (deletes), and checks whether the server is stopping: SIGTERM
  ends a job after its current batch, and the document resumes when the same paths are
  posted again.
- The **reader thread** answers searches and page lookups on a
  :meth:`~agree_core.index.PageIndex.reader` view (the same engine, its own catalog
  connection), so reads never wait for a job: they see the documents that are finished,
  never a half-indexed one. Searches that arrive together are encoded in one batch per
  (k, filters, candidates) and then searched and answered one by one, so that the first
  client has its answer (and sends its next query) while the others are searched; while
  several clients search, a search waits up to :data:`MAX_WAIT` for the others.
- One encoder (:class:`SerializedEncoder`) encodes pages for jobs and queries for searches,
  one call at a time, queries first: a query waits at most for one page of a job.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

from agree_core.evidence import PageCache
from agree_core.search_json import search_lines
from agree_core.serve.jobs import Job, JobStore

log = logging.getLogger(__name__)

MAX_READ_BATCH = 64  # searches answered together
MAX_WAIT = 0.02  # seconds a search may wait for others (only while several clients search)
JOBS_DIR = "serve-jobs"  # inside an index folder
CONCURRENCY_WINDOW = 1.0  # seconds of batch sizes that say how many clients search at once


class HostStopping(RuntimeError):
    """The server is shutting down."""


class Conflict(RuntimeError):
    """The request conflicts with what the index is doing (a document being indexed)."""


class SerializedEncoder:
    """One encoder for the writer (pages) and the reader (queries), one call at a time: one
    model in memory, and its tokenizer never used by two threads at once. Queries go first:
    while searches come in, a job's pages are encoded one page per call, and a page's forward
    pass stops between two layers of the model for the queries waiting (they run whole, then
    the page goes on): a query waits for one layer of a page, not for a page or a batch."""

    def __init__(self, encoder: Any):
        self._encoder = encoder
        self._turn = threading.Condition()
        self._busy = False
        self._queries_waiting = 0
        self._last_query = 0.0
        self._paging = threading.local()  # .on: this thread is encoding pages
        self._hooked: Any = None  # the model whose layers yield to queries

    def encode_pages(self, pages: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        pages = list(pages)
        step = 1 if time.monotonic() - self._last_query < CONCURRENCY_WINDOW else max(1, len(pages))
        out: list[Any] = []
        self._paging.on = True
        try:
            for start in range(0, len(pages), step):
                out += self._call(False, self._encoder.encode_pages, pages[start:start + step], *args, **kwargs)
        finally:
            self._paging.on = False
        return out

    def __getattr__(self, name: str) -> Any:  # name, config, dim; encode_queries etc. in turn
        value = getattr(self._encoder, name)
        if not (callable(value) and name.startswith(("encode", "embed"))):
            return value
        return lambda *args, **kwargs: self._call(True, value, *args, **kwargs)

    def _call(self, query: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._turn:
            if query:
                self._queries_waiting += 1
                self._last_query = time.monotonic()
            while self._busy or (not query and self._queries_waiting):
                self._turn.wait()
            if query:
                self._queries_waiting -= 1
            self._busy = True
        try:
            if not query:
                self._hook_layers()
            return fn(*args, **kwargs)
        finally:
            with self._turn:
                self._busy = False
                self._turn.notify_all()

    def _hook_layers(self) -> None:
        """Make the layers of the encoder's torch model (once it is loaded: the longest
        ``ModuleList`` of ``encoder._model``, a transformer's blocks) call :meth:`_between_layers`.
        Encoders without one (ONNX Runtime) yield between pages only."""
        import torch

        model = getattr(self._encoder, "_model", None)
        if model is self._hooked or not isinstance(model, torch.nn.Module):
            return
        self._hooked = model
        blocks = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=())
        for block in list(blocks)[1:]:
            block.register_forward_pre_hook(self._between_layers)

    def _between_layers(self, *_: Any) -> None:
        """In a page's forward pass: let the queries waiting run (they hold the turn whole,
        the page's own state stays in its frames), then take the turn back."""
        if not (self._queries_waiting and getattr(self._paging, "on", False)):
            return
        with self._turn:
            self._busy = False
            self._turn.notify_all()
            while self._busy or self._queries_waiting:
                self._turn.wait()
            self._busy = True


class _CountOnce:
    """A reader view's engine whose unfiltered point count (asked by every search to choose
    its path) is read once: the view is renewed after every write."""

    def __init__(self, engine: Any):
        self._engine = engine
        self._count: int | None = None

    def count(self, where: Any = None) -> int:
        if where is not None:
            return self._engine.count(where)
        if self._count is None:
            self._count = self._engine.count()
        return self._count

    def point_count(self) -> int:
        return self.count()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class _Search:
    __slots__ = ("queries", "k", "filters", "candidates", "future")

    def __init__(self, queries: list[str], k: int, filters: dict | None, candidates: int | None):
        self.queries, self.k, self.filters, self.candidates = queries, k, filters, candidates
        self.future: Future = Future()

    def key(self) -> str:
        return json.dumps([self.k, self.filters, self.candidates], sort_keys=True, default=str)


class IndexHost:
    """Open with :meth:`start`, stop with :meth:`close` (both from one controlling thread)."""

    def __init__(self, location: str | Path, *, encoder: str | None = None, wait: float = 0.0,
                 encoder_options: dict[str, Any] | None = None, jobs_dir: Path | None = None):
        """``jobs_dir``: where jobs are kept across restarts (:class:`JobStore`); default
        ``LOCATION/serve-jobs`` for an index folder, memory only for a server index."""
        from agree_core.index.storage import is_url

        if jobs_dir is None and not is_url(location):
            jobs_dir = Path(location) / JOBS_DIR
        self.location = location
        self._encoder_spec = encoder
        self._wait = wait
        self._encoder_options = encoder_options or {}
        self.index: Any = None  # the PageIndex, used in the writer thread only
        self.jobs = JobStore(jobs_dir)
        self._writes: queue.Queue = queue.Queue()  # jobs and quick writes, in order
        self._quick: queue.Queue = queue.Queue()  # quick writes run between a job's batches
        self._reads: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._running: Job | None = None
        self._generation = 0  # bumped by every write: the reader renews its view
        self._rewrites = 0  # bumped by quick writes (records written again): the reader drops its pages
        self._pages = PageCache()  # the hits' stored pages, for their evidence (reader thread only)
        self._writer = threading.Thread(target=self._write_loop, name="agree-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="agree-reader", daemon=True)
        self._ready: Future = Future()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "IndexHost":
        """Open the index (raises IndexBusyError naming the holder, IndexConfigError)."""
        self._writer.start()
        self._ready.result()
        self._reader.start()
        return self

    def close(self) -> None:
        """Stop: the running job ends after its current batch, queued ones are marked
        ``stopped``, and the index is flushed and closed."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._reader.is_alive():
            self._reads.put(None)
            self._reader.join()
        if self._writer.is_alive():
            self._writes.put(None)
            self._writer.join()

    # -- reads (any thread) ----------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int, filters: dict[str, Any] | None = None,
               candidates: int | None = None) -> Future:
        """A future of ``(hits, lines)``: one hit list per query (only documents that are
        finished) and its line as ``agree search --json`` prints it."""
        item = _Search(list(queries), k, filters, candidates)
        self._put_read(item)
        return item.future

    def read(self, fn: Callable[..., Any], *args: Any) -> Future:
        """A future of ``fn(view, *args)`` run in the reader thread."""
        future: Future = Future()
        self._put_read((future, fn, args))
        return future

    # -- writes (any thread) ---------------------------------------------------------------
    def submit_job(self, paths: Sequence[str], metadata: dict[str, Any] | None = None,
                   batch_size: int = 16) -> Job:
        if self._stopping.is_set():
            raise HostStopping("the server is shutting down")
        job = Job(uuid.uuid4().hex[:16], [str(p) for p in paths], metadata, batch_size)
        self.jobs.add(job)
        self._writes.put(job)
        return job

    def write(self, fn: Callable[..., Any], *args: Any) -> Future:
        """A future of ``fn(index, *args)`` in the writer thread, between two batches of the
        running job (or at once when none runs). For quick writes only."""
        if self._stopping.is_set():
            raise HostStopping("the server is shutting down")
        future: Future = Future()
        self._quick.put((future, fn, args))
        self._writes.put("quick")  # wakes the writer when it is idle
        return future

    @property
    def job_running(self) -> bool:
        return self._running is not None

    # -- the writer thread -----------------------------------------------------------------
    def _write_loop(self) -> None:
        from agree_core.index import PageIndex

        try:
            from agree_core.encoders import load_encoder

            # one encoder for queries and pages (a visual model is GBs): read the config
            # (creating a new index), then open the index with that one encoder, serialized
            with PageIndex.open(self.location, self._encoder_spec, create=True, wait=self._wait,
                                encoder_options=self._encoder_options) as probe:
                config = probe.config
            self._query_encoder = SerializedEncoder(load_encoder(config.encoder, **config.encoder_config,
                                                                 **self._encoder_options))
            self.index = PageIndex.open(self.location, self._query_encoder, create=False,
                                        wait=self._wait)
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._ready.set_exception(e)
            return
        self._ready.set_result(None)
        try:
            while (item := self._writes.get()) is not None:
                self._run_quick()
                if isinstance(item, Job):
                    self._run_job(item)
        finally:
            self._run_quick()
            for item in list(self._writes.queue):
                if isinstance(item, Job):
                    self._finish(item, "stopped", "the server stopped before the job started")
            self.index.close()
            log.info("closed the index at %s", self.location)

    def _run_quick(self) -> None:
        while True:
            try:
                future, fn, args = self._quick.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self.index, *args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)
            self._rewrites += 1
            self._generation += 1

    def _run_job(self, job: Job) -> None:
        if self._stopping.is_set():
            self._finish(job, "stopped", "the server stopped before the job started")
            return
        job.state = "running"
        self.jobs.save(job)
        self._running = job

        def on_progress(done: int, total: int) -> None:
            job.pages_done, job.pages_total = done, total
            self.jobs.save(job)
            self._generation += 1
            self._run_quick()
            if self._stopping.is_set():
                raise HostStopping("the server stopped; post the same paths again to resume")

        try:
            report = self.index.add(job.paths, metadata=job.metadata, batch_size=job.batch_size,
                                    progress=False, on_progress=on_progress)
        except HostStopping as e:
            self._finish(job, "stopped", str(e))
        except Exception as e:  # noqa: BLE001 - a job fails, the server goes on
            log.exception("job %s failed", job.job)
            self._finish(job, "failed", f"{type(e).__name__}: {e}")
        else:
            job.added, job.unchanged = report.added, report.unchanged
            # skipped files, then failed pages (with their page): {"path", "reason", "code", "page"}
            job.skipped = [{"path": str(e.path), "reason": e.reason, "code": e.code, "page": e.page}
                           for e in report.problems()]
            job.pages_done = report.pages
            self._finish(job, "done")
        finally:
            self._running = None
            self._generation += 1

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        self.jobs.save(job)
        log.info("job %s %s: %d of %d pages%s", job.job, state, job.pages_done, job.pages_total,
                 f" ({error})" if error else "")

    # -- the reader thread -----------------------------------------------------------------
    def _put_read(self, item: Any) -> None:
        if self._stopping.is_set() or not self._reader.is_alive():
            raise HostStopping("the server is shutting down")
        self._reads.put(item)

    def _view(self) -> Any:
        """A fresh reader view (after every write), its engine counting the points once."""
        view = self.index.reader(self._query_encoder)
        view.engine = _CountOnce(view.engine)
        return view

    def _read_loop(self) -> None:
        view, seen, rewrites = self._view(), self._generation, self._rewrites
        recent: list[tuple[float, int]] = []  # (time, searches) of the last batches
        try:
            while (item := self._reads.get()) is not None:
                # clients that search one query at a time send their next query right after
                # their answer: wait a moment for as many as answered together lately
                now = time.monotonic()
                recent = [(t, n) for t, n in recent if now - t < CONCURRENCY_WINDOW]
                expected = max((n for _, n in recent), default=1)
                batch = self._gather(item, expected, now + MAX_WAIT if expected > 1 else now)
                recent.append((now, sum(isinstance(b, _Search) for b in batch)))
                if seen != self._generation:  # a write happened: fresh catalog statistics
                    view.close_reader()
                    view, seen = self._view(), self._generation
                if rewrites != self._rewrites:  # a quick write may have rewritten a record
                    self._pages.clear()
                    rewrites = self._rewrites
                self._answer(view, batch, self._pages)
        finally:
            for item in list(self._reads.queue):
                if item is not None:
                    (item.future if isinstance(item, _Search) else item[0]).set_exception(
                        HostStopping("the server is shutting down"))
            view.close_reader()

    def _gather(self, first: Any, expected: int, deadline: float) -> list[Any]:
        """``first`` and the reads queued after it: up to :data:`MAX_READ_BATCH`, waiting
        until ``deadline`` while fewer than ``expected`` searches came."""
        batch = [first]
        while len(batch) < MAX_READ_BATCH:
            wait = deadline - time.monotonic()
            searches = sum(isinstance(b, _Search) for b in batch)
            try:
                nxt = self._reads.get(timeout=wait) if wait > 0 and searches < expected \
                    else self._reads.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._reads.put(None)
                break
            batch.append(nxt)
        return batch

    @staticmethod
    def _answer(view: Any, batch: list[Any], pages: PageCache | None = None) -> None:
        groups: dict[str, list[_Search]] = {}
        for item in batch:
            if isinstance(item, _Search):
                groups.setdefault(item.key(), []).append(item)
                continue
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(view, *args))
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    future.set_exception(e)
        for searches in groups.values():
            first = searches[0]
            try:  # one scope and one encoder call for the group
                where = view.search_scope(first.filters)
                vectors = view.encode_queries([q for s in searches for q in s.queries])
            except BaseException as e:  # noqa: BLE001 - the same filters fail the same way
                for s in searches:
                    s.future.set_exception(e)
                continue
            start = 0
            for s in searches:  # answered one by one: a client has its answer while the next searches
                mine, start = vectors[start:start + len(s.queries)], start + len(s.queries)
                try:
                    hits = view.search_encoded(mine, first.k, where, first.candidates)
                    # the lines of agree search --json, evidence included, from the same query vectors
                    lines = search_lines(view, list(enumerate(s.queries, 1)), hits, cache=pages, vectors=mine)
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    s.future.set_exception(e)
                    continue
                s.future.set_result((hits, lines))
