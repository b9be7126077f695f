"""Rerank pages found by any retriever with MaxSim: stored vectors when the page is in an
index, and the encoder, batched, for the pages that are not.

Both framework rerankers (LlamaIndex's ``AgreeRerank``, Haystack's ``AgreeRanker``) turn
their nodes or Documents into :class:`PageRef`\\ s (:meth:`PageRef.from_meta` reads every
reader's page keys, see :mod:`agree_core.page_identity`), score them with
:class:`PageScorer` and order them with :func:`rank`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from PIL import Image

from agree_core.encoders import DEFAULT_ENCODER, MultiVectorEncoder, load_encoder
from agree_core.page_identity import ON_MISSING_PAGE, missing_file, page_identity
from agree_core.pages import Page, PdfError, iter_pages
from agree_core.pooling import pool_tokens
from agree_core.scoring import maxsim

if TYPE_CHECKING:
    from agree_core.index import PageIndex
    from agree_core.index.records import Record

log = logging.getLogger(__name__)

__all__ = ["PageRef", "PageScorer", "rank", "UnscorableError"]


class UnscorableError(ValueError):
    """Candidates that name no page that can be scored (``on_missing_page="raise"``)."""


@dataclass
class PageRef:
    """A candidate page: a PDF ``source`` and 1-based physical ``page``, and/or a page
    ``image`` (a PIL image or a path). ``key`` is the caller's own identifier, carried through.

    ``vectors`` ``(n, dim)``: the candidate's own embedding, used as given. ``record``: a
    caller-written page (a Haystack Document) to score from its own content when it names no
    PDF (no ``source``); ``record_id``: look its vectors up in the index first. ``reason``: why the
    candidate names no page, when it does not.
    """

    source: str | None = None
    page: int | None = None
    image: Image.Image | str | Path | None = None
    key: object = None
    vectors: torch.Tensor | None = None
    record: "Record | None" = None
    record_id: str | None = None
    reason: str | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None, *, key: object = None,
                  image: Image.Image | str | Path | None = None, **fields: Any) -> "PageRef":
        """The page that a node's or Document's metadata names (any reader's keys:
        :func:`~agree_core.page_identity.page_identity`); raises PageIdentityError on an
        ambiguous page label."""
        ident = page_identity(meta, name=key)
        return cls(ident.source, ident.page, image, key, reason=ident.reason, **fields)

    @property
    def page_key(self) -> tuple[str, int] | None:
        """``(source, page)`` when the candidate is a known PDF page (for one-per-page)."""
        return (self.source, self.page) if self.source and self.page else None


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

    def query_vectors(self, query: str | torch.Tensor) -> torch.Tensor:
        """``(n_tokens, dim)``: text encoded as the index's own search encodes it, or vectors
        checked against the encoder's dimension."""
        if isinstance(query, str):
            if not query.strip():
                raise ValueError("the query is empty")
            q = self.index.encode_queries([query]) if self.index is not None else self.encoder.encode_queries([query])
            return q[0].float()
        q = torch.as_tensor(query).float()
        dim = self.index.config.dim if self.index is not None else self.encoder.dim
        if q.dim() != 2 or q.shape[0] == 0 or q.shape[1] != dim:
            name = self.index.config.encoder if self.index is not None else self.encoder.name
            raise ValueError(f"query vectors must be (n_tokens >= 1, {dim}), one per query token from "
                             f"the encoder {name!r}, got shape {tuple(q.shape)}")
        return q

    def scores(self, query: str | torch.Tensor, candidates: Sequence[PageRef]) -> list[float | None]:
        """One score per candidate, ``None`` for a candidate that names no readable page
        (no image, and no existing PDF + page); the reason is logged."""
        return self.scores_and_reasons(query, candidates)[0]

    def scores_and_reasons(self, query: str | torch.Tensor, candidates: Sequence[PageRef]
                           ) -> tuple[list[float | None], list[str | None]]:
        """:meth:`scores`, and for each unscored candidate the reason (else ``None``)."""
        q = self.query_vectors(query)  # (n_q, dim)
        vectors, reasons = self._vectors(candidates)
        found = [i for i, v in enumerate(vectors) if v is not None]
        for i in found:
            if vectors[i].dim() != 2 or vectors[i].shape[1] != q.shape[1]:
                raise ValueError(f"candidate {candidates[i].key!r}: vectors {tuple(vectors[i].shape)} do not "
                                 f"match the query's dimension {q.shape[1]}; embed pages and queries "
                                 "with the same encoder")
        out: list[float | None] = [None] * len(candidates)
        if found:
            s = maxsim([q], [vectors[i] for i in found], compute_dtype=torch.float32)[0]  # (n_found,)
            for i, value in zip(found, s.tolist()):
                out[i] = value
        return out, reasons

    def page_vectors(self, candidates: Sequence[PageRef]) -> list[torch.Tensor | None]:
        """The vectors ``(n, dim)`` of each candidate's page, ``None`` when it has none."""
        return self._vectors(candidates)[0]

    def _vectors(self, candidates: Sequence[PageRef]) -> tuple[list[torch.Tensor | None], list[str | None]]:
        out: list[torch.Tensor | None] = [None if c.vectors is None else torch.as_tensor(c.vectors).float()
                                          for c in candidates]
        reasons: list[str | None] = [None] * len(candidates)
        if self.index is not None:
            stored = self.index.records.vectors([c.record_id for c, v in zip(candidates, out)
                                                 if v is None and c.record_id])
            for i, c in enumerate(candidates):
                if out[i] is None and c.record_id in stored:
                    out[i] = stored[c.record_id]
            ids = {i: self.index.find_page(c.source, c.page) for i, c in enumerate(candidates)
                   if out[i] is None and c.page_key}
            pages_stored = self.index.page_vectors([pid for pid in ids.values() if pid])
            for i, pid in ids.items():
                if pid in pages_stored:
                    out[i] = pages_stored[pid]
        todo: dict[str, list[int]] = defaultdict(list)  # PDF path -> candidate positions
        pages: list[tuple[int, Page]] = []
        for i, c in enumerate(candidates):
            if out[i] is not None:
                continue
            if c.page_key and Path(c.source).is_file() and Path(c.source).suffix.lower() == ".pdf":
                todo[str(Path(c.source).absolute())].append(i)
            elif c.image is not None:
                img = c.image if isinstance(c.image, Image.Image) else Image.open(c.image)
                pages.append((i, Page.from_image(img, c.source or "", c.page or 1)))
            elif c.record is not None and c.source is None:  # names no PDF: the record is the page
                from agree_core.index.record_pages import record_pages

                pages.append((i, record_pages([c.record])[0]))
            elif c.page_key:
                reasons[i] = (c.reason or missing_file(c.source) if not Path(c.source).is_file()
                              else f"{c.source} is not a PDF file")
            else:
                reasons[i] = c.reason or "names no page"
        for source, positions in todo.items():
            wanted = sorted({candidates[i].page for i in positions})
            try:
                by_no = {p.page_no: p for p in iter_pages(source, dpi=self.dpi, pages=wanted)}
            except (PdfError, ValueError) as e:
                for i in positions:
                    reasons[i] = f"cannot read page {candidates[i].page} of {source}: {e}"
                continue
            pages += [(i, by_no[candidates[i].page]) for i in positions]
        # pages encoded here are pooled as the index pools its own, so both score alike
        factor = getattr(getattr(self.index, "config", None), "pool_factor", 1) if self.index is not None else 1
        for start in range(0, len(pages), self.batch_size):
            batch = pages[start : start + self.batch_size]
            for (i, _), emb in zip(batch, self.encoder.encode_pages([p for _, p in batch])):
                out[i] = pool_tokens(emb.vectors.float(), factor, keep=emb.unpooled)[0] if factor > 1 else emb.vectors
        for i, reason in enumerate(reasons):
            if reason is not None:
                log.warning("cannot score candidate %r: %s", candidates[i].key if candidates[i].key is not None
                            else candidates[i], reason)
        return out, reasons


