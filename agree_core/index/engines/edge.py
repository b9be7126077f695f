"""The embedded engine: a Qdrant Edge shard in this process (qdrant-edge-py).

The only module that imports ``qdrant_edge``. One process at a time holds a shard (its
write-ahead log is exclusive); :class:`~agree_core.index.lock.DirectoryLock` turns that into
a clear "index is busy" error before the engine is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from agree_core.index import filters as F
from agree_core.index.engines.base import Capabilities, Engine, Payload, Point, Scored, VectorSpec

__all__ = ["EdgeEngine"]


def _qe():
    try:
        import qdrant_edge
    except ImportError as e:  # a core dependency; say so if the install is broken
        raise ImportError("qdrant-edge-py is missing: pip install qdrant-edge-py") from e
    return qdrant_edge


class EdgeEngine(Engine):
    """A shard at ``path`` with the named multivectors ``vectors`` (created when missing)."""

    capabilities = Capabilities("qdrant-edge", datatypes=True, hnsw=False,
                                concurrent_clients=False, payload_indexes=True)

    def __init__(self, path: Path, vectors: Sequence[VectorSpec], keyword_fields: Sequence[str] = (),
                 integer_fields: Sequence[str] = ()):
        qe = _qe()
        datatypes = {"float32": qe.VectorStorageDatatype.Float32,
                     "float16": qe.VectorStorageDatatype.Float16,
                     "turbo8": qe.VectorStorageDatatype.Turbo8,  # TurboQuant: float queries
                     "turbo4": qe.VectorStorageDatatype.Turbo4}  # against 8/4-bit codes
        for v in vectors:
            if v.datatype not in datatypes:
                raise ValueError(f"vector datatype must be one of {sorted(datatypes)}, got {v.datatype!r}")
        self._datatypes, self._path, self._specs = datatypes, path, list(vectors)
        config = self._config()
        self.names = [v.name for v in vectors]
        if path.exists() and any(path.iterdir()):
            self._shard = qe.EdgeShard.load(str(path), config)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._shard = qe.EdgeShard.create(str(path), config)
            for key in keyword_fields:
                self.ensure_field_index(key, "keyword")
            for key in integer_fields:
                self.ensure_field_index(key, "integer")

    def _config(self) -> Any:
        """The shard's config: every named vector's parameters (a loaded shard converges to
        them through its optimizers)."""
        return _qe().EdgeConfig(vectors={v.name: _params(v, self._datatypes) for v in self._specs})

    # -- writing ----------------------------------------------------------------------------
    def upsert(self, points: Sequence[Point]) -> None:
        qe = _qe()
        if points:  # nested lists convert 2-3x faster than numpy arrays (BENCHMARKS.md, "Bulk building")
            self._shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(p.id, {k: np.asarray(v, dtype=np.float32).tolist() for k, v in p.vectors.items()},
                          p.payload) for p in points]))

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._shard.update(_qe().UpdateOperation.delete_points(ids))

    def delete_where(self, where: F.Node) -> None:
        self._shard.update(_qe().UpdateOperation.delete_points_by_filter(to_edge(where)))

    def set_payload(self, payload: Payload, *, ids: Iterable[str] | None = None,
                    where: F.Node | None = None) -> None:
        op = _qe().UpdateOperation
        if where is not None:
            self._shard.update(op.set_payload_by_filter(to_edge(where), payload))
        elif ids := list(ids or ()):
            self._shard.update(op.set_payload(ids, payload))

    def delete_payload(self, keys: Sequence[str], *, ids: Iterable[str] | None = None,
                       where: F.Node | None = None) -> None:
        op = _qe().UpdateOperation
        if where is not None:
            self._shard.update(op.delete_payload_by_filter(to_edge(where), list(keys)))
        elif ids := list(ids or ()):
            self._shard.update(op.delete_payload(ids, list(keys)))

    def ensure_field_index(self, key: str, kind: str) -> None:
        qe = _qe()
        if key not in self._shard.info().payload_schema:
            schema = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}[kind]
            self._shard.update(qe.UpdateOperation.create_field_index(key, schema))

    def flush(self) -> None:
        self._shard.flush()

    def optimize(self) -> None:
        """The shard runs its optimizers only when asked: merge segments and build the HNSW
        graphs of indexed vectors (the first stage's), blocking until done."""
        self._shard.optimize()
        self._shard.flush()

    def add_dense_vector(self, spec: VectorSpec) -> None:
        """The operation takes no graph or quantization settings: the shard is reopened with
        its config given (``spec`` included), so that its next :meth:`optimize` builds them."""
        qe = _qe()
        self._shard.update(qe.UpdateOperation.create_dense_vector(
            spec.name, spec.dim, qe.Distance.Dot, datatype=self._datatypes[spec.datatype]))
        self.names.append(spec.name)
        self._specs.append(spec)
        self._shard.flush()
        self._shard.close()
        self._shard = qe.EdgeShard.load(str(self._path), self._config())

    def update_vectors(self, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        qe = _qe()
        if vectors:
            self._shard.update(qe.UpdateOperation.update_vectors(
                [qe.PointVectors(pid, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in vecs.items()})
                 for pid, vecs in vectors.items()]))

    def close(self) -> None:
        self._shard.close()

    # -- reading ----------------------------------------------------------------------------
    def count(self, where: F.Node | None = None) -> int:
        return self._shard.count(_qe().CountRequest(filter=to_edge(where), exact=True))

    def point_count(self) -> int:
        """The segments' point counts (an exact count took 6-12 ms a search at 100,000 pages in
        4 segments, BENCHMARKS.md session 9; this takes microseconds)."""
        return self._shard.count(_qe().CountRequest(exact=False))

    def retrieve(self, ids: Iterable[str], *, payload: bool | list[str] = True,
                 exclude: Sequence[str] = (), vectors: Sequence[str] = ()) -> dict[str, Point]:
        ids = list(ids)
        if not ids:
            return {}
        records = self._shard.retrieve(ids, with_payload=_selector(payload, exclude),
                                       with_vector=list(vectors) or False)
        return {str(r.id): _point(r, vectors) for r in records}

    def scroll(self, where: F.Node | None = None, *, payload: bool | list[str] = True,
               exclude: Sequence[str] = (), vectors: Sequence[str] = (),
               batch: int = 512) -> Iterator[Point]:
        qe = _qe()
        flt, offset = to_edge(where), None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch, filter=flt, with_payload=_selector(payload, exclude),
                with_vector=list(vectors) or False))
            for r in records:
                yield _point(r, vectors)
            if offset is None:
                return

    def search_batch(self, queries: Sequence[np.ndarray], limit: int, *, using: str,
                     where: F.Node | None = None, prefetch: str | None = None,
                     candidates: int = 0, exclude: Sequence[str] = (),
                     prefetch_queries: Sequence[np.ndarray] | None = None,
                     hnsw_ef: int | None = None,
                     rescore: tuple[str, int] | None = None,
                     oversampling: float | None = None,
                     coarse_queries: Sequence[np.ndarray] | None = None) -> list[list[Scored]]:
        qe = _qe()
        exact, flt, select = qe.SearchParams(exact=True), to_edge(where), _selector(True, exclude)
        dense = qe.SearchParams(hnsw_ef=hnsw_ef, quantization=None if oversampling is None else
                                qe.QuantizationSearchParams(rescore=True, oversampling=oversampling))
        out = []
        for i, q in enumerate(queries):
            q = np.ascontiguousarray(q, dtype=np.float32)  # (n_q, dim)
            coarse = q if coarse_queries is None else np.ascontiguousarray(coarse_queries[i], dtype=np.float32)
            first, params = coarse, exact  # a multivector prefetch is the coarse stage
            if prefetch_queries is not None:  # a dense vector: its HNSW graph or quantized scan
                first, params = np.ascontiguousarray(prefetch_queries[i], dtype=np.float32), dense
            prefetches = ([qe.Prefetch(limit=max(candidates, limit), filter=flt, params=params,
                                       query=qe.Query.Nearest(first, using=prefetch))]
                          if prefetch and candidates else None)
            if prefetches and rescore:  # the candidates' middle stage, inside the same query
                prefetches = [qe.Prefetch(limit=max(rescore[1], limit), filter=flt, params=exact,
                                          query=qe.Query.Nearest(coarse, using=rescore[0]), prefetches=prefetches)]
            main = exact if (hnsw_ef is None and oversampling is None) or prefetches else dense
            request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(q, using=using),
                                      prefetches=prefetches, filter=flt, params=main,
                                      with_payload=select)
            out.append([Scored(str(p.id), float(p.score), p.payload or {})
                        for p in self._shard.query(request)])
        return out


