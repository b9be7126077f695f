import json
import subprocess
import sys
import time

import pikepdf
import pytest

from agree_core.encoders.text_layer import TextLayerEncoder
from agree_core.index import IndexBusyError, IndexConfigError, PageIndex
from agree_core.index import ingest
from conftest import lorem_pages, make_pdf, marker


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    make_pdf(folder / "solar.pdf", ["Solar panels on the north roof\nInverter maintenance schedule",
                                    "Battery storage capacity is 2.4 megawatt hours"])
    make_pdf(folder / "parking.pdf", ["Visitors park in the north lot next to the loading dock"])
    return folder


def test_add_search_info_and_reopen(tmp_path, docs, encoder):
    directory = tmp_path / "ix"
    with PageIndex.open(directory, encoder) as index:
        report = index.add([docs], progress=False)
        assert report.ok and report.pages == 3 and len(report.added) == 2
        hits = index.search("where can visitors park their car", k=3)
        assert (hits[0].source, hits[0].page) == (str(docs / "parking.pdf"), 1)
        assert hits[0].score > hits[1].score
        assert all(h.image.endswith(".jpg") and (tmp_path / h.image).exists() for h in hits)
        info = index.info()
        first_hits = [(h.source, h.page, round(h.score, 4)) for h in index.search("battery capacity")]
    assert info["encoder"] == "text-layer" and info["pages"] == 3
    assert sorted(info["documents"], key=lambda d: d["source"]) == [
        {"source": str(docs / "parking.pdf"), "pages": 1},
        {"source": str(docs / "solar.pdf"), "pages": 2},
    ]
    with PageIndex.open(directory, create=False) as index:  # its own encoder, from the config
        again = [(h.source, h.page, round(h.score, 4)) for h in index.search("battery capacity")]
    assert again == first_hits and again[0][:2] == (str(docs / "solar.pdf"), 2)


def test_re_add_is_idempotent_and_changed_file_replaces_pages(tmp_path, docs, encoder):
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        index.add([docs], progress=False)
        again = index.add([docs], progress=False)
        assert again.pages == 0 and len(again.unchanged) == 2 and again.added == []
        old_images = {h.image for h in index.search("solar", k=10) if h.source.endswith("solar.pdf")}
        make_pdf(docs / "solar.pdf", ["Wind turbines replaced the solar array", "page two", "page three"])
        changed = index.add([docs], progress=False)
        assert changed.added == [str(docs / "solar.pdf")] and changed.pages == 3
        assert index.info()["pages"] == 4
        solar = [h for h in index.search("wind turbines", k=10) if h.source.endswith("solar.pdf")]
        assert sorted(h.page for h in solar) == [1, 2, 3]
        assert not any(p for p in old_images if __import__("os").path.exists(p))
        assert index.shard.count() == 4  # no stale vectors of the old version


def test_delete_by_source(tmp_path, docs, encoder):
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        index.add([docs], progress=False)
        image = index.search("battery", k=1)[0].image
        assert index.delete(docs / "solar.pdf") == 2
        assert index.delete(docs / "solar.pdf") == 0
        assert index.info()["pages"] == 1
        assert all(h.source.endswith("parking.pdf") for h in index.search("battery", k=5))
        assert not (tmp_path / image).exists()


