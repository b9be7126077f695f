"""The engine interface: what :class:`~agree_core.index.PageIndex` asks of a vector engine.

An engine stores points (an id, named multivectors, a JSON payload), filters them with the
engine-neutral tree of :mod:`agree_core.index.filters` (each engine compiles it in its own
module) and scores them by MaxSim. Everything else (the catalog's rules, which points are
visible, IDF statistics, payload layout) lives above it and is written once.

Two implementations: :mod:`.edge` (qdrant-edge-py, embedded in the process) and
:mod:`.server` (qdrant-client: a Qdrant server or cluster, or qdrant-client's local mode).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from agree_core.index.filters import Node

__all__ = ["Engine", "Point", "Scored", "VectorSpec", "Capabilities", "Payload", "QUANTIZATIONS"]

# quantized copies of a dense vector that searches scan (with oversampling, then rescoring by
# the stored vectors): Qdrant's binary quantization (1 or 2 bits a dimension; "-q4"/"-q8": the
# query quantized to 4/8 bits instead, asymmetric), scalar int8, TurboQuant at 1 / 2 bits
QUANTIZATIONS = {"binary": 1, "binary-q4": 1, "binary-q8": 1, "binary-2bit": 2, "int8": 8,
                 "turbo-1bit": 1, "turbo-2bit": 2}  # name: bits a dimension

Payload = dict[str, Any]


@dataclass
class Point:
    """One point: ``vectors`` maps a vector name to its ``(n, dim)`` float32 multivector
    (empty for points that hold only a payload, such as catalog entries)."""

    id: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    payload: Payload = field(default_factory=dict)


@dataclass
class Scored:
    id: str
    score: float
    payload: Payload


@dataclass(frozen=True)
class VectorSpec:
    """A named vector of the collection: a MaxSim multivector, or with ``multivector=False``
    one dense vector per point (dot product). ``index``: build an HNSW graph of ``m`` edges
    per node and ``ef_construct`` (off for vectors that are only rescored or scanned);
    ``on_disk``: keep the vectors on disk, not in RAM; ``quantization`` (one of
    :data:`QUANTIZATIONS`, dense vectors only): also keep a quantized copy in RAM, which
    searches read first (``oversampling`` in :meth:`Engine.search_batch`)."""

    name: str
    dim: int
    datatype: str = "float16"  # float32 | float16 | turbo8 | turbo4
    index: bool = False
    on_disk: bool = False
    multivector: bool = True
    m: int = 16
    ef_construct: int = 100
    quantization: str = ""

    def __post_init__(self) -> None:
        if self.quantization and (self.multivector or self.quantization not in QUANTIZATIONS):
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} on a dense vector, "
                             f"got {self.quantization!r} on {self.name!r}")


@dataclass(frozen=True)
class Capabilities:
    """What an engine does with the schema it is given, so callers and tests do not pretend."""

    name: str
    datatypes: bool  # stores vectors in the requested datatype (else float32 regardless)
    hnsw: bool  # honours HNSW / on-disk settings
    concurrent_clients: bool  # several processes or machines may use it at once
    payload_indexes: bool  # builds payload indexes (else filters scan)


class Engine(ABC):
    """A collection of points. Filters are :mod:`agree_core.index.filters` nodes; ``payload``
    selects what comes back: ``True`` (all), ``False``, a list of keys to include, or
    ``exclude=[keys]`` to leave some out."""

    capabilities: Capabilities

    @abstractmethod
    def upsert(self, points: Sequence[Point]) -> None: ...

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> None: ...

    @abstractmethod
    def delete_where(self, where: Node) -> None: ...

    @abstractmethod
    def set_payload(self, payload: Payload, *, ids: Iterable[str] | None = None,
                    where: Node | None = None) -> None:
        """Set these top-level keys (others are kept) on the points given by ids or filter."""

    @abstractmethod
    def delete_payload(self, keys: Sequence[str], *, ids: Iterable[str] | None = None,
                       where: Node | None = None) -> None: ...

    @abstractmethod
    def retrieve(self, ids: Iterable[str], *, payload: bool | list[str] = True,
                 exclude: Sequence[str] = (), vectors: Sequence[str] = ()) -> dict[str, Point]:
        """The points with these ids that exist, by id."""

    @abstractmethod
    def scroll(self, where: Node | None = None, *, payload: bool | list[str] = True,
               exclude: Sequence[str] = (), vectors: Sequence[str] = (),
               batch: int = 512) -> Iterator[Point]:
        """Every point matching ``where``, in id order, fetched ``batch`` at a time."""

    @abstractmethod
    def count(self, where: Node | None = None) -> int: ...

    def point_count(self) -> int:
        """Points in the collection, as cheaply as the engine can tell (its segments' counts,
        not a pass over them): what a search reads to choose its path. May count points
        deleted since the last optimize; exact engines return :meth:`count`."""
        return self.count()

    @abstractmethod
    def search_batch(self, queries: Sequence[np.ndarray], limit: int, *, using: str,
                     where: Node | None = None, prefetch: str | None = None,
                     candidates: int = 0, exclude: Sequence[str] = (),
                     prefetch_queries: Sequence[np.ndarray] | None = None,
                     hnsw_ef: int | None = None,
                     rescore: tuple[str, int] | None = None,
                     oversampling: float | None = None,
                     coarse_queries: Sequence[np.ndarray] | None = None) -> list[list[Scored]]:
        """Top ``limit`` points by MaxSim of each query ``(n_q, dim)`` against vector
        ``using``, exact. With ``prefetch`` and ``candidates``, MaxSim over the vector
        ``prefetch`` first keeps ``candidates`` points and ``using`` rescores them. With
        ``prefetch_queries`` (one dense vector per query), that first stage is instead a
        nearest-neighbour search of the dense vector ``prefetch`` through its HNSW graph
        (``hnsw_ef``: the graph's search breadth), or with no graph (``m=0``) a scan; over a
        quantized vector, ``oversampling`` times as many points are kept by the quantized
        copy and rescored by the stored vectors. With ``rescore = (name, n)`` a middle
        stage sits between the two: exact MaxSim of the query over the multivector ``name``
        keeps the best ``n`` of the candidates for ``using`` (one nested query in the
        engine). ``coarse_queries`` are the query rows of the coarse MaxSim stage, the
        middle one or a multivector ``prefetch`` (default each query; the index passes
        :func:`~agree_core.index.first_stage.middle_rows`); the last stage scores with every row."""

    def search(self, query: np.ndarray, limit: int, **kwargs: Any) -> list[Scored]:
        return self.search_batch([query], limit, **kwargs)[0]

    @abstractmethod
    def ensure_field_index(self, key: str, kind: str) -> None:
        """A payload index on ``key`` (``"keyword"`` or ``"integer"``) unless there is one."""

    @abstractmethod
    def flush(self) -> None: ...

    def optimize(self) -> None:
        """Build what the collection's config asks for (HNSW graphs, merged segments) now,
        after a bulk write. Engines that optimize on their own do nothing."""

    def add_dense_vector(self, spec: VectorSpec) -> None:
        """Add the dense vector ``spec`` to an existing collection (its points get it through
        :meth:`update_vectors`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot add a vector to a collection")

    def update_vectors(self, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        """Set named vectors of existing points: ``{point id: {name: vector}}``."""
        raise NotImplementedError(f"{type(self).__name__} cannot update vectors")

    @abstractmethod
    def close(self) -> None: ...
