"""``index.records`` and ``index.catalog`` of a :class:`~agree_core.serve.client.RemoteIndex`:
the same methods as :class:`~agree_core.index.records.RecordStore` and the catalog's
``documents``, answered by ``agree serve`` (:mod:`agree_core.serve.records_api`).

With them the framework components (LlamaIndex's retriever and reranker, Haystack's document
store, retriever and ranker) run their own code unchanged on an ``http://`` index: what ran
on an open :class:`~agree_core.index.PageIndex` runs on the client, each index call one HTTP
request. Records come back as :class:`~agree_core.index.records.Record`, vectors as float32
tensors bit for bit as stored, and the stored image as ``image_url`` (never a path: the
file is on the server's disk).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from agree_core.index.filters import compile_filter
from agree_core.serve.wire import document_from_json, record_from_json, record_to_json, vectors_from_json, vectors_to_json

if TYPE_CHECKING:
    from agree_core.serve.client import RemoteIndex

__all__ = ["RemoteRecords", "RemoteCatalog"]

_CONFLICT = ("replace", "skip", "error")


class RemoteRecords:
    """The records of a served index (``remote.records``); see :class:`RecordStore`."""

    def __init__(self, index: "RemoteIndex"):
        self.index = index

    # -- writing ----------------------------------------------------------------------------
    def write(self, records: Iterable[Any], on_conflict: str = "replace", batch_size: int = 16) -> int:
        """Write records in one request (the server encodes those without vectors); returns
        how many were written. Raises DuplicateRecordError as a local index does."""
        if on_conflict not in _CONFLICT:
            raise ValueError(f"on_conflict must be one of {_CONFLICT}, got {on_conflict!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        records = list(records)
        if not records:
            return 0
        body = {"records": [record_to_json(r) for r in records], "on_conflict": on_conflict,
                "batch_size": min(batch_size, 256)}
        return int(self._post("/records/write", body)["written"])

    def update_meta(self, where: dict[str, Any] | None, meta: dict[str, Any]) -> int:
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        return int(self._post("/records/update_meta", {"filters": where, "meta": meta})["updated"])

    def delete(self, ids: Iterable[str] | None = None, *, where: dict[str, Any] | None = None) -> int:
        if (ids is None) == (where is None):
            raise ValueError("give ids or where (exactly one); delete_all() empties the index")
        body = {"ids": list(ids)} if ids is not None else {"filters": where}
        return int(self._post("/records/delete", body)["deleted"])

    def delete_all(self) -> int:
        return int(self._post("/records/delete_all", {})["deleted"])

    # -- reading ----------------------------------------------------------------------------
    def count(self, where: dict[str, Any] | None = None) -> int:
        return int(self._post("/records/count", {"filters": where})["count"])

    def find(self, where: dict[str, Any] | None = None, *, with_blobs: bool = True,
             node_fields: bool = False, location: str | None = None) -> list[Any]:
        body: dict[str, Any] = {"filters": where, "with_blobs": with_blobs}
        return self._records("/records/find", self._node_fields(body, node_fields, location))

    def metas(self, where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(self._post("/records/metas", {"filters": where})["metas"])

    def get(self, ids: Sequence[str], *, with_blobs: bool = True) -> list[Any]:
        return self._records("/records/get", {"ids": list(ids), "with_blobs": with_blobs})

    def vectors(self, ids: Sequence[str]) -> dict[str, Any]:
        ids = list(ids)
        if not ids:
            return {}
        got = self._post("/records/vectors", {"ids": ids})["vectors"]
        return {i: vectors_from_json(v) for i, v in got.items()}

    def search(self, query: Any, k: int = 10, where: dict[str, Any] | None = None, *,
               candidates: int | None = None, with_blobs: bool = True, node_fields: bool = False,
               location: str | None = None) -> list[Any]:
        """One request; with ``node_fields`` the server resolves the filters on the keys nodes
        carry and sends each record's ``doc_id``, ``page_label`` and ``evidence`` with it."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        body: dict[str, Any] = {"k": k, "filters": where, "candidates": candidates, "with_blobs": with_blobs}
        if isinstance(query, str):
            body["query"] = query
        else:
            body["vectors"] = vectors_to_json(query)
        return self._records("/records/search", self._node_fields(body, node_fields, location))

    def _node_fields(self, body: dict[str, Any], node_fields: bool, location: str | None) -> dict[str, Any]:
        """``body`` asking for node fields; ``index_dir`` compared with ``location``, default
        this client's URL (as :meth:`RemoteIndex.node_filters`)."""
        if not node_fields:
            return body
        return {**body, "node_fields": True, "index_dir": str(location) if location is not None else self.index.url}

    # -- HTTP ------------------------------------------------------------------------------
    def _records(self, path: str, body: dict[str, Any]) -> list[Any]:
        """Records as this machine sees them: no ``image_path`` (the server's disk), the
        absolute ``image_url`` of the image instead (signed: :meth:`RemoteIndex.image_url`)."""
        out = []
        for data in self._post(path, body)["records"]:
            r = record_from_json(data)
            out.append(replace(r, image_path=None,
                               image_url=self.index.image_url(r.image_url) if r.image_url else None))
        return out

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        if body.get("filters") is not None:
            # malformed filters fail here as on a local index (a tuple would become a JSON list)
            compile_filter(body["filters"])
        return self.index._json("POST", path, json=body)


class RemoteCatalog:
    """``remote.catalog``: the served index's documents (read only)."""

    def __init__(self, index: "RemoteIndex"):
        self.index = index

    def documents(self, state: str | None = None, source: str | None = None) -> list[Any]:
        params = {k: v for k, v in (("state", state), ("source", source)) if v is not None}
        got = self.index._json("GET", "/documents", params=params)["documents"]
        return [document_from_json(d) for d in got]
