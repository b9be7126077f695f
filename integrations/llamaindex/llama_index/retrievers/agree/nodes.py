"""agree pages -> LlamaIndex nodes (see :class:`AgreeVisualRetriever` for what they carry),
and :func:`page_nodes`, every page as the same nodes, for other retrievers (BM25) to fuse with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from llama_index.core.schema import ImageNode, NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

from agree_core.index import PageIndex
from agree_core.page_identity import page_label

__all__ = ["search_nodes", "page_node", "page_nodes"]

# metadata a node carries for programs, not for the LLM's prompt or an embedding
_HIDDEN_KEYS = ["doc_id", "file_path", "page_label", "index_dir", "evidence"]


def search_nodes(index: PageIndex, query: str | torch.Tensor, top_k: int, filters: dict[str, Any] | None,
                 candidates: int | None, index_dir: Path) -> list[NodeWithScore]:
    """The top pages for ``query`` (text or token vectors) as nodes (run in the index's
    thread): filters, evidence, page labels and document ids decided where the index is, in
    one search (one request to a served index)."""
    found = index.records.search(query, top_k, filters, candidates=candidates, with_blobs=False,
                                 node_fields=True, location=str(index_dir))
    return [NodeWithScore(node=_node(r, index_dir), score=r.score) for r in found]


def page_node(source: str, page: int, text: str, image: str | None, node_id: str, doc_id: str,
              index_dir: Path | str | None, meta: dict[str, Any] | None = None, *,
              image_url: str | None = None, mime_type: str | None = None,
              label: str | None = None) -> TextNode:
    """One page as a node: an ``ImageNode`` when it has an image (see
    :class:`AgreeVisualRetriever` for what it carries): ``image_url`` for a page that
    ``agree serve`` holds (signed, so that ``resolve_image`` needs no token), else the
    ``image`` file when it exists here. ``label``: the page's printed label, when the index
    gave it (:meth:`PageIndex.page_labels`)."""
    metadata = {**(meta or {}), **page_metadata(source, page, doc_id, label)}
    if index_dir is not None:
        metadata["index_dir"] = str(index_dir)
    kwargs = dict(id_=node_id, text=text, metadata=metadata,
                  excluded_llm_metadata_keys=list(_HIDDEN_KEYS), excluded_embed_metadata_keys=list(_HIDDEN_KEYS),
                  relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)})
    if image_url:
        return ImageNode(image_url=image_url, image_mimetype=mime_type, **kwargs)
    if image and Path(image).is_file():
        return ImageNode(image_path=image, **kwargs)
    return TextNode(**kwargs)


def page_metadata(source: str, page: int, doc_id: str, label: str | None = None) -> dict[str, Any]:
    """The page keys every node carries, in agree's and LlamaIndex's readers' words
    (``label`` read from ``source`` when not given)."""
    if label is None:
        label = page_label(source, page) if source else str(page)
    return {"source": source, "file_path": source, "file_name": Path(source).name if source else "",
            "page": page, "page_label": label, "doc_id": doc_id}


def page_nodes(index: PageIndex, filters: dict[str, Any] | None, index_dir: Path) -> list[TextNode]:
    """Every page of the index matching ``filters``, as the nodes a search returns (run in
    the index's thread): same ids, text, image and metadata, so the same node hash."""
    found = index.records.find(filters, with_blobs=False, node_fields=True, location=str(index_dir))
    return [_node(r, index_dir) for r in found]


def _node(r: Any, index_dir: Path | str) -> TextNode:
    """A record read with ``node_fields`` (``doc_id``, ``page_label``, ``evidence`` from a
    search) as a node."""
    source, page = r.meta.get("source") or "", r.meta.get("page") or 0
    meta = {k: v for k, v in r.meta.items() if k not in ("source", "page")}
    if r.evidence is not None:
        meta["evidence"] = r.evidence
    return page_node(source, page, r.text or "", r.image_path, r.id, r.doc_id or r.id, index_dir, meta,
                     image_url=r.image_url, mime_type=r.mime_type, label=r.page_label)