def test_bad_files_are_skipped_with_reasons_and_the_rest_indexed(tmp_path, docs, encoder):
    (docs / "notes.pdf").write_text("not a pdf at all")
    data = (docs / "solar.pdf").read_bytes()
    (docs / "broken.pdf").write_bytes(data[: len(data) // 2])
    pikepdf.new().save(docs / "empty.pdf")
    with pikepdf.open(docs / "parking.pdf") as pdf:
        pdf.save(docs / "locked.pdf", encryption=pikepdf.Encryption(user="pw", owner="pw"))
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        report = index.add([docs, tmp_path / "missing.pdf"], progress=False)
        assert not report.ok
        codes = {e.path.split("/")[-1]: e.code for e in report.skipped}
        assert codes == {"notes.pdf": "not_pdf", "broken.pdf": "corrupt", "empty.pdf": "empty",
                         "locked.pdf": "encrypted", "missing.pdf": "missing"}
        assert index.info()["pages"] == 3


def test_filters(tmp_path, docs, encoder):
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        index.add([docs / "solar.pdf"], metadata={"team": "energy", "year": 2025}, progress=False)
        index.add([docs / "parking.pdf"], metadata={"team": "facilities"}, progress=False)
        only_solar = index.search("north", k=10, filters={"source": str(docs / "solar.pdf")})
        assert {h.source for h in only_solar} == {str(docs / "solar.pdf")}
        assert [h.page for h in index.search("north", k=10, filters={"page": {"gte": 2}})] == [2]
        facilities = index.search("north", k=10, filters={"team": "facilities"})
        assert [h.source for h in facilities] == [str(docs / "parking.pdf")]
        assert facilities[0].meta == {"team": "facilities"}
        both = index.search("north", k=10, filters={"team": ["energy", "facilities"]})
        assert len(both) == 3
        assert index.search("north", k=10, filters={"year": 2024}) == []
        # new metadata for an indexed file is applied in place, without re-encoding
        moved = index.add([docs / "solar.pdf"], metadata={"team": "ops"}, progress=False)
        assert moved.pages == 0 and moved.unchanged == [str(docs / "solar.pdf")]
        assert {h.page for h in index.search("north", k=10, filters={"team": "ops"})} == {1, 2}
        assert index.search("north", k=10, filters={"year": 2025}) == []  # replaced, not merged
        index.add([docs / "solar.pdf"], progress=False)  # no metadata given: kept
        assert len(index.search("north", k=10, filters={"team": "ops"})) == 2
        with pytest.raises(ValueError, match="range keys are gte, gt, lte, lt"):
            index.search("north", filters={"page": {"from": 1}})
        with pytest.raises(ValueError, match="k must be >= 1, got 0"):
            index.search("north", k=0)


def test_config_is_checked_on_open(tmp_path, docs, encoder):
    directory = tmp_path / "ix"
    with PageIndex.open(directory, encoder) as index:
        index.add([docs / "parking.pdf"], progress=False)
    with pytest.raises(IndexConfigError, match="configured differently .*window: index has 256, encoder has 128"):
        PageIndex.open(directory, TextLayerEncoder(window=128))
    with pytest.raises(IndexConfigError, match="built with encoder 'text-layer', not 'text-layer:/elsewhere'"):
        PageIndex.open(directory, "text-layer:/elsewhere")
    with pytest.raises(IndexConfigError, match="is not an agree index"):
        PageIndex.open(tmp_path / "nothing-here", create=False)
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "file.txt").write_text("x")
    with pytest.raises(IndexConfigError, match="is not empty and holds no agree index"):
        PageIndex.open(tmp_path / "occupied", encoder)
    config = json.loads((directory / "agree-index.json").read_text())
    config["format_version"] = 99
    (directory / "agree-index.json").write_text(json.dumps(config))
    with pytest.raises(IndexConfigError, match="index format version 99; this agree reads version 1"):
        PageIndex.open(directory)


def test_a_second_process_gets_a_clear_busy_error(tmp_path, docs, encoder):
    directory = tmp_path / "ix"
    PageIndex.open(directory, encoder).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from agree_core.index import PageIndex; "
         "ix = PageIndex.open(sys.argv[1]); print('open', flush=True); time.sleep(3); ix.close()",
         str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(IndexBusyError, match=rf"is busy: process {holder.pid} .* pass wait=SECONDS"):
            PageIndex.open(directory)
        start = time.monotonic()
        with PageIndex.open(directory, wait=60) as index:  # waits for the holder to let go
            assert index.info()["pages"] == 0
        assert time.monotonic() - start > 0.5
    finally:
        holder.wait(timeout=60)


def test_interrupted_add_resumes_where_it_stopped(tmp_path, encoder, monkeypatch):
    pdf = make_pdf(tmp_path / "long.pdf", lorem_pages(10))
    directory = tmp_path / "ix"
    real_write = ingest.write
    calls = []

    def failing_write(index, plan, pages):
        calls.append([p.page_no for p in pages])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the second batch
        return real_write(index, plan, pages)

    monkeypatch.setattr(ingest, "write", failing_write)
    with PageIndex.open(directory, encoder) as index:
        with pytest.raises(KeyboardInterrupt):
            index.add([pdf], batch_size=4, progress=False)
    monkeypatch.setattr(ingest, "write", real_write)
    with PageIndex.open(directory, encoder) as index:
        info = index.info()
        assert info["pages"] == 0 and info["incomplete"][0]["state"] == "indexing"
        assert index.search(marker(1), k=5) == []  # unfinished documents are not searchable
        report = index.add([pdf], batch_size=4, progress=False)
        assert report.pages == 6  # pages 1-4 were kept; 5-10 are encoded now
        assert index.info()["pages"] == 10 and index.shard.count() == 10
        assert index.search(marker(7), k=1)[0].page == 7


def test_query_tokens_are_weighted_by_idf_of_the_indexed_pages(tmp_path, encoder):
    make_pdf(tmp_path / "common.pdf", ["quarterly report on revenue"] * 6)
    make_pdf(tmp_path / "rare.pdf", ["the zeppelin hangar"])
    (report,) = encoder.encode_query_terms(["report"])[0]
    with PageIndex.open(tmp_path / "ix", encoder) as index:
        index.add([tmp_path / "common.pdf", tmp_path / "rare.pdf"], progress=False)
        n_pages, df = index.catalog.term_stats()
        assert n_pages == 7 and df[report] == 6
        terms = encoder.encode_query_terms(["report zeppelin"])[0]
        weights = index.encode_queries(["report zeppelin"])[0].norm(dim=1)
        assert terms[0] == report and weights[0] < 0.5 < 1.0 < weights[1:].min()
        hits = index.search("report zeppelin", k=2)
        assert hits[0].source.endswith("rare.pdf")
        index.delete(tmp_path / "rare.pdf")
        n_pages, df = index.catalog.term_stats()
        assert n_pages == 6 and not set(terms[1:]) & set(df)
    with PageIndex.open(tmp_path / "plain", encoder, term_weighting="none") as index:
        index.add([tmp_path / "common.pdf"], progress=False)
        torch_equal = index.encode_queries(["report zeppelin"])[0].equal(encoder.encode_queries(["report zeppelin"])[0])
        assert torch_equal
    with pytest.raises(ValueError, match="term_weighting must be 'idf' or 'none', got 'bm25'"):
        PageIndex.open(tmp_path / "bad", encoder, term_weighting="bm25")
