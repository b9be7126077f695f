"""The one point schema of an index, and the rules every read and write follows.

A PDF page and a document written by a framework (a *record*) are the same kind of point,
built by :func:`build_point`: the named multivectors ``tokens`` (the page's vectors, merged
by the index's ``pool_factor``; scores are made of them) and ``pooled`` (a few k-means
centroids, the cheap first stage of large searches), and a payload with

- ``grid``, ``cells``, ``terms``, ``text``: where each vector sits on the page, its vocabulary
  ids (for IDF statistics) and the page text;
- ``pool_of`` (indexes with ``pool_factor > 1``): for each of the page's original vectors,
  the stored (pooled) vector that stands in for it, so ``tokens[pool_of]`` lines up with
  ``cells`` and ``terms``; ``nvec``: how many vectors the point stores (``tokens`` and
  ``pooled``), for the index's size figures;
- ``image``: the page image's path relative to the image root (``images/...``), and with the
  server engine ``image_data`` (the file's bytes, base64) so that every client can read it;
- ``source``, ``page`` (PDF path and 1-based page, or ``""``/``0`` when a record has none),
  ``doc_id``, ``meta`` (the document's metadata);
- PDF pages also ``sha256``, ``width_pt``, ``height_pt``, ``words`` (``[text, x0, y0, x1, y1]``
  each as one JSON string, a list in older indexes; the words the encoder read:
  :func:`agree_core.evidence.word_rows`); records ``kind="record"``,
  ``record_id``, ``meta_json``/``extra`` (exact JSON copies), ``mime_type``, ``text_given``, ``seq``.

Visibility (:func:`visible`): points of documents the catalog does not hold as ``ready`` are
never read; the PDF views (``PageIndex.search``, ``agree search``) see PDF pages only.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from agree_core.encoders import PageEmbedding
from agree_core.index import filters as F
from agree_core.index.engines.base import Point, VectorSpec
from agree_core.index.first_stage import FDE, fde_datatype, graph_of, muvera_of, quantization_of
from agree_core.pooling import pool_tokens, pool_vectors

__all__ = ["TOKENS", "POOLED", "IMAGE_DATA", "SEARCH_EXCLUDE", "KEYWORD_FIELDS", "INTEGER_FIELDS",
           "EXACT_SEARCH_MAX_PAGES", "DEFAULT_CANDIDATES", "vector_specs", "build_point",
           "visible", "candidates_for", "IS_RECORD", "expand_pooled", "FDE", "fde_spec"]

TOKENS, POOLED = "tokens", "pooled"
IMAGE_DATA = "image_data"
SEARCH_EXCLUDE = ("cells", "text", "terms", "words", "pool_of", IMAGE_DATA)  # what a search hit does not need
KEYWORD_FIELDS = ("source", "doc_id", "kind", "record_id")
INTEGER_FIELDS = ("page", "seq")
EXACT_SEARCH_MAX_PAGES = 2_000  # below this, every search is exact MaxSim over all vectors
DEFAULT_CANDIDATES = 800  # pages the pooled first stage passes to exact rescoring (BENCHMARKS.md)
IS_RECORD = F.Match("kind", F.RECORD_KIND)


def expand_pooled(vectors: np.ndarray, payload: dict[str, Any]) -> np.ndarray:
    """A point's stored ``tokens`` as one vector per original token (``(n, dim)``, lined up
    with ``cells``): pooled vectors repeated by ``pool_of``; unpooled points as they are."""
    group = payload.get("pool_of")
    return vectors[np.asarray(group, dtype=np.int64)] if group is not None else vectors


def vector_specs(dim: int, datatype: str, pooled: bool,
                 first_stage: dict[str, Any] | None = None) -> list[VectorSpec]:
    """``tokens``: rescoring only (no HNSW graph), on disk; ``pooled``: in RAM; with a
    ``first_stage`` config, ``fde``: a page's MUVERA encoding, dense (:func:`fde_spec`)."""
    specs = [VectorSpec(TOKENS, dim, datatype, index=False, on_disk=True)]
    if pooled:
        specs.append(VectorSpec(POOLED, dim, datatype, index=False, on_disk=False))
    if first_stage:
        specs.append(fde_spec(dim, first_stage))
    return specs


