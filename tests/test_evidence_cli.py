"""Evidence as a user meets it: `agree search --json`, `agree show`, and the same list in the
LlamaIndex and Haystack results."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import cli, copy_index

QUERY = "solar site electricity"  # a keyword query


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, sample_index):
    return copy_index(sample_index, tmp_path_factory.mktemp("evidence") / "index")


@pytest.fixture(scope="module")
def cli_hits(index_dir):
    out = cli("search", "--index", str(index_dir), QUERY, "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["hits"]


def test_search_json_gives_each_hit_word_boxes_inside_the_page(cli_hits, index_dir):
    from agree_core.index.config import SCORE_TOLERANCE, IndexConfig

    tolerance = SCORE_TOLERANCE[IndexConfig.load(index_dir).vector_datatype]
    for hit in cli_hits:
        ev = hit["evidence"]
        assert 1 <= len(ev) <= 8
        assert [e["score"] for e in ev] == sorted((e["score"] for e in ev), reverse=True)
        for e in ev:
            assert set(e) == {"box", "text", "score"} and e["score"] > 0
            x0, y0, x1, y1 = e["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert isinstance(e["text"], str) and " " not in e["text"]  # one word each
        # parts of the page's score, read from the stored vectors (SCORE_TOLERANCE: turbo4 decodes with an error)
        assert sum(e["score"] for e in ev) <= hit["score"] * (1 + tolerance) + 1e-3
    top = cli_hits[0]["evidence"][0]["text"].lower().strip(".,")
    assert top in QUERY.split()  # the best place is a word of the question


def test_a_scanned_page_gets_its_ocr_words(index_dir):
    out = cli("search", "--index", str(index_dir), "where are visitors allowed to park", "-k", "1", "--json")
    (hit,) = json.loads(out.stdout)["hits"]
    assert hit["source"].endswith("scan.pdf")
    words = [e["text"].lower() for e in hit["evidence"]]
    assert any(w.startswith(("visitor", "park")) for w in words), words


def test_show_draws_the_top_box_over_the_page(index_dir, cli_hits, tmp_path):
    png = tmp_path / "why.png"
    out = cli("show", "--index", str(index_dir), QUERY, "-k", "1", "--out", str(png))
    assert out.returncode == 0, out.stderr
    sheet = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    page = Image.open(cli_hits[0]["image"]).convert("RGB")
    width = 520  # contact_sheet's panel: 16 px margin, 44 px caption
    plain = np.asarray(page.resize((width, round(page.height * width / page.width))), dtype=np.int16)
    drawn = sheet[60:60 + plain.shape[0], 16:16 + width]
    x0, y0, x1, y1 = cli_hits[0]["evidence"][0]["box"]
    box = (slice(int(y0 * plain.shape[0]), int(y1 * plain.shape[0]) + 1),
           slice(int(x0 * width), int(x1 * width) + 1))
    assert np.abs(drawn[box] - plain[box]).mean() > 20  # shaded
    far = (slice(plain.shape[0] - 60, plain.shape[0] - 10), slice(20, 120))  # a blank corner of the page
    assert np.abs(drawn[far] - plain[far]).mean() < 3


def test_llamaindex_and_haystack_carry_the_same_evidence_as_the_cli(index_dir, cli_hits):
    from haystack_integrations.components.retrievers.agree import AgreeRetriever
    from haystack_integrations.document_stores.agree import AgreeDocumentStore
    from llama_index.retrievers.agree import AgreeVisualRetriever

    want = {(h["source"], h["page"]): h["evidence"] for h in cli_hits}
    with AgreeVisualRetriever(index_dir, similarity_top_k=3) as retriever:
        nodes = retriever.retrieve(QUERY)
    got = {(n.node.metadata["source"], n.node.metadata["page"]): n.node.metadata["evidence"] for n in nodes}
    assert got == want
    assert "evidence" not in nodes[0].node.get_content(metadata_mode="llm")  # data, not prompt text
    store = AgreeDocumentStore(index_dir=str(index_dir))
    try:
        docs = AgreeRetriever(document_store=store, top_k=3).run(query=QUERY)["documents"]
    finally:
        store.close()
    assert {(d.meta["source"], d.meta["page"]): d.meta["evidence"] for d in docs} == want