def rank(candidates: Sequence[PageRef], scores: Sequence[float | None], reasons: Sequence[str | None], *,
         top_n: int, on_missing_page: str = "raise", one_per_page: bool = False,
         threshold: float | None = None, what: str = "node") -> list[int]:
    """Positions of the candidates to return, best first: at most ``top_n``, scored ones by
    score; with ``one_per_page`` only the best of candidates naming the same PDF page (chunks
    of one page found by two retrievers); ``threshold`` drops lower scores. Unscored
    candidates: ``on_missing_page="raise"`` raises :class:`UnscorableError` naming them and
    why, ``"keep"`` puts them last, in their order.
    """
    if on_missing_page not in ON_MISSING_PAGE:
        raise ValueError(f"on_missing_page must be one of {ON_MISSING_PAGE}, got {on_missing_page!r}")
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing and on_missing_page == "raise":
        why: dict[str, list[str]] = {}
        for i in missing:
            why.setdefault(reasons[i] or "no page", []).append(repr(candidates[i].key))
        named = "; ".join(f"{', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}: {reason}"
                          for reason, keys in list(why.items())[:5])
        raise UnscorableError(
            f"cannot score {len(missing)} {what}(s) ({named}). A {what} needs a page image or "
            "metadata naming a PDF page: 'file_path' (or 'source') and 'page' (or 'page_number', "
            "'page_label'); or pass on_missing_page='keep'")
    scored = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: -scores[i])
    if threshold is not None:
        scored = [i for i in scored if scores[i] >= threshold]
    if one_per_page:
        seen: set[tuple[str, int]] = set()
        kept = []
        for i in scored:
            page = candidates[i].page_key
            if page is None or page not in seen:
                kept.append(i)
                if page is not None:
                    seen.add(page)
        scored = kept
    return (scored + (missing if on_missing_page == "keep" else []))[:top_n]
