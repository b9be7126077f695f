"""The framework components against `agree serve` (a server on a free loopback port): the
same code as on a folder, with ``index="http://HOST:PORT"``; results equal to in-process."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from serve.frameworks import ROOT, need_frameworks  # before the framework imports below

need_frameworks()

from haystack import Document, Pipeline  # noqa: E402
from haystack.document_stores.errors import DuplicateDocumentError  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters  # noqa: E402
from llama_index.postprocessor.agree_rerank import AgreeRerank  # noqa: E402
from llama_index.retrievers.agree import AgreeVisualRetriever  # noqa: E402

from agree_core.index import IndexConfigError  # noqa: E402
from agree_core.index.records import Record  # noqa: E402
from agree_core.serve.client import RemoteIndex, RemoteIndexError  # noqa: E402
from haystack_integrations.components.rankers.agree import AgreeRanker  # noqa: E402
from haystack_integrations.components.retrievers.agree import AgreeRetriever  # noqa: E402
from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402
from serve.servers import free_port, serve_in_thread  # noqa: E402

QUESTION = "revenue in the third quarter"
EXAMPLES = ROOT / "examples" / "haystack"


def _nodes(nodes):
    """What a node says, but where its image lives (a file here, a URL on a server:
    test_served_images.py)."""
    return [(n.node.node_id, n.score, n.node.text, type(n.node).__name__,
             {k: v for k, v in n.node.metadata.items() if k != "index_dir"}, n.node.ref_doc_id)
            for n in nodes]


def _documents(docs):
    return [(d.id, d.score, d.content, d.meta, d.blob.data if d.blob else None) for d in docs]


def test_llamaindex_retriever_and_rerank_on_a_server_equal_in_process(sample_index, index_copy):
    by_file = MetadataFilters(filters=[MetadataFilter(key="file_name", value="report.pdf")])
    with AgreeVisualRetriever(sample_index, top_k=4) as local:
        expected = local.retrieve(QUESTION)
        local.filters = by_file
        expected_filtered = local.retrieve(QUESTION)
        local.filters = None
        expected_pages = local.page_nodes()
        reranked_locally = AgreeRerank(top_n=3, index_dir=sample_index).postprocess_nodes(
            expected, query_str="solar output")
    with serve_in_thread(index_copy) as url:
        with AgreeVisualRetriever(url, top_k=4) as remote:
            got = remote.retrieve(QUESTION)
            assert _nodes(got) == _nodes(expected)
            assert {n.node.metadata["index_dir"] for n in got} == {url}
            assert _nodes(asyncio.run(remote.aretrieve(QUESTION))) == _nodes(expected)
            remote.filters = by_file
            assert _nodes(remote.retrieve(QUESTION)) == _nodes(expected_filtered)
            remote.filters = None
            assert [n.node_id for n in remote.page_nodes()] == [n.node_id for n in expected_pages]
            # the reranker scores the pages from the server's stored vectors: named by URL,
            # or found through the nodes' index_dir while the retriever holds the index
            named = AgreeRerank(top_n=3, index_dir=url).postprocess_nodes(got, query_str="solar output")
            assert _nodes(named) == _nodes(reranked_locally)
            by_node = AgreeRerank(top_n=3).postprocess_nodes(got, query_str="solar output")
            assert _nodes(by_node) == _nodes(reranked_locally)
            remote.persist(index_copy.parent / "persisted")
        again = AgreeVisualRetriever.from_persist_dir(index_copy.parent / "persisted")
        assert again.index_dir == url and _nodes(again.retrieve(QUESTION)) == _nodes(expected)
        again.close()


def test_haystack_store_retriever_and_ranker_on_a_server_equal_in_process(sample_index, index_copy):
    def run(store):
        retriever, ranker = AgreeRetriever(document_store=store, top_k=5), AgreeRanker(document_store=store, top_k=3)
        found = retriever.run(query=QUESTION, filters={"field": "meta.page", "operator": "<=", "value": 3})["documents"]
        ranked = ranker.run(documents=found, query="solar output")["documents"]
        foreign = ranker.run(documents=[Document(id="x", content="solar output of the plant")],
                             query="solar output")["documents"]  # not in the index: encoded here
        return found, ranked, foreign, store.count_documents(), store.get_metadata_fields_info()

    local_store = AgreeDocumentStore(index_dir=str(sample_index))
    expected = run(local_store)
    local_store.close()
    with serve_in_thread(index_copy) as url:
        store = AgreeDocumentStore(index_dir=url)
        got = run(store)
        for g, e in zip(got[:3], expected[:3]):
            assert _documents(g) == _documents(e)
        assert got[3:] == expected[3:]
        store.close()


def test_the_example_yaml_pipelines_run_against_a_server(tmp_path, samples):
    """examples/haystack/*.yaml with index_dir set to the server's URL, nothing else changed."""
    with serve_in_thread(tmp_path / "served") as url:
        indexing = Pipeline.loads((EXAMPLES / "indexing.yaml").read_text().replace("index_dir: agree-index",
                                                                                    f"index_dir: {url}"))
        report = next(p for p in samples if p.name == "report.pdf")
        assert indexing.run({"converter": {"sources": [report]}}) == {"writer": {"documents_written": 3}}
        query = Pipeline.loads((EXAMPLES / "query.yaml").read_text().replace("index_dir: agree-index",
                                                                              f"index_dir: {url}"))
        result = query.run({"query": "Which solar site produced the most electricity?"},
                           include_outputs_from={"ranker"})
        best = result["ranker"]["documents"][0]
        assert (Path(best.meta["source"]).name, best.meta["page"]) == ("report.pdf", 3)
        assert best.blob is not None and best.blob.mime_type == "image/jpeg"
        query.close()  # gives the store back (Pipeline.close: the components' close)
        indexing.close()


def test_writes_from_two_clients_at_once_both_land(tmp_path):
    with serve_in_thread(tmp_path / "served") as url:
        clients = [RemoteIndex(url), RemoteIndex(url)]
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def write(client: RemoteIndex, name: str) -> None:
            try:
                start.wait()
                for i in range(3):
                    client.records.write([Record(f"{name}-{i}-{j}", f"{name} page {i} {j}") for j in range(4)],
                                         on_conflict="error")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(c, n)) for c, n in zip(clients, "ab")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert clients[0].records.count() == 24
        assert sorted(r.id for r in clients[1].records.find(with_blobs=False)) == sorted(
            f"{n}-{i}-{j}" for n in "ab" for i in range(3) for j in range(4))
        store = AgreeDocumentStore(index_dir=url)
        with pytest.raises(DuplicateDocumentError, match="exist already"):
            store.write_documents([Document(id="a-0-0", content="again")])
        assert store.count_documents() == 24
        store.close()
        for c in clients:
            c.close()


def test_clear_errors_for_a_server_that_is_down_or_a_wrong_token(tmp_path, monkeypatch):
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteIndexError, match=f"cannot reach agree serve at {down}.*Is it running"):
        AgreeVisualRetriever(down).retrieve(QUESTION)
    with pytest.raises(RemoteIndexError, match="cannot reach agree serve"):
        AgreeDocumentStore(index_dir=down).count_documents()
    with serve_in_thread(tmp_path / "served", token="s3cret") as url:
        monkeypatch.setenv("AGREE_TOKEN", "wrong")
        with pytest.raises(RemoteIndexError, match=r"needs a token.*set AGREE_TOKEN.*HTTP 401"):
            AgreeDocumentStore(index_dir=url).count_documents()
        monkeypatch.delenv("AGREE_TOKEN")
        with pytest.raises(RemoteIndexError, match="HTTP 401"):
            AgreeRerank(index_dir=url).postprocess_nodes(
                [NodeWithScore(node=TextNode(text="x", metadata={"source": "/a.pdf", "page": 1}))], query_str="q")
        monkeypatch.setenv("AGREE_TOKEN", "s3cret")
        store = AgreeDocumentStore(index_dir=url)
        assert store.write_documents([Document(id="1", content="a page")]) == 1
        assert store.count_documents() == 1
        store.close()


def test_a_component_naming_another_encoder_than_the_servers_is_refused(index_copy):
    with serve_in_thread(index_copy) as url:
        with pytest.raises(IndexConfigError, match="built with encoder 'text-layer', not 'colpali'"):
            AgreeDocumentStore(index_dir=url, encoder="colpali").count_documents()
