"""The agree Haystack components next to Haystack's own (PyPDFToDocument, DocumentSplitter,
InMemoryDocumentStore, InMemoryBM25Retriever, DocumentJoiner, Pipeline.close)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network in tests

pytest.importorskip("haystack", reason="the haystack extra is not installed: pip install -e '.[haystack]'")
try:
    import haystack_integrations.document_stores.agree  # noqa: F401
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "haystack"))

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.converters import PyPDFToDocument  # noqa: E402
from haystack.components.joiners import DocumentJoiner  # noqa: E402
from haystack.components.preprocessors import DocumentSplitter  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402
from haystack.errors import FilterError  # noqa: E402

from agree_core.index import PageIndex  # noqa: E402
from agree_core.index.shared import open_indexes  # noqa: E402
from agree_core.rerank import PageRef, PageScorer  # noqa: E402
from conftest import BOOK_LABELS, lorem_pages, make_labelled_pdf, marker  # noqa: E402
from haystack_integrations.components.converters.agree import AgreePageConverter  # noqa: E402
from haystack_integrations.components.rankers.agree import AgreeRanker  # noqa: E402
from haystack_integrations.components.retrievers.agree import AgreeRetriever  # noqa: E402
from haystack_integrations.components.writers.agree import AgreeDocumentWriter  # noqa: E402
from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402

STORE = "haystack_integrations.document_stores.agree.document_store.AgreeDocumentStore"
QUERY_YAML = f"""
components:
  retriever:
    type: haystack_integrations.components.retrievers.agree.retriever.AgreeRetriever
    init_parameters:
      document_store: {{type: {STORE}, init_parameters: {{index_dir: "INDEX"}}}}
      top_k: 4
  ranker:
    type: haystack_integrations.components.rankers.agree.ranker.AgreeRanker
    init_parameters:
      document_store: {{type: {STORE}, init_parameters: {{index_dir: "INDEX"}}}}
      top_k: 2
connections:
- {{sender: retriever.documents, receiver: ranker.documents}}
"""


def about(page: int) -> str:
    return f"book {page} {marker(page)}"


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A book PDF (labels i, ii, 1, 2, 3) and an index of it written by a Haystack pipeline."""
    root = tmp_path_factory.mktemp("haystack_book")
    pdf = make_labelled_pdf(root / "book.pdf", lorem_pages(5, "book", words=40), [(0, 1, "/r", 1), (2, 4, "/D", 1)])
    store = AgreeDocumentStore(index_dir=root / "index")
    p = Pipeline()
    p.add_component("converter", AgreePageConverter(include_images=False))
    p.add_component("writer", AgreeDocumentWriter(document_store=store))
    p.connect("converter.documents", "writer.documents")
    assert p.run({"converter": {"sources": str(pdf)}}) == {"writer": {"documents_written": 5}}  # one path: one source
    p.close()
    return pdf, root / "index"


def split_pages(pdf: Path, store_full_path: bool) -> list[Document]:
    """What Haystack's own PDF converter and page splitter make of the PDF."""
    p = Pipeline()
    p.add_component("converter", PyPDFToDocument(store_full_path=store_full_path))
    p.add_component("splitter", DocumentSplitter(split_by="page", split_length=1))
    p.connect("converter.documents", "splitter.documents")
    return p.run({"converter": {"sources": [pdf]}})["splitter"]["documents"]


def test_converter_and_splitter_documents_are_ranked_as_their_pages(book, monkeypatch):
    pdf, _ = book
    docs = split_pages(pdf, store_full_path=True)
    assert [(d.meta["file_path"], d.meta["page_number"]) for d in docs] == [(str(pdf), i) for i in range(1, 6)]
    ranker = AgreeRanker(encoder="text-layer", top_k=5)
    ranked = ranker.run(documents=docs, query=about(3))["documents"]
    assert ranked[0].meta["page_number"] == 3
    ranker.warm_up()
    pages = PageScorer(encoder=ranker._encoder).scores(about(3), [PageRef(str(pdf), p) for p in range(1, 6)])
    assert [d.score for d in sorted(ranked, key=lambda d: d.meta["page_number"])] == pytest.approx(pages, abs=1e-4)

    # Haystack's default keeps only the file name: an error that says so, or the Documents kept unscored
    short = split_pages(pdf, store_full_path=False)
    monkeypatch.chdir(pdf.parent.parent)
    with pytest.raises(ValueError, match=r"cannot score 5 Document\(s\).*book.pdf is not a file.*store_full_path=True"):
        ranker.run(documents=short, query=about(3))
    kept = AgreeRanker(encoder="text-layer", top_k=5, on_missing_page="keep").run(documents=short, query=about(3))
    assert [d.id for d in kept["documents"]] == [d.id for d in short]
    # a Document of another kind of file names no PDF page: it is scored from its own text
    notes = [Document(content=f"notes about the {marker(3)}", meta={"file_path": "notes.txt", "source": "wiki"}),
             Document(content="nothing related", meta={"file_path": "other.txt"})]
    assert ranker.run(documents=notes, query=about(3))["documents"][0].id == notes[0].id


