"""A LlamaIndex query engine over indexed PDFs that answers from the page images: pages ranked
by MaxSim, each page's stored image (with its text and the regions that matched) sent to a
multimodal chat LLM as ImageBlocks, the answer cited by file, page and evidence boxes.

It runs offline with no model: by default the LLM is a stand-in that reports what it was
shown (how many page images, which pages). Pass a real one:

    pip install -e '.[llamaindex,samples]'
    python examples/llamaindex_query_engine.py                                   # the sample PDFs
    python examples/llamaindex_query_engine.py --local Qwen/Qwen2.5-VL-3B-Instruct  # a local VLM (GPU)
    python examples/llamaindex_query_engine.py reports/ --index my.idx -q "What was Q3 revenue?"

Any LlamaIndex chat LLM that reads ImageBlocks works in place of AgreeQwenVL, e.g.
``llama_index.llms.openai.OpenAI(model="gpt-4o-mini")``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any, Sequence

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    ImageBlock,
    LLMMetadata,
)
from llama_index.core.llms.custom import CustomLLM
from llama_index.query_engine.agree import AgreeVisualQueryEngine
from llama_index.retrievers.agree import AgreeVisualRetriever


class ShowWhatISee(CustomLLM):
    """An offline stand-in for a multimodal LLM: answers with what it was given."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, model_name="show-what-i-see")

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        blocks = messages[-1].blocks
        images = sum(isinstance(b, ImageBlock) for b in blocks)
        headers = [b.text for b in blocks if getattr(b, "text", "").startswith("[")]
        return ChatResponse(message=ChatMessage(role="assistant",
                                                content=f"I was shown {images} page images: {'; '.join(headers)}"))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="(chat only)")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        yield self.complete(prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="*", help="PDF files or folders (default: the sample PDFs)")
    parser.add_argument("--index", help="index directory (default: a temporary one)")
    parser.add_argument("--question", "-q", action="append",
                        help="a question (repeatable; default: the samples' questions)")
    parser.add_argument("--local", metavar="ID_OR_PATH",
                        help="answer with a local Qwen2.5-VL / Qwen2-VL instruct model (AgreeQwenVL)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agree-llamaindex-"))
    pdfs, questions = args.pdfs, args.question
    if not pdfs:
        from agree_core.samples import SAMPLE_QUESTIONS, build_samples

        pdfs = build_samples(work / "pdfs")
        questions = questions or [q for q, _, _ in SAMPLE_QUESTIONS[:3]]
    if not questions:
        parser.error("give at least one --question with your own PDFs")
    if args.local:
        from llama_index.llms.agree_qwen_vl import AgreeQwenVL

        llm = AgreeQwenVL(model=args.local)
    else:
        llm = ShowWhatISee()

    with AgreeVisualRetriever.from_pdfs(pdfs, args.index or work / "index", similarity_top_k=2,
                                        progress=True) as retriever:
        engine = AgreeVisualQueryEngine(retriever=retriever, llm=llm, max_pixels=768 * 28 * 28)
        for question in questions:
            response = engine.query(question)  # engine.aquery(...) in async code
            print(f"\nQ: {question}\nA: {response}")
            for c in response.metadata["citations"]:  # the pages shown, with the regions that matched
                boxes = ", ".join(f"{e['box']} {e['text']!r}" for e in c["evidence"][:2])
                print(f"   [{c['n']}] {Path(c['source']).name} p.{c['page']}  score {c['score']:.2f}  {boxes}")
        asyncio.run(engine.aquery(questions[0]))  # the same, without blocking an event loop


if __name__ == "__main__":
    main()