def fde_spec(dim: int, first_stage: dict[str, Any]) -> VectorSpec:
    """The ``fde`` vector of an index whose config has ``first_stage`` settings: with a
    quantized copy (in RAM, what a scan reads), the encodings themselves on disk (only the
    oversampled candidates' are read); an HNSW graph when ``m`` > 0."""
    graph, quantization = graph_of(first_stage), quantization_of(first_stage)
    return VectorSpec(FDE, muvera_of(dim, first_stage).size, fde_datatype(first_stage), index=graph["m"] > 0,
                      on_disk=bool(quantization), multivector=False, quantization=quantization, **graph)


def build_point(point_id: str, emb: PageEmbedding, *, pooled: int, text: str | None,
                source: str, page: int, doc_id: str, meta: dict[str, Any],
                image: dict[str, Any], pool_factor: int = 1,
                first_stage: dict[str, Any] | None = None, **fields: Any) -> Point:
    """The point of one page (a PDF page or a record): its vectors ``(n, dim)`` as float32
    numpy arrays (pooled by ``pool_factor``), the first-stage centroids when ``pooled > 0``,
    the MUVERA encoding of the stored vectors with ``first_stage`` settings, and the payload
    of the module docstring (``fields`` are the kind-specific keys)."""
    vectors = emb.vectors.float()  # (n, dim)
    extra: dict[str, Any] = {}
    keep = emb.unpooled  # vectors stored as they are (a text-layer window's sentence vector)
    if pool_factor > 1:
        vectors, group = pool_tokens(vectors, pool_factor, keep=keep)
        extra["pool_of"] = group.tolist()
        if keep is not None:  # pool_tokens puts them after the pooled ones
            keep = torch.arange(len(vectors)) >= len(vectors) - int(keep.sum())
    vecs = {TOKENS: np.ascontiguousarray(vectors.numpy(), dtype=np.float32)}
    if pooled > 0:
        vecs[POOLED] = np.ascontiguousarray(pool_vectors(vectors, pooled, keep=keep).numpy(), dtype=np.float32)
    extra["nvec"] = sum(len(v) for v in vecs.values())  # multivectors only (sizes.py)
    if first_stage:
        vecs[FDE] = muvera_of(vecs[TOKENS].shape[1], first_stage).encode_document(vecs[TOKENS])
    payload = {
        "doc_id": doc_id, "source": source, "page": page, **image,
        "grid": list(emb.grid), "cells": emb.cells.tolist(),
        "terms": emb.terms.tolist() if emb.terms is not None else None,
        "text": text if text is not None else (emb.text or ""), "meta": meta, **extra, **fields,
    }
    return Point(point_id, vecs, payload)


def visible(unfinished: Iterable[str], pdf_pages_only: bool = False) -> F.Node | None:
    """The one visibility rule: not a point of an unfinished document (and, for the PDF
    views, not a record)."""
    unfinished = tuple(unfinished)
    return F.all_of(F.Not(F.MatchAny("doc_id", unfinished)) if unfinished else None,
                    F.Not(IS_RECORD) if pdf_pages_only else None)


def candidates_for(points: int, candidates: int | None) -> int:
    """Pages the pooled first stage keeps: the caller's number, else exact search (0) up to
    :data:`EXACT_SEARCH_MAX_PAGES` points and :data:`DEFAULT_CANDIDATES` above.

    >>> candidates_for(100, None), candidates_for(5000, None), candidates_for(5000, 50)
    (0, 800, 50)
    """
    if candidates is not None:
        if candidates < 0:
            raise ValueError(f"candidates must be >= 0, got {candidates}")
        return candidates
    return DEFAULT_CANDIDATES if points > EXACT_SEARCH_MAX_PAGES else 0
