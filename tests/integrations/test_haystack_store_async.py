"""Haystack's async document-store test suite, run against AgreeDocumentStore (needs the
pytest-asyncio plugin, as Haystack's own stores do)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network in tests

pytest.importorskip("haystack", reason="the haystack extra is not installed: pip install -e '.[haystack]'")
pytest.importorskip("pytest_asyncio", reason="Haystack's async store tests need pytest-asyncio")
try:
    import haystack_integrations.document_stores.agree  # noqa: F401
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "haystack"))

from haystack import Document  # noqa: E402
from haystack.document_stores.errors import DuplicateDocumentError  # noqa: E402
from haystack.testing.document_store_async import (  # noqa: E402
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    CountUniqueMetadataByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    GetMetadataFieldMinMaxAsyncTest,
    GetMetadataFieldsInfoAsyncTest,
    GetMetadataFieldUniqueValuesAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
)

from haystack_integrations.document_stores.agree import AgreeDocumentStore  # noqa: E402


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    store = AgreeDocumentStore(index_dir=tmp_path_factory.mktemp("haystack_async_suite") / "index", create=True)
    yield store
    store.close()


class TestAgreeDocumentStoreAsync(
    CountDocumentsAsyncTest, CountDocumentsByFilterAsyncTest, CountUniqueMetadataByFilterAsyncTest,
    DeleteAllAsyncTest, DeleteByFilterAsyncTest, DeleteDocumentsAsyncTest, FilterDocumentsAsyncTest,
    GetMetadataFieldMinMaxAsyncTest, GetMetadataFieldsInfoAsyncTest, GetMetadataFieldUniqueValuesAsyncTest,
    UpdateByFilterAsyncTest, WriteDocumentsAsyncTest,
):
    @pytest.fixture
    def document_store(self, shared_store):
        shared_store.delete_all_documents()
        return shared_store

    @pytest.mark.asyncio
    async def test_write_documents_async(self, document_store):
        """DuplicatePolicy.NONE fails on a duplicate id as FAIL does, writing nothing."""
        docs = [Document(id="1", content="first page"), Document(id="2", content="second page")]
        assert await document_store.write_documents_async(docs) == 2
        with pytest.raises(DuplicateDocumentError):
            await document_store.write_documents_async([Document(id="3", content="new"), docs[0]])
        self.assert_documents_are_equal(await document_store.filter_documents_async(), docs)
