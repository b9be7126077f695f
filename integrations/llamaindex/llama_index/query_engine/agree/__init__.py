"""A LlamaIndex query engine that answers from page images, with citations."""

from llama_index.query_engine.agree.base import AgreeVisualQueryEngine

__all__ = ["AgreeVisualQueryEngine"]
