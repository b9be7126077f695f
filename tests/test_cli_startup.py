"""The ``agree`` command starts without the serve stack: building its parser (which knows
``agree serve``'s flags) and running a local command import neither httpx nor the server's
packages; only a command given an ``http://`` index, or ``agree serve``, loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import copy_index

ROOT = Path(__file__).resolve().parents[1]
SERVE_STACK = ("httpx", "fastapi", "starlette", "uvicorn", "agree_core.serve.client", "agree_core.serve.app")

PROBE = """
import json, sys
import agree_core.cli as cli
cli.build_parser().parse_args(["serve", "--index", "x"])
code = cli.main(sys.argv[1:]) if len(sys.argv) > 1 else 0
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (SERVE_STACK,)


def _probe(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cli_builds_its_parser_without_the_serve_stack():
    assert _probe() == {"code": 0, "loaded": []}


def test_local_commands_do_not_load_the_serve_stack(sample_index, tmp_path):
    index = copy_index(sample_index, tmp_path / "index")
    assert _probe("info", "--index", str(index), "--json") == {"code": 0, "loaded": []}
    assert _probe("search", "--index", str(index), "revenue", "--json") == {"code": 0, "loaded": []}
