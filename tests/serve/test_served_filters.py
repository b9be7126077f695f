"""Filters by document on a served index are decided where the index is: the server reads
its catalog and its PDFs (page labels), ``index_dir`` is compared with the URL the client
knows the index by. The client here never reads a PDF: the server runs in its own process,
and in this one reading a PDF's page labels fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.frameworks import need_frameworks  # before the framework imports below

need_frameworks()

from conftest import BOOK_LABELS, lorem_pages, make_pdf  # noqa: E402
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters  # noqa: E402
from llama_index.retrievers.agree import AgreeVisualRetriever  # noqa: E402

from agree_core.index import PageIndex  # noqa: E402
from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402

QUERY = "book river bridge"


def _by(key, value, op=FilterOperator.EQ):
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])


def _pages(nodes):
    """(file name, page, page_label) of nodes, or of nodes with scores."""
    return sorted((Path(m["source"]).name, m["page"], m["page_label"])
                  for m in (getattr(n, "node", n).metadata for n in nodes))


@pytest.fixture
def book_index(tmp_path, book_pdf, encoder):
    other = make_pdf(tmp_path / "other.pdf", lorem_pages(2, "other", words=40))
    directory = tmp_path / "index"
    with PageIndex.open(directory, encoder) as index:
        assert index.add([book_pdf, other], progress=False).ok
    return directory


def _no_pdf_reading_here(monkeypatch):
    """From now on this process cannot read a PDF's labels (nor load an encoder)."""
    import pypdf

    import agree_core.index.shared
    import agree_core.page_identity

    def refuse(*args, **kwargs):
        raise AssertionError(f"the client read {args[:1]} from its own disk")

    monkeypatch.setattr(agree_core.page_identity, "page_labels", refuse)
    monkeypatch.setattr(pypdf, "PdfReader", refuse)
    monkeypatch.setattr(agree_core.index.shared, "shared_encoder", refuse)


def test_document_filters_and_page_labels_of_a_served_index_are_the_servers(book_index, serve_process, monkeypatch):
    cases = [_by("page_label", "1"), _by("page_label", ["ii", "2"], FilterOperator.IN),
             _by("file_name", "book.pdf"), _by("index_dir", str(book_index)), _by("index_dir", "/elsewhere")]
    with AgreeVisualRetriever(book_index, top_k=10) as local:
        expected = []
        for f in cases:
            local.filters = f
            expected.append(_pages(local.retrieve(QUERY)))
        local.filters = None
        expected_all = _pages(local.retrieve(QUERY))
        expected_listed = sorted(n.node_id for n in local.page_nodes())
    assert [label for name, _, label in expected_all if name == "book.pdf"] == BOOK_LABELS
    assert expected[0] == [("book.pdf", 3, "1"), ("other.pdf", 1, "1")] and expected[3] == expected_all and expected[4] == []
    local_store = AgreeDocumentStore(index_dir=str(book_index))
    by_label = {"field": "meta.page_label", "operator": "==", "value": "ii"}
    expected_docs = [(d.id, d.meta["page"]) for d in local_store.filter_documents(by_label)]
    local_store.close()
    assert [p for _, p in expected_docs] == [2]

    srv = serve_process(book_index).wait_ready()
    _no_pdf_reading_here(monkeypatch)
    with AgreeVisualRetriever(srv.url, top_k=10) as remote:
        assert _pages(remote.retrieve(QUERY)) == expected_all  # labels as the server's PDFs print them
        for f, want in zip(cases[:3] + [_by("index_dir", srv.url), _by("index_dir", str(book_index))],
                           expected[:3] + [expected_all, []]):
            remote.filters = f
            assert _pages(remote.retrieve(QUERY)) == want, f
        remote.filters = _by("page_label", "1")
        assert _pages(remote.page_nodes()) == expected[0]
        remote.filters = None
        assert sorted(n.node_id for n in remote.page_nodes()) == expected_listed
    store = AgreeDocumentStore(index_dir=srv.url)
    store.warm_up()  # checks the server; loads no model here
    assert [(d.id, d.meta["page"]) for d in store.filter_documents(by_label)] == expected_docs
    assert store.count_documents_by_filter({"field": "meta.file_name", "operator": "==", "value": "other.pdf"}) == 2
    store.close()


def test_the_server_reads_the_labels_of_its_own_pdfs_only(book_index, tmp_path, server_for):
    import httpx

    stray = make_pdf(tmp_path / "stray.pdf", ["not indexed"])
    with server_for(book_index) as url:
        book = str(book_index.parent / "book.pdf")
        got = httpx.post(f"{url}/pages/labels", json={"pages": [[book, 1], [book, 4], [str(stray), 1],
                                                                ["/etc/passwd", 7]]}).json()
        assert got == {"labels": ["i", "2", "1", "7"]}
        bad = httpx.post(f"{url}/pages/labels", json={"pages": [[book, "one"]]})
        assert bad.status_code == 422 and "pages" in bad.json()["error"]
        wrong = httpx.post(f"{url}/filters/resolve", json={
            "filters": {"field": "meta.page_label", "operator": ">", "value": "i"}, "index_dir": url})
        assert wrong.status_code == 400 and "compare it with ==, !=, in or not in" in wrong.json()["error"]


@pytest.fixture
def server_for():
    from serve.servers import serve_in_thread

    return serve_in_thread
