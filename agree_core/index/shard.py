"""The page vectors in an embedded Qdrant Edge shard (multivector, MAX_SIM).

Two named multivectors per page: ``tokens`` (every vector, what scores are made of) and
``pooled`` (a few k-means centroids, the cheap first stage of large searches). The same
schema runs on a Qdrant server through qdrant-client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

SHARD_DIR = "shard"
TOKENS, POOLED = "tokens", "pooled"
_DATATYPES = ("float32", "float16")


def _qe():
    try:
        import qdrant_edge
    except ImportError as e:  # a core dependency; say so if the install is broken
        raise ImportError("qdrant-edge-py is missing: pip install qdrant-edge-py") from e
    return qdrant_edge


@dataclass
class PageRecord:
    id: str
    vectors: np.ndarray  # (n, dim) float32
    pooled: np.ndarray | None  # (k, dim) float32
    payload: dict[str, Any]


@dataclass
class ScoredPage:
    id: str
    score: float
    payload: dict[str, Any]


class VectorShard:
    def __init__(self, root: Path, dim: int, datatype: str = "float16", pooled: bool = True):
        if datatype not in _DATATYPES:
            raise ValueError(f"vector datatype must be one of {_DATATYPES}, got {datatype!r}")
        qe = _qe()
        self.pooled = pooled
        path = root / SHARD_DIR
        dt = {"float32": qe.VectorStorageDatatype.Float32,
              "float16": qe.VectorStorageDatatype.Float16}[datatype]

        def params() -> Any:
            return qe.EdgeVectorParams(
                size=dim, distance=qe.Distance.Dot, datatype=dt,
                multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            )

        vectors = {TOKENS: params(), **({POOLED: params()} if pooled else {})}
        config = qe.EdgeConfig(vectors=vectors)
        if path.exists() and any(path.iterdir()):
            self._shard = qe.EdgeShard.load(str(path), config)
        else:
            self._shard = qe.EdgeShard.create(str(path), config)
            for field, kind in (("source", qe.PayloadSchemaType.Keyword),
                                ("doc_id", qe.PayloadSchemaType.Keyword),
                                ("page", qe.PayloadSchemaType.Integer)):
                self._shard.update(qe.UpdateOperation.create_field_index(field, kind))

    def close(self) -> None:
        self._shard.close()

    def flush(self) -> None:
        self._shard.flush()

    def count(self, flt: Any = None) -> int:
        return self._shard.count(_qe().CountRequest(filter=flt, exact=True))

    def upsert(self, records: list[PageRecord]) -> None:
        qe = _qe()
        points = []
        for r in records:
            vec = {TOKENS: r.vectors}
            if self.pooled:
                vec[POOLED] = r.pooled if r.pooled is not None else r.vectors
            points.append(qe.Point(r.id, vec, r.payload))
        if points:
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    def delete_document(self, doc_id: str) -> None:
        qe = _qe()
        self._shard.update(qe.UpdateOperation.delete_points_by_filter(
            qe.Filter(must=[qe.FieldCondition("doc_id", match=qe.MatchValue(doc_id))])))

    def set_meta(self, doc_id: str, meta: dict[str, Any]) -> None:
        qe = _qe()
        flt = qe.Filter(must=[qe.FieldCondition("doc_id", match=qe.MatchValue(doc_id))])
        self._shard.update(qe.UpdateOperation.delete_payload_by_filter(flt, ["meta"]))
        self._shard.update(qe.UpdateOperation.set_payload_by_filter(flt, {"meta": meta}))

    def page_terms(self, doc_id: str) -> Iterator[list[int]]:
        """The ``terms`` payload of each page of a document (empty for encoders without)."""
        qe = _qe()
        flt = qe.Filter(must=[qe.FieldCondition("doc_id", match=qe.MatchValue(doc_id))])
        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=256, filter=flt,
                with_payload=qe.PayloadSelector.Include(["terms"]), with_vector=False))
            for r in records:
                yield [int(t) for t in (r.payload or {}).get("terms") or ()]
            if offset is None:
                return

    def page_numbers(self, doc_id: str) -> set[int]:
        """Pages of a document already in the shard (to resume an interrupted add)."""
        qe = _qe()
        flt = qe.Filter(must=[qe.FieldCondition("doc_id", match=qe.MatchValue(doc_id))])
        pages: set[int] = set()
        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=1024, filter=flt,
                with_payload=qe.PayloadSelector.Include(["page"]), with_vector=False))
            pages.update(int(r.payload["page"]) for r in records)
            if offset is None:
                return pages

    def search(self, query: np.ndarray, limit: int, flt: Any = None,
               candidates: int | None = None) -> list[ScoredPage]:
        """Top ``limit`` pages by MaxSim; with ``candidates``, MaxSim over the pooled vectors
        picks that many pages first and the full vectors rescore them."""
        qe = _qe()
        exact = qe.SearchParams(exact=True)
        select = qe.PayloadSelector.Exclude(["cells", "text", "terms"])
        if candidates and self.pooled:
            request = qe.QueryRequest(
                limit=limit, query=qe.Query.Nearest(query, using=TOKENS), params=exact,
                prefetches=[qe.Prefetch(limit=max(candidates, limit), filter=flt, params=exact,
                                        query=qe.Query.Nearest(query, using=POOLED))],
                filter=flt, with_payload=select,
            )
        else:
            request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(query, using=TOKENS),
                                      filter=flt, params=exact, with_payload=select)
        return [ScoredPage(str(p.id), float(p.score), p.payload or {})
                for p in self._shard.query(request)]

    def retrieve(self, ids: Iterable[str], vectors: bool = False) -> dict[str, tuple[dict, np.ndarray | None]]:
        records = self._shard.retrieve(list(ids), with_payload=True,
                                       with_vector=[TOKENS] if vectors else False)
        out = {}
        for r in records:
            v = np.asarray(r.vector[TOKENS], dtype=np.float32) if vectors else None
            out[str(r.id)] = (r.payload or {}, v)
        return out


    # -- for pages written by callers (records.py) ------------------------------------------
    def scroll(self, flt: Any = None, *, vectors: bool = False, payload: bool | list[str] = True,
               batch: int = 512) -> Iterator[tuple[str, dict, np.ndarray | None]]:
        """Every point matching ``flt``: ``(id, payload, tokens or None)``, in id order."""
        qe = _qe()
        select = qe.PayloadSelector.Include(payload) if isinstance(payload, list) else payload
        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch, filter=flt, with_payload=select,
                with_vector=[TOKENS] if vectors else False))
            for r in records:
                v = np.asarray(r.vector[TOKENS], dtype=np.float32) if vectors else None
                yield str(r.id), r.payload or {}, v
            if offset is None:
                return

    def delete_points(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._shard.update(_qe().UpdateOperation.delete_points(ids))

    def delete_matching(self, flt: Any) -> None:
        self._shard.update(_qe().UpdateOperation.delete_points_by_filter(flt))

    def set_payload(self, ids: Iterable[str], payload: dict[str, Any]) -> None:
        """Set top-level payload keys of these points (their other keys are kept)."""
        ids = list(ids)
        if ids:
            self._shard.update(_qe().UpdateOperation.set_payload(ids, payload))

    def ensure_field_index(self, field: str, kind: str) -> None:
        """Create a payload index (``"keyword"`` or ``"integer"``) unless the shard has one."""
        qe = _qe()
        if field not in self._shard.info().payload_schema:
            schema = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}[kind]
            self._shard.update(qe.UpdateOperation.create_field_index(field, schema))


def build_filter(filters: dict[str, Any] | None, exclude_docs: Iterable[str] = ()) -> Any:
    """Translate ``{"source": ..., "page": ..., "<meta key>": ...}`` to a Qdrant filter.

    A value may be a scalar (equality), a list (any of) or, for numbers, a dict with
    ``gte``/``gt``/``lte``/``lt``. Keys other than ``source``, ``page`` and ``doc_id`` are
    document metadata (given when the document was added).
    """
    qe = _qe()
    must = []
    for key, value in (filters or {}).items():
        field = key if key in ("source", "page", "doc_id") else f"meta.{key.removeprefix('meta.')}"
        if isinstance(value, dict):
            bad = set(value) - {"gte", "gt", "lte", "lt"}
            if bad:
                raise ValueError(f"filter {key!r}: range keys are gte, gt, lte, lt; got {sorted(bad)}")
            must.append(qe.FieldCondition(field, range=qe.RangeFloat(**value)))
        elif isinstance(value, (list, tuple, set)):
            values = list(value)
            if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                raise ValueError(f"filter {key!r}: a list must hold strings or integers, got {values!r}")
            must.append(qe.FieldCondition(field, match=qe.MatchAny(values)))
        elif isinstance(value, bool):  # qdrant-edge-py 0.9 reads a Python bool as 0 or 1
            must.append(qe.FieldCondition(field, match=qe.MatchValue(np.bool_(value))))
        elif isinstance(value, (str, int)):
            must.append(qe.FieldCondition(field, match=qe.MatchValue(value)))
        else:
            raise ValueError(f"filter {key!r}: unsupported value {value!r} "
                             "(use a string, number, bool, list or a range dict)")
    exclude = list(exclude_docs)
    must_not = [qe.FieldCondition("doc_id", match=qe.MatchAny(exclude))] if exclude else None
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not)
