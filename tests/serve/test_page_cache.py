"""The pages a server keeps for its hits' evidence (agree_core.evidence.PageCache)."""

from __future__ import annotations

import numpy as np
import torch

from agree_core.evidence import PageCache, StoredPage, evidence, evidence_batch
from agree_core.encoders.base import PageEmbedding
from agree_core.index import PageIndex
from agree_core.search_json import search_lines
from tests.conftest import copy_index


def test_cached_pages_give_the_same_lines_and_are_not_read_again(sample_index, tmp_path, monkeypatch):
    import agree_core.evidence as ev

    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), create=False) as index:
        queries = ["solar panel efficiency", "wind turbine", "quarterly revenue"]
        hits = index.search_batch(queries, 3)
        plain = search_lines(index, list(enumerate(queries)), hits)
        cache = PageCache()
        assert search_lines(index, list(enumerate(queries)), hits, cache=cache) == plain
        assert len(cache) == len({h.page_id for hs in hits for h in hs}) and cache.hits == 0

        reads: list[set[str]] = []
        real = ev._stored_pages
        monkeypatch.setattr(ev, "_stored_pages", lambda ix, wanted: reads.append(set(wanted)) or real(ix, wanted))
        assert search_lines(index, list(enumerate(queries)), hits, cache=cache) == plain
        assert reads == [] and cache.hits >= len(cache)  # every page from the cache
        # a query with no hit among others: the evidence uses the search's own vectors
        mixed = search_lines(index, [(1, queries[0]), (2, "x")], [hits[0], []], cache=cache)
        assert mixed[0]["hits"] == plain[0]["hits"] and mixed[1]["hits"] == []


def test_the_cache_keeps_its_byte_budget_least_recently_used_first():
    def page(n: int) -> StoredPage:
        return StoredPage(np.ones((n, 4), np.float32), [0] * n, (1, 1), None)

    one = page(10).nbytes
    cache = PageCache(max_bytes=int(2.5 * one))
    for i in "abc":
        cache.put(i, page(10))
    assert cache.get("a") is None and cache.get("b") is not None  # a: the oldest, dropped
    cache.put("d", page(10))  # c is now the least recently used
    assert cache.get("c") is None and cache.get("b") is not None and cache.get("d") is not None
    cache.put("huge", page(1000))  # larger than the whole budget: not kept, nothing dropped
    assert cache.get("huge") is None and len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_a_stored_page_gives_the_evidence_of_its_embedding():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = PageEmbedding(torch.tensor([[1.0, 0.0], [0.0, 0.5]]), (4, 4), torch.tensor([0, 15]))
    prepared = StoredPage.of(emb, None)
    assert ev_of(q, prepared) == evidence(q, emb)


def ev_of(q: torch.Tensor, page: StoredPage):
    from agree_core.evidence import _evidence, DEFAULT_TOP

    return _evidence(q, page, DEFAULT_TOP, 0)


def test_evidence_batch_with_a_cache_reads_only_the_pages_it_lacks(sample_index, tmp_path, monkeypatch):
    import agree_core.evidence as ev

    with PageIndex.open(copy_index(sample_index, tmp_path / "ix"), create=False) as index:
        hits = index.search_batch(["solar panel efficiency"], 4)[0]
        ids = [h.page_id for h in hits]
        vectors = index.encode_queries(["solar panel efficiency"])
        cache = PageCache()
        first = evidence_batch(index, vectors, [ids[:2]], cache=cache)
        reads: list[set[str]] = []
        real = ev._stored_pages
        monkeypatch.setattr(ev, "_stored_pages", lambda ix, wanted: reads.append(set(wanted)) or real(ix, wanted))
        both = evidence_batch(index, vectors, [ids], cache=cache)
        assert reads == [set(ids[2:])]
        assert {i: both[0][i] for i in ids[:2]} == first[0]
        assert both == evidence_batch(index, vectors, [ids])


def test_a_quick_write_clears_the_servers_cached_pages(sample_index, tmp_path):
    """Records written again (any quick write) may change a cached page: the reader drops its
    cache before the next read, and the search after it reads the pages again."""
    from agree_core.serve.host import IndexHost

    host = IndexHost(copy_index(sample_index, tmp_path / "ix")).start()
    try:
        first = host.search(["solar panel efficiency"], 3).result(timeout=60)
        cached = host.read(lambda view: len(host._pages)).result(timeout=60)
        assert cached == len({h.page_id for h in first[0][0]}) > 0
        assert host.read(lambda view: len(host._pages)).result(timeout=60) == cached  # reads keep it
        host.write(lambda index: None).result(timeout=60)  # a quick write
        assert host.read(lambda view: len(host._pages)).result(timeout=60) == 0
        again = host.search(["solar panel efficiency"], 3).result(timeout=60)
        assert again[1] == first[1] and len(host._pages) == cached  # read again, same lines
    finally:
        host.close()
