"""Rerank pages found by any retriever with MaxSim: stored vectors when the page is in an
index, and the encoder, batched, for the pages that are not."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from PIL import Image

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder, load_encoder
from agree_core.pages import Page, PdfError, iter_pages
from agree_core.scoring import maxsim

if TYPE_CHECKING:
    from agree_core.index import PageIndex

log = logging.getLogger(__name__)

__all__ = ["PageRef", "PageScorer"]


@dataclass
class PageRef:
    """A candidate page: a PDF ``source`` and 1-based ``page``, and/or a page ``image``
    (a PIL image or a path). ``key`` is the caller's own identifier, carried through."""

    source: str | None = None
    page: int | None = None
    image: Image.Image | str | Path | None = None
    key: object = None


class PageScorer:
    """MaxSim scores of candidate pages for a query.

    Args:
        index: an open :class:`~agree_core.index.PageIndex`; pages it holds are scored from
            their stored vectors (no encoding), and its encoder encodes the rest.
        encoder: a registry spec or an encoder, when there is no index (default text-layer).
        batch_size: pages encoded per forward pass.
        dpi: render resolution for pages read from their PDF.
    """

    def __init__(self, index: "PageIndex | None" = None,
                 encoder: str | MultiVectorEncoder | None = None, *, batch_size: int = 16,
                 dpi: int = 100):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if index is not None and encoder is not None:
            raise ValueError("give an index or an encoder, not both: an index scores with its own encoder")
        self.index = index
        self._encoder = encoder if not isinstance(encoder, str) else None
        self._spec = encoder if isinstance(encoder, str) else DEFAULT_ENCODER
        self.batch_size = batch_size
        self.dpi = dpi

    @property
    def encoder(self) -> MultiVectorEncoder:
        if self.index is not None:
            return self.index.encoder
        if self._encoder is None:
            self._encoder = load_encoder(self._spec)
        return self._encoder

    def scores(self, query: str, candidates: Sequence[PageRef]) -> list[float | None]:
        """One score per candidate, ``None`` for a candidate that names no readable page
        (no image, and no existing PDF + page); the reason is logged."""
        vectors = self.page_vectors(candidates)
        # with an index, the query is weighted exactly as the index's own search weights it
        q = self.index.encode_queries([query]) if self.index is not None else self.encoder.encode_queries([query])
        found = [i for i, v in enumerate(vectors) if v is not None]
        out: list[float | None] = [None] * len(candidates)
        if found:
            s = maxsim(q, [vectors[i] for i in found])[0]  # (n_found,)
            for i, value in zip(found, s.tolist()):
                out[i] = value
        return out

    def page_vectors(self, candidates: Sequence[PageRef]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = [None] * len(candidates)
        todo: dict[str, list[int]] = defaultdict(list)  # PDF path -> candidate positions
        images: list[int] = []
        if self.index is not None:
            ids = {i: self.index.find_page(c.source, c.page) for i, c in enumerate(candidates)
                   if c.source and c.page}
            stored = self.index.page_vectors([pid for pid in ids.values() if pid])
            for i, pid in ids.items():
                if pid in stored:
                    out[i] = stored[pid]
        for i, c in enumerate(candidates):
            if out[i] is not None:
                continue
            if c.source and c.page and Path(c.source).is_file() and Path(c.source).suffix.lower() == ".pdf":
                todo[str(Path(c.source).absolute())].append(i)
            elif c.image is not None:
                images.append(i)
            else:
                log.warning("cannot score candidate %r: no page image and no existing PDF with a page number",
                            c.key if c.key is not None else c)
        pages: list[tuple[int, Page]] = []
        for source, positions in todo.items():
            wanted = sorted({candidates[i].page for i in positions})
            try:
                by_no = {p.page_no: p for p in iter_pages(source, dpi=self.dpi, pages=wanted)}
            except (PdfError, ValueError) as e:
                log.warning("cannot score pages of %s: %s", source, e)
                continue
            pages += [(i, by_no[candidates[i].page]) for i in positions]
        for i in images:
            img = candidates[i].image
            img = img if isinstance(img, Image.Image) else Image.open(img)
            pages.append((i, Page.from_image(img, candidates[i].source or "", candidates[i].page or 1)))
        for start in range(0, len(pages), self.batch_size):
            batch = pages[start : start + self.batch_size]
            for (i, _), emb in zip(batch, self.encoder.encode_pages([p for _, p in batch])):
                out[i] = emb.vectors
        return out
