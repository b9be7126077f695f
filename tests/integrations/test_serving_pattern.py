"""The documented way to serve an index from your own ASGI app (examples/serving/asgi_app.py):
uvicorn, one worker, the index opened once per process and shared by every request; and
what another process is told meanwhile, in Python words and in the CLI's."""

import json
import os

import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("llama_index.core")

from agree_core.index import IndexBusyError, PageIndex  # noqa: E402
from conftest import copy_index, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def test_an_asgi_app_opens_the_index_once_per_process(tmp_path, sample_index):
    index = Path(copy_index(sample_index, tmp_path / "ix"))
    port = free_port()
    env = {**os.environ, "AGREE_INDEX": str(index), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.serving.asgi_app:app", "--app-dir", str(ROOT),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                health = get(f"{base}/health")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the app did not start"
                time.sleep(0.5)
        assert health["open_indexes"] == {str(index): 1}  # opened at startup, once
        with ThreadPoolExecutor(4) as pool:  # concurrent requests share the one open index
            answers = list(pool.map(lambda _: get(f"{base}/search?q=revenue+in+the+third+quarter"), range(6)))
        assert all(a == answers[0] for a in answers) and answers[0]["hits"][0]["page"] == 2
        assert get(f"{base}/health") == health

        # another process meanwhile: a clear error, in Python words here ...
        with pytest.raises(IndexBusyError, match=rf"process {server.pid} .* pass wait=SECONDS to wait"):
            PageIndex.open(index)
        # ... and in the CLI's
        cli = run_cli("info", "--index", str(index), "--json")
        assert cli.returncode == 4 and "retry with --wait SECONDS" in cli.stderr and "wait=" not in cli.stderr
    finally:
        server.terminate()  # uvicorn shuts down on SIGTERM: the lifespan closes the index
        output = server.communicate(timeout=60)[0]
    assert "Application shutdown complete" in output, output
    PageIndex.open(index).close()  # free again
