"""`agree serve` holding a server-engine index (``qdrant-local:``, qdrant-client's local mode:
the same client code a ``qdrant://`` index runs, whose requests tests/test_contract.py checks
against Qdrant's schema): the API, remote search, records and a job, as on a folder."""

from __future__ import annotations

import httpx
import pytest

from agree_core.index import PageIndex
from agree_core.index.migrate import migrate
from agree_core.index.records import Record
from agree_core.serve.client import RemoteIndex
from conftest import make_pdf
from serve.servers import serve_in_thread

pytest.importorskip("qdrant_client")

QUESTIONS = ["revenue in the third quarter", "solar output"]


def test_a_qdrant_local_index_served_answers_as_in_process(tmp_path, sample_index):
    location = f"qdrant-local:{tmp_path / 'qdrant'}"
    migrate(sample_index, location, progress=False)  # the sample index, not re-encoded
    with PageIndex.open(location, create=False) as index:
        expected = [[h.to_json() for h in hits] for hits in index.search_batch(QUESTIONS, 3)]
        expected_info = index.info()
    (tmp_path / "pdfs").mkdir()
    pdf = make_pdf(tmp_path / "pdfs" / "walrus.pdf", ["the walrus ledger of the harbor"])
    with serve_in_thread(location, allow_dirs=[tmp_path / "pdfs"]) as url:
        with RemoteIndex(url) as remote:
            got = remote.search_batch(QUESTIONS, 3)
            assert [[h.to_json() for h in hits] for hits in got] == expected
            assert remote.info() == expected_info
            image = httpx.get(got[0][0].image_url)  # from the payload, cached by the server
            assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
            assert remote.records.write([Record("note-1", "a walrus note")]) == 1
            assert [r.id for r in remote.records.search("walrus note", 1)] == ["note-1"]
            report = remote.add([pdf], progress=False)
            assert report.added == [str(pdf)] and report.pages == 1
            (hit,) = remote.search("walrus ledger", 1)
            assert (hit.source, hit.page) == (str(pdf), 1)
            assert remote.job(report.job)["state"] == "done"  # in memory for a server index
