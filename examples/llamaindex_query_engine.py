"""A LlamaIndex query engine over indexed PDFs: pages ranked by MaxSim, answered by an LLM,
with every source page and its image.

It runs offline: the default encoder ships in a wheel, and the LLM is LlamaIndex's MockLLM
(it echoes its prompt). Put your LLM in its place; a multimodal LLM can read each source
node's ``image_path``.

    pip install -e '.[llamaindex,samples]'
    python examples/llamaindex_query_engine.py                          # the sample PDFs
    python examples/llamaindex_query_engine.py reports/ --index my.idx -q "What was Q3 revenue?"
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.retrievers.agree import AgreeVisualRetriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="*", help="PDF files or folders (default: the sample PDFs)")
    parser.add_argument("--index", help="index directory (default: a temporary one)")
    parser.add_argument("--question", "-q", action="append",
                        help="a question (repeatable; default: the samples' questions)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agree-llamaindex-"))
    pdfs, questions = args.pdfs, args.question
    if not pdfs:
        from agree_core.samples import SAMPLE_QUESTIONS, build_samples

        pdfs = build_samples(work / "pdfs")
        questions = questions or [q for q, _, _ in SAMPLE_QUESTIONS[:3]]
    if not questions:
        parser.error("give at least one --question with your own PDFs")

    with AgreeVisualRetriever.from_pdfs(pdfs, args.index or work / "index", similarity_top_k=2,
                                        progress=True) as retriever:
        engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())  # your LLM here
        for question in questions:
            response = engine.query(question)  # MockLLM answers with its prompt: the pages' text
            print(f"\nQ: {question}\nA: {str(response)[:160]!r}...")
            for n in response.source_nodes:  # ImageNodes: page image, page text, metadata
                md = n.node.metadata
                print(f"   {md['file_name']} p.{md['page']}  score {n.score:.2f}  image {n.node.image_path}")


if __name__ == "__main__":
    main()
