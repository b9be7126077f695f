"""AgreeVisualQueryEngine: retrieved pages -> one chat message with each page's image, text and
evidence -> a multimodal chat LLM -> a Response whose source nodes are the citations."""

from __future__ import annotations

import io
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle
from PIL import Image

from agree_core.evidence import evidence_by_id
from agree_core.generation.pages import DEFAULT_MAX_PIXELS, fit_image
from agree_core.generation.prompt import SYSTEM_PROMPT, page_header, page_notes


class AgreeVisualQueryEngine(CustomQueryEngine):
    """Answers from the page images: the retriever's pages (``ImageNode``s, in rank order) go to
    ``llm`` in one user message, each as a ``[n] file, page p`` header, an ``ImageBlock`` of the
    stored page image (at most ``max_pixels`` pixels) and its text and evidence regions; the
    system message asks for ``[n]`` citations.

    ``Response.source_nodes`` are the pages shown, with ``metadata["evidence"]`` (the regions
    that matched: ``[{"box": [x0, y0, x1, y1], "text", "score"}]``, fractions of the page) when
    the retriever is an ``AgreeVisualRetriever``; ``Response.metadata["citations"]`` lists
    ``{"n", "source", "page", "score", "evidence"}``. ``llm``: any LlamaIndex chat LLM that reads
    ``ImageBlock``s (OpenAI, ``AgreeQwenVL``...). ``query``/``aquery``; ``streaming=True``
    returns a ``StreamingResponse``.

    ```python
    engine = AgreeVisualQueryEngine(retriever=AgreeVisualRetriever("my.idx", top_k=3),
                                    llm=AgreeQwenVL(model="Qwen/Qwen2.5-VL-3B-Instruct"))
    response = engine.query("Which site produced the most electricity?")
    ```
    """

    retriever: BaseRetriever
    llm: LLM
    node_postprocessors: list[BaseNodePostprocessor] = Field(default_factory=list)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    top_evidence: int = 3
    system_prompt: str = SYSTEM_PROMPT
    streaming: bool = False

    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        bundle = QueryBundle(query_str)
        nodes = self.retriever.retrieve(bundle)
        for p in self.node_postprocessors:
            nodes = p.postprocess_nodes(nodes, query_bundle=bundle)
        shared = getattr(self.retriever, "shared", None)
        found = shared.run(evidence_by_id, query_str, _ids(nodes), top=self.top_evidence) if shared and nodes else {}
        messages = self.messages(query_str, nodes, found)
        if self.streaming:
            gen = (r.delta or "" for r in self.llm.stream_chat(messages))
            return StreamingResponse(response_gen=gen, source_nodes=nodes, metadata=_citations(nodes))
        reply = self.llm.chat(messages)
        return Response(response=reply.message.content, source_nodes=nodes, metadata=_citations(nodes))

    async def acustom_query(self, query_str: str) -> Response:
        bundle = QueryBundle(query_str)
        nodes = await self.retriever.aretrieve(bundle)
        for p in self.node_postprocessors:
            nodes = await p.apostprocess_nodes(nodes, query_bundle=bundle)
        shared = getattr(self.retriever, "shared", None)
        found = (await shared.arun(evidence_by_id, query_str, _ids(nodes), top=self.top_evidence)
                 if shared and nodes else {})
        messages = self.messages(query_str, nodes, found)
        reply = await self.llm.achat(messages)
        return Response(response=reply.message.content, source_nodes=nodes, metadata=_citations(nodes))

    def messages(self, query_str: str, nodes: list[NodeWithScore],
                 evidence: dict[str, list] | None = None) -> list[ChatMessage]:
        """The chat messages sent for ``nodes`` (``evidence`` by node id is stored in each node's
        metadata on the way)."""
        if not query_str or not query_str.strip():
            raise ValueError(f"the question must be a non-empty string, got {query_str!r}")
        blocks: list[Any] = [TextBlock(text=f"Question: {query_str.strip()}")]
        for n, nws in enumerate(nodes, start=1):
            node = nws.node
            if not isinstance(node, ImageNode):
                raise ValueError(f"node {node.node_id} is a {type(node).__name__}, not a page ImageNode: "
                                 "retrieve pages with AgreeVisualRetriever")
            md = node.metadata
            if evidence is not None and node.node_id in evidence:
                md["evidence"] = evidence[node.node_id]
                if "evidence" not in node.excluded_embed_metadata_keys:
                    node.excluded_embed_metadata_keys.append("evidence")
            blocks.append(TextBlock(text=page_header(n, md.get("file_name", ""), md.get("page", 0))))
            blocks.append(ImageBlock(image=_jpeg(node, self.max_pixels), image_mimetype="image/jpeg"))
            notes = page_notes(node.text or "", md.get("evidence") or [])
            if notes:
                blocks.append(TextBlock(text=notes))
        return [ChatMessage(role=MessageRole.SYSTEM, content=self.system_prompt),
                ChatMessage(role=MessageRole.USER, blocks=blocks)]


def _ids(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


def _citations(nodes: list[NodeWithScore]) -> dict[str, Any]:
    return {"citations": [{"n": i, "source": n.node.metadata.get("source"), "page": n.node.metadata.get("page"),
                           "score": n.score, "evidence": n.node.metadata.get("evidence", [])}
                          for i, n in enumerate(nodes, start=1)]}


def _jpeg(node: ImageNode, max_pixels: int | None) -> bytes:
    """The node's page image (``image``, else ``image_path``: the index's stored image, else
    ``image_url``: a served index's, signed), scaled to at most ``max_pixels`` pixels, as JPEG."""
    try:
        with Image.open(node.resolve_image()) as img:
            image = fit_image(img.convert("RGB"), max_pixels)
    except (OSError, ValueError) as e:
        raise ValueError(f"the page image of node {node.node_id} cannot be read: {e}") from e
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()

