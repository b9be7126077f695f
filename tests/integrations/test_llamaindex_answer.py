"""Answering with the pages in LlamaIndex: AgreeVisualQueryEngine hands the retriever's top
pages to the chat LLM as ImageBlocks, in rank order, and returns them as cited source nodes
with their evidence. A recording LLM stands in for the model."""

from __future__ import annotations

import asyncio

from conftest import copy_index
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest
from PIL import Image

pytest.importorskip("llama_index.core")
try:
    import llama_index.query_engine.agree  # noqa: F401
except ImportError:  # a checkout that is not installed with the extra
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "llamaindex"))

from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    ImageBlock,
    LLMMetadata,
    TextBlock,
)
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from llama_index.query_engine.agree import AgreeVisualQueryEngine  # noqa: E402
from llama_index.retrievers.agree import AgreeVisualRetriever  # noqa: E402

from agree_core.generation import fit_image  # noqa: E402

QUESTION = "Which solar site produced the most electricity?"


class RecordingLLM(CustomLLM):
    """Keeps the messages of every chat and answers citing page [1]."""

    calls: list = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, model_name="recording")

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.calls.append(list(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content="Hollow Creek [1]."))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        self.calls.append(list(messages))
        return (ChatResponse(message=ChatMessage(role="assistant", content=t), delta=t)
                for t in ("Hollow ", "Creek ", "[1]."))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise AssertionError("the engine chats; it never sends a bare prompt")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise AssertionError("the engine chats; it never sends a bare prompt")


@pytest.fixture
def retriever(tmp_path, sample_index):
    copy_index(sample_index, tmp_path / "index")
    with AgreeVisualRetriever(tmp_path / "index", top_k=3) as r:
        yield r


def check_pages_sent(messages: list[ChatMessage], nodes: list[NodeWithScore]) -> None:
    """Exactly these pages, in this order: a header, the stored image (scaled), its notes."""
    system, user = messages
    assert system.role.value == "system" and "Cite each page" in system.content
    blocks = user.blocks
    assert isinstance(blocks[0], TextBlock) and blocks[0].text == f"Question: {QUESTION}"
    images = [b for b in blocks if isinstance(b, ImageBlock)]
    headers = [b.text for b in blocks if isinstance(b, TextBlock) and b.text.startswith("[")]
    assert len(images) == len(nodes) == 3
    for n, (img, nws) in enumerate(zip(images, nodes), start=1):
        md = nws.node.metadata
        assert headers[n - 1] == f"[{n}] {md['file_name']}, page {md['page']}"
        stored = Image.open(nws.node.image_path)  # the image the index wrote at indexing time
        assert Image.open(img.resolve_image()).size == fit_image(stored.convert("RGB"), 602112).size
    kinds = [type(b).__name__ for b in blocks]
    assert kinds == ["TextBlock"] + ["TextBlock", "ImageBlock", "TextBlock"] * 3


def test_the_engine_sends_exactly_the_top_pages_as_images_in_order_with_citations(retriever):
    llm = RecordingLLM(calls=[])
    engine = AgreeVisualQueryEngine(retriever=retriever, llm=llm)
    expected = [n.node.node_id for n in retriever.retrieve(QUESTION)]
    response = engine.query(QUESTION)
    assert str(response) == "Hollow Creek [1]." and len(llm.calls) == 1
    nodes = response.source_nodes
    assert [n.node.node_id for n in nodes] == expected
    assert (nodes[0].node.metadata["file_name"], nodes[0].node.metadata["page"]) == ("report.pdf", 3)
    check_pages_sent(llm.calls[0], nodes)
    best = nodes[0].node.metadata["evidence"]
    assert best and "electricity" in [e["text"].lower().strip(".,") for e in best]  # the matched words
    assert all(0 <= v <= 1 for n in nodes for e in n.node.metadata["evidence"] for v in e["box"])
    citations = response.metadata["citations"]
    assert [(c["n"], c["source"], c["page"]) for c in citations] == [
        (i, n.node.metadata["source"], n.node.metadata["page"]) for i, n in enumerate(nodes, start=1)]
    assert citations[0]["evidence"] == best
    notes = llm.calls[0][1].blocks[3].text  # page 1's text and its evidence regions, after its image
    assert notes.startswith("Page text: ") and f'"{best[0]["text"]}"' in notes


def test_the_engine_answers_async_and_streams_the_same_pages(retriever):
    llm = RecordingLLM(calls=[])
    engine = AgreeVisualQueryEngine(retriever=retriever, llm=llm)
    sync = engine.query(QUESTION)
    response = asyncio.run(engine.aquery(QUESTION))
    assert str(response) == "Hollow Creek [1]."
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in sync.source_nodes]
    check_pages_sent(llm.calls[1], response.source_nodes)
    assert response.source_nodes[0].node.metadata["evidence"] == sync.source_nodes[0].node.metadata["evidence"]

    streaming = AgreeVisualQueryEngine(retriever=retriever, llm=llm, streaming=True).query(QUESTION)
    assert "".join(streaming.response_gen) == "Hollow Creek [1]."
    check_pages_sent(llm.calls[2], streaming.source_nodes)


def test_nodes_that_are_not_pages_are_refused(retriever):
    engine = AgreeVisualQueryEngine(retriever=retriever, llm=RecordingLLM(calls=[]))
    with pytest.raises(ValueError, match="is a TextNode, not a page ImageNode"):
        engine.messages(QUESTION, [NodeWithScore(node=TextNode(text="x"), score=1.0)])
    with pytest.raises(ValueError, match="the question must be a non-empty string"):
        engine.messages("  ", [])
