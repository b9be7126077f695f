"""One open :class:`PageIndex` per index directory in a process, owned by one thread.

A process locks the index directories it opens, and an index's catalog (SQLite) can only be
used from the thread that opened it. Framework components that name the same directory (a
document store, a retriever and a ranker loaded from one pipeline file) therefore share one
open index through :meth:`SharedIndex.acquire`, and every call on it runs in the index's own
worker thread: calls are safe from any thread or event loop, run one at a time, and
:meth:`SharedIndex.arun` awaits them without blocking the loop.

Components that only read (retrievers, rankers, a query-side store) open with
``create=False``: an index that does not exist is an error naming the path
(:func:`require_index`), never a new empty index that answers with nothing. Every
:meth:`SharedIndex.acquire` is paired with one :meth:`SharedIndex.release`; the last one
closes the index and frees its directory for other processes.

Encoders are shared the same way: :func:`shared_encoder` keeps one model in memory per
encoder configuration, for the index and for the components that embed pages or queries.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, TypeVar

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder, load_encoder
from agree_core.index.config import CONFIG_FILE, IndexConfig, IndexConfigError
from agree_core.index.page_index import PageIndex
from agree_core.index.storage import is_served, is_url, location_key

log = logging.getLogger(__name__)

__all__ = ["SharedIndex", "shared_encoder", "require_index", "open_indexes"]

T = TypeVar("T")
_OPEN: dict[Path | str, "_Shared"] = {}  # SharedIndex, or RemoteShared for a served URL
_ENCODERS: dict[tuple, MultiVectorEncoder] = {}
_GUARD = threading.RLock()


def shared_encoder(spec: str = DEFAULT_ENCODER, **options: Any) -> MultiVectorEncoder:
    """The encoder ``load_encoder(spec, **options)`` builds, loaded once per process for each
    configuration (its name, its config and its runtime options)."""
    with _GUARD:
        key = (spec, json.dumps(options, sort_keys=True, default=str))
        if key in _ENCODERS:
            return _ENCODERS[key]
        enc = load_encoder(spec, **options)
        runtime = {k: v for k, v in options.items() if k not in enc.config}
        canonical = (enc.name, json.dumps(enc.config, sort_keys=True, default=str),
                     json.dumps(runtime, sort_keys=True, default=str))
        if canonical not in _ENCODERS:
            enc.dim  # noqa: B018 - load the weights now, once, rather than in two threads at once
            _ENCODERS[canonical] = enc
        _ENCODERS[key] = _ENCODERS[canonical]
        return _ENCODERS[key]


def require_index(directory: str | Path) -> Path:
    """The absolute path of the index at ``directory``; raises :class:`IndexConfigError`
    naming the path when there is none there (a typo, a wrong working directory)."""
    path = Path(directory).expanduser().absolute()
    if not (path / CONFIG_FILE).is_file():
        what = "the folder is empty" if path.is_dir() and not any(path.iterdir()) else \
            "a folder that holds no agree index" if path.is_dir() else "no such folder"
        raise IndexConfigError(
            f"no agree index at {path} ({what}): components that only read do not create "
            f"one. Check the path (relative paths start from {Path.cwd()}), or create the index first "
            "(`agree index PDF... --index DIR`, an indexing pipeline, AgreeVisualRetriever.from_pdfs), "
            "or pass create=True")
    return path


def open_indexes() -> dict[str, int]:
    """The indexes this process holds open and how many users each has (for diagnostics)."""
    with _GUARD:
        return {str(path): shared.users for path, shared in _OPEN.items()}


class _Shared:
    """One open index of this process and how many hold it: the one rule by which a folder's
    :class:`SharedIndex` and a served index's :class:`RemoteShared` are acquired and
    released. The first :meth:`acquire` of a location opens it; a later one checks the
    encoder against the open index's; the last :meth:`release` closes it. A release past
    the last (a handle given back twice) changes nothing, and never closes a newer handle
    that opened the same location since."""

    directory: Path | str
    index: Any
    users: int = 0
    _OPEN_CHECKS_ENCODER = False  # whether opening checks the encoder itself

    @classmethod
    def _acquire(cls, key: Path | str, opened: Callable[[], "_Shared"],
                 encoder: str | MultiVectorEncoder | None) -> Any:
        """The handle of ``key``, opened by ``opened()`` unless open already (a failed open
        leaves nothing open); one more user."""
        with _GUARD:
            shared = _OPEN.get(key)
            fresh = shared is None
            if shared is None:
                shared = opened()
            try:
                if encoder is not None and not (fresh and cls._OPEN_CHECKS_ENCODER):
                    _check_encoder(shared.index.config, encoder)
            except BaseException:
                if fresh:
                    shared._close()
                raise
            _OPEN[key] = shared
            shared.users += 1
            return shared

    def release(self) -> None:
        """Give back one :meth:`acquire`; the last one closes the index."""
        with _GUARD:
            if self.users <= 0:
                return  # closed already
            self.users -= 1
            if self.users > 0:
                return
            if _OPEN.get(self.directory) is self:
                del _OPEN[self.directory]
        self._close()

    def _close(self) -> None:
        raise NotImplementedError


class SharedIndex(_Shared):
    """An open index and the thread that owns it. Use :meth:`acquire` and :meth:`release`."""

    _OPEN_CHECKS_ENCODER = True  # PageIndex.open refuses another encoder, with its own message

    def __init__(self, directory: Path | str):
        self.directory = directory
        self.users = 0
        self._index: PageIndex | None = None
        self._tasks: queue.Queue = queue.Queue()
        label = directory.name if isinstance(directory, Path) else directory  # a folder or a URL
        self._thread = threading.Thread(target=self._work, name=f"agree-index:{label}",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, directory: str | Path, encoder: str | MultiVectorEncoder | None = None, *,
                encoder_options: dict[str, Any] | None = None, create: bool = True,
                wait: float = 0.0) -> "SharedIndex":
        """The index at ``directory``, opened (or created, when ``create``) unless this
        process has it open already. ``encoder``: a registry spec or an encoder; default the
        index's own (``text-layer`` for a new index). Pair every call with :meth:`release`.

        Raises what :meth:`PageIndex.open` raises (IndexConfigError, IndexBusyError); with
        ``create=False``, :func:`require_index`'s error when there is no index.
        """
        if is_served(directory):
            return RemoteShared.acquire(str(directory), encoder, wait=wait)  # type: ignore[return-value]
        path = location_key(directory) if is_url(directory) else Path(directory).expanduser().absolute()

        def opened() -> SharedIndex:
            if not create:
                require_index(path)
            shared = cls(path)
            try:
                shared._index = shared._call(PageIndex.open, path,
                                             _encoder_for(path, encoder, encoder_options or {}),
                                             create=create, wait=wait)
            except BaseException:
                shared._stop()
                raise
            return shared

        return cls._acquire(path, opened, encoder)

    @property
    def index(self) -> PageIndex:
        """The open index; call its methods through :meth:`run` / :meth:`arun`."""
        if self._index is None:
            raise RuntimeError(f"the index at {self.directory} is closed")
        return self._index

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(index, *args, **kwargs)`` in the index's thread; returns its result."""
        return self._call(fn, self.index, *args, **kwargs)

    async def arun(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """:meth:`run` for coroutines: awaits the index's thread without blocking the loop."""
        if threading.current_thread() is self._thread:
            return fn(self.index, *args, **kwargs)
        return await asyncio.wrap_future(self._submit(fn, self.index, *args, **kwargs))

    def _close(self) -> None:
        try:
            if self._index is not None:
                self._call(PageIndex.close, self._index)
        finally:
            self._index = None
            self._stop()

    # -- the worker thread ------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if threading.current_thread() is self._thread:  # a call made from a call
            return fn(*args, **kwargs)
        return self._submit(fn, *args, **kwargs).result()

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        if not self._thread.is_alive():
            raise RuntimeError(f"the index at {self.directory} is closed")
        future: Future = Future()
        self._tasks.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)
            # drop the references now, not at the next task: a bound method passed to run()
            # would otherwise keep its object alive while the thread waits
            del task, future, fn, args, kwargs

    def _stop(self) -> None:
        self._tasks.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class RemoteShared(_Shared):
    """What :meth:`SharedIndex.acquire` returns for ``http://HOST:PORT`` (an index that
    ``agree serve`` holds): the same ``index`` / ``run`` / ``arun`` / ``release`` over a
    :class:`~agree_core.serve.client.RemoteIndex` (token: ``AGREE_TOKEN``). Calls run in the
    caller's thread (the client is thread-safe); ``run(PageIndex.method, ...)`` calls the
    client's method of that name. One client per URL in a process, like an open folder."""

    def __init__(self, url: str, index: Any):
        self.directory = url
        self.index = index
        self.users = 0

    @classmethod
    def acquire(cls, url: str, encoder: str | MultiVectorEncoder | None = None, *,
                wait: float = 0.0) -> "RemoteShared":
        from agree_core.serve.client import open_remote

        key = location_key(url)
        return cls._acquire(key, lambda: cls(key, open_remote(key, wait=wait)), encoder)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return _remote_call(fn, self.index)(*args, **kwargs)

    async def arun(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(_remote_call(fn, self.index), *args, **kwargs)

    def _close(self) -> None:
        self.index.close()


def _remote_call(fn: Callable[..., T], index: Any) -> Callable[..., T]:
    """``fn`` bound to a remote index: a method of PageIndex becomes the client's own."""
    if getattr(fn, "__qualname__", "").startswith("PageIndex."):
        return getattr(index, fn.__name__)
    return lambda *args, **kwargs: fn(index, *args, **kwargs)


def _encoder_for(path: Path | str, encoder: str | MultiVectorEncoder | None,
                 options: dict[str, Any]) -> str | MultiVectorEncoder:
    """The encoder object to open ``path`` with (a shared one), or a spec string that
    :meth:`PageIndex.open` rejects with its own message when it is not the index's."""
    if not isinstance(encoder, str) and encoder is not None:
        return encoder
    if is_url(path):  # a server index: its config is read when it opens
        return encoder
    if (path / CONFIG_FILE).is_file():
        config = IndexConfig.load(path)
        if encoder is not None and encoder != config.encoder:
            return encoder
        return shared_encoder(config.encoder, **config.encoder_config, **options)
    return shared_encoder(encoder or DEFAULT_ENCODER, **options)


def _check_encoder(config: IndexConfig, encoder: str | MultiVectorEncoder) -> None:
    if isinstance(encoder, str):
        if encoder != config.encoder:
            config.check_encoder(encoder, {}, config.dim)
    else:
        config.check_encoder(encoder.name, encoder.config, encoder.dim)


@atexit.register
def _close_all() -> None:
    """Close what is still open at exit (the engine flushes its segments on close)."""
    for shared in list(_OPEN.values()):  # a RemoteShared closes its client
        shared.users = 1
        try:
            shared.release()
        except Exception:  # noqa: BLE001 - exiting anyway
            log.debug("closing %s at exit failed", shared.directory, exc_info=True)
