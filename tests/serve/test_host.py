"""IndexHost's read batching and its one shared encoder, without a model or a server."""

from __future__ import annotations

import threading
import time

from agree_core.serve.host import IndexHost, SerializedEncoder, _Search


def test_a_search_waits_for_the_others_only_while_several_clients_search(tmp_path):
    host = IndexHost(tmp_path / "never-opened")  # not started: only its read queue is used
    first = _Search(["a"], 5, None, None)

    def late() -> None:
        for q in "bcd":
            time.sleep(0.005)
            host._reads.put(_Search([q], 5, None, None))

    threading.Thread(target=late).start()
    batch = host._gather(first, expected=4, deadline=time.monotonic() + 5)
    assert [s.queries for s in batch] == [["a"], ["b"], ["c"], ["d"]]

    t0 = time.monotonic()
    alone = host._gather(_Search(["e"], 5, None, None), expected=1, deadline=time.monotonic() + 5)
    assert len(alone) == 1 and time.monotonic() - t0 < 0.5  # one client: no wait


class _Recording:
    name, config, dim = "rec", {}, 2

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.active = 0
        self.overlapped = False

    def _enter(self, what: str, n: int) -> None:
        self.active += 1
        self.overlapped |= self.active > 1
        self.calls.append((what, n))
        time.sleep(0.02)
        self.active -= 1

    def encode_pages(self, pages):
        self._enter("pages", len(pages))
        return [f"page {p}" for p in pages]

    def encode_queries(self, queries):
        self._enter("queries", len(queries))
        return [f"query {q}" for q in queries]


def test_one_encoder_one_call_at_a_time_queries_first():
    inner = _Recording()
    enc = SerializedEncoder(inner)
    assert (enc.name, enc.dim) == ("rec", 2)
    assert enc.encode_pages([1, 2, 3]) == ["page 1", "page 2", "page 3"]
    assert inner.calls == [("pages", 3)]  # no search lately: the job's batch as asked

    inner.calls.clear()
    assert enc.encode_queries(["q"]) == ["query q"]
    searching = threading.Thread(target=lambda: [enc.encode_queries([f"q{i}"]) for i in range(5)])
    searching.start()
    assert enc.encode_pages([1, 2, 3, 4]) == ["page 1", "page 2", "page 3", "page 4"]
    searching.join()
    assert not inner.overlapped
    assert [n for what, n in inner.calls if what == "pages"] == [1, 1, 1, 1]  # searching: one page a call
