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


class _Layered:
    """An encoder whose pages run a torch model layer by layer (as a transformer's blocks)."""

    name, config, dim = "layered", {}, 2

    def __init__(self):
        import torch

        self.events: list[str] = []
        log = self.events

        class Block(torch.nn.Module):
            def __init__(self, i):
                super().__init__()
                self.i = i

            def forward(self, x):
                log.append(f"layer {self.i}")
                time.sleep(0.03)
                return x + 1

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = torch.nn.ModuleList(Block(i) for i in range(4))

            def forward(self, x):
                for block in self.layers:
                    x = block(x)
                return x

        self._model = Model()

    def encode_pages(self, pages):
        import torch

        return [int(self._model(torch.tensor(p)).item()) for p in pages]

    def encode_queries(self, queries):
        self.events.append("query")
        return [q.upper() for q in queries]


def test_a_query_runs_between_two_layers_of_a_page_and_the_page_is_unchanged():
    inner = _Layered()
    enc = SerializedEncoder(inner)
    assert enc.encode_pages([10]) == [14]  # hooks the layers; nothing waits: no yield
    inner.events.clear()

    got: dict[str, object] = {}
    page = threading.Thread(target=lambda: got.update(pages=enc.encode_pages([0, 100])))
    page.start()
    while "layer 1" not in inner.events:  # the page's forward is under way
        time.sleep(0.005)
    t0 = time.monotonic()
    assert enc.encode_queries(["solar"]) == ["SOLAR"]
    waited = time.monotonic() - t0
    page.join(10)
    assert got["pages"] == [4, 104]  # the same vectors as without the query
    q = inner.events.index("query")
    assert "layer 0" in inner.events[:q] and inner.events[q + 1].startswith("layer")
    assert inner.events[:q].count("layer 3") == 0  # the query did not wait for the whole page
    assert waited < 4 * 0.03 * 2


def test_the_readers_engine_counts_its_points_once_per_view():
    from agree_core.serve.host import _CountOnce

    class Engine:
        calls: list = []

        def count(self, where=None):
            self.calls.append(where)
            return 7 if where is None else 2

        def search_batch(self, *args):
            return "searched"

    engine = _CountOnce(Engine())
    assert [engine.count() for _ in range(3)] == [7, 7, 7] and Engine.calls == [None]
    assert engine.count("a filter") == 2 and Engine.calls == [None, "a filter"]  # filtered: asked each time
    assert engine.search_batch() == "searched"
