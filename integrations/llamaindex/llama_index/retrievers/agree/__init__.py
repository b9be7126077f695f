"""LlamaIndex retriever over an agree page index (pages ranked by MaxSim, as ImageNodes)."""

from llama_index.retrievers.agree.base import AgreeVisualRetriever
from llama_index.retrievers.agree.filters import to_agree_filters

__all__ = ["AgreeVisualRetriever", "to_agree_filters"]
