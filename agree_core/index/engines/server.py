"""The server engine: a Qdrant server or cluster through qdrant-client, or qdrant-client's
local mode (the same client API over a folder, for development and tests).

The only module that imports ``qdrant_client``. The collection has the same named MaxSim
multivectors as the embedded shard: ``tokens`` without an HNSW graph (``m=0``: it only
rescores) and on disk, ``pooled`` in RAM. Local mode accepts and ignores datatypes,
quantization, HNSW and on-disk settings and searches by brute force in Python: fine for
development, slow past a few thousand pages.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from agree_core.index import filters as F
from agree_core.index.config import IndexBusyError
from agree_core.index.lock import WAIT_HINT
from agree_core.index.engines.base import Capabilities, Engine, Payload, Point, Scored, VectorSpec

__all__ = ["ServerEngine", "connect", "to_models", "check_datatype", "supports_datatype"]

_BATCH_BYTES = 16 << 20  # upsert requests stay under this many bytes of vectors (JSON ~3x more)


def _client_module():
    try:
        import qdrant_client
    except ImportError as e:
        raise ImportError("qdrant:// and qdrant-local: indexes need qdrant-client: "
                          "pip install 'agree[qdrant]'") from e
    return qdrant_client


def _models():
    return _client_module().models


def connect(*, url: str | None = None, api_key: str | None = None, path: str | None = None,
            wait: float = 0.0, **client_options: Any) -> Any:
    """A ``QdrantClient`` for a server ``url`` or a local-mode ``path``. ``client_options``
    go to qdrant-client (and from it to httpx, e.g. ``transport=`` in tests)."""
    qc = _client_module()
    if path is None:
        return qc.QdrantClient(url=url, api_key=api_key, timeout=60, **client_options)
    deadline = time.monotonic() + wait
    while True:
        try:
            return qc.QdrantClient(path=path, **client_options)
        except RuntimeError as e:  # "... is already accessed by another instance of Qdrant client"
            if "already accessed" not in str(e):
                raise
            if time.monotonic() >= deadline:
                raise IndexBusyError(
                    f"index qdrant-local:{path} is busy: another process holds it. Local mode "
                    f"serves one process at a time; wait for it to finish, {WAIT_HINT}, "
                    "or use a Qdrant server (qdrant://HOST:PORT/COLLECTION)") from None
            time.sleep(0.2)


def supports_datatype(client: Any, datatype: str) -> bool:
    """Whether the server behind ``client`` can store ``datatype`` vectors (TurboQuant needs a
    recent server: :data:`~agree_core.index.config.SERVER_MIN_VERSION`; a development build
    is taken to)."""
    from agree_core.index.config import SERVER_MIN_VERSION

    need = SERVER_MIN_VERSION.get(datatype)
    if need is None:
        return True
    try:
        have = tuple(int(x) for x in _version(client).split("-")[0].split(".")[:2])
    except ValueError:
        return True  # a development build: let the server answer
    return have >= need


def _version(client: Any) -> str:
    return str(client.info().version)


def check_datatype(client: Any, datatype: str, where: str) -> None:
    """Raise when the server behind ``client`` cannot store ``datatype`` (:func:`supports_datatype`),
    before anything is written, with what to do instead."""
    from agree_core.index.config import SERVER_MIN_VERSION, IndexConfigError

    if not supports_datatype(client, datatype):
        need = SERVER_MIN_VERSION[datatype]
        raise IndexConfigError(
            f"the Qdrant server of {where} runs {_version(client)}, which cannot store {datatype} vectors "
            f"(Qdrant {need[0]}.{need[1]} or later does): upgrade the server, or build the index "
            "with --vector-datatype float16 (PageIndex.open(..., vector_datatype='float16')), "
            "twice the bytes of turbo8 and four times those of turbo4")


class ServerEngine(Engine):
    """The collection ``collection`` of ``client``; created with ``vectors`` (and the
    cluster settings) when it does not exist. ``vectors=()`` makes a payload-only collection."""

    def __init__(self, client: Any, collection: str, vectors: Sequence[VectorSpec] = (), *,
                 local: bool = False, keyword_fields: Sequence[str] = (),
                 integer_fields: Sequence[str] = (), shard_number: int | None = None,
                 replication_factor: int | None = None, on_disk_payload: bool | None = None):
        self.client, self.collection, self.local = client, collection, local
        self.capabilities = Capabilities(
            "qdrant-local" if local else "qdrant-server", datatypes=not local, hnsw=not local,
            concurrent_clients=not local, payload_indexes=not local)
        if not client.collection_exists(collection):
            m = _models()
            config = {v.name: _params(v) for v in vectors}
            client.create_collection(collection, vectors_config=config, shard_number=shard_number,
                                     replication_factor=replication_factor,
                                     on_disk_payload=on_disk_payload)
            for key in keyword_fields:
                self.ensure_field_index(key, "keyword")
            for key in integer_fields:
                self.ensure_field_index(key, "integer")

    # -- writing ----------------------------------------------------------------------------
    def upsert(self, points: Sequence[Point]) -> None:
        m = _models()
        batch: list = []
        size = 0
        for p in points:
            batch.append(m.PointStruct(id=p.id, payload=p.payload,
                                       vector={k: np.asarray(v, dtype=np.float32).tolist()
                                               for k, v in p.vectors.items()}))
            size += sum(v.size * 4 for v in p.vectors.values())
            if size >= _BATCH_BYTES:
                self.client.upsert(self.collection, points=batch, wait=True)
                batch, size = [], 0
        if batch:
            self.client.upsert(self.collection, points=batch, wait=True)

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self.client.delete(self.collection, points_selector=_models().PointIdsList(points=ids), wait=True)

    def delete_where(self, where: F.Node) -> None:
        self.client.delete(self.collection, points_selector=_models().FilterSelector(filter=to_models(where)),
                           wait=True)

    def set_payload(self, payload: Payload, *, ids: Iterable[str] | None = None,
                    where: F.Node | None = None) -> None:
        target = to_models(where) if where is not None else list(ids or ())
        if where is not None or target:
            self.client.set_payload(self.collection, payload=payload, points=target, wait=True)

    def delete_payload(self, keys: Sequence[str], *, ids: Iterable[str] | None = None,
                       where: F.Node | None = None) -> None:
        target = to_models(where) if where is not None else list(ids or ())
        if where is not None or target:
            self.client.delete_payload(self.collection, keys=list(keys), points=target, wait=True)

    def ensure_field_index(self, key: str, kind: str) -> None:
        """Creating an index that exists is a no-op for the server (one request either way)."""
        m = _models()
        if self.local:
            return  # local mode has no payload indexes (it warns and scans)
        schema = {"keyword": m.PayloadSchemaType.KEYWORD, "integer": m.PayloadSchemaType.INTEGER}[kind]
        self.client.create_payload_index(self.collection, key, field_schema=schema, wait=True)

    def flush(self) -> None:
        """Writes are acknowledged once applied (``wait=True``): nothing to flush."""

    def add_dense_vector(self, spec: VectorSpec) -> None:
        """A new named vector on the collection, then its graph and quantization settings
        (creating a vector name takes none: the server would give it the collection's)."""
        m = _models()
        datatype = {"float32": m.VectorStorageDatatype.FLOAT32, "float16": m.VectorStorageDatatype.FLOAT16,
                    "turbo8": m.VectorStorageDatatype.TURBO8, "turbo4": m.VectorStorageDatatype.TURBO4}
        self.client.create_vector_name(self.collection, spec.name, vector_name_config=m.DenseVectorNameConfig(
            dense=m.DenseVectorConfig(size=spec.dim, distance=m.Distance.DOT,
                                      datatype=None if self.local else datatype[spec.datatype])))
        if not self.local:
            params = _params(spec)
            self.client.update_collection(self.collection, vectors_config={spec.name: m.VectorParamsDiff(
                hnsw_config=params.hnsw_config, quantization_config=params.quantization_config,
                on_disk=spec.on_disk)})

    def update_vectors(self, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        m = _models()
        if vectors:
            self.client.update_vectors(self.collection, points=[
                m.PointVectors(id=pid, vector={k: np.asarray(v, dtype=np.float32).tolist() for k, v in vecs.items()})
                for pid, vecs in vectors.items()], wait=True)

    def close(self) -> None:
        self.client.close()

    # -- reading ----------------------------------------------------------------------------
    def count(self, where: F.Node | None = None) -> int:
        return self.client.count(self.collection, count_filter=to_models(where), exact=True).count

    def point_count(self) -> int:
        return self.client.count(self.collection, exact=False).count

    def retrieve(self, ids: Iterable[str], *, payload: bool | list[str] = True,
                 exclude: Sequence[str] = (), vectors: Sequence[str] = ()) -> dict[str, Point]:
        ids = list(ids)
        if not ids:
            return {}
        records = self.client.retrieve(self.collection, ids, with_payload=_selector(payload, exclude),
                                       with_vectors=list(vectors) or False)
        return {str(r.id): _point(r, vectors) for r in records}

    def scroll(self, where: F.Node | None = None, *, payload: bool | list[str] = True,
               exclude: Sequence[str] = (), vectors: Sequence[str] = (),
               batch: int = 512) -> Iterator[Point]:
        flt, offset = to_models(where), None
        while True:
            records, offset = self.client.scroll(
                self.collection, scroll_filter=flt, limit=batch, offset=offset,
                with_payload=_selector(payload, exclude), with_vectors=list(vectors) or False)
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
        m = _models()
        # local mode always searches exactly (and warns about search params)
        flt, exact = to_models(where), None if self.local else m.SearchParams(exact=True)
        dense = None if self.local else m.SearchParams(
            hnsw_ef=hnsw_ef, quantization=None if oversampling is None else
            m.QuantizationSearchParams(rescore=True, oversampling=oversampling))
        requests = []
        for i, q in enumerate(queries):
            q = np.asarray(q, dtype=np.float32).tolist()  # (n_q, dim)
            coarse = q if coarse_queries is None else np.asarray(coarse_queries[i], dtype=np.float32).tolist()
            fq, params = coarse, exact  # a multivector prefetch is the coarse stage
            if prefetch_queries is not None:  # a dense vector: its HNSW graph or quantized scan
                fq = np.asarray(prefetch_queries[i], dtype=np.float32).tolist()
                params = dense
            first = (m.Prefetch(query=fq, using=prefetch, limit=max(candidates, limit), filter=flt, params=params)
                     if prefetch and candidates else None)
            if first is not None and rescore:  # the candidates' middle stage, inside the same query
                first = m.Prefetch(query=coarse, using=rescore[0], limit=max(rescore[1], limit), filter=flt,
                                   params=exact, prefetch=first)
            main = exact if (hnsw_ef is None and oversampling is None) or first is not None or self.local else dense
            requests.append(m.QueryRequest(query=q, using=using, prefetch=first, filter=flt, limit=limit,
                                           params=main, with_payload=_selector(True, exclude)))
        if not requests:
            return []
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[Scored(str(p.id), float(p.score), p.payload or {}) for p in r.points] for r in responses]


def _params(v: VectorSpec) -> Any:
    """A vector's collection parameters: a MaxSim multivector, or a dense vector; an HNSW
    graph only for ``index`` vectors (``m=0``: none)."""
    m = _models()
    datatypes = {"float32": m.Datatype.FLOAT32, "float16": m.Datatype.FLOAT16,
                 "turbo8": m.Datatype.TURBO8, "turbo4": m.Datatype.TURBO4}  # turbo8: Qdrant >= 1.20
    return m.VectorParams(
        size=v.dim, distance=m.Distance.DOT, datatype=datatypes[v.datatype], on_disk=v.on_disk,
        hnsw_config=m.HnswConfigDiff(m=v.m, ef_construct=v.ef_construct) if v.index else m.HnswConfigDiff(m=0),
        quantization_config=_quantization(v.quantization),
        multivector_config=(m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
                            if v.multivector else None))


def _quantization(name: str) -> Any:
    """The collection's quantization config of a :data:`~.base.QUANTIZATIONS` name (None:
    none), kept in RAM (the engine's, :func:`.edge._quantization`, in the server's model)."""
    if not name:
        return None
    m = _models()
    if name == "int8":
        return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True))
    if name.startswith("turbo-"):
        bits = {"turbo-1bit": m.TurboQuantBitSize.BITS1, "turbo-2bit": m.TurboQuantBitSize.BITS2}[name]
        return m.TurboQuantization(turbo=m.TurboQuantQuantizationConfig(always_ram=True, bits=bits))
    encoding = m.BinaryQuantizationEncoding.TWO_BITS if name == "binary-2bit" else m.BinaryQuantizationEncoding.ONE_BIT
    query = {"binary-q4": m.BinaryQuantizationQueryEncoding.SCALAR4BITS,
             "binary-q8": m.BinaryQuantizationQueryEncoding.SCALAR8BITS}.get(name)
    return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True, encoding=encoding,
                                                                  query_encoding=query))


