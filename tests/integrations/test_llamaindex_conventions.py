"""AgreeVisualRetriever and AgreeRerank next to LlamaIndex's own readers and retrievers
(PDFReader, PyMuPDFReader, SimpleDirectoryReader, BM25Retriever, QueryFusionRetriever), on a
PDF whose printed page labels are i, ii, 1, 2, 3 (made here)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.readers.file")
try:
    import llama_index.retrievers.agree  # noqa: F401
except ImportError:  # not installed with the extra: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "llamaindex"))

from llama_index.core import SimpleDirectoryReader
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.postprocessor.agree_rerank import AgreeRerank
from llama_index.readers.file import PDFReader, PyMuPDFReader
from llama_index.retrievers.agree import AgreeVisualRetriever
from llama_index.retrievers.bm25 import BM25Retriever

from agree_core.index import IndexConfigError, PageIndex
from agree_core.page_identity import PageIdentityError
from agree_core.rerank import PageRef, PageScorer
from conftest import BOOK_LABELS, lorem_pages, make_labelled_pdf, marker


def about(page: int) -> str:
    return f"book {page} {marker(page)}"


@pytest.fixture
def book_index(tmp_path, book_pdf, encoder):
    directory = tmp_path / "ix"
    with PageIndex.open(directory, encoder) as ix:
        assert ix.add([book_pdf], progress=False).ok
    return directory


@pytest.fixture
def retriever(book_index, encoder):
    with AgreeVisualRetriever(book_index, encoder=encoder, similarity_top_k=5) as r:
        yield r


def with_scores(docs):
    return [NodeWithScore(node=d, score=0.0) for d in docs]


def test_pdfreader_page_labels_name_the_physical_page(book_pdf, encoder):
    docs = SimpleDirectoryReader(input_files=[book_pdf], file_extractor={".pdf": PDFReader()}).load_data()
    assert [d.metadata["page_label"] for d in docs] == BOOK_LABELS and docs[0].metadata["file_path"]
    reranked = AgreeRerank(top_n=5, encoder=encoder).postprocess_nodes(with_scores(docs), query_str=about(3))
    assert reranked[0].node.metadata["page_label"] == "1"  # physical page 3, printed "1"
    pages = PageScorer(encoder=encoder).scores(about(3), [PageRef(str(book_pdf), p) for p in range(1, 6)])
    by_label = {n.node.metadata["page_label"]: n.score for n in reranked}
    assert [by_label[label] for label in BOOK_LABELS] == pytest.approx(pages, abs=1e-4)  # "i" too


def test_pymupdf_reader_nodes_name_their_page_by_source(book_pdf, encoder):
    docs = PyMuPDFReader().load_data(book_pdf)
    assert (docs[2].metadata["source"], docs[2].metadata["file_path"]) == ("3", str(book_pdf))
    reranked = AgreeRerank(top_n=2, encoder=encoder).postprocess_nodes(with_scores(docs), query_str=about(4))
    assert reranked[0].node.metadata["source"] == "4"


def test_nodes_that_name_no_page_or_an_ambiguous_one(book_pdf, tmp_path, encoder):
    bare = PDFReader().load_data(book_pdf)  # the reader alone: file_name and page_label, no path
    with pytest.raises(ValueError, match=r"cannot score 5 node\(s\) \(.*names file 'book.pdf' but not where it is"):
        AgreeRerank(encoder=encoder).postprocess_nodes(with_scores(bare), query_str=about(3))
    kept = AgreeRerank(top_n=5, encoder=encoder, on_missing_page="keep").postprocess_nodes(
        with_scores(bare), query_str=about(3))
    assert [n.node.node_id for n in kept] == [d.node_id for d in bare]  # passed through, never another page

    twice = make_labelled_pdf(tmp_path / "appendix.pdf", lorem_pages(4), [(0, 1, "/D", 1), (2, 3, "/D", 1)])
    docs = SimpleDirectoryReader(input_files=[twice], file_extractor={".pdf": PDFReader()}).load_data()
    with pytest.raises(PageIdentityError, match=rf"node '{docs[0].node_id}': page_label '1' is printed on pages \[1, 3\]"):
        AgreeRerank(encoder=encoder).postprocess_nodes(with_scores(docs), query_str="page 3")


def test_llamaindex_conventions_of_the_retriever_and_the_reranker(retriever, book_index, encoder):
    assert len(retriever.retrieve(about(2))) == 5
    retriever.similarity_top_k = 2  # as on LlamaIndex's own retrievers
    assert len(retriever.retrieve(about(2))) == 2 and retriever.top_k == 2
    assert AgreeVisualRetriever(book_index, top_k=3).similarity_top_k == 3  # the alias
    with pytest.raises(TypeError, match="unexpected keyword argument 'k'"):
        AgreeVisualRetriever(book_index, k=3)
    with pytest.raises(ValueError, match="top_k"):
        AgreeRerank(top_k=2)  # LlamaIndex rerankers say top_n: refused, not ignored
    with pytest.raises(ValueError, match="similarity_top_k must be an integer >= 1, got 0"):
        retriever.similarity_top_k = 0

    retriever.similarity_top_k = 5
    text = [(n.node.node_id, n.score) for n in retriever.retrieve(about(2))]
    vectors = retriever.shared.run(lambda ix: ix.encode_queries([about(2)]))[0].tolist()
    given = retriever.retrieve(QueryBundle(query_str="words that are not searched", embedding=vectors))
    assert [(n.node.node_id, n.score) for n in given] == [(i, pytest.approx(s, abs=1e-4)) for i, s in text]
    dense = retriever.retrieve(QueryBundle(query_str=about(2), embedding=[0.1] * 385))  # another model's vector
    assert [n.node.node_id for n in dense] == [i for i, _ in text]
    with pytest.raises(ValueError, match=r"query vectors must be \(n_tokens >= 1, 385\), got \(1, 5\)"):
        retriever.retrieve(QueryBundle(query_str="x", embedding=[[0.1] * 5]))
    custom = retriever.retrieve(QueryBundle(query_str="unrelated", custom_embedding_strs=[about(4)]))
    assert custom[0].node.metadata["page"] == 4

    rerank = AgreeRerank(top_n=1, encoder=encoder)
    nodes = retriever.retrieve(about(1))
    best = rerank.postprocess_nodes(nodes, QueryBundle(query_str="unrelated", embedding=vectors))
    assert best[0].node.metadata["page"] == 2


def test_the_reranker_emits_llamaindex_rerank_events(retriever, encoder):
    class Collect(BaseEventHandler):
        events: list = []

        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event, **kwargs) -> None:
            self.events.append(event)

    root, handler = get_dispatcher(), Collect()
    root.add_event_handler(handler)
    try:
        out = AgreeRerank(top_n=2, encoder=encoder).postprocess_nodes(retriever.retrieve(about(5)), query_str=about(5))
    finally:
        root.event_handlers.remove(handler)
    start = [e for e in handler.events if isinstance(e, ReRankStartEvent)]
    end = [e for e in handler.events if isinstance(e, ReRankEndEvent)]
    assert len(start) == len(end) == 1 and start[0].top_n == 2 and len(start[0].nodes) == 5
    assert [n.node.node_id for n in end[0].nodes] == [n.node.node_id for n in out]


def test_filters_on_every_key_a_node_carries(retriever, book_index):
    def pages(*filters, condition=FilterCondition.AND):
        retriever.filters = MetadataFilters(filters=list(filters), condition=condition)
        return sorted(n.node.metadata["page"] for n in retriever.retrieve(about(3)))

    top = retriever.retrieve(about(3))[0].node
    for key in ("source", "file_path", "file_name", "page", "page_label", "doc_id", "index_dir"):
        assert 3 in pages(MetadataFilter(key=key, value=top.metadata[key])), key
    assert pages(MetadataFilter(key="page_label", value="1")) == [3]  # the printed label
    assert pages(MetadataFilter(key="page_label", value=["i", "ii"], operator=FilterOperator.IN)) == [1, 2]
    assert pages(MetadataFilter(key="file_name", value="other.pdf")) == []
    assert pages(MetadataFilter(key="file_name", value="book.pdf", operator=FilterOperator.NE)) == []
    assert pages(MetadataFilter(key="index_dir", value=str(book_index.parent / "elsewhere"))) == []
    assert pages(MetadataFilter(key="page", value=1), MetadataFilter(key="page_label", value="3"),
                 condition=FilterCondition.OR) == [1, 5]
    assert pages(MetadataFilter(key="page_label", value="ii"), MetadataFilter(key="page", value=5),
                 condition=FilterCondition.NOT) == [1, 3, 4]
    nested = MetadataFilters(filters=[MetadataFilter(key="page", value=2, operator=FilterOperator.GTE),
                                      MetadataFilters(filters=[MetadataFilter(key="page_label", value="1"),
                                                               MetadataFilter(key="page_label", value="3")],
                                                      condition=FilterCondition.OR)])
    assert pages(nested) == [3, 5]


def test_a_reader_refuses_an_index_that_does_not_exist(tmp_path, book_pdf, encoder):
    with pytest.raises(IndexConfigError, match=rf"no agree index at {tmp_path / 'typo'} \(no such folder\)"):
        AgreeVisualRetriever(tmp_path / "typo")
    with pytest.raises(IndexConfigError, match="no agree index at"):
        AgreeRerank(index_dir=tmp_path / "typo")
    assert not (tmp_path / "typo").exists()  # nothing created
    with AgreeVisualRetriever.from_pdfs(str(book_pdf), tmp_path / "new", encoder=encoder) as r:  # one path: one source
        assert r.add_report.added == [str(book_pdf)] and r.shared.run(PageIndex.info)["pages"] == 5
        again = r.shared.run(PageIndex.add, str(book_pdf), progress=False)  # the core too: never walked
        assert (again.unchanged, again.skipped) == ([str(book_pdf)], [])


def test_fusion_with_bm25_merges_the_same_page(retriever, book_pdf, encoder):
    retriever.similarity_top_k = 3
    bm25 = BM25Retriever.from_defaults(nodes=retriever.page_nodes(), similarity_top_k=3)
    fusion = QueryFusionRetriever([retriever, bm25], similarity_top_k=6, num_queries=1,
                                  mode="reciprocal_rerank", use_async=False, llm=MockLLM())
    fused = fusion.retrieve(about(3))
    pages = [n.node.metadata["page"] for n in fused]
    assert len(pages) == len(set(pages)) and pages[0] == 3  # found by both, merged, and first
    assert fused[0].score == pytest.approx(2 / 60)  # 1 / (rank 0 + k=60), once from each retriever

    # BM25 over the reader's own nodes: other ids and text, so the same page comes back twice ...
    docs = SimpleDirectoryReader(input_files=[book_pdf], file_extractor={".pdf": PDFReader()}).load_data()
    other = QueryFusionRetriever([retriever, BM25Retriever.from_defaults(nodes=docs, similarity_top_k=3)],
                                 similarity_top_k=6, num_queries=1, mode="reciprocal_rerank", use_async=False, llm=MockLLM())
    mixed = other.retrieve(about(3))
    keys = [n.node.metadata["page_label"] for n in mixed]
    assert len(set(keys)) < len(keys)
    # ... and the reranker keeps one node per page
    once = AgreeRerank(top_n=6, encoder=encoder, one_per_page=True).postprocess_nodes(mixed, query_str=about(3))
    assert sorted(n.node.metadata["page_label"] for n in once) == sorted(set(keys))
