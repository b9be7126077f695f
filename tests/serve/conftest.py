"""Fixtures of the `agree serve` tests (see serve/servers.py)."""

import pytest

pytest.importorskip("fastapi", reason="agree serve needs the serve extra (pip install 'agree[serve]')")

from serve.servers import http, index_copy, serve_process, server  # noqa: E402,F401
