"""Against a real Qdrant server: run with AGREE_QDRANT_URL=http://HOST:PORT (README).

These check what local mode cannot: the collection's stored settings (datatype, HNSW off on
``tokens``, on-disk, payload indexes) and several clients on one index at once.
"""

import os
import threading
import uuid
from urllib.parse import urlsplit

import pytest

from agree_core.index import PageIndex
from agree_core.index.migrate import migrate
from conftest import lorem_pages, make_pdf, marker

URL = os.environ.get("AGREE_QDRANT_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set AGREE_QDRANT_URL=http://HOST:PORT to run against a server")


@pytest.fixture
def server_index():
    parts = urlsplit(URL)
    scheme = "qdrants" if parts.scheme == "https" else "qdrant"
    name = f"agree-test-{uuid.uuid4().hex[:8]}"
    yield f"{scheme}://{parts.hostname}:{parts.port or 6333}/{name}"
    from qdrant_client import QdrantClient

    client = QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
    for collection in (name, f"{name}-catalog"):
        if client.collection_exists(collection):
            client.delete_collection(collection)


def test_schema_search_and_migration_on_a_server(tmp_path, server_index, encoder):
    from qdrant_client import QdrantClient

    pdf = make_pdf(tmp_path / "a.pdf", lorem_pages(5))
    with PageIndex.open(server_index, encoder) as index:
        assert index.add([pdf], progress=False).pages == 5
        assert index.search(marker(3), k=1)[0].page == 3
    client = QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
    info = client.get_collection(server_index.rsplit("/", 1)[1])
    tokens = info.config.params.vectors["tokens"]
    assert tokens.hnsw_config.m == 0 and tokens.on_disk and tokens.datatype.value == "turbo4"  # the default
    assert {"source", "doc_id", "page", "kind"} <= set(info.payload_schema)
    folder = tmp_path / "copy"
    assert migrate(server_index, folder, progress=False).pages == 5
    with PageIndex.open(folder) as copy:
        assert copy.search(marker(3), k=1)[0].page == 3


def test_two_clients_index_different_files_at_once(tmp_path, server_index, encoder):
    pdfs = [make_pdf(tmp_path / f"{n}.pdf", lorem_pages(3, topic=n)) for n in ("one", "two")]
    PageIndex.open(server_index, encoder).close()
    errors = []

    def add(pdf):
        try:
            with PageIndex.open(server_index, encoder) as index:
                index.add([pdf], progress=False)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(p,)) for p in pdfs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with PageIndex.open(server_index) as index:
        assert sorted((d["source"], d["pages"]) for d in index.info()["documents"]) == [(str(p), 3) for p in pdfs]
