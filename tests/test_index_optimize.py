"""When `PageIndex.add` asks the engine to optimize (build the first stage's HNSW graph): only
for an index whose searches read the graph, and never for an add that wrote nothing."""

from agree_core.index import PageIndex
from agree_core.index import first_stage as first_stage_module
from conftest import lorem_pages, make_pdf, marker


def test_add_optimizes_only_where_searches_use_the_graph(tmp_path, encoder, monkeypatch):
    a = make_pdf(tmp_path / "a.pdf", lorem_pages(3))
    b = make_pdf(tmp_path / "b.pdf", lorem_pages(2, "otters"))
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        assert index.config.first_stage  # a new index builds the encodings
        calls = []
        real = index.engine.optimize
        monkeypatch.setattr(index.engine, "optimize", lambda: calls.append(index.engine.count()) or real())
        assert index.add([a], progress=False).ok
        assert calls == []  # 3 pages: searches are exact MaxSim, no graph is read
        assert index.search(marker(2), k=1)[0].page == 2  # found without one
        monkeypatch.setattr(first_stage_module, "FIRST_STAGE_MIN_PAGES", 4)
        assert index.add([b], progress=False).ok
        assert calls == [5]  # past the threshold: the graph, over every page
        assert index.add([a, b], progress=False).ok
        assert calls == [5]  # nothing new written: nothing to optimize
