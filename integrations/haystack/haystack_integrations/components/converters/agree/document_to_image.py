"""AgreeDocumentToImageContent: retrieved page Documents -> ImageContents a vision chat model
reads, each carrying its citation; with the store, the pages' evidence boxes too."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path
from typing import Any

from haystack import Document, component, default_from_dict
from haystack.dataclasses import ImageContent
from PIL import Image

from agree_core.evidence import evidence_by_id
from agree_core.generation.pages import DEFAULT_MAX_PIXELS, fit_image
from haystack_integrations.document_stores.agree import AgreeDocumentStore
from haystack_integrations.document_stores.agree._convert import init_to_dict


@component
class AgreeDocumentToImageContent:
    """Turns page Documents into ``ImageContent`` parts for a ``ChatPromptBuilder`` template,
    in the Documents' order, from the page image the index stored (``Document.blob``, or the
    image file it names): nothing is rendered again. Each image is scaled down to at most
    ``max_pixels`` pixels.

    Every ``ImageContent.meta`` holds the page's citation: ``source``, ``file_name``, ``page``,
    ``score``, ``document_id`` and ``evidence``. With ``document_store`` and a ``query``, the
    evidence is the list of regions of the page that matched the query,
    ``[{"box": [x0, y0, x1, y1], "text": ..., "score": ...}]`` (boxes as fractions of the page),
    and the returned ``documents`` carry it in ``meta["evidence"]`` (for ``AnswerBuilder``).

    ```python
    to_images = AgreeDocumentToImageContent(document_store=store, max_pixels=768 * 28 * 28)
    out = to_images.run(documents=retrieved, query="solar output in 2023")
    out["image_contents"][0].meta   # {"source": "/abs/report.pdf", "page": 3, "evidence": [...], ...}
    ```

    :param document_store: the store the Documents come from (for evidence boxes); optional.
    :param max_pixels: the largest image sent, in pixels (``None``: as stored).
    :param detail: OpenAI's image detail (``auto``, ``high``, ``low``), or ``None``.
    :param top_evidence: evidence regions kept per page.
    """

    def __init__(self, document_store: AgreeDocumentStore | None = None, *,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, detail: str | None = None,
                 top_evidence: int = 3):
        if document_store is not None and not isinstance(document_store, AgreeDocumentStore):
            raise ValueError(f"document_store must be an AgreeDocumentStore, got {type(document_store).__name__}")
        if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 28 * 28):
            raise ValueError(f"max_pixels must be an integer >= {28 * 28} or None, got {max_pixels!r}")
        if detail not in (None, "auto", "high", "low"):
            raise ValueError(f"detail must be 'auto', 'high', 'low' or None, got {detail!r}")
        if not isinstance(top_evidence, int) or top_evidence < 1:
            raise ValueError(f"top_evidence must be an integer >= 1, got {top_evidence!r}")
        self.document_store = document_store
        self.max_pixels = max_pixels
        self.detail = detail
        self.top_evidence = top_evidence

    def warm_up(self) -> None:
        if self.document_store is not None:
            self.document_store.warm_up()

    def to_dict(self) -> dict[str, Any]:
        return init_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreeDocumentToImageContent":
        return default_from_dict(cls, data)

    @component.output_types(image_contents=list[ImageContent], documents=list[Document])
    def run(self, documents: list[Document], query: str | None = None) -> dict[str, Any]:
        """One ``ImageContent`` per Document, in order.

        :param documents: page Documents (from ``AgreeRetriever`` or ``AgreeRanker``).
        :param query: the question; with ``document_store``, evidence boxes are computed for it.
        :raises ValueError: a Document without a page image.
        """
        found: dict[str, list] = {}
        if self.document_store is not None and query and documents:
            ids = [d.id for d in documents]
            found = self.document_store.shared.run(evidence_by_id, query, ids, top=self.top_evidence)
        return self._convert(documents, found)

    @component.output_types(image_contents=list[ImageContent], documents=list[Document])
    async def run_async(self, documents: list[Document], query: str | None = None) -> dict[str, Any]:
        """:meth:`run` without blocking the event loop while evidence is computed."""
        found: dict[str, list] = {}
        if self.document_store is not None and query and documents:
            ids = [d.id for d in documents]
            found = await self.document_store.shared.arun(evidence_by_id, query, ids, top=self.top_evidence)
        return self._convert(documents, found)

    def _convert(self, documents: list[Document], found: dict[str, list]) -> dict[str, Any]:
        images, out_docs = [], []
        for doc in documents:
            evidence = found.get(doc.id, doc.meta.get("evidence", []))
            source = str(doc.meta.get("source") or doc.meta.get("file_path") or "")
            citation = {"source": source, "file_name": Path(source).name if source else "",
                        "page": doc.meta.get("page"), "score": doc.score, "document_id": doc.id,
                        "evidence": evidence}
            buf = io.BytesIO()
            fit_image(_page_image(doc), self.max_pixels).save(buf, format="JPEG", quality=90)
            images.append(ImageContent(base64.b64encode(buf.getvalue()).decode("ascii"), mime_type="image/jpeg",
                                       detail=self.detail, meta=citation, validation=False))
            out_docs.append(dataclasses.replace(doc, meta={**doc.meta, "evidence": evidence}))
        return {"image_contents": images, "documents": out_docs}


def _page_image(doc: Document) -> Image.Image:
    """The page image a Document carries (its blob), or the stored image file its blob names."""
    data = doc.blob.data if doc.blob is not None else None
    path = (doc.blob.meta.get("file_path") if doc.blob is not None else None) or doc.meta.get("image_path")
    if not data and path and Path(path).is_file():
        data = Path(path).read_bytes()
    if not data:
        raise ValueError(f"document {doc.id} ({doc.meta.get('source')}, page {doc.meta.get('page')}) has no "
                         "page image: retrieve pages from an AgreeDocumentStore with include_images=True")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except OSError as e:
        raise ValueError(f"document {doc.id} holds a blob that is not an image ({e})") from e
