"""What framework nodes and Documents carry beside a stored page, decided where the index is.

A LlamaIndex node or a Haystack Document of a page carries more than the index stores as
such: the id of the page's document, the page's printed label (``page_label``, as
LlamaIndex's PDFReader names it) and, from a search, the evidence of why it matched
(:mod:`agree_core.evidence`). :func:`add_node_fields` fills them into the records a search
or find returns (``RecordStore.search(..., node_fields=True)``), so that a served index
answers a framework's search in one request: the server computes them next to its index
and its PDFs, a client reads them off the records (:class:`~agree_core.index.records.Record`'s
``doc_id``, ``page_label`` and ``evidence``). :class:`NodeMethods` are the index's methods
for the same facts: filters on those keys (:mod:`~agree_core.index.node_fields`), labels, and
``warm_up``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch

    from agree_core.index import PageIndex
    from agree_core.index.records import Record

__all__ = ["NodeMethods", "add_node_fields", "page_labels"]


class NodeMethods:
    """What framework components ask of a :class:`~agree_core.index.PageIndex` (which
    inherits these) beside searching; :class:`~agree_core.serve.client.RemoteIndex` has the
    same methods, answered by the server."""

    def warm_up(self) -> None:
        """Load the encoder's weights now rather than at the first query (Haystack's
        ``warm_up``; a served index's client has nothing to load)."""
        self.encoder.dim  # noqa: B018 - dim loads the weights

    def node_filters(self, filters: dict[str, Any] | None, location: str | Path | None = None
                     ) -> dict[str, Any] | None:
        """``filters`` with conditions on the keys framework nodes and Documents carry but the
        index does not store (``file_name``, ``doc_id``, ``page_label``, ``index_dir``...)
        rewritten into stored ones (:mod:`agree_core.index.node_fields`); ``location``: the
        name the caller knows this index by (default: the one it was opened by)."""
        from agree_core.index.node_fields import names_derived_fields, resolve_node_fields

        if not names_derived_fields(filters):
            return filters
        return resolve_node_fields(filters, self.catalog.documents(state="ready"),
                                   self.location if location is None else location)

    def page_labels(self, pages: Sequence[tuple[str, int]]) -> list[str]:
        """The printed label of each ``(source, page)``, from the PDF's ``/PageLabels`` (what
        LlamaIndex's PDFReader calls ``page_label``), read only from PDFs this index holds (a
        server's disk is not its clients'); ``str(page)`` for any other file, or when it cannot
        be read."""
        indexed = {d.source for d in self.catalog.documents(state="ready")} if pages else set()
        wanted = [p for p in dict.fromkeys(pages) if p[0] in indexed]
        labels = dict(zip(wanted, page_labels(wanted)))
        return [labels.get(p, str(p[1])) for p in pages]


def add_node_fields(index: "PageIndex", found: Sequence["Record"], doc_ids: Sequence[str | None], *,
                    query: "torch.Tensor | None" = None, asked: str | None = None) -> list["Record"]:
    """``found`` with ``doc_id`` (``doc_ids``: each page's document id from its payload; a
    record is its own document), ``page_label`` (of the page its ``meta`` names:
    :meth:`NodeMethods.page_labels`) and, when ``query`` (its vectors as the search scored
    them; ``asked``: its text) is given, ``evidence`` (``[]`` for a page with none)."""
    places = [_place(r) for r in found]
    wanted = [p for p in places if p is not None]
    labels = dict(zip(wanted, index.page_labels(wanted)))
    evidence: dict[str, list[dict[str, Any]]] = {}
    if query is not None and found:
        from agree_core.evidence import evidence_batch

        evidence = evidence_batch(index, [query], [[r.id for r in found]],
                                  asked=[asked] if asked is not None else None)[0]
    out = []
    for r, place, doc_id in zip(found, places, doc_ids):
        page = r.meta.get("page") or 0
        out.append(replace(r, doc_id=(doc_id or r.id) if r.kind == "page" else r.id,
                           page_label=labels.get(place, str(page)) if place is not None else str(page),
                           evidence=evidence.get(r.id, []) if query is not None else None))
    return out


def page_labels(pages: Sequence[tuple[str, int]]) -> list[str]:
    """The printed label of each ``(source, page)``, from the PDF's ``/PageLabels`` (what
    LlamaIndex's PDFReader calls ``page_label``); ``str(page)`` when it cannot be read."""
    from agree_core.page_identity import page_label

    return [page_label(source, page) for source, page in pages]


def _place(r: "Record") -> tuple[str, int] | None:
    source, page = r.meta.get("source"), r.meta.get("page")
    if isinstance(source, str) and source and isinstance(page, int) and not isinstance(page, bool):
        return source, page
    return None
