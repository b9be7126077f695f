"""One index core over two engines: what holds on both, what differs, and the house rules.

The server engine runs here through qdrant-client's local mode (``qdrant-local:``), which
speaks the server engine's client API but ignores vector datatypes, quantization, HNSW and
on-disk settings and builds no payload indexes: nothing below checks those (the request
bodies that set them are checked in tests/test_contract.py, their effect on a real server in
tests/test_qdrant_server.py).
"""

import ast
import io
import json
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image

from agree_core.cli import main as agree
from agree_core.index import IndexConfigError, PageIndex
from agree_core.index.config import SCORE_TOLERANCE
from agree_core.index.records import Record
from conftest import lorem_pages, make_pdf, marker, run_cli

pytest.importorskip("qdrant_client")

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [marker(i) for i in (1, 3, 6, 8)] + ["river bridge lantern", "granite falcon summit canyon"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    make_pdf(folder / "a.pdf", lorem_pages(8, topic="alpha", words=80))
    make_pdf(folder / "b.pdf", lorem_pages(4, topic="beta", words=60))
    return folder


@pytest.mark.parametrize("datatype, tolerance", [("float32", 1e-5), ("float16", 1e-3)])
def test_both_engines_give_the_same_top_10(tmp_path, corpus, encoder, datatype, tolerance):
    results = {}
    for name, where in (("edge", str(tmp_path / "edge")), ("local", f"qdrant-local:{tmp_path / 'local'}")):
        with PageIndex.open(where, encoder, vector_datatype=datatype) as index:
            assert index.add([corpus], progress=False).pages == 12
            results[name] = (index.search_batch(QUERIES, k=10),
                             index.search_batch(QUERIES, k=10, candidates=5))  # pooled first stage
    for exact_or_pooled in (0, 1):
        for edge_hits, local_hits in zip(results["edge"][exact_or_pooled], results["local"][exact_or_pooled]):
            assert len(edge_hits) == 10
            assert [(h.source, h.page) for h in edge_hits] == [(h.source, h.page) for h in local_hits]
            # relative to the score: the window-fused default scores pages at a few units, not ~1
            assert max(abs(a.score - b.score) / max(1.0, abs(b.score))
                       for a, b in zip(edge_hits, local_hits)) < tolerance


def _agree(capsys, *args: str) -> tuple[int, str, str]:
    """``agree ARGS`` as typed, through the command's own main() (one process: fast)."""
    capsys.readouterr()
    code = agree(["-q", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_cli_takes_index_urls_and_migrates_both_ways(tmp_path, corpus, capsys, caplog):
    local = f"qdrant-local:{tmp_path / 'dev'}"
    out = run_cli("index", str(corpus / "b.pdf"), "--index", local, "--meta", "team=ops",  # the real entry point
                  "--vector-datatype", "float16")  # migrations keep the exact order (turbo4: within its tolerance)
    assert out.returncode == 0, out.stderr
    search = ["search", "beta walrus", "-k", "3", "--json", "--filter", "team=ops"]
    code, stdout, _ = _agree(capsys, *search, "--index", local)
    first = json.loads(stdout)
    assert first["hits"][0]["source"] == str(corpus / "b.pdf") and Path(first["hits"][0]["image"]).is_file()
    info = json.loads(_agree(capsys, "info", "--index", local, "--json")[1])
    assert info["pages"] == 4 and info["documents"] == [{"source": str(corpus / "b.pdf"), "pages": 4}]

    folder = tmp_path / "folder-index"
    code, stdout, stderr = _agree(capsys, "migrate", local, str(folder), "--json")
    assert code == 0, stderr
    assert json.loads(stdout) == {"documents": 1, "pages": 4, "records": 0}
    back = f"qdrant-local:{tmp_path / 'back'}"
    assert _agree(capsys, "migrate", str(folder), back)[0] == 0
    for where in (str(folder), back):
        again = json.loads(_agree(capsys, *search, "--index", where)[1])
        assert [(h["source"], h["page"]) for h in again["hits"]] == [(h["source"], h["page"]) for h in first["hits"]]
        # qdrant-local stores float32 whatever the config says; a folder stores the default turbo4
        # codes: the same pages, scores within the datatype's tolerance (SCORE_TOLERANCE)
        assert all(a["score"] == pytest.approx(b["score"], rel=SCORE_TOLERANCE[info["vector_datatype"]])
                   for a, b in zip(again["hits"], first["hits"]))
        assert all(Image.open(h["image"]).size[0] > 0 for h in again["hits"])
    code, _, stderr = _agree(capsys, "migrate", back, str(folder))  # folder holds the same index: completes, no-op
    assert code == 0, stderr
    code, _, _ = _agree(capsys, "info", "--index", "qdrant://localhost:6333/", "--json")
    assert code == 5 and "use qdrant://HOST:PORT/COLLECTION" in caplog.text


def test_framework_documents_stay_out_of_the_pdf_views(index_at, corpus, encoder, capsys):
    png = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(png, format="PNG")
    with PageIndex.open(index_at(), encoder) as index:
        index.add([corpus / "b.pdf"], progress=False)
        index.records.write([Record("note-1", "beta vulture notes written by a pipeline", blob=png.getvalue(),
                                    meta={"team": "ops"}),
                             Record("note-2", "walrus yak zebra", meta={"source": "elsewhere.txt"})])
        hits = index.search("beta walrus", k=10)
        assert len(hits) == 4 and all(h.source == str(corpus / "b.pdf") and h.page >= 1 for h in hits)
        info = index.info()
        assert info["pages"] == 4 and info["records"] == 2 and len(info["documents"]) == 1
        # the records' own view sees both kinds, with the record's file as written
        found = index.records.search("beta vulture notes", k=3)
        assert found[0].id == "note-1" and found[0].blob == png.getvalue()
        assert {r.kind for r in index.records.find()} == {"page", "record"}
        assert index.records.count({"field": "meta.team", "operator": "==", "value": "ops"}) == 1
        assert index.records.update_meta({"field": "id", "operator": "==", "value": "note-2"}, {"n": 2}) == 1
        (got,) = index.records.get(["note-2"])
        assert got.meta == {"source": "elsewhere.txt", "n": 2} and got.blob is None
        either = {"operator": "OR", "conditions": [{"field": "meta.n", "operator": ">=", "value": 2},
                                                   {"field": "meta.page", "operator": "==", "value": 3}]}
        assert sorted(r.id for r in index.records.find(either)) == sorted(
            ["note-2", index.find_page(corpus / "b.pdf", 3)])
        assert index.records.delete(where={"field": "meta.team", "operator": "==", "value": "ops"}) == 1
        assert index.info()["records"] == 1
    hits = json.loads(_agree(capsys, "search", "--index", index_at(), "walrus yak zebra", "--json", "-k", "10")[1])["hits"]
    assert hits and all(h["source"] == str(corpus / "b.pdf") for h in hits)


def test_nested_filters_reach_pdf_search_on_both_engines(index_at, corpus, encoder):
    with PageIndex.open(index_at(), encoder) as index:
        index.add([corpus / "b.pdf"], metadata={"team": "ops", "year": 2024}, progress=False)
        not_3 = {"operator": "NOT", "conditions": [{"field": "meta.page", "operator": "==", "value": 3}]}
        assert sorted(h.page for h in index.search("beta", k=10, filters=not_3)) == [1, 2, 4]
        either = {"operator": "OR", "conditions": [{"field": "meta.page", "operator": "<", "value": 2},
                                                   {"field": "meta.year", "operator": ">", "value": 2030}]}
        assert [h.page for h in index.search("beta", k=10, filters=either)] == [1]
        assert index.search("beta", k=10, filters={"team": "ops", "year": 2025}) == []


def test_server_urls_use_tls_and_the_api_key(monkeypatch, encoder):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"result": {"exists": False}, "status": "ok", "time": 0})

    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    with pytest.raises(IndexConfigError, match="is not an agree index .*collection 'pages' does not exist"):
        PageIndex.open("qdrants://db.example:7443/pages", create=False,
                       client_options={"transport": httpx.MockTransport(handler), "check_compatibility": False})
    assert seen and all(r.url.scheme == "https" and r.url.host == "db.example" and r.url.port == 7443
                        and r.headers["api-key"] == "s3cret" for r in seen)
    for bad in ("qdrant://db.example:6333", "qdrant://:6333/pages", "qdrant://db/a/b", "qdrant-local:"):
        with pytest.raises(IndexConfigError, match="qdrant"):
            PageIndex.open(bad, encoder)


def _imports(path: Path) -> set[str]:
    """Every agree_core.index module ``path`` imports, at any depth, outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agree_core.index"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).is_file() else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("agree_core.index"))
    return out


def test_no_import_cycles_and_each_engine_package_in_one_module():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p
               for p in (ROOT / "agree_core" / "index").rglob("*.py") if p.name != "__init__.py"}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])
    for package, owner in (("qdrant_edge", "agree_core/index/engines/edge.py"),
                           ("qdrant_client", "agree_core/index/engines/server.py")):
        users = [str(p.relative_to(ROOT)) for p in (ROOT / "agree_core").rglob("*.py")
                 if re.search(rf"^\s*(import|from) {package}\b", p.read_text(), re.M)]
        assert users == [owner], f"{package} is imported by {users}"
