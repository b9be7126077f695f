"""`agree search/info/show/index/delete --index http://...`: the same output as on the folder."""

from __future__ import annotations

import json

import subprocess
import sys

from PIL import Image

from agree_core.samples import SAMPLE_QUESTIONS
from conftest import cli, copy_index, make_pdf, run_cli
from serve.servers import serve_in_thread


def test_remote_cli_prints_what_the_local_cli_prints(tmp_path, sample_index, samples):
    index = copy_index(sample_index, tmp_path / "index")
    queries = tmp_path / "q.txt"
    queries.write_text("\n".join(q for q, _, _ in SAMPLE_QUESTIONS) + "\n")
    commands = [
        ["search", "--queries", str(queries), "--json", "-k", "3"],
        ["search", "Where are visitors allowed to park?"],
        ["search", "solar output", "--filter", f"source={samples[0]}", "--json"],
        ["info", "--json"],
        ["info"],
    ]
    local = [cli(*c, "--index", str(index)) for c in commands]
    assert all(o.returncode == 0 for o in local), [o.stderr for o in local]
    with serve_in_thread(index, allow_dirs=[tmp_path]) as url:
        remote = [cli(*c, "--index", url) for c in commands]
        for c, lo, re_ in zip(commands, local, remote):
            assert re_.returncode == 0, re_.stderr
            assert re_.stdout == lo.stdout, c

        out = cli("show", SAMPLE_QUESTIONS[0][0], "--index", url, "-k", "2",
                  "--out", str(tmp_path / "remote.png"))
        assert out.returncode == 0, out.stderr
        assert Image.open(tmp_path / "remote.png").width > 500

        (tmp_path / "docs").mkdir()
        new = make_pdf(tmp_path / "docs" / "walrus.pdf", ["walrus feeding grounds", "more walrus"])
        out = cli("-q", "index", str(tmp_path / "docs"), "--index", url)
        assert out.returncode == 0, out.stderr
        info = json.loads(cli("info", "--json", "--index", url).stdout)
        assert {d["source"]: d["pages"] for d in info["documents"]}[str(new)] == 2
        (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
        out = cli("-q", "index", str(tmp_path / "docs"), "--index", url)
        assert out.returncode == 3 and f"skipped: {tmp_path / 'docs' / 'broken.pdf'}" in out.stderr
        out = cli("index", "/etc", "--index", url)
        assert out.returncode == 1 and "outside the folders" in out.stderr

        assert cli("delete", str(new), "--index", url).returncode == 0
        out = cli("delete", str(new), "--index", url)
        assert out.returncode == 1 and "not in the index" in out.stderr
        assert json.loads(cli("info", "--json", "--index", url).stdout)["pages"] == 9
    local_show = cli("show", SAMPLE_QUESTIONS[0][0], "--index", str(index), "-k", "2",
                     "--out", str(tmp_path / "local.png"))
    assert local_show.returncode == 0, local_show.stderr
    assert Image.open(tmp_path / "local.png").tobytes() == Image.open(tmp_path / "remote.png").tobytes()


def test_unreachable_server_is_a_clear_error():
    from serve.servers import free_port

    out = run_cli("search", "x", "--index", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "cannot reach agree serve" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_client_needs_no_torch():
    code = ("import sys; from agree_core.serve.client import RemoteIndex; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'transformers' not in sys.modules; print('light')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "light", out.stderr
