"""Evidence: the places on a page that made it match a query, as data a person can read.

A hit's evidence is a list of ``{"box": [x0, y0, x1, y1], "text": ..., "score": ...}``, best
first, at most ``top`` of them (:data:`DEFAULT_TOP`). ``box`` is a fraction of the page
(x right, y down, as :class:`agree_core.pages.Word` boxes; ``0 <= x0 < x1 <= 1``, the same
for y); ``score`` is the part of the page's MaxSim score that the place holds; ``text``:

- pages whose vectors are tied to words (the text-layer encoders, pages with a text layer or
  OCR): one entry per matched word, ``text`` the word and ``box`` its box;
- visual encoders (one vector per image patch): the matched patches, merged into one region
  where they touch, and ``text`` is always ``null`` (``None``): a patch has no text.

Every query token adds its best similarity (when positive) to the vector it matched, so the
scores of all places sum to the page's MaxSim score less the tokens that matched nothing on
the grid (the text-layer default's window part too: a window's sentence vector has no cell,
see ``TextLayerConfig.sentence_weight``). A page is word-tied when every cell holding a vector holds a word's centre.

On a pooled index (``pool_factor > 1``) one stored vector stands for several tokens (its
``pool_of`` group) and they all score alike: the place a query token matched is the group's
first token on a word the query names, else the group's first token. Of several words in one
cell, one the query names is credited, else the longest. The scores are the same either way;
only the word they are credited to changes.

The index side (:func:`evidence_by_id`) reads only the hits' own points: vectors, cells and
the word boxes written at indexing time (``payload["words"]``, :func:`word_rows`); indexes
written before those were stored read the words from the PDF again (slower).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from agree_core.encoders.base import PageEmbedding, cell_of
from agree_core.pages import Word

if TYPE_CHECKING:
    from agree_core.index import PageIndex

log = logging.getLogger(__name__)

__all__ = ["evidence", "evidence_by_id", "evidence_batch", "asked_words", "PageCache", "StoredPage", "word_rows",
           "stored_words", "page_words", "DEFAULT_TOP"]

DEFAULT_TOP = 8  # a hit's evidence entries: about one per content word of a question
_MIN_SIDE = 1e-4  # a zero-width word box still gets a drawable, strictly ordered box


def evidence(query: torch.Tensor, page: PageEmbedding, words: Sequence[Word] | None = None, *,
             top: int = DEFAULT_TOP, gap: int = 0, pool_of: Sequence[int] | None = None,
             asked: str | None = None) -> list[dict[str, Any]]:
    """The ``top`` places of ``page`` that match ``query`` most, best first.

    Args:
        query: ``(n_q_tokens, dim)`` query vectors, as the index scores them (IDF-weighted).
        page: the page's stored vectors, grid and cells.
        words: the page's words with their boxes; ``None`` or words the vectors are not
            tied to: patches, with ``text`` ``None``.
        top: entries kept (``>= 1``).
        gap: patches only: empty cells allowed between two cells of one region (``>= 0``;
            ``0``: cells that touch, 8-neighbours).
        pool_of: a pooled page's ``pool_of`` (the stored vector of each of ``page``'s tokens):
            ``page.vectors`` are then one per token (``pooled[pool_of]``, as
            :meth:`~agree_core.index.PageIndex.page_embedding` gives them).
        asked: the query's text, whose words are credited first (a pooled group's token, a
            word among the words of one cell).

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> emb = PageEmbedding(torch.tensor([[1.0, 0.0], [0.0, 0.5]]), (4, 4), torch.tensor([0, 15]))
    >>> evidence(q, emb)
    [{'box': [0.0, 0.0, 0.25, 0.25], 'text': None, 'score': 1.0}, {'box': [0.75, 0.75, 1.0, 1.0], 'text': None, 'score': 0.5}]
    >>> evidence(q, emb, [Word("solar", (0.05, 0.1, 0.2, 0.15)), Word("wind", (0.8, 0.8, 0.9, 0.85))])[0]
    {'box': [0.05, 0.1, 0.2, 0.15], 'text': 'solar', 'score': 1.0}
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    return _evidence(query, StoredPage.of(page, words, pool_of), top, gap, asked_words(asked))


