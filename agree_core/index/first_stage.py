"""The first stage of large searches: one dense vector per page (a MUVERA fixed-dimensional
encoding) that the engine scans in a binary-quantized copy (or, in indexes built before
session 7, searches through an HNSW graph), whose candidates exact MaxSim then rescores.

MUVERA (Dhulipala et al., 2024, "MUVERA: Multi-Vector Retrieval via Fixed Dimensional
Encodings") turns a set of vectors into one vector whose dot product with a query's encoding
approximates their MaxSim (Chamfer) similarity. Each of ``reps`` repetitions splits the space
by ``k_sim`` random hyperplanes (SimHash) into ``2**k_sim`` buckets; a page puts in each
bucket the mean of its vectors that fall there (an empty bucket takes the vector whose hash
is nearest in Hamming distance), a query the sum of its vectors there; each bucket's vector
is projected to ``dim_proj`` dimensions by a random +-1 matrix, and the buckets of all
repetitions are concatenated: ``reps * 2**k_sim * dim_proj`` dimensions.

This is our own vectorised numpy implementation of the published algorithm (one matrix
product per page instead of a Python loop per token, and no dependency: fastembed's
``fastembed.postprocess.Muvera`` pulls in its ONNX Runtime model stack). The random matrices
come from ``seed``, so the same settings always give the same encoding; the settings are
saved in the index config (:attr:`~agree_core.index.config.IndexConfig.first_stage`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from typing import Any, Sequence

import numpy as np

__all__ = ["FDE", "Muvera", "DEFAULT_MUVERA", "DEFAULT_GRAPH", "SCAN", "new_settings", "graph_of",
           "quantization_of", "max_pages", "usable", "FIRST_STAGE_MIN_PAGES", "FIRST_STAGE_MAX_PAGES",
           "DEFAULT_FDE_CANDIDATES", "HNSW_EF", "HNSW_M", "HNSW_EF_CONSTRUCT", "FDE_DATATYPE", "OVERSAMPLING",
           "fde_datatype", "oversampling_of", "middle_rows", "MIDDLE_ROW_MASS"]

FDE = "fde"  # the named dense vector of the encodings
DEFAULT_MUVERA = {"k_sim": 4, "dim_proj": 16, "reps": 20, "seed": 0}  # 5,120 dims (BENCHMARKS.md)
FIRST_STAGE_MIN_PAGES = 2_000  # above this many points, searches start from the encodings (= exact up to it)
# ... up to this many through an HNSW graph: at 100,000 synthetic pages the graph found 0.90 of
# the exact top 10 at best (m 64; 0.82 with m 32), where the encodings themselves hold 0.965 at
# 3,200 candidates (BENCHMARKS.md, session 6): larger indexes with a graph keep the centroid scan.
# Indexes that scan their quantized encodings (SCAN, the default since session 7) have no limit.
FIRST_STAGE_MAX_PAGES = 20_000
DEFAULT_FDE_CANDIDATES = 300  # pages exact MaxSim rescores (after the centroid stage)
HNSW_EF = 1_000  # the graph's search breadth (at least the candidates asked for)
HNSW_M, HNSW_EF_CONSTRUCT = 32, 100  # indexes with a graph (session 6): m 32
OLD_GRAPH = {"m": 16, "ef_construct": 100}  # what indexes that recorded no graph parameters have
DEFAULT_GRAPH = {"m": HNSW_M, "ef_construct": HNSW_EF_CONSTRUCT}
# the default first stage: no graph (m 0); every page's encoding scanned in its 1-bit TurboQuant
# copy (640 bytes a page in RAM), OVERSAMPLING times the candidates kept by it and rescored by the
# stored encodings (FDE_DATATYPE). At 100,000 pages (float16 encodings): 0.935 of the float
# encodings' own top 3,200, recall@10 0.960 after the centroid stage, 40 CPU ms; Qdrant's binary quantization kept 0.51 (0.923), int8
# 1.00 (0.963) at 60 CPU ms and 8x the RAM (BENCHMARKS.md, session 7)
SCAN = {"m": 0, "ef_construct": HNSW_EF_CONSTRUCT, "quantization": "turbo-1bit"}
# turbo8 encodings are rescored at half float16's cost, so the scan keeps 4x its candidates
# for them: at 100,000 pages +0.01-0.02 of the exact top 10 for ~3 ms (BENCHMARKS.md, session
# 11); float16 encodings (older indexes) keep 2x, what they were measured with
OVERSAMPLING = 4.0
OLD_OVERSAMPLING = 2.0
# the centroid stage scores its candidates with the query's heaviest rows only: the fewest
# whose norms make up this share of the query's (IDF-weighted text queries: 6 of 14 rows on
# average). At 100,000 pages it took 35 of a search's 85 ms with every row and 15 with these,
# for the same recall (BENCHMARKS.md, session 11); exact MaxSim uses every row
MIDDLE_ROW_MASS = 0.7
# the first stage passes this many pages (or GRAPH_FANOUT times the exact stage's) to the
# centroid stage: with an ideal graph, 1,600 -> 400 by centroids -> exact kept 0.993 of the exact
# top 10 at 8,192 pages, and 3,200 -> 400 0.963 at 100,000 (BENCHMARKS.md, session 6), where
# 1,600 -> 400 kept 0.935: a scan passes SCAN_CANDIDATES (it costs no graph search to ask more;
# 2,800 -> 300 with the row share and oversampling above: 0.96 in 48-59 ms, session 11)
GRAPH_CANDIDATES = 1_600
SCAN_CANDIDATES = 2_800
GRAPH_FANOUT = 4
# how the engine stores the encodings (the rescoring of the scan reads them): in new indexes
# 8-bit TurboQuant codes, 5.8 KB a page where float16 took 10.9, with the same candidates at
# 100,000 pages (BENCHMARKS.md, session 10); indexes that recorded no datatype have float16,
# as do new ones on a Qdrant server too old for turbo8 (Storage.first_stage_datatype)
FDE_DATATYPE = "turbo8"
OLD_FDE_DATATYPE = "float16"


@dataclass(frozen=True)
class Muvera:
    """Fixed-dimensional encodings of ``dim``-dimensional vector sets (see the module doc).

    >>> m = Muvera(8, k_sim=2, dim_proj=4, reps=3)
    >>> m.size, m.encode_document(np.eye(8, dtype=np.float32)).shape
    (48, (48,))
    """

    dim: int
    k_sim: int = DEFAULT_MUVERA["k_sim"]
    dim_proj: int = DEFAULT_MUVERA["dim_proj"]
    reps: int = DEFAULT_MUVERA["reps"]
    seed: int = DEFAULT_MUVERA["seed"]
    fused: bool = False  # vectors of a window-fused encoder: encode the token part only (below)

    def __post_init__(self) -> None:
        for name in ("dim", "k_sim", "dim_proj", "reps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"MUVERA {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.k_sim > 8:
            raise ValueError(f"MUVERA k_sim must be at most 8 (2**k_sim buckets), got {self.k_sim}")
        if self.dim_proj > self._dim:
            raise ValueError(f"MUVERA dim_proj ({self.dim_proj}) cannot exceed the vectors' dim ({self._dim})")

    @property
    def _dim(self) -> int:
        """Dimensions hashed and projected: all, or a fused encoder's token dimensions."""
        return self.dim - 1 if self.fused else self.dim

    def token_part(self, vectors: np.ndarray) -> np.ndarray:
        """What the encoding is made of. A window-fused encoder (the text-layer default,
        ``sentence_weight`` > 0) adds one coordinate: 0 on page tokens, -1 on a page's window
        vectors, +2 (times the IDF weight) on query tokens, negative on the query's sentence
        vector (``text_layer._with_windows``). Hashed as they are, a query token's constant +2
        decides its buckets and the encodings stop tracking MaxSim (recall@10 0.08 at 100,000
        pages, BENCHMARKS.md); so a fused encoding keeps the token rows (last coordinate above
        -0.5) without that coordinate: the first stage approximates the token MaxSim, and the
        exact stages score the fused vectors whole."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        return v[v[:, -1] > -0.5, :-1] if self.fused else v

    @classmethod
    def from_settings(cls, dim: int, settings: dict[str, Any]) -> "Muvera":
        return cls(dim, **{k: settings[k] for k in (*DEFAULT_MUVERA, "fused") if k in settings})

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "dim"}

    @property
    def buckets(self) -> int:
        return 2 ** self.k_sim

    @property
    def size(self) -> int:
        """Dimensions of an encoding."""
        return self.reps * self.buckets * self.dim_proj

    @cached_property
    def _matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        planes = rng.standard_normal((self._dim, self.reps * self.k_sim)).astype(np.float32)
        signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(self._dim, self.reps * self.dim_proj))
        proj = (signs / np.sqrt(self.dim_proj)).astype(np.float32)
        b = np.arange(self.buckets)
        hamming = np.array([[bin(x ^ y).count("1") for y in b] for x in b], dtype=np.int32)
        return planes, proj, hamming

    def _bucketed(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Of ``v``, a page's :meth:`token_part`: (bucket of each vector in each repetition
        ``(n, reps)``, projected vectors ``(n, reps, dim_proj)``, bucket sums ``(reps *
        buckets, dim_proj)``, bucket counts)."""
        planes, proj, _ = self._matrices
        n = len(v)
        bits = (v @ planes).reshape(n, self.reps, self.k_sim) > 0
        ids = (bits * (1 << np.arange(self.k_sim))).sum(axis=2)  # (n, reps)
        projected = (v @ proj).reshape(n, self.reps, self.dim_proj)
        onehot = (ids.T[:, None, :] == np.arange(self.buckets)[None, :, None]).astype(np.float32)  # (reps, B, n)
        sums = np.matmul(onehot, projected.transpose(1, 0, 2)).reshape(self.reps * self.buckets, self.dim_proj)
        counts = onehot.sum(axis=2).ravel()
        return ids, projected, sums, counts

    def encode_query(self, vectors: np.ndarray) -> np.ndarray:
        """A query's encoding ``(size,)``: per bucket, the sum of its vectors (so IDF weights
        on the query vectors carry over)."""
        return self._bucketed(self.token_part(vectors))[2].ravel()

    def encode_document(self, vectors: np.ndarray) -> np.ndarray:
        """A page's encoding ``(size,)``: per bucket, the mean of its vectors; an empty bucket
        takes the vector whose hash is nearest in Hamming distance. A page without vectors
        encodes as zeros (it matches nothing)."""
        v = self.token_part(vectors)
        if len(v) == 0:
            return np.zeros(self.size, np.float32)
        ids, projected, sums, counts = self._bucketed(v)
        out = sums / np.maximum(counts, 1)[:, None]
        hamming = self._matrices[2]
        empty = np.flatnonzero(counts == 0)
        for r in np.unique(empty // self.buckets):  # repetitions with an empty bucket
            cells = empty[empty // self.buckets == r]
            nearest = hamming[cells % self.buckets][:, ids[:, r]].argmin(axis=1)  # a vector per cell
            out[cells] = projected[nearest, r]
        return out.ravel()

    def encode_documents(self, pages: Sequence[np.ndarray]) -> np.ndarray:
        """``(len(pages), size)`` float32."""
        return np.stack([self.encode_document(p) for p in pages]) if pages else np.zeros((0, self.size), np.float32)


@lru_cache(maxsize=8)
def _muvera(dim: int, settings: tuple) -> Muvera:
    return Muvera.from_settings(dim, dict(settings))


def muvera_of(dim: int, first_stage: dict[str, Any]) -> Muvera:
    """The encoder of an index's ``first_stage`` settings (cached: its matrices are reused)."""
    return _muvera(dim, tuple(sorted((k, v) for k, v in first_stage.items() if k in (*DEFAULT_MUVERA, "fused"))))


def usable(config: Any) -> bool:
    """Whether an index's encodings can be searched: it has them, and they were made for its
    vectors. Encodings written by session 5 for a window-fused encoder hashed the fused
    coordinate (no ``fused`` key recorded) and rank nearly at random; such an index scans
    its centroids until ``agree first-stage`` encodes it again."""
    fs = config.first_stage
    return bool(fs) and (bool(fs.get("fused")) or not _is_fused(config.encoder_config))


def _is_fused(encoder_config: dict[str, Any]) -> bool:
    return float(encoder_config.get("sentence_weight") or 0) > 0


def new_settings(encoder_config: dict[str, Any], datatype: str = FDE_DATATYPE) -> dict[str, Any]:
    """The ``first_stage`` config of a new index (or of one given the first stage now): the
    encoding, whether the encoder's vectors are window-fused (:meth:`Muvera.token_part`), how
    the engine stores the encodings (``datatype``) and how they are searched (:data:`SCAN`:
    no graph, a quantized copy), all recorded so that the index keeps them when defaults move."""
    return {"kind": "muvera", **DEFAULT_MUVERA, "fused": _is_fused(encoder_config), "datatype": datatype, **SCAN}


def fde_datatype(first_stage: dict[str, Any]) -> str:
    """How an index's engine stores its encodings: what its config recorded, else (an index
    built before session 10) float16."""
    return str(first_stage.get("datatype") or OLD_FDE_DATATYPE)


def oversampling_of(first_stage: dict[str, Any]) -> float:
    """How many times the candidates a scan of an index's quantized encodings keeps, to be
    rescored by the stored ones (:data:`OVERSAMPLING` for turbo8 encodings)."""
    return OVERSAMPLING if fde_datatype(first_stage) == "turbo8" else OLD_OVERSAMPLING


def middle_rows(query: np.ndarray, mass: float = MIDDLE_ROW_MASS) -> np.ndarray:
    """The rows of a query ``(n_q, dim)`` that the centroid stage scores with: the fewest,
    largest norm first, whose norms add up to ``mass`` of all the rows' (a text query's IDF
    weights and fused sentence vector are in its norms), in the query's order.

    >>> middle_rows(np.array([[0.5, 0], [3.0, 0], [1.0, 0], [0.5, 0]], np.float32))[:, 0].tolist()
    [3.0, 1.0]
    >>> len(middle_rows(np.eye(10, dtype=np.float32)))  # equal rows: 7 of 10
    7
    """
    norms = np.linalg.norm(query, axis=1)
    if len(norms) <= 1 or norms.sum() <= 0:
        return query
    order = np.argsort(-norms, kind="stable")
    n = int(np.searchsorted(np.cumsum(norms[order]), mass * norms.sum() * (1 - 1e-6))) + 1
    return np.ascontiguousarray(query[np.sort(order[:n])])


def graph_of(first_stage: dict[str, Any]) -> dict[str, int]:
    """The HNSW parameters of an index's ``fde`` vector (``m`` 0: no graph, a scan): what its
    config recorded, else (an index built before they were recorded) the ones it was built
    with, m 16 / ef_construct 100."""
    return {k: int(first_stage.get(k, v)) for k, v in OLD_GRAPH.items()}


def quantization_of(first_stage: dict[str, Any]) -> str:
    """The quantized copy of the encodings the first stage reads ("" for none: indexes built
    before session 7, searched through their graph)."""
    return str(first_stage.get("quantization") or "")


def max_pages(first_stage: dict[str, Any]) -> float:
    """Points up to which searches go through the encodings: no limit for a scan of every
    page; :data:`FIRST_STAGE_MAX_PAGES` through a graph (its recall falls past it)."""
    return float("inf") if graph_of(first_stage)["m"] == 0 else FIRST_STAGE_MAX_PAGES


def search(engine: Any, config: Any, queries: list[np.ndarray], k: int, where: Any,
           candidates: int, *, using: str, rescore_with: str | None = None,
           exclude: Sequence[str] = ()) -> list[list[Any]]:
    """Top ``k`` by exact MaxSim over the vector ``using`` of the ``candidates`` pages that
    come through the cascade, all in one engine query under the same filter: the
    ``graph_candidates(candidates)`` pages whose encodings are nearest to each query's (a
    scan of the quantized encodings, :func:`oversampling_of` times as many rescored by the
    encodings; or the HNSW graph of older indexes), then, with ``rescore_with`` (the 32
    stored centroids), the best ``candidates`` of them by MaxSim of the query's
    :func:`middle_rows` over those vectors."""
    fs = config.first_stage
    muv = muvera_of(config.dim, fs)
    c = max(candidates, k)
    graph = graph_of(fs)["m"] > 0
    wide = graph_candidates(c, scan=not graph) if rescore_with else c
    return engine.search_batch(queries, k, using=using, where=where, prefetch=FDE,
                               candidates=wide, exclude=exclude,
                               prefetch_queries=[muv.encode_query(q) for q in queries],
                               hnsw_ef=max(HNSW_EF, wide) if graph else None,
                               oversampling=oversampling_of(fs) if quantization_of(fs) else None,
                               rescore=(rescore_with, c) if rescore_with else None,
                               coarse_queries=[middle_rows(q) for q in queries] if rescore_with else None)


def graph_candidates(candidates: int, scan: bool = False) -> int:
    """Pages the first stage passes to the centroid stage when ``candidates`` reach exact
    MaxSim (``scan``: a scan of the quantized encodings, else a graph search)."""
    return max(SCAN_CANDIDATES if scan else GRAPH_CANDIDATES, GRAPH_FANOUT * candidates)
