"""The framework packages for the tests that run them against a server: a test module calls
:func:`need_frameworks` before importing them, and is skipped (saying which is missing) without
them; this checkout's integrations come first on ``sys.path`` when it is not installed with the
extras."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def need_frameworks() -> None:
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network in tests
    pytest.importorskip("llama_index.core")
    pytest.importorskip("haystack")
    for sub in ("llamaindex", "haystack"):
        if str(ROOT / "integrations" / sub) not in sys.path:
            sys.path.insert(0, str(ROOT / "integrations" / sub))
