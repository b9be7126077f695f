"""Haystack ranker: rerank Documents from any retriever by MaxSim."""

from .ranker import AgreeRanker

__all__ = ["AgreeRanker"]
