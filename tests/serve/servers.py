"""Servers for the tests: `agree serve`'s application on a free loopback port, in this
process (a thread) or as the real command (a subprocess)."""

from __future__ import annotations

import contextlib
import os

from conftest import copy_index
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(index_dir: Path, *, requests: list | None = None, **app_options) -> Iterator[str]:
    """`agree serve`'s host and application on 127.0.0.1, run by uvicorn in a thread; yields
    the URL and stops (closing the index) on exit. ``requests``: a list the server appends
    ``(method, path)`` of every request it answers to."""
    import uvicorn

    from agree_core.serve.app import create_app
    from agree_core.serve.host import IndexHost

    host = IndexHost(index_dir).start()
    app_options.setdefault("upload_dir", Path(index_dir) / "uploads")
    app = create_app(host, **app_options)
    if requests is not None:
        @app.middleware("http")
        async def count(request, call_next):
            requests.append((request.method, request.url.path))
            return await call_next(request)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        host.close()


@pytest.fixture
def index_copy(tmp_path, sample_index) -> Path:
    return Path(copy_index(sample_index, tmp_path / "index"))


@pytest.fixture
def server(index_copy, tmp_path) -> Iterator[str]:
    """A server over a copy of the sample index that may read PDFs under ``tmp_path``."""
    with serve_in_thread(index_copy, allow_dirs=[tmp_path]) as url:
        yield url


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


class ServeProcess:
    """`agree serve` as a user starts it: the real command in its own process."""

    def __init__(self, index_dir: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agree_core.cli", "serve", "--index", str(index_dir),
             "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 120) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agree serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("agree serve did not start")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve_process():
    started: list[ServeProcess] = []

    def start(index_dir: Path, *args: str, **kwargs) -> ServeProcess:
        p = ServeProcess(index_dir, *args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
        for stream in (p.proc.stdout, p.proc.stderr):
            stream.close()
