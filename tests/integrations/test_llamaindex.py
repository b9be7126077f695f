"""The LlamaIndex integration through LlamaIndex's public calls: real LlamaIndex objects,
the session's encoder and sample index, no network."""

import asyncio
import base64
import gc

import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("llama_index.core")
try:
    import llama_index.retrievers.agree  # noqa: F401  (installed: pip install -e '.[llamaindex]')
except ImportError:  # running from a checkout that is not installed with the extra
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "llamaindex"))

from llama_index.core import SummaryIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MediaResource, Node, NodeWithScore, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.postprocessor.agree_rerank import AgreeRerank
from llama_index.postprocessor.agree_rerank.refs import page_ref
from llama_index.retrievers.agree import AgreeVisualRetriever, to_agree_filters

from agree_core.index import IndexConfigError, PageIndex
from agree_core.pages import iter_pages
from agree_core.rerank import PageRef, PageScorer
from conftest import copy_index, lorem_pages, make_pdf, marker

QUESTION = "revenue in the third quarter"


@pytest.fixture
def index_dir(tmp_path, sample_index):
    return Path(copy_index(sample_index, tmp_path / "ix"))


@pytest.fixture
def retriever(index_dir, encoder):
    with AgreeVisualRetriever(index_dir, encoder=encoder, top_k=3) as r:
        yield r


def ids_and_scores(nodes):
    return [(n.node.node_id, round(n.score, 4)) for n in nodes]


def test_retrieve_returns_page_image_nodes(retriever, samples):
    nodes = retriever.retrieve(QUESTION)
    hits = retriever.shared.run(PageIndex.search, QUESTION, 3)
    assert ids_and_scores(nodes) == [(h.page_id, round(h.score, 4)) for h in hits]
    top = nodes[0].node
    assert isinstance(top, ImageNode) and Path(top.image_path).is_file()
    assert top.image_mimetype == "image/jpeg"
    assert top.metadata["source"] == top.metadata["file_path"] == str(samples[0])
    assert (top.metadata["page"], top.metadata["page_label"], top.metadata["file_name"]) == (2, "2", "report.pdf")
    assert top.ref_doc_id == top.metadata["doc_id"] == hits[0].doc_id
    assert "Q3 2025" in top.text  # the page's text layer, for a text LLM
    prompt_text = top.get_content(metadata_mode="llm")
    assert "report.pdf" in prompt_text and "index_dir" not in prompt_text


def test_aretrieve_matches_retrieve_and_never_searches_twice_at_once(retriever, monkeypatch):
    expected = ids_and_scores(retriever.retrieve(QUESTION))
    records = retriever.shared.index.records
    real, running, overlaps = records.search, [], []

    def search(*args, **kwargs):
        running.append(1)
        overlaps.append(len(running))
        time.sleep(0.05)  # long enough for a second thread to come in if nothing stops it
        try:
            return real(*args, **kwargs)
        finally:
            running.pop()

    monkeypatch.setattr(records, "search", search)

    async def main():
        return await asyncio.gather(*[retriever.aretrieve(QUESTION) for _ in range(4)])

    for nodes in asyncio.run(main()):
        assert ids_and_scores(nodes) == expected
    assert overlaps == [1, 1, 1, 1]


