"""The framework components against `agree serve` (a fixture's server on a free port)."""

from __future__ import annotations

import asyncio
import shutil

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters  # noqa: E402
from llama_index.retrievers.agree import AgreeVisualRetriever  # noqa: E402

from serve.servers import serve_in_thread  # noqa: E402

QUESTION = "revenue in the third quarter"


def _nodes(nodes):
    return [(n.node.node_id, round(n.score, 4), n.node.text, n.node.image_path,
             {k: v for k, v in n.node.metadata.items() if k != "index_dir"},
             n.node.ref_doc_id) for n in nodes]


def test_llamaindex_retriever_against_a_server(tmp_path, sample_index, samples):
    filters = MetadataFilters(filters=[MetadataFilter(key="page", value=2)])
    with AgreeVisualRetriever(sample_index, top_k=3) as local:
        expected = _nodes(local.retrieve(QUESTION))
        with AgreeVisualRetriever(sample_index, top_k=3, filters=filters) as local_filtered:
            expected_filtered = _nodes(local_filtered.retrieve(QUESTION))
    index = shutil.copytree(sample_index, tmp_path / "index")
    with serve_in_thread(index) as url:
        with AgreeVisualRetriever(url, top_k=3) as remote:
            got = remote.retrieve(QUESTION)
            assert [n.node.metadata["index_dir"] for n in got] == [url] * 3
            # the same nodes, except the page images live in the server's index
            assert [g[:3] + g[4:] for g in _nodes(got)] == [e[:3] + e[4:] for e in expected]
            assert all(n.node.image_path.startswith(str(index)) for n in got)
            assert _nodes(asyncio.run(remote.aretrieve(QUESTION))) == _nodes(got)
            remote.persist(tmp_path / "persisted")
        again = AgreeVisualRetriever.from_persist_dir(tmp_path / "persisted")
        assert again.index_dir == url
        with AgreeVisualRetriever(url, top_k=3, filters=filters) as remote_filtered:
            filtered = remote_filtered.retrieve(QUESTION)
        assert [g[:3] + g[4:] for g in _nodes(filtered)] == [e[:3] + e[4:] for e in expected_filtered]
