"""Haystack's own document-store test suite, run against AgreeDocumentStore.

One index per test module, emptied before each test (opening a new index costs about a second,
its engine creating its payload indexes); each test still starts from an empty store.
"""

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

from haystack import Document  # noqa: E402
from haystack.document_stores.errors import DuplicateDocumentError  # noqa: E402
from haystack.document_stores.types import DuplicatePolicy  # noqa: E402
from haystack.testing.document_store import (  # noqa: E402
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    DocumentStoreBaseExtendedTests,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldUniqueValuesTest,
)

from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402


@pytest.fixture(scope="module", params=["edge", "qdrant-local", "http"])
def shared_store(request, tmp_path_factory):
    """The suite on both engines (an index folder, and the server engine over local mode),
    and on an index that `agree serve` holds (``http://``)."""
    folder = tmp_path_factory.mktemp("haystack_suite") / "index"
    if request.param == "http":
        pytest.importorskip("fastapi", reason="agree serve needs the serve extra")
        from serve.servers import serve_in_thread

        with serve_in_thread(folder) as url:
            store = AgreeDocumentStore(index_dir=url)
            yield store
            store.close()
        return
    store = AgreeDocumentStore(index_dir=folder if request.param == "edge" else f"qdrant-local:{folder}",
                               create=True)
    yield store
    store.close()


class TestAgreeDocumentStore(DocumentStoreBaseExtendedTests, CountDocumentsByFilterTest,
                             CountUniqueMetadataByFilterTest, GetMetadataFieldsInfoTest,
                             GetMetadataFieldMinMaxTest, GetMetadataFieldUniqueValuesTest):
    @pytest.fixture
    def document_store(self, shared_store):
        shared_store.delete_all_documents()
        return shared_store

    def test_write_documents(self, document_store):
        """DuplicatePolicy.NONE fails on a duplicate id as FAIL does, writing nothing."""
        docs = [Document(id="1", content="first page"), Document(id="2", content="second page")]
        assert document_store.write_documents(docs) == 2
        with pytest.raises(DuplicateDocumentError, match="exist already"):
            document_store.write_documents([Document(id="3", content="new"), Document(id="1", content="x")])
        self.assert_documents_are_equal(document_store.filter_documents(), docs)
        assert document_store.write_documents([Document(id="1", content="x")], DuplicatePolicy.OVERWRITE) == 1
        assert [d.content for d in document_store.filter_documents()] == ["x", "second page"]