def test_filters_in_llamaindex_types(index_dir, encoder, samples):
    report, slides, scan = (str(p) for p in samples)

    def pages(*filters, condition=FilterCondition.AND, top_k=9):
        with AgreeVisualRetriever(index_dir, encoder=encoder, top_k=top_k,
                                  filters=MetadataFilters(filters=list(filters), condition=condition)) as r:
            return [(n.node.metadata["file_name"], n.node.metadata["page"]) for n in r.retrieve(QUESTION)]

    assert {f for f, _ in pages(MetadataFilter(key="source", value=slides))} == {"slides.pdf"}
    assert {f for f, _ in pages(MetadataFilter(key="file_path", value=[report, scan], operator=FilterOperator.IN))} \
        == {"report.pdf", "scan.pdf"}
    ranged = pages(MetadataFilter(key="file_path", value=slides),
                   MetadataFilter(key="page", value=2, operator=FilterOperator.GTE),
                   MetadataFilter(key="page", value="4", operator=FilterOperator.LTE))
    assert sorted(p for _, p in ranged) == [2, 3, 4]
    with PageIndex.open(index_dir, encoder) as ix:  # document metadata, set in place
        ix.add([samples[1]], metadata={"team": "platform"}, progress=False)
    assert {f for f, _ in pages(MetadataFilter(key="team", value="platform"))} == {"slides.pdf"}
    assert pages(MetadataFilter(key="team", value="finance")) == []

    with pytest.raises(ValueError, match=r"operator 'text_match' is not supported by agree"):
        to_agree_filters(MetadataFilters(filters=[MetadataFilter(key="team", value="x", operator=FilterOperator.TEXT_MATCH)]))
    with pytest.raises(ValueError, match="filter on 'meta.page_label': compare it with ==, !=, in or not in"):
        pages(MetadataFilter(key="page_label", value="4", operator=FilterOperator.LTE))
    nested = MetadataFilters(filters=[MetadataFilter(key="team", value="x"),
                                      MetadataFilters(filters=[MetadataFilter(key="page", value=3, operator=FilterOperator.LT)])])
    assert to_agree_filters(nested) == {"operator": "AND", "conditions": [
        {"field": "meta.team", "operator": "==", "value": "x"},
        {"operator": "AND", "conditions": [{"field": "meta.page", "operator": "<", "value": 3}]}]}


def test_persist_and_reload_give_the_same_results(index_dir, encoder, tmp_path):
    filters = MetadataFilters(filters=[MetadataFilter(key="page", value=3, operator=FilterOperator.LTE)])
    with AgreeVisualRetriever(index_dir, encoder=encoder, top_k=2, filters=filters) as r:
        expected = ids_and_scores(r.retrieve(QUESTION))
        r.persist(tmp_path / "storage")  # settings elsewhere, the index stays where it is
        r.persist()  # settings inside the index directory
    for persist_dir in (tmp_path / "storage", index_dir):
        with AgreeVisualRetriever.from_persist_dir(persist_dir, encoder=encoder) as loaded:
            assert (loaded.top_k, loaded.filters) == (2, filters)
            assert ids_and_scores(loaded.retrieve(QUESTION)) == expected
    with AgreeVisualRetriever.from_persist_dir(tmp_path / "storage", top_k=1, encoder=encoder) as loaded:
        assert len(loaded.retrieve(QUESTION)) == 1


def test_from_pdfs_builds_the_index(tmp_path, encoder):
    pdfs = [make_pdf(tmp_path / "a.pdf", lorem_pages(1, "alpha", words=30)),
            make_pdf(tmp_path / "b.pdf", lorem_pages(2, "beta", words=30))]
    with AgreeVisualRetriever.from_pdfs(pdfs + [tmp_path / "missing.pdf"], tmp_path / "new.idx", encoder=encoder,
                                        metadata={"team": "zoo"}, top_k=2) as r:
        assert [Path(e.path).name for e in r.add_report.skipped] == ["missing.pdf"]
        top = r.retrieve(f"beta {marker(2)}")[0].node
        assert (top.metadata["file_name"], top.metadata["page"], top.metadata["team"]) == ("b.pdf", 2, "zoo")
        assert r.shared.run(PageIndex.info)["pages"] == 3


def test_query_engine_returns_pages_and_images(retriever):
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[AgreeRerank(top_n=2)])
    response = engine.query(QUESTION)
    assert str(response)  # the mock LLM answers with (part of) its prompt
    assert [n.node.metadata["page"] for n in response.source_nodes][0] == 2
    assert len(response.source_nodes) == 2
    assert all(Path(n.node.image_path).is_file() for n in response.source_nodes)
    again = asyncio.run(engine.aquery(QUESTION))
    assert ids_and_scores(again.source_nodes) == ids_and_scores(response.source_nodes)