def _selector(payload: bool | list[str], exclude: Sequence[str]) -> Any:
    m = _models()
    if exclude:
        return m.PayloadSelectorExclude(exclude=list(exclude))
    return m.PayloadSelectorInclude(include=payload) if isinstance(payload, list) else payload


def _point(r: Any, vectors: Sequence[str]) -> Point:
    vecs = {n: np.asarray(r.vector[n], dtype=np.float32) for n in vectors} if vectors else {}
    return Point(str(r.id), vecs, r.payload or {})


def to_models(node: F.Node | None) -> Any:
    """The qdrant-client ``Filter`` of a :mod:`~agree_core.index.filters` tree."""
    if node is None:
        return None
    m = _models()
    c = _condition(node)
    return c if isinstance(c, m.Filter) else m.Filter(must=[c])


def _condition(node: F.Node) -> Any:
    m = _models()
    if isinstance(node, F.And):
        return m.Filter(must=[_condition(n) for n in node.items])
    if isinstance(node, F.Or):
        return m.Filter(should=[_condition(n) for n in node.items])
    if isinstance(node, F.Not):
        return m.Filter(must_not=[_condition(node.item)])
    if isinstance(node, F.Match):
        return m.FieldCondition(key=node.key, match=m.MatchValue(value=node.value))
    if isinstance(node, F.MatchAny):
        return m.FieldCondition(key=node.key, match=m.MatchAny(any=list(node.values)))
    if isinstance(node, F.Range):
        return m.FieldCondition(key=node.key, range=m.Range(gt=node.gt, gte=node.gte, lt=node.lt, lte=node.lte))
    if isinstance(node, F.DateRange):
        return m.FieldCondition(key=node.key, range=m.DatetimeRange(
            gt=node.gt, gte=node.gte, lt=node.lt, lte=node.lte))
    if isinstance(node, F.IsEmpty):
        return m.IsEmptyCondition(is_empty=m.PayloadField(key=node.key))
    if isinstance(node, F.HasId):
        return m.HasIdCondition(has_id=list(node.ids))
    raise TypeError(f"not a filter node: {node!r}")
