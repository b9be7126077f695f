"""LlamaIndex nodes -> the pages they name, as agree_core PageRefs (see :class:`AgreeRerank`)."""

from __future__ import annotations

import base64
from io import BytesIO
from pathlib import Path

from llama_index.core.schema import BaseNode, ImageNode
from PIL import Image

from agree_core.rerank import PageRef


def page_ref(node: BaseNode) -> PageRef:
    """The page a node names, for agree_core's PageScorer: its image, and the PDF page its
    metadata names in any reader's keys (:mod:`agree_core.page_identity`)."""
    return PageRef.from_meta(node.metadata, key=node.node_id, image=_image(node))


def _image(node: BaseNode) -> Image.Image | str | None:
    if isinstance(node, ImageNode):
        path, data = node.image_path, node.image
    else:
        resource = getattr(node, "image_resource", None)
        path, data = (resource.path, resource.data) if resource is not None else (None, None)
    if path and Path(path).is_file():
        return str(path)
    if data:
        return Image.open(BytesIO(base64.b64decode(data)))
    return None