def _params(v: VectorSpec, datatypes: dict[str, Any]) -> Any:
    """A vector's Edge parameters: a MaxSim multivector, or a dense vector; an HNSW graph
    only for ``index`` vectors (``m=0``: none, so optimizing never graphs the multivectors)."""
    qe = _qe()
    return qe.EdgeVectorParams(
        size=v.dim, distance=qe.Distance.Dot, datatype=datatypes[v.datatype],
        multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim) if v.multivector else None,
        hnsw_config=(qe.HnswIndexConfig(m=v.m, ef_construct=v.ef_construct, full_scan_threshold=1_000)
                     if v.index else qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)),
        quantization_config=_quantization(v.quantization))


def _quantization(name: str) -> Any:
    """Edge's quantization config of a :data:`~.base.QUANTIZATIONS` name (None: none), kept in RAM."""
    if not name:
        return None
    qe = _qe()
    if name == "int8":
        return qe.ScalarQuantizationConfig(qe.ScalarType.Int8, always_ram=True)
    if name.startswith("turbo-"):
        bits = {"turbo-1bit": qe.TurboQuantBitSize.Bits1, "turbo-2bit": qe.TurboQuantBitSize.Bits2}[name]
        return qe.TurboQuantQuantizationConfig(always_ram=True, bits=bits)
    encoding = qe.BinaryQuantizationEncoding.TwoBits if name == "binary-2bit" else qe.BinaryQuantizationEncoding.OneBit
    query = {"binary-q4": qe.BinaryQuantizationQueryEncoding.Scalar4Bits,
             "binary-q8": qe.BinaryQuantizationQueryEncoding.Scalar8Bits}.get(name)
    return qe.BinaryQuantizationConfig(always_ram=True, encoding=encoding, query_encoding=query)


