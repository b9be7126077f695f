"""The JSON of a search, as ``agree search --json`` prints it and ``agree serve``'s /search
returns it: one object per query, ``{"qid", "query", "hits": [...]}``, each hit
``{"source", "page", "score", "image", "evidence"}`` (``evidence``: :mod:`agree_core.evidence`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from agree_core.evidence import DEFAULT_TOP, PageCache, evidence_batch

if TYPE_CHECKING:
    from agree_core.index import Hit, PageIndex

__all__ = ["search_lines", "hits_evidence", "hit_json"]


def search_lines(index: "PageIndex", queries: Sequence[tuple[Any, str]], results: Sequence[Sequence["Hit"]],
                 *, top: int = DEFAULT_TOP, cache: PageCache | None = None,
                 vectors: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """The ``{"qid", "query", "hits"}`` object of each ``(qid, query)`` and its hits
    (``cache``, ``vectors``: :func:`hits_evidence`)."""
    found = hits_evidence(index, [q for _, q in queries], results, top=top, cache=cache, vectors=vectors)
    return [{"qid": qid, "query": query, "hits": [hit_json(h, ev.get(h.page_id, [])) for h in hits]}
            for (qid, query), hits, ev in zip(queries, results, found)]


def hits_evidence(index: "PageIndex", queries: Sequence[str], results: Sequence[Sequence["Hit"]],
                  *, top: int = DEFAULT_TOP, cache: PageCache | None = None,
                  vectors: Sequence[Any] | None = None) -> list[dict[str, list[dict[str, Any]]]]:
    """Each query's evidence by page id, for its hits only (one engine read for all).
    ``vectors``: the queries' vectors as the search used them (default: asked of the index,
    which remembers the last queries it encoded). A server index's hits carry the evidence
    the server computed (best first: its first ``top``)."""
    if not hasattr(index, "engine"):  # agree_core.serve.client.RemoteIndex
        return [{h.page_id: list(getattr(h, "evidence", []))[:top] for h in hits} for hits in results]
    asked = [i for i, hits in enumerate(results) if hits]
    out: list[dict[str, list[dict[str, Any]]]] = [{} for _ in results]
    if asked:
        if vectors is None:
            vectors = index.encode_queries(list(queries))  # all of them: the search's own vectors (memo)
        found = evidence_batch(index, [vectors[i] for i in asked], [[h.page_id for h in results[i]] for i in asked],
                               top=top, cache=cache, asked=[queries[i] for i in asked])
        for i, ev in zip(asked, found):
            out[i] = ev
    return out

def hit_json(hit: "Hit", evidence: list[dict[str, Any]]) -> dict[str, Any]:
    """One hit of a search line."""
    return {**hit.to_json(), "evidence": evidence}
