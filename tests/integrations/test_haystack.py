"""The Haystack components: serialisation, the example pipeline YAML files, retrieval, reranking
and async runs. (Haystack's own store test suite runs in test_haystack_store*.py.)"""

from __future__ import annotations

import asyncio
import shutil
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
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.core.errors import DeserializationError  # noqa: E402
from haystack.dataclasses import ByteStream  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402

from agree_core.index.shared import SharedIndex  # noqa: E402
from haystack_integrations.components.converters.agree import AgreePageConverter  # noqa: E402
from haystack_integrations.components.embedders.agree import (  # noqa: E402
    AgreeDocumentEmbedder,
    AgreeTextEmbedder,
)
from haystack_integrations.components.rankers.agree import AgreeRanker  # noqa: E402
from haystack_integrations.components.retrievers.agree import AgreeRetriever  # noqa: E402
from haystack_integrations.components.writers.agree import AgreeDocumentWriter  # noqa: E402
from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402
from haystack_integrations.document_stores.agree._convert import get_multivector  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "haystack"
ANIMALS = ["aardvark", "badger", "camel", "dolphin"]


def pages_about(topic: str) -> list[str]:
    return [f"{topic} page {i + 1} about the {animal}\nthe {animal} lives in the river valley near the bridge"
            for i, animal in enumerate(ANIMALS)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Two 4-page PDFs, through converter -> embedder -> writer, in one index."""
    from reportlab.pdfgen import canvas

    root = tmp_path_factory.mktemp("haystack_components")
    pdfs = root / "pdfs"
    pdfs.mkdir()
    for name in ("zoo", "farm"):
        c = canvas.Canvas(str(pdfs / f"{name}.pdf"))
        for text in pages_about(name):
            for k, line in enumerate(text.splitlines()):
                c.drawString(72, 720 - 16 * k, line)
            c.showPage()
        c.save()
    store = AgreeDocumentStore(index_dir=root / "index")
    p = Pipeline()
    p.add_component("converter", AgreePageConverter())
    p.add_component("embedder", AgreeDocumentEmbedder())
    p.add_component("writer", AgreeDocumentWriter(document_store=store))
    p.connect("converter.documents", "embedder.documents")
    p.connect("embedder.documents", "writer.documents")
    out = p.run({"converter": {"sources": [pdfs], "meta": {"shelf": "animals"}}},
                include_outputs_from={"embedder"})
    assert out["writer"]["documents_written"] == 8
    yield store, pdfs, out["embedder"]["documents"]
    store.close()


def components(store: AgreeDocumentStore) -> list:
    return [
        store,
        AgreePageConverter(dpi=72, image_format="png", include_images=False),
        AgreeDocumentEmbedder(encoder="text-layer", encoder_options={"dtype": "float32"}, batch_size=4),
        AgreeTextEmbedder(encoder="text-layer"),
        AgreeDocumentWriter(document_store=store, policy="skip"),
        AgreeRetriever(document_store=store, top_k=3, filters={"field": "meta.page", "operator": "==", "value": 1},
                       filter_policy="merge", candidates=50),
        AgreeRanker(document_store=store, top_k=2, score_threshold=0.5),
        AgreeRanker(encoder="text-layer", batch_size=8),
    ]


def test_every_component_round_trips_through_to_dict_and_from_dict(tmp_path):
    store = AgreeDocumentStore(index_dir=tmp_path / "never-opened", include_images=False)
    for c in components(store):
        data = c.to_dict()
        again = type(c).from_dict(data)
        assert again.to_dict() == data, type(c).__name__
        assert data["type"].startswith("haystack_integrations.")
    retriever = components(store)[5].to_dict()["init_parameters"]
    assert retriever["filter_policy"] == "merge" and retriever["document_store"]["init_parameters"] == {
        "index_dir": str(tmp_path / "never-opened"), "encoder": None, "encoder_options": None, "wait": 0.0,
        "include_images": False, "batch_size": 16, "create": None}
    assert not (tmp_path / "never-opened").exists()  # serialising never opens the index


@pytest.mark.parametrize("build, message", [
    (lambda s: AgreeRetriever(document_store=s, top_k=0), "top_k must be an integer >= 1, got 0"),
    (lambda s: AgreeRetriever(document_store="index"), "document_store must be an AgreeDocumentStore"),
    (lambda s: AgreeRanker(document_store=s, encoder="text-layer"), "not both"),
    (lambda s: AgreeDocumentWriter(document_store=s, policy="upsert"), "policy must be one of"),
    (lambda s: AgreePageConverter(dpi=5), "dpi must be an integer between 10 and 1200, got 5"),
    (lambda s: AgreePageConverter(image_format="gif"), "image_format must be one of"),
    (lambda s: AgreeDocumentEmbedder(batch_size=0), "batch_size must be an integer >= 1"),
    (lambda s: AgreeDocumentStore(index_dir=""), "index_dir must be a folder path"),
])
def test_arguments_are_checked_in_init(tmp_path, build, message):
    with pytest.raises(ValueError, match=message):
        build(AgreeDocumentStore(index_dir=tmp_path / "ix"))


def test_the_example_yaml_pipelines_load_and_run_as_the_readme_says(tmp_path, samples, monkeypatch):
    shutil.copytree(samples[0].parent, tmp_path / "sample_pdfs")
    monkeypatch.chdir(tmp_path)  # the YAML files name ./agree-index
    indexing = Pipeline.loads((EXAMPLES / "indexing.yaml").read_text())
    assert indexing.run({"converter": {"sources": ["sample_pdfs"]}}) == {"writer": {"documents_written": 9}}
    query = Pipeline.loads((EXAMPLES / "query.yaml").read_text())
    question = "Which solar site produced the most electricity?"
    result = query.run({"query": question}, include_outputs_from={"ranker", "generator"})
    best = result["ranker"]["documents"][0]
    assert (Path(best.meta["source"]).name, best.meta["page"]) == ("report.pdf", 3)
    reply = result["generator"]["replies"][0].text
    assert question in reply and "report.pdf, page 3" in reply
    assert best.blob is not None and best.blob.mime_type == "image/jpeg"

    again = asyncio.run(query.run_async({"query": question}, include_outputs_from={"ranker"}))
    assert [d.id for d in again["ranker"]["documents"]] == [d.id for d in result["ranker"]["documents"]]

    for name in ("indexing.yaml", "query.yaml"):
        pipeline = Pipeline.loads((EXAMPLES / name).read_text())
        assert _same(Pipeline.loads(pipeline.dumps()), pipeline)
    indexing_again = Pipeline.loads(indexing.dumps())
    assert indexing_again == indexing and Pipeline.loads(indexing_again.dumps()) == indexing_again


def _same(a: Pipeline, b: Pipeline) -> bool:
    """Equal, but for the order of connections (``dumps`` sorts components by name, and
    connections follow them)."""
    def norm(p: Pipeline) -> dict:
        d = p.to_dict()
        return {**d, "connections": sorted(d["connections"], key=lambda c: (c["sender"], c["receiver"]))}
    return norm(a) == norm(b)


def test_a_yaml_naming_a_wrong_init_parameter_fails_with_haystacks_error():
    text = (EXAMPLES / "query.yaml").read_text().replace("top_k: 10", "top_kk: 10")
    with pytest.raises(DeserializationError, match=r"(?s)Couldn't deserialize component 'retriever'.*"
                       r"unexpected keyword argument 'top_kk'"):
        Pipeline.loads(text)


def test_retriever_finds_the_page_and_applies_filters(indexed):
    store, pdfs, _ = indexed
    retriever = AgreeRetriever(document_store=store, top_k=3)
    docs = retriever.run(query="camel")["documents"]
    assert [d.meta["page"] for d in docs[:2]] == [3, 3] and docs[0].score >= docs[1].score >= docs[2].score
    assert docs[0].meta["shelf"] == "animals" and docs[0].blob.mime_type == "image/jpeg"
    zoo = {"field": "meta.source", "operator": "==", "value": str(pdfs / "zoo.pdf")}
    docs = retriever.run(query="camel", filters=zoo, top_k=1)["documents"]
    assert [(Path(d.meta["source"]).name, d.meta["page"]) for d in docs] == [("zoo.pdf", 3)]
    merged = AgreeRetriever(document_store=store, filters=zoo, filter_policy="merge")
    late = {"field": "meta.page", "operator": ">", "value": 2}
    assert {(Path(d.meta["source"]).name, d.meta["page"]) for d in merged.run(query="camel", filters=late)["documents"]
            } == {("zoo.pdf", 3), ("zoo.pdf", 4)}


def test_query_embeddings_and_page_embeddings_use_haystacks_multivector_names(indexed):
    store, _, embedded = indexed
    vectors = get_multivector(embedded[0])
    assert len(vectors) > 3 and len(vectors[0]) == 385
    stored = store.shared.run(lambda ix: ix.records.vectors([embedded[0].id]))[embedded[0].id]
    assert stored.shape == (len(vectors), 385)  # written as given, not encoded again
    q = AgreeTextEmbedder().run(text="camel")["multivector_embedding"]
    by_vectors = AgreeRetriever(document_store=store).run(query_multivector_embedding=q)["documents"]
    by_text = AgreeRetriever(document_store=store).run(query="camel")["documents"]
    assert [d.id for d in by_vectors] == [d.id for d in by_text]
    with pytest.raises(ValueError, match="give a non-empty query or a query_multivector_embedding"):
        AgreeRetriever(document_store=store).run()


def test_ranker_reorders_the_documents_of_any_retriever(indexed):
    store, _, _ = indexed
    memory = InMemoryDocumentStore()
    memory.write_documents([Document(content=text.replace("\n", " ")) for text in pages_about("zoo")])
    bm25 = InMemoryBM25Retriever(document_store=memory, top_k=4).run(query="the dolphin river")["documents"]
    for ranker in (AgreeRanker(top_k=2), AgreeRanker(document_store=store, top_k=2)):
        ranked = ranker.run(query="dolphin", documents=bm25)["documents"]
        assert len(ranked) == 2 and "dolphin" in ranked[0].content and ranked[0].score > ranked[1].score
    assert AgreeRanker().run(query="dolphin", documents=[])["documents"] == []

    found = AgreeRetriever(document_store=store, top_k=4).run(query="badger")["documents"]
    reranked = AgreeRanker(document_store=store).run(query="badger", documents=found[::-1])["documents"]
    # stored vectors: the same MaxSim, read back to within the datatype's tolerance (pooled filler
    # pages that tie within it may trade places)
    from agree_core.index.config import SCORE_TOLERANCE

    engine = {d.id: d.score for d in found}
    assert reranked[0].id == found[0].id and sorted(engine) == sorted(d.id for d in reranked)
    assert [d.score for d in reranked] == pytest.approx([engine[d.id] for d in reranked], rel=SCORE_TOLERANCE["turbo4"])


def test_async_runs_of_the_retriever_ranker_and_writer(indexed, tmp_path):
    store, _, embedded = indexed

    async def go():
        found = await AgreeRetriever(document_store=store, top_k=2).run_async(query="camel")
        ranked = await AgreeRanker(document_store=store, top_k=1).run_async(query="camel", documents=found["documents"])
        other = AgreeDocumentStore(index_dir=tmp_path / "other")
        written = await AgreeDocumentWriter(document_store=other).run_async(documents=embedded[:2])
        count = await other.count_documents_async()
        other.close()
        return found, ranked, written, count

    found, ranked, written, count = asyncio.run(go())
    assert ranked["documents"][0].id == found["documents"][0].id
    assert written == {"documents_written": 2} and count == 2


def test_pages_indexed_as_files_show_in_the_store_read_only(tmp_path, samples, encoder):
    from agree_core.index import PageIndex

    with PageIndex.open(tmp_path / "ix", encoder) as index:
        index.add([samples[0]], progress=False)  # report.pdf, 3 pages, as `agree index` does
    store = AgreeDocumentStore(index_dir=tmp_path / "ix")
    store.write_documents([Document(id="note", content="a note on the solar report", meta={"page": 9})])
    assert store.count_documents() == 4
    docs = store.filter_documents({"field": "meta.page", "operator": "<=", "value": 3})
    assert [(Path(d.meta["source"]).name, d.meta["page"]) for d in docs] == [("report.pdf", p) for p in (1, 2, 3)]
    assert docs[0].blob.meta["file_path"].endswith(".jpg")
    with pytest.raises(ValueError, match="belong to indexed PDF files"):
        store.delete_documents([docs[0].id])
    assert store.delete_by_filter({"field": "meta.page", "operator": "==", "value": 9}) == 1
    store.delete_all_documents()
    assert store.count_documents() == 0
    assert store.shared.run(lambda ix: ix.info()["documents"]) == []
    store.close()


def test_converter_reads_files_folders_and_bytes_and_skips_bad_files(tmp_path, samples, caplog):
    (tmp_path / "broken.pdf").write_bytes(b"not a pdf")
    converter = AgreePageConverter(include_images=False)
    docs = converter.run(sources=[samples[0], tmp_path / "broken.pdf"], meta={"team": "energy"})["documents"]
    assert [(d.meta["page"], d.meta["team"]) for d in docs] == [(1, "energy"), (2, "energy"), (3, "energy")]
    assert docs[0].blob is None and "Northwind" in docs[0].content
    assert "broken.pdf" in caplog.text and "not a PDF" in caplog.text
    stream = ByteStream(samples[0].read_bytes(), meta={"file_path": "report.pdf"})
    from_bytes = converter.run(sources=[stream])["documents"]
    assert [d.meta["source"] for d in from_bytes] == ["report.pdf"] * 3
    assert [d.content for d in from_bytes] == [d.content for d in docs]


def test_components_in_one_process_share_one_open_index(indexed):
    store, _, _ = indexed
    twin = AgreeDocumentStore.from_dict(store.to_dict())
    assert twin.shared is store.shared and isinstance(twin.shared, SharedIndex)
    twin.close()
    assert store.count_documents() == 8  # still open for the first store


def test_written_pages_survive_a_kill_9(tmp_path):
    """Records need no catalog state: one engine update each batch, through its write-ahead
    log. A process killed right after writing, without closing the index, loses nothing."""
    import subprocess
    import textwrap

    store = AgreeDocumentStore(index_dir=tmp_path / "ix")
    store.warm_up()
    store.close()
    child = textwrap.dedent(f"""
        import os, signal, torch
        from agree_core.index import PageIndex
        from agree_core.index.records import Record
        index = PageIndex.open({str(tmp_path / "ix")!r})  # vectors are given: no model loads
        index.records.write([Record(f"p{{i}}", f"page {{i}}", blob=f"bytes {{i}}".encode(), meta={{"i": i}},
                                    vectors=torch.randn(4, 385)) for i in range(40)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", child], timeout=120).returncode == -9
    docs = store.filter_documents({"field": "meta.i", "operator": ">=", "value": 38})
    assert [(d.id, d.content, d.blob.data) for d in docs] == [("p38", "page 38", b"bytes 38"),
                                                               ("p39", "page 39", b"bytes 39")]
    assert store.count_documents() == 40
    store.close()