def test_rerank_order_equals_agree_core_scores_from_stored_vectors(retriever, encoder, monkeypatch):
    encoded = []
    real = encoder.encode_pages
    monkeypatch.setattr(encoder, "encode_pages", lambda pages: encoded.extend(pages) or real(pages))
    with AgreeVisualRetriever(retriever.index_dir, encoder=encoder, top_k=9) as other:
        nodes = other.retrieve("cloud migration risks")
        reranked = AgreeRerank(top_n=4, keep_retrieval_score=True).postprocess_nodes(nodes, query_str=QUESTION)
    assert encoded == []  # the nodes' index is open here: stored vectors, nothing encoded
    refs = [PageRef(n.node.metadata["source"], n.node.metadata["page"]) for n in nodes]
    scores = retriever.shared.run(lambda ix: PageScorer(ix).scores(QUESTION, refs))
    best = sorted(range(len(nodes)), key=lambda i: -scores[i])[:4]
    assert [n.node.node_id for n in reranked] == [nodes[i].node.node_id for i in best]
    assert [n.score for n in reranked] == pytest.approx([scores[i] for i in best])
    assert reranked[0].node.metadata["retrieval_score"] == pytest.approx(
        next(n.score for n in nodes if n.node.node_id == reranked[0].node.node_id))
    with_dir = AgreeRerank(top_n=4, index_dir=retriever.index_dir)
    assert ids_and_scores(asyncio.run(with_dir.apostprocess_nodes(nodes, query_str=QUESTION))) == ids_and_scores(reranked)
    with_dir.close()
    assert retriever.retrieve(QUESTION)  # still open for the retriever


def test_rerank_nodes_from_another_retriever(samples, tmp_path, encoder, monkeypatch):
    # what LlamaIndex's PDF readers produce (file_path + page_label), through a real retriever
    report, slides, _ = samples
    texts = [p.text for p in iter_pages(slides, dpi=50, pages=[1, 2, 3])]
    docs = [TextNode(text=t, metadata={"file_path": str(slides), "page_label": str(i + 1)}) for i, t in enumerate(texts)]
    (page,) = iter_pages(report, dpi=60, pages=[2])
    page.image.save(tmp_path / "q.png")
    docs.append(ImageNode(image_path=str(tmp_path / "q.png")))  # an image and nothing else
    nodes = SummaryIndex(docs).as_retriever().retrieve(QUESTION)
    asked = []  # the process-wide default encoder: this session's, rather than a second load
    monkeypatch.setattr("llama_index.postprocessor.agree_rerank.base.shared_encoder",
                        lambda spec: asked.append(spec) or encoder)
    reranked = AgreeRerank(top_n=3).postprocess_nodes(nodes, query_str=QUESTION)
    assert asked == ["text-layer"]
    refs = [PageRef(str(slides), i + 1) for i in range(len(texts))] + [PageRef(image=tmp_path / "q.png")]
    scores = PageScorer(encoder=encoder).scores(QUESTION, refs)
    best = sorted(range(len(refs)), key=lambda i: -scores[i])[:3]
    assert [n.node.node_id for n in reranked] == [docs[i].node_id for i in best]
    assert reranked[0].node.node_id == docs[-1].node_id  # the revenue table wins
    assert [n.score for n in reranked] == pytest.approx([scores[i] for i in best], abs=1e-3)