def test_filter_type_mismatches_raise_filter_error_as_in_memory_does(tmp_path):
    docs = [Document(content="alpha page", meta={"name": "alpha", "year": 2020}),
            Document(content="beta page", meta={"name": "beta", "year": 2021})]
    memory, agree = InMemoryDocumentStore(), AgreeDocumentStore(index_dir=tmp_path / "ix")
    memory.write_documents(docs)
    agree.write_documents(docs)
    for flt in ({"field": "meta.name", "operator": ">", "value": 3},
                {"field": "meta.year", "operator": "<=", "value": "2021-01-01"}):
        with pytest.raises(FilterError):
            memory.filter_documents(flt)
        with pytest.raises(FilterError, match="on a field that holds"):
            agree.filter_documents(flt)
        with pytest.raises(FilterError):
            AgreeRetriever(document_store=agree).run(query="alpha", filters=flt)
    ok = {"field": "meta.year", "operator": ">", "value": 2020}
    assert [d.id for d in agree.filter_documents(ok)] == [d.id for d in memory.filter_documents(ok)]
    agree.close()


def test_a_pipeline_file_loads_one_store_and_close_releases_it(book):
    pdf, index = book
    query = Pipeline.loads(QUERY_YAML.replace("INDEX", str(index)))
    retriever, ranker = query.get_component("retriever"), query.get_component("ranker")
    assert retriever.document_store is ranker.document_store  # one store for one index
    best = query.run({"retriever": {"query": about(4)}, "ranker": {"query": about(4)}})["ranker"]["documents"]
    assert best[0].meta["page"] == 4 and best[0].meta["page_number"] == 4 and best[0].meta["file_path"] == str(pdf)
    assert open_indexes()[str(index)] == 1  # one handle, whatever else this process holds
    query.close()
    assert str(index) not in open_indexes()
    PageIndex.open(index).close()  # the folder is free: another process could open it now
    assert query.run({"retriever": {"query": about(4)}, "ranker": {"query": about(4)}})["ranker"]["documents"]
    query.close()


def test_a_query_pipeline_refuses_an_index_that_does_not_exist(tmp_path):
    query = Pipeline.loads(QUERY_YAML.replace("INDEX", str(tmp_path / "typo")))
    with pytest.raises(Exception, match=rf"no agree index at {tmp_path / 'typo'} \(no such folder\)"):
        query.run({"retriever": {"query": "anything"}, "ranker": {"query": "anything"}})
    assert not (tmp_path / "typo").exists()


def test_document_joiner_merges_the_same_page_from_bm25(book):
    pdf, index = book
    store = AgreeDocumentStore(index_dir=index)
    memory = InMemoryDocumentStore()
    memory.write_documents(store.filter_documents())  # the same pages, ids and text, for BM25

    def joined(bm25_store: InMemoryDocumentStore) -> list[Document]:
        p = Pipeline()
        p.add_component("agree", AgreeRetriever(document_store=store, top_k=3))
        p.add_component("bm25", InMemoryBM25Retriever(document_store=bm25_store, top_k=3))
        p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion"))
        p.connect("agree.documents", "joiner.documents")
        p.connect("bm25.documents", "joiner.documents")
        return p.run({"agree": {"query": about(2)}, "bm25": {"query": about(2)}})["joiner"]["documents"]

    fused = joined(memory)
    pages = [d.meta["page"] for d in fused]
    assert len(pages) == len(set(pages)) and pages[0] == 2

    split = InMemoryDocumentStore()  # Haystack's converter and splitter: other ids for the same pages
    split.write_documents(split_pages(pdf, store_full_path=True))
    mixed = joined(split)
    keys = [d.meta.get("page", d.meta.get("page_number")) for d in mixed]
    assert len(set(keys)) < len(keys)
    once = AgreeRanker(document_store=store, top_k=6, one_per_page=True).run(documents=mixed, query=about(2))
    assert sorted(d.meta.get("page", d.meta.get("page_number")) for d in once["documents"]) == sorted(set(keys))
    top = once["documents"][0].meta
    assert BOOK_LABELS[top.get("page", top.get("page_number")) - 1] == "ii"  # physical page 2, printed "ii"
    store.close()
