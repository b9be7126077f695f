"""LlamaIndex node postprocessor: rerank pages by MaxSim with agree."""

from llama_index.postprocessor.agree_rerank.base import AgreeRerank

__all__ = ["AgreeRerank"]
