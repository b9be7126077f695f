"""LlamaIndex nodes -> the pages they name, as agree_core PageRefs (see :class:`AgreeRerank`)."""

from __future__ import annotations

import base64
from io import BytesIO
from pathlib import Path
from typing import Any

from llama_index.core.schema import BaseNode, ImageNode
from PIL import Image

from agree_core.rerank import PageRef


def page_ref(node: BaseNode) -> PageRef:
    """The page a node names (see :class:`AgreeRerank`), for agree_core's PageScorer."""
    md = node.metadata or {}
    source = md.get("file_path") or md.get("source")
    return PageRef(source=str(source) if source else None,
                   page=_page_number(md.get("page", md.get("page_label"))),
                   image=_image(node), key=node.node_id)


def _page_number(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


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