class StoredPage:
    """A page ready for :func:`evidence`: its vectors as float32 numpy, its cells, and its
    words by cell, prepared once however many queries ask (a search's hits, a server's
    :class:`PageCache`)."""

    __slots__ = ("vectors", "cells", "grid", "by_cell", "word_tied", "nbytes", "members", "cell_norms",
                 "longest", "boxes")

    def __init__(self, vectors: np.ndarray, cells: list[int], grid: tuple[int, int],
                 words: Sequence[Word] | None, *, pool_of: Sequence[int] | None = None):
        """``vectors``: as stored, one per token (``cells``), or on a pooled page one per
        group of tokens, ``pool_of`` giving each token's vector."""
        self.vectors, self.cells, self.grid = vectors, cells, grid
        self.by_cell = _words_by_cell(words or (), grid)
        # what every query asks of a cell, prepared once: its words as asked_words compares
        # them, its longest word (the one credited when the query names none), each word's box
        self.cell_norms = {c: frozenset(_norm(w.text) for w in ws) for c, ws in self.by_cell.items()}
        self.longest = {c: max(ws, key=lambda w: len(w.text)) for c, ws in self.by_cell.items()}
        self.boxes = {id(w): _box(w.box) for ws in self.by_cell.values() for w in ws}
        on_grid = {c for c in cells if c >= 0}
        self.word_tied = bool(self.by_cell) and on_grid <= self.by_cell.keys()
        self.members: list[list[int]] | None = None  # pooled: the tokens of each stored vector, in order
        if pool_of is not None:
            if len(pool_of) != len(cells):
                raise ValueError(f"pool_of has {len(pool_of)} entries for {len(cells)} tokens")
            self.members = [[] for _ in range(len(vectors))]
            for i, g in enumerate(pool_of):
                self.members[int(g)].append(i)
        self.nbytes = vectors.nbytes + 64 * len(cells) + 200 * sum(map(len, self.by_cell.values()))

    @classmethod
    def of(cls, page: PageEmbedding, words: Sequence[Word] | None,
           pool_of: Sequence[int] | None = None) -> "StoredPage":
        """``page``'s vectors are one per token; with ``pool_of`` they are a pooled page's
        (``pooled[pool_of]``), kept once per stored vector."""
        vectors = np.ascontiguousarray(page.vectors.detach().float().numpy())
        if pool_of is not None:
            group = np.asarray(pool_of, dtype=np.int64)
            if len(group) != len(vectors):
                raise ValueError(f"pool_of has {len(group)} entries for {len(vectors)} vectors")
            first = np.full(int(group.max()) + 1 if len(group) else 0, -1, dtype=np.int64)
            first[group[::-1]] = np.arange(len(group))[::-1]  # the first token of each stored vector
            vectors = np.ascontiguousarray(vectors[first])
        return cls(vectors, page.cells.tolist(), tuple(page.grid), words, pool_of=pool_of)

    def token(self, vector: int, asked: frozenset[str]) -> int:
        """The token credited with a match on stored vector ``vector``: unpooled, its own; on
        a pooled page, the group's first token on a word of ``asked``, else its first token."""
        if self.members is None:
            return vector
        group = self.members[vector]
        if asked:
            for i in group:
                norms = self.cell_norms.get(self.cells[i])
                if norms and not asked.isdisjoint(norms):
                    return i
        return group[0]

    def word(self, cell: int, asked: frozenset[str]) -> Word:
        """The word of ``cell`` credited with a match: one ``asked`` names, else the longest
        (the first of equals, in the page's order)."""
        words = self.by_cell[cell]
        if len(words) > 1 and asked and not asked.isdisjoint(self.cell_norms[cell]):
            return max(words, key=lambda w: (_norm(w.text) in asked, len(w.text)))
        return self.longest[cell]