def test_nodes_without_a_page_raise_or_pass_through(encoder, samples):
    nodes = [NodeWithScore(node=TextNode(text="no page here", id_="bare"), score=0.5),
             NodeWithScore(node=TextNode(text="?", id_="gone", metadata={"file_path": "/nowhere.pdf", "page_label": "1"}), score=0.4),
             NodeWithScore(node=TextNode(text="slide", id_="slide", metadata={"source": str(samples[1]), "page": 4}), score=0.1)]
    with pytest.raises(ValueError, match=r"cannot score 2 node\(s\) \('bare': names no PDF.*'gone': /nowhere.pdf is not a file"):
        AgreeRerank(encoder=encoder).postprocess_nodes(nodes, query_str="cloud risks")
    keep = AgreeRerank(top_n=3, encoder=encoder, on_missing_page="keep")
    kept = keep.postprocess_nodes(nodes, query_str="cloud risks")
    assert [(n.node.node_id, n.score if n.node.node_id != "slide" else "new") for n in kept] == \
        [("slide", "new"), ("bare", 0.5), ("gone", 0.4)]
    assert kept[0].score > 1
    assert ids_and_scores(asyncio.run(keep.apostprocess_nodes(nodes, query_str="cloud risks"))) == ids_and_scores(kept)


def test_what_page_a_node_names(tmp_path):
    image = Image.new("RGB", (40, 30), "white")
    image.save(tmp_path / "p.png")
    png = (tmp_path / "p.png").read_bytes()
    assert page_ref(Node(image_resource=MediaResource(data=png))).image.size == (40, 30)
    assert page_ref(ImageNode(image=base64.b64encode(png).decode())).image.size == (40, 30)
    ref = page_ref(ImageNode(image_path=str(tmp_path / "p.png"), metadata={"file_path": "/a.pdf", "page": 7}))
    assert (ref.source, ref.page, ref.image) == ("/a.pdf", 7, str(tmp_path / "p.png"))
    ref = page_ref(TextNode(text="x", metadata={"source": "/b.pdf", "page_label": "iv"}))  # no file: no labels
    assert (ref.source, ref.page, ref.image) == ("/b.pdf", None, None) and "/b.pdf is not a file" in ref.reason


def test_arguments_and_index_sharing(index_dir, encoder, tmp_path):
    with pytest.raises(ValueError, match="similarity_top_k must be an integer >= 1, got 0"):
        AgreeVisualRetriever(index_dir, top_k=0)
    with pytest.raises(IndexConfigError, match=r"no agree index at .*\(a folder that holds no agree index\)"):
        AgreeVisualRetriever(tmp_path)
    with pytest.raises(IndexConfigError, match="no agree index at"):
        AgreeRerank(index_dir=tmp_path)
    with pytest.raises(ValueError, match="top_n must be >= 1, got 0"):
        AgreeRerank(top_n=0)
    with pytest.raises(ValueError, match="give index_dir or encoder, not both"):
        AgreeRerank(index_dir=index_dir, encoder="text-layer")
    with pytest.raises(ValueError, match="AgreeRerank needs the query"):
        AgreeRerank().postprocess_nodes([NodeWithScore(node=TextNode(text="x"))])
    with pytest.raises(ValueError, match=r"filter on 'meta.team': '>=' takes a number or an ISO 8601 date, got 'x'"):
        AgreeVisualRetriever(index_dir, filters=MetadataFilters(
            filters=[MetadataFilter(key="team", value="x", operator=FilterOperator.GTE)]))
    assert AgreeRerank.from_dict(AgreeRerank(top_n=2, keep_retrieval_score=True).to_dict()).top_n == 2

    a = AgreeVisualRetriever(index_dir, encoder=encoder, top_k=1)
    b = AgreeVisualRetriever(index_dir, top_k=2)
    assert len(a.retrieve(QUESTION)) == 1 and len(b.retrieve(QUESTION)) == 2  # one open index, shared
    with pytest.raises(IndexConfigError, match="built with encoder 'text-layer', not 'colpali'"):
        AgreeVisualRetriever(index_dir, encoder="colpali").retrieve(QUESTION)
    a.close()
    assert len(b.retrieve(QUESTION)) == 2
    b.close()
    with PageIndex.open(index_dir, encoder) as ix:  # every user gone: the directory is free
        assert ix.info()["pages"] == 9
    assert len(b.retrieve(QUESTION)) == 2  # reopens on use
    del b  # garbage collection gives the index back
    gc.collect()
    PageIndex.open(index_dir, encoder).close()
