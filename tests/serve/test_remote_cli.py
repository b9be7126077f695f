"""`agree search/info/show/index/delete --index http://...`: the same output as on the folder."""

from __future__ import annotations

import json
from pathlib import Path

import subprocess
import sys

import pytest
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


def test_paths_of_a_served_index_are_the_servers_and_upload_sends_this_machines(tmp_path, monkeypatch):
    """A relative path says nothing of the server's disk: refused, never made absolute against
    this machine's working directory; --upload sends this machine's files instead."""
    from agree_core.serve.client import RemoteIndex

    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    (served / "docs").mkdir(parents=True)
    elsewhere.mkdir()
    pdf = make_pdf(served / "docs" / "walrus.pdf", ["walrus feeding grounds"])
    local = make_pdf(elsewhere / "otter.pdf", ["otter dens by the river", "more otters"])
    (elsewhere / "notes.pdf").write_bytes(b"not a pdf at all")
    monkeypatch.chdir(served)  # docs/walrus.pdf exists here, relative to this directory
    with serve_in_thread(tmp_path / "index", allow_dirs=[served]) as url:
        with RemoteIndex(url) as remote:
            for call in (lambda: remote.add(["docs/walrus.pdf"], progress=False),
                         lambda: remote.delete("docs/walrus.pdf"), lambda: remote.find_page("docs/walrus.pdf", 1)):
                with pytest.raises(ValueError, match=r"'docs/walrus.pdf' is a relative path.*absolute path there"):
                    call()
            assert remote.info()["pages"] == 0  # nothing was sent
        out = cli("-q", "index", "docs/walrus.pdf", "--index", url)
        assert out.returncode == 1 and "relative path" in out.stderr and "--upload" in out.stderr
        out = cli("-q", "index", str(pdf), "--index", url)
        assert out.returncode == 0, out.stderr
        out = cli("-q", "index", str(local), "--index", url)  # outside --allow-dir, but here
        assert out.returncode == 1 and "outside the folders" in out.stderr
        assert f"{local} is on this machine: add --upload" in out.stderr
        out = cli("-q", "index", "--upload", str(elsewhere), "--index", url)
        assert out.returncode == 3 and "skipped:" in out.stderr and "notes.pdf" in out.stderr
        info = json.loads(cli("info", "--json", "--index", url).stdout)
        pages = {Path(d["source"]).name.split("-", 1)[-1]: d["pages"] for d in info["documents"]}
        assert pages == {"walrus.pdf": 1, "otter.pdf": 2}
        uploaded = next(d["source"] for d in info["documents"] if d["source"].endswith("otter.pdf"))
        assert uploaded != str(local)  # the server's copy
        assert cli("delete", uploaded, "--index", url).returncode == 0
    out = cli("index", "--upload", str(local), "--index", str(tmp_path / "folder-index"))
    assert out.returncode == 2 and "--upload sends this machine's PDFs" in out.stderr
