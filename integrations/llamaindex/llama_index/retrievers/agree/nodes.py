"""agree hits -> LlamaIndex nodes (see :class:`AgreeVisualRetriever` for what they carry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.schema import ImageNode, NodeRelationship, NodeWithScore, RelatedNodeInfo

from agree_core.index import Hit, PageIndex

# metadata a node carries for programs, not for the LLM's prompt or an embedding
_HIDDEN_KEYS = ["doc_id", "file_path", "page_label", "index_dir"]


def search_nodes(index: PageIndex, query: str, top_k: int, filters: dict[str, Any] | None,
                 candidates: int | None, index_dir: Path) -> list[NodeWithScore]:
    """The top pages for ``query`` as nodes (run in the index's thread)."""
    hits = index.search(query, top_k, filters, candidates)
    return [NodeWithScore(node=page_node(h, index.page_text(h.page_id), index_dir), score=h.score)
            for h in hits]


def page_node(hit: Hit, text: str, index_dir: Path) -> ImageNode:
    """One hit as an ImageNode (see :class:`AgreeVisualRetriever` for what it carries)."""
    metadata = {
        **hit.meta,
        "source": hit.source, "file_path": hit.source, "file_name": Path(hit.source).name,
        "page": hit.page, "page_label": str(hit.page), "doc_id": hit.doc_id,
        "index_dir": str(index_dir),
    }
    return ImageNode(
        id_=hit.page_id, text=text, image_path=hit.image, metadata=metadata,
        excluded_llm_metadata_keys=list(_HIDDEN_KEYS), excluded_embed_metadata_keys=list(_HIDDEN_KEYS),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
    )
