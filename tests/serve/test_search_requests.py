"""A framework's search on a served index is one request: what its nodes and Documents
carry (evidence, page labels, document ids, filters on the keys they carry) comes back in
the search response, counted by the server."""

from __future__ import annotations

from pathlib import Path

from serve.frameworks import need_frameworks  # before the framework imports below

need_frameworks()

from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters  # noqa: E402
from llama_index.retrievers.agree import AgreeVisualRetriever  # noqa: E402

from haystack_integrations.components.retrievers.agree import AgreeRetriever  # noqa: E402
from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402
from serve.servers import serve_in_thread  # noqa: E402

QUESTION = "revenue in the third quarter"
BY_FILE = {"field": "meta.file_name", "operator": "==", "value": "report.pdf"}


def _meta(nodes):
    return [(n.node.node_id, n.score, n.node.ref_doc_id, n.node.metadata["page_label"],
             n.node.metadata["evidence"], n.node.metadata["file_name"]) for n in nodes]


def test_a_llamaindex_search_on_a_server_is_one_request(sample_index, index_copy):
    by_file = MetadataFilters(filters=[MetadataFilter(key="file_name", value="report.pdf")])
    with AgreeVisualRetriever(sample_index, top_k=4) as local:
        expected = local.retrieve(QUESTION)
        local.filters = by_file
        expected_filtered = local.retrieve(QUESTION)
    assert all(n.node.metadata["evidence"] for n in expected) and expected_filtered
    seen: list = []
    with serve_in_thread(index_copy, requests=seen) as url:
        with AgreeVisualRetriever(url, top_k=4) as remote:
            remote.retrieve("warm")  # opens the index (a health check)
            del seen[:]
            got = remote.retrieve(QUESTION)
            assert seen == [("POST", "/records/search")]
            assert _meta(got) == _meta(expected)
            remote.filters = by_file
            del seen[:]
            assert _meta(remote.retrieve(QUESTION)) == _meta(expected_filtered)
            assert seen == [("POST", "/records/search")]  # the file_name filter resolved by the search
            del seen[:]
            remote.filters = None
            assert [n.node_id for n in remote.page_nodes()]
            assert seen == [("POST", "/records/find")]


def test_a_haystack_search_on_a_server_is_one_request(sample_index, index_copy):
    def documents(store):
        found = AgreeRetriever(document_store=store, top_k=5).run(query=QUESTION, filters=BY_FILE)["documents"]
        return [(d.id, d.score, d.meta["evidence"], d.meta["page"]) for d in found]

    local = AgreeDocumentStore(index_dir=str(sample_index))
    expected = documents(local)
    local.close()
    assert expected and all(e for _, _, e, _ in expected)
    seen: list = []
    with serve_in_thread(index_copy, requests=seen) as url:
        store = AgreeDocumentStore(index_dir=url)
        store.warm_up()
        del seen[:]
        assert documents(store) == expected
        assert seen == [("POST", "/records/search")]
        store.close()


def test_the_pages_shown_to_a_model_take_the_served_hits_evidence(sample_index, index_copy):
    """``agree ask`` on a served index: the evidence of each page comes with its hit (no
    request to encode the question again or to read the page's vectors), as it is locally."""
    from agree_core.generation import page_contexts
    from agree_core.index import PageIndex

    with PageIndex.open(sample_index, create=False) as local:
        expected = [(p.source, p.page, p.evidence) for p in page_contexts(local, QUESTION, local.search(QUESTION, 2),
                                                                          top_evidence=2)]
    assert all(e for _, _, e in expected) and all(len(e) <= 2 for _, _, e in expected)
    seen: list = []
    with serve_in_thread(index_copy, requests=seen) as url:
        with PageIndex.open(url, create=False) as remote:
            hits = remote.search(QUESTION, 2)
            del seen[:]
            pages = page_contexts(remote, QUESTION, hits, top_evidence=2)
    assert [(Path(p.source).name, p.page, p.evidence) for p in pages] == \
        [(Path(s).name, page, e) for s, page, e in expected]
    assert all(method == "GET" and path.startswith("/pages/") and path.count("/") == 2 for method, path in seen), seen
    # (the pages' text, one GET /pages/ID each; before: the question encoded again, each page's embedding read)


def test_a_served_hit_carries_its_document_id_and_metadata(sample_index, index_copy):
    """``RemoteIndex.search``: each hit's ``doc_id`` and ``meta`` come in the search response,
    equal to the local hit's (before: one ``GET /pages/ID`` a hit, on first use)."""
    from agree_core.index import PageIndex

    with PageIndex.open(sample_index, create=False) as local:
        expected = [(Path(h.source).name, h.page, h.doc_id, h.meta) for h in local.search(QUESTION, 3)]
    assert expected and all(doc_id for _, _, doc_id, _ in expected)
    seen: list = []
    with serve_in_thread(index_copy, requests=seen) as url:
        with PageIndex.open(url, create=False) as remote:
            remote.search("warm", 1)
            del seen[:]
            got = [(Path(h.source).name, h.page, h.doc_id, h.meta) for h in remote.search(QUESTION, 3)]
    assert got == expected
    assert seen == [("POST", "/search")]
