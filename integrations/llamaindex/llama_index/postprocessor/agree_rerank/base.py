"""AgreeRerank: rerank nodes from any retriever by MaxSim over their pages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, List, Literal, Optional

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder
from agree_core.index import IndexConfig, PageIndex
from agree_core.index.shared import SharedIndex, shared_encoder
from agree_core.rerank import PageRef, PageScorer
from llama_index.postprocessor.agree_rerank.refs import page_ref
from llama_index.retrievers.agree.base import open_index

_ENCODING = threading.Lock()  # scoring without an index: one encoder call at a time


class AgreeRerank(BaseNodePostprocessor):
    """Rerank nodes by the MaxSim score of their pages for the query (agree_core's
    :class:`~agree_core.rerank.PageScorer`).

    A node names its page by an image (``ImageNode.image_path`` or base64 ``image``, or
    ``Node.image_resource`` with a path or data; URLs are not fetched) and/or by metadata:
    ``file_path`` (or ``source``) naming a PDF, and ``page`` (or ``page_label``), 1-based, as
    LlamaIndex's PDF readers and :class:`AgreeVisualRetriever` set them.

    Pages held by an index are scored from their stored vectors (a page of any node whose PDF
    is indexed, whatever retriever found it); the others are encoded in batches of
    ``batch_size`` by the index's encoder. The index: ``index_dir`` if given; else, with no
    ``encoder``, the one named by the nodes' ``index_dir`` metadata when an
    :class:`AgreeVisualRetriever` of this process holds it open (the nodes came from it);
    else none, and ``encoder`` (default ``text-layer``) encodes every page.

    ``on_missing_page``: ``"raise"`` (default) raises ``ValueError`` naming the nodes that
    have no usable page; ``"keep"`` passes them through after the scored nodes, with their
    own scores, within ``top_n``.
    """

    top_n: int = Field(default=5, description="Number of nodes to return, best first.")
    index_dir: Optional[str] = Field(default=None, description="An agree index to score from.")
    encoder: Optional[str] = Field(default=None, description="Encoder spec without an index.")
    batch_size: int = Field(default=16, description="Pages encoded per forward pass.")
    dpi: int = Field(default=100, description="Render resolution of pages read from PDFs.")
    reranker: Optional[str] = Field(default=None, description="A multimodal reranker (jina-m0[:CKPT]) that "
                                    "reads query and page image together, instead of MaxSim.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep each node's previous score in metadata['retrieval_score'].")
    on_missing_page: Literal["raise", "keep"] = Field(
        default="raise", description="Nodes with no usable page: raise, or keep them last.")

    _encoder_obj: Optional[MultiVectorEncoder] = PrivateAttr(default=None)
    _shared: Optional[SharedIndex] = PrivateAttr(default=None)
    _release: Any = PrivateAttr(default=None)
    _opening: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, top_n: int = 5, *, index_dir: str | Path | None = None,
                 encoder: str | MultiVectorEncoder | None = None, **kwargs: Any) -> None:
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        if kwargs.get("batch_size", 1) < 1:
            raise ValueError(f"batch_size must be >= 1, got {kwargs['batch_size']}")
        if index_dir is not None and encoder is not None:
            raise ValueError("give index_dir or encoder, not both: an index scores with its own encoder")
        if index_dir is not None:
            IndexConfig.load(Path(index_dir).absolute())  # "not an agree index" now, not at first use
        spec = encoder if encoder is None or isinstance(encoder, str) else None
        super().__init__(top_n=top_n, index_dir=str(Path(index_dir).absolute()) if index_dir else None,
                         encoder=spec, **kwargs)
        self._encoder_obj = None if spec is not None else encoder

    @classmethod
    def class_name(cls) -> str:
        return "AgreeRerank"

    def close(self) -> None:
        """Give back the index opened for ``index_dir`` (the last user closes it)."""
        with self._opening:
            if self._release is not None:
                self._release()
            self._shared = self._release = None

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query = _query(query_bundle)
        if not nodes:
            return []
        with self._event(nodes, query) as event, self._index_for(nodes) as shared:
            score = self._scorer(query, nodes)
            scores = shared.run(score) if shared is not None else score(None)
            return self._ranked(nodes, scores, event)

    async def _apostprocess_nodes(self, nodes: List[NodeWithScore],
                                  query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query = _query(query_bundle)
        if not nodes:
            return []
        with self._event(nodes, query) as event, self._index_for(nodes) as shared:
            score = self._scorer(query, nodes)
            scores = await (shared.arun(score) if shared is not None else asyncio.to_thread(score, None))
            return self._ranked(nodes, scores, event)

    def _scorer(self, query: str, nodes: List[NodeWithScore]) -> Callable[[PageIndex | None], list]:
        """The scoring call, holding plain values only (the index's thread may keep it)."""
        if self.reranker:  # the second stage reads the page images, not the index's vectors
            from agree_core.rerankers import shared_reranker

            refs = [page_ref(n.node) for n in nodes]
            return lambda _index: shared_reranker(self.reranker).score_refs(query, refs, dpi=self.dpi)
        return functools.partial(_scores, query, [page_ref(n.node) for n in nodes],
                                 self._encoder_obj or self.encoder, self.batch_size, self.dpi)

    def _ranked(self, nodes: List[NodeWithScore], scores: list[float | None], event: Any) -> List[NodeWithScore]:
        missing = [n.node.node_id for n, s in zip(nodes, scores) if s is None]
        if missing and self.on_missing_page == "raise":
            raise ValueError(
                f"AgreeRerank cannot score {len(missing)} node(s) {missing[:5]}: a node needs a "
                "page image (ImageNode.image_path or image, Node.image_resource) or metadata "
                "file_path (or source) naming an existing PDF with page (or page_label); see the "
                "log for each reason, or pass on_missing_page='keep'")
        scored = []
        for n, s in zip(nodes, scores):
            if s is not None:
                if self.keep_retrieval_score:
                    n.node.metadata["retrieval_score"] = n.score
                scored.append(NodeWithScore(node=n.node, score=s))
        scored.sort(key=lambda n: n.score, reverse=True)
        out = (scored + [n for n, s in zip(nodes, scores) if s is None])[: self.top_n]
        event.on_end(payload={EventPayload.NODES: out})
        return out

    def _event(self, nodes: List[NodeWithScore], query: str) -> Any:
        return self.callback_manager.event(CBEventType.RERANKING, payload={
            EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.encoder or "agree",
            EventPayload.QUERY_STR: query, EventPayload.TOP_K: self.top_n})

    @contextlib.contextmanager
    def _index_for(self, nodes: List[NodeWithScore]) -> Iterator[SharedIndex | None]:
        """The index to score with (see the class docstring), or ``None``."""
        if self.index_dir is not None:
            with self._opening:
                if self._shared is None:
                    self._shared = SharedIndex.acquire(self.index_dir, create=False)
                    self._release = weakref.finalize(self, self._shared.release)
            yield self._shared
            return
        dirs = {n.node.metadata.get("index_dir") for n in nodes} - {None}
        shared = (open_index(dirs.pop()) if len(dirs) == 1 and self.encoder is None
                  and self._encoder_obj is None else None)
        try:
            yield shared
        finally:
            if shared is not None:
                shared.release()


def _scores(query: str, refs: list[PageRef], encoder: str | MultiVectorEncoder | None,
            batch_size: int, dpi: int, index: PageIndex | None) -> list[float | None]:
    if index is not None:  # in the index's thread
        return PageScorer(index, batch_size=batch_size, dpi=dpi).scores(query, refs)
    with _ENCODING:
        if encoder is None or isinstance(encoder, str):
            encoder = shared_encoder(encoder or DEFAULT_ENCODER)
        return PageScorer(encoder=encoder, batch_size=batch_size, dpi=dpi).scores(query, refs)


def _query(query_bundle: Optional[QueryBundle]) -> str:
    if query_bundle is None:
        raise ValueError("AgreeRerank needs the query: postprocess_nodes(nodes, query_str=...)")
    return query_bundle.query_str