def _selector(payload: bool | list[str], exclude: Sequence[str]) -> Any:
    qe = _qe()
    if exclude:
        return qe.PayloadSelector.Exclude(list(exclude))
    return qe.PayloadSelector.Include(payload) if isinstance(payload, list) else payload


def _point(r: Any, vectors: Sequence[str]) -> Point:
    vecs = {n: np.asarray(r.vector[n], dtype=np.float32) for n in vectors} if vectors else {}
    return Point(str(r.id), vecs, r.payload or {})


def to_edge(node: F.Node | None) -> Any:
    """The qdrant-edge filter of a :mod:`~agree_core.index.filters` tree (``None`` for none).

    >>> type(to_edge(F.Match("kind", "record"))).__name__
    'Filter'
    """
    if node is None:
        return None
    qe = _qe()
    c = _condition(node)
    return c if isinstance(c, qe.Filter) else qe.Filter(must=[c])


def _condition(node: F.Node) -> Any:
    qe = _qe()
    if isinstance(node, F.And):
        return qe.Filter(must=[_condition(n) for n in node.items])
    if isinstance(node, F.Or):
        return qe.Filter(should=[_condition(n) for n in node.items])
    if isinstance(node, F.Not):
        return qe.Filter(must_not=[_condition(node.item)])
    if isinstance(node, F.Match):
        value = np.bool_(node.value) if isinstance(node.value, bool) else node.value  # 0.9 reads bool as 0/1
        return qe.FieldCondition(node.key, match=qe.MatchValue(value))
    if isinstance(node, F.MatchAny):
        return qe.FieldCondition(node.key, match=qe.MatchAny(list(node.values)))
    if isinstance(node, F.Range):
        return qe.FieldCondition(node.key, range=qe.RangeFloat(
            gt=node.gt, gte=node.gte, lt=node.lt, lte=node.lte))
    if isinstance(node, F.DateRange):
        return qe.FieldCondition(node.key, range=qe.RangeDateTime(
            gt=node.gt, gte=node.gte, lt=node.lt, lte=node.lte))
    if isinstance(node, F.IsEmpty):
        return qe.IsEmptyCondition(node.key)
    if isinstance(node, F.HasId):
        return qe.HasIdCondition(set(node.ids))
    raise TypeError(f"not a filter node: {node!r}")