class PageCache:
    """The :class:`StoredPage` of recently found pages, by id, least recently used dropped
    past ``max_bytes``. A PDF page's id names its file's content (source, SHA-256, page), so
    its entry stays true until the page is rewritten under the same id: a record written
    again, an index migrated. Whoever writes those calls :meth:`clear`. One thread at a time."""

    def __init__(self, max_bytes: int = 128 << 20):
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self._pages: "OrderedDict[str, StoredPage]" = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, page_id: str) -> StoredPage | None:
        page = self._pages.get(page_id)
        if page is None:
            self.misses += 1
            return None
        self.hits += 1
        self._pages.move_to_end(page_id)
        return page

    def put(self, page_id: str, page: StoredPage) -> None:
        old = self._pages.pop(page_id, None)
        if old is not None:
            self._bytes -= old.nbytes
        if page.nbytes > self.max_bytes:
            return
        self._pages[page_id] = page
        self._bytes += page.nbytes
        while self._bytes > self.max_bytes:
            _, dropped = self._pages.popitem(last=False)
            self._bytes -= dropped.nbytes

    def clear(self) -> None:
        self._pages.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pages)


def _evidence(query: torch.Tensor | np.ndarray, page: StoredPage, top: int, gap: int,
              asked: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    return _entries(_matches(query, page, asked), page, top, gap, asked)


def asked_words(text: str | None) -> frozenset[str]:
    """The words of a query, lowercased, as :func:`_word_entries` compares them; stopwords
    left out (a page stores no vector for them, and "the" says nothing of why a page matched)."""
    from agree_core.encoders.text_layer import STOPWORDS

    return frozenset(_norm(w) for w in text.split()) - STOPWORDS - {""} if text else frozenset()


def _norm(word: str) -> str:
    return word.lower().strip(".,;:!?()[]{}\"'")


def _entries(matched: list[tuple[int, float]], page: StoredPage, top: int, gap: int,
             asked: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    if not matched:
        return []
    if page.word_tied:
        out = _word_entries(matched, page, asked)
    else:
        out = _patch_entries(matched, page.cells, page.grid, gap)
    out.sort(key=lambda e: -e["score"])
    return out[:top]


def _matches(query: torch.Tensor | np.ndarray, page: StoredPage, asked: frozenset[str]) -> list[tuple[int, float]]:
    """(token index, similarity) of each query token's best stored vector, when positive; on
    a pooled page, the token of that vector's group :meth:`StoredPage.token` credits."""
    q = query if isinstance(query, np.ndarray) else query.detach().float().numpy()
    if page.vectors.size == 0 or q.size == 0:
        return []
    # numpy: a few small products, where torch's thread pool costs more than the work
    sims = q @ page.vectors.T
    idx = sims.argmax(axis=1)
    best = sims[np.arange(len(idx)), idx]
    return [(page.token(j, asked), s) for j, s in zip(idx.tolist(), best.tolist()) if s > 0]


def _words_by_cell(words: Sequence[Word], grid: tuple[int, int]) -> dict[int, list[Word]]:
    out: dict[int, list[Word]] = {}
    for w in words:
        out.setdefault(cell_of(w.box, grid), []).append(w)
    return out


def _word_entries(matched: list[tuple[int, float]], page: StoredPage,
                  asked: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """One entry per matched word. A vector names its word by its cell (the cell of the
    word's centre); of two words in one cell, one the query names (``asked``) is taken, else
    the longer (a stopword, which has no vector, is short)."""
    cells = page.cells
    score: dict[int, float] = {}
    word_of: dict[int, Word] = {}
    for j, s in matched:
        if cells[j] < 0:
            continue
        w = page.word(cells[j], asked)
        score[id(w)] = score.get(id(w), 0.0) + s
        word_of[id(w)] = w
    return [{"box": list(page.boxes[k]), "text": word_of[k].text, "score": round(s, 4)}
            for k, s in score.items()]


def _patch_entries(matched: list[tuple[int, float]], cells: list[int], grid: tuple[int, int],
                   gap: int) -> list[dict[str, Any]]:
    rows, cols = grid
    heat: dict[tuple[int, int], float] = {}
    for j, s in matched:
        if cells[j] >= 0:
            rc = (cells[j] // cols, cells[j] % cols)
            heat[rc] = heat.get(rc, 0.0) + s
    out = []
    for region in _regions(list(heat), gap):
        r0, r1 = min(r for r, _ in region), max(r for r, _ in region)
        c0, c1 = min(c for _, c in region), max(c for _, c in region)
        out.append({"box": _box((c0 / cols, r0 / rows, (c1 + 1) / cols, (r1 + 1) / rows)), "text": None,
                    "score": round(sum(heat[rc] for rc in region), 4)})
    return out


def _box(box: Sequence[float]) -> list[float]:
    """``box`` clipped to the page, rounded, with ``x0 < x1`` and ``y0 < y1``."""
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in box)
    out = []
    for lo, hi in ((x0, x1), (y0, y1)):
        lo, hi = round(min(lo, hi), 4), round(max(lo, hi), 4)
        if hi - lo < _MIN_SIDE:
            lo, hi = (lo, lo + _MIN_SIDE) if lo + _MIN_SIDE <= 1 else (1 - _MIN_SIDE, 1.0)
        out.append((lo, hi))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]


def _regions(cells: list[tuple[int, int]], gap: int) -> list[list[tuple[int, int]]]:
    """Groups of cells within ``gap + 1`` rows and columns of another cell of the group."""
    reach = gap + 1
    left = set(cells)
    groups = []
    while left:
        stack = [left.pop()]
        group = []
        while stack:
            r, c = stack.pop()
            group.append((r, c))
            near = [(rr, cc) for rr, cc in left if abs(rr - r) <= reach and abs(cc - c) <= reach]
            for cell in near:
                left.discard(cell)
                stack.append(cell)
        groups.append(sorted(group))
    return groups


# -- the index side ----------------------------------------------------------------------------
def word_rows(words: Sequence[Word]) -> str:
    """Words as stored in a page's payload (``"words"``): a JSON array of ``[text, x0, y0, x1,
    y1]``, one string. The engine takes one string in microseconds and a page's ~2,000 nested
    floats in 6 ms (Qdrant Edge, session 6); indexes written before hold the array itself,
    which :func:`stored_words` reads as well."""
    return json.dumps([[w.text, *(round(float(v), 4) for v in w.box)] for w in words],
                      ensure_ascii=False, separators=(",", ":"))


def stored_words(payload: dict[str, Any]) -> list[Word] | None:
    """The words :func:`word_rows` wrote into ``payload``; ``None`` when it has none."""
    rows = payload.get("words")
    if rows is None:
        return None
    if isinstance(rows, str):
        rows = json.loads(rows)
    return [Word(str(r[0]), (float(r[1]), float(r[2]), float(r[3]), float(r[4]))) for r in rows]


def evidence_by_id(index: "PageIndex", query: str | torch.Tensor, ids: Sequence[str], *,
                   top: int = DEFAULT_TOP) -> dict[str, list[dict[str, Any]]]:
    """Evidence (:func:`evidence`) of ``query`` (text, or its vectors as the index scores
    them) on the stored pages (page ids) or records (record ids) ``ids``, by id; ids not in
    the index are left out. One read of the engine for all of them."""
    if not ids:
        return {}
    if isinstance(query, str):
        return evidence_batch(index, index.encode_queries([query]), [list(ids)], top=top, asked=[query])[0]
    return evidence_batch(index, [torch.as_tensor(query)], [list(ids)], top=top)[0]


def evidence_batch(index: "PageIndex", queries: Sequence[torch.Tensor], ids: Sequence[Sequence[str]], *,
                   top: int = DEFAULT_TOP, cache: PageCache | None = None,
                   asked: Sequence[str] | None = None) -> list[dict[str, list[dict[str, Any]]]]:
    """:func:`evidence_by_id` for several queries (vectors) and their hits' ids at once;
    ``cache``: pages found before are not read again (one engine read for the others);
    ``asked``: each query's text, whose words are credited first (a pooled vector's token, a
    word among the words of one cell; without it, a group's first token, a cell's longest word)."""
    wanted = {i for group in ids for i in group}
    pages: dict[str, StoredPage] = {}
    if cache is not None:
        for i in wanted:
            if (page := cache.get(i)) is not None:
                pages[i] = page
    missing = wanted - pages.keys()
    if missing:
        read = _stored_pages(index, missing) if hasattr(index, "engine") else _served_pages(index, missing)
        pages.update(read)
        if cache is not None:
            for i, page in read.items():
                cache.put(i, page)
    words = [asked_words(a) for a in asked] if asked is not None else [frozenset()] * len(queries)
    arrays = [q.detach().float().numpy() for q in queries]  # once per query, not per page
    return [{i: _evidence(q, pages[i], top, 0, w) for i in group if i in pages}
            for q, group, w in zip(arrays, ids, words)]


def _stored_pages(index: "PageIndex", wanted: set[str]) -> dict[str, StoredPage]:
    """The vectors, cells and words of pages or records ``wanted`` (ids), in one engine read."""
    from agree_core.index.filters import is_uuid
    from agree_core.index.records import record_point_id
    from agree_core.index.schema import IMAGE_DATA, TOKENS

    point_of = {record_point_id(i): i for i in wanted} | {i: i for i in wanted if is_uuid(i)}
    got = index.engine.retrieve(list(point_of), vectors=[TOKENS], exclude=[IMAGE_DATA, "text", "terms"])
    pages: dict[str, StoredPage] = {}
    for pid, point in got.items():
        payload = point.payload
        words = stored_words(payload)
        if (words is None and payload.get("kind") != "record" and payload.get("source")
                and isinstance(payload.get("page"), int)):  # a PDF page indexed before words were stored
            words = page_words(payload["source"], payload["page"], payload.get("sha256"))
        pool_of = payload.get("pool_of")  # a pooled page: one stored vector per group of tokens
        pages[point_of[pid]] = StoredPage(np.ascontiguousarray(point.vectors[TOKENS], dtype=np.float32),
                                          [int(c) for c in payload["cells"]], tuple(payload["grid"]), words,
                                          pool_of=pool_of)
    return pages


def _served_pages(index: Any, wanted: set[str]) -> dict[str, StoredPage]:
    """:func:`_stored_pages` of an ``agree serve`` index (:class:`agree_core.serve.client.RemoteIndex`),
    one request a page; the words are those the server stored (none for old indexes)."""
    pages = {}
    for i in wanted:
        try:
            emb, payload = index.page_embedding(i)
        except KeyError:
            continue
        pages[i] = StoredPage.of(emb, stored_words(payload), payload.get("pool_of"))
    return pages


def page_words(source: str | Path, page: int, sha256: str | None = None) -> list[Word] | None:
    """The words (with boxes) of a PDF page's text layer, or ``None`` when the file cannot be
    read any more (moved, or not a PDF: pages written as records)."""
    from agree_core.pages import PdfError, iter_pages

    path = Path(source)
    if path.suffix.lower() != ".pdf" or not path.is_file():
        return None
    try:
        return next(iter_pages(path, render=False, pages=[page], sha256=sha256)).words
    except (PdfError, ValueError, StopIteration, OSError) as e:
        log.debug("no words for %s page %d: %s", source, page, e)
        return None
