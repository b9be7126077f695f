"""The `agree` command's contracts (shared/DESIGN.md): through the real entry point (`run_cli`,
a fresh process) where the process matters, else through `main()` in this process (`cli`)."""

import json
import re

import pytest
from PIL import Image

from conftest import cli, copy_index, make_pdf, run_cli


@pytest.fixture
def index_dir(tmp_path, sample_index):
    copy = tmp_path / "index"
    copy_index(sample_index, copy)
    return copy


def test_search_json_contract(index_dir, samples):
    out = run_cli("search", "--index", str(index_dir), "Which solar site produced the most electricity?",
                  "-k", "2", "--json")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    result = json.loads(line)
    assert set(result) == {"qid", "query", "hits"}
    assert result["query"] == "Which solar site produced the most electricity?"
    assert len(result["hits"]) == 2
    for hit in result["hits"]:
        assert set(hit) == {"source", "page", "score", "image", "evidence"}
        assert isinstance(hit["page"], int) and isinstance(hit["score"], float)
        assert hit["source"].startswith("/") and Image.open(hit["image"]).size[0] > 0
    top = result["hits"][0]
    assert (top["source"], top["page"]) == (str(samples[0]), 3)


def test_many_queries_plain_and_jsonl(index_dir, tmp_path):
    plain = tmp_path / "q.txt"
    plain.write_text("battery storage capacity\n\nwhere do visitors park\n")
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(json.dumps({"qid": "a7", "query": "migration risks"}) + "\n")
    out = cli("search", "--index", str(index_dir), "--queries", str(plain), "--json", "-k", "1")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(r["qid"], r["query"]) for r in rows] == [(1, "battery storage capacity"),
                                                      (3, "where do visitors park")]
    assert rows[1]["hits"][0]["source"].endswith("scan.pdf")
    out = cli("search", "--index", str(index_dir), "--queries", str(jsonl), "--json")
    row = json.loads(out.stdout)
    assert row["qid"] == "a7" and row["hits"][0]["source"].endswith("slides.pdf")


def test_info_json_contract(index_dir, samples):
    out = cli("info", "--index", str(index_dir), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["encoder"] == "text-layer" and info["pages"] == 9
    assert {d["source"]: d["pages"] for d in info["documents"]} == {
        str(samples[0]): 3, str(samples[1]): 5, str(samples[2]): 1}


def test_index_exit_codes_and_skipped_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_pdf(folder / "good.pdf", ["a readable page about harbors"])
    (folder / "bad.pdf").write_bytes(b"%PDF-1.4\n garbage that is not a pdf body")
    directory = tmp_path / "ix"
    out = cli("index", str(folder), "--index", str(directory), "--meta", "team=ops")
    assert out.returncode == 3, out.stderr
    assert f"skipped: {folder / 'bad.pdf'}: corrupt" in out.stderr
    again = cli("index", str(folder / "good.pdf"), "--index", str(directory), "--meta", "team=ops")
    assert again.returncode == 0, again.stderr  # idempotent: nothing to do, nothing skipped
    hits = cli("search", "--index", str(directory), "harbors", "--filter", "team=ops", "--json")
    assert json.loads(hits.stdout)["hits"][0]["source"] == str(folder / "good.pdf")
    none = cli("search", "--index", str(directory), "harbors", "--filter", "team=hr", "--json")
    assert json.loads(none.stdout)["hits"] == []


def test_errors_have_codes_and_messages(tmp_path, index_dir):
    out = run_cli("search", "--index", str(tmp_path / "nowhere"), "query")
    assert out.returncode == 5 and "is not an agree index" in out.stderr
    out = run_cli("search", "--index", str(index_dir))
    assert out.returncode == 2 and "give either a QUERY or --queries FILE" in out.stderr
    out = run_cli("index", str(tmp_path), "--index", str(index_dir), "--encoder", "text-layer:/x")
    assert out.returncode == 5 and "built with encoder 'text-layer'" in out.stderr
    out = run_cli("delete", str(tmp_path / "never.pdf"), "--index", str(index_dir))
    assert out.returncode == 1 and "is not in the index" in out.stderr
    out = run_cli("search", "--index", str(index_dir), "x", "--filter", "oops")
    assert out.returncode == 2 and "--filter expects KEY=VALUE" in out.stderr
    out = run_cli("frobnicate")
    assert out.returncode == 2


def test_delete_and_show(index_dir, samples, tmp_path):
    png = tmp_path / "why.png"
    out = cli("show", "--index", str(index_dir), "How much revenue in the third quarter?",
              "-k", "2", "--out", str(png))
    assert out.returncode == 0, out.stderr
    sheet = Image.open(png)
    assert sheet.size[0] > 1000  # two page panels side by side
    out = cli("delete", str(samples[1]), "--index", str(index_dir))
    assert out.returncode == 0, out.stderr
    info = json.loads(cli("info", "--index", str(index_dir), "--json").stdout)
    assert info["pages"] == 4 and str(samples[1]) not in {d["source"] for d in info["documents"]}


def test_help_explains_options():
    out = run_cli("index", "--help")
    assert out.returncode == 0
    for text in ("--index DIR", "--encoder NAME", "--meta KEY=VALUE", "--wait SECONDS", "exit 3"):
        assert text in out.stdout
    assert "Exit codes" in run_cli("--help").stdout


def test_demo_runs_end_to_end(tmp_path):
    out = run_cli("demo", "--out", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    found = int(re.search(r"(\d) of 6 questions found the expected page first", out.stdout).group(1))
    assert found >= 4  # the scan is found through OCR; two slide questions are paraphrases
    assert len(list((tmp_path / "demo" / "heatmaps").glob("q*.png"))) == 6
    assert (tmp_path / "demo" / "indexes" / "samples" / "agree-index.json").is_file()


def test_help_does_not_load_torch():
    """`agree --help` and `agree index --help` answer in a second, not after importing torch."""
    import subprocess
    import sys

    code = ("import sys; from agree_core.cli import main\n"
            "for argv in (['--help'], ['index', '--help'], ['ask', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
