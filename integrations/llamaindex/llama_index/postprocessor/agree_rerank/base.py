"""AgreeRerank: rerank nodes from any retriever by MaxSim over their pages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, List, Literal, Optional

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder
from agree_core.index import PageIndex
from agree_core.index.shared import SharedIndex, require_index, shared_encoder
from agree_core.rerank import PageRef, PageScorer, rank
from llama_index.postprocessor.agree_rerank.refs import page_ref
from llama_index.retrievers.agree.base import open_index, query_of

dispatcher = get_dispatcher(__name__)

_ENCODING = threading.Lock()  # scoring without an index: one encoder call at a time


class AgreeRerank(BaseNodePostprocessor):
    """Rerank nodes by the MaxSim score of their pages for the query (agree_core's
    :class:`~agree_core.rerank.PageScorer`).

    A node names its page by metadata, in the words of whichever reader made it: the PDF by
    ``file_path`` (or ``source``), the page by ``page`` (physical, 1-based; the retriever's),
    PyMuPDFReader's numeric ``source``, or PDFReader's ``page_label``, the printed label
    (``"iv"``, ``"3"``) looked up in the PDF's own page labels; a label printed on two pages
    is an error naming the node (:mod:`agree_core.page_identity`). Or by an image
    (``ImageNode.image_path`` or base64 ``image``, or ``Node.image_resource`` with a path or
    data; URLs are not fetched).

    Pages held by an index are scored from their stored vectors (a page of any node whose PDF
    is indexed, whatever retriever found it); the others are encoded in batches of
    ``batch_size`` by the index's encoder. The index: ``index_dir`` if given; else, with no
    ``encoder``, the one named by the nodes' ``index_dir`` metadata when an
    :class:`AgreeVisualRetriever` of this process holds it open (the nodes came from it);
    else none, and ``encoder`` (default ``text-layer``) encodes every page.

    ``on_missing_page``: ``"raise"`` (default) raises ``ValueError`` naming the nodes that
    have no usable page and why; ``"keep"`` passes them through after the scored nodes, with
    their own scores, within ``top_n``. ``one_per_page``: keep only the best node of each
    PDF page (chunks of one page, or the same page from two fused retrievers).

    The query is ``query_str``, or ``QueryBundle.embedding`` when it holds the query's token
    vectors from the same encoder (a list of vectors); ``custom_embedding_strs`` are scored
    as one query. Emits LlamaIndex's ``ReRankStartEvent`` / ``ReRankEndEvent`` and the
    ``RERANKING`` callback event. Unknown arguments (``top_k``: say ``top_n``) are refused.
    """

    model_config = ConfigDict(extra="forbid")

    top_n: int = Field(default=5, description="Number of nodes to return, best first.")
    index_dir: Optional[str] = Field(default=None, description="An agree index to score from.")
    encoder: Optional[str] = Field(default=None, description="Encoder spec without an index.")
    batch_size: int = Field(default=16, description="Pages encoded per forward pass.")
    dpi: int = Field(default=100, description="Render resolution of pages read from PDFs.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep each node's previous score in metadata['retrieval_score'].")
    on_missing_page: Literal["raise", "keep"] = Field(
        default="raise", description="Nodes with no usable page: raise, or keep them last.")
    one_per_page: bool = Field(default=False, description="Keep only the best node of each PDF page.")

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
            require_index(index_dir)  # "no agree index at PATH" now, not at the first query
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

    @dispatcher.span
    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query = query_of(query_bundle, "AgreeRerank needs the query: postprocess_nodes(nodes, query_str=...)")
        if not nodes:
            return []
        with self._event(nodes, query_bundle) as event, self._index_for(nodes) as shared:
            score, refs = self._scorer(query, nodes)
            scored = shared.run(score) if shared is not None else score(None)
            return self._ranked(nodes, refs, scored, event)

    @dispatcher.span
    async def _apostprocess_nodes(self, nodes: List[NodeWithScore],
                                  query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        query = query_of(query_bundle, "AgreeRerank needs the query: postprocess_nodes(nodes, query_str=...)")
        if not nodes:
            return []
        with self._event(nodes, query_bundle) as event, self._index_for(nodes) as shared:
            score, refs = self._scorer(query, nodes)
            scored = await (shared.arun(score) if shared is not None else asyncio.to_thread(score, None))
            return self._ranked(nodes, refs, scored, event)

    def _scorer(self, query: Any, nodes: List[NodeWithScore]) -> tuple[Callable[[PageIndex | None], tuple], list]:
        """The scoring call, holding plain values only (the index's thread may keep it)."""
        refs = [page_ref(n.node) for n in nodes]
        return functools.partial(_scores, query, refs, self._encoder_obj or self.encoder,
                                 self.batch_size, self.dpi), refs

    def _ranked(self, nodes: List[NodeWithScore], refs: list[PageRef], scored: tuple,
                event: Any) -> List[NodeWithScore]:
        scores, reasons = scored
        order = rank(refs, scores, reasons, top_n=self.top_n, on_missing_page=self.on_missing_page,
                     one_per_page=self.one_per_page, what="node")
        out = []
        for i in order:
            n = nodes[i]
            if scores[i] is None:
                out.append(n)
                continue
            if self.keep_retrieval_score:
                n.node.metadata["retrieval_score"] = n.score
            out.append(NodeWithScore(node=n.node, score=scores[i]))
        event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    def _event(self, nodes: List[NodeWithScore], query_bundle: QueryBundle) -> Any:
        model = self.encoder or "agree"
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=model))
        return self.callback_manager.event(CBEventType.RERANKING, payload={
            EventPayload.NODES: nodes, EventPayload.MODEL_NAME: model,
            EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: self.top_n})

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


def _scores(query: Any, refs: list[PageRef], encoder: str | MultiVectorEncoder | None,
            batch_size: int, dpi: int, index: PageIndex | None) -> tuple[list, list]:
    if index is not None:  # in the index's thread
        return PageScorer(index, batch_size=batch_size, dpi=dpi).scores_and_reasons(query, refs)
    with _ENCODING:
        if encoder is None or isinstance(encoder, str):
            encoder = shared_encoder(encoder or DEFAULT_ENCODER)
        return PageScorer(encoder=encoder, batch_size=batch_size, dpi=dpi).scores_and_reasons(query, refs)
