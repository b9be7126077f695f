"""Second-stage rerankers that read the query and the page image together.

``load_reranker("jina-m0")`` (the published ``jinaai/jina-reranker-m0``) or
``load_reranker("jina-m0:PATH_OR_ID")``; used by ``agree search --rerank MODEL[:CKPT]`` and
offered by the LlamaIndex and Haystack rerankers.
"""

from agree_core.rerankers.vlm import RERANKERS, VLMReranker, load_reranker, rerank_batch, shared_reranker

__all__ = ["VLMReranker", "load_reranker", "shared_reranker", "rerank_batch", "RERANKERS"]
