"""Haystack retriever over an agree page index: query -> top-k pages by MaxSim."""

from .retriever import AgreeRetriever

__all__ = ["AgreeRetriever"]
