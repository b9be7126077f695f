"""The worker threads behind maxsim (agree_core.cpu): every chunk once, single-threaded ops in
each worker, stealing from a slow worker, errors surfaced, and maxsim's threaded path equal to
its single-threaded one."""

import threading
import time

import pytest
import torch

from agree_core import cpu
from agree_core.scoring import maxsim

needs_omp = pytest.mark.skipif(cpu.single_threaded_ops() is None,
                               reason="torch here does not run on an OpenMP runtime we can set per thread")


@needs_omp
def test_every_chunk_runs_once_in_single_threaded_workers():
    seen, threads, omp = [], set(), set()
    lock = threading.Lock()

    def fn(start, state):
        state["n"] = state.get("n", 0) + 1  # each worker keeps its own state
        if start == 0:
            time.sleep(0.2)  # worker 0 is slow: the other must take over its remaining chunks
        with lock:
            seen.append(start)
            threads.add(threading.current_thread().name)
            omp.add(torch.get_num_threads())

    before = torch.get_num_threads()
    cpu.run_in_workers(fn, range(0, 40, 2), workers=2)
    assert sorted(seen) == list(range(0, 40, 2))
    assert len(threads) == 2 and all(t.startswith("agree-worker") for t in threads)
    assert omp == {1} and torch.get_num_threads() == before  # the caller's setting untouched
    assert seen.index(0) > 5  # chunks of the slow worker's share ran while it slept


@needs_omp
def test_a_worker_error_is_raised_in_the_caller():
    def fn(start, state):
        if start == 3:
            raise ValueError("chunk 3 is bad")

    with pytest.raises(ValueError, match="chunk 3 is bad"):
        cpu.run_in_workers(fn, range(8), workers=2)


@needs_omp
def test_maxsim_threaded_equals_single_threaded(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 16, 64, generator=g)
    docs = [torch.randn(int(n), 64, generator=g) for n in torch.randint(1, 300, (300,), generator=g)]
    calls = []
    real = cpu.run_in_workers
    monkeypatch.setattr("agree_core.scoring.run_in_workers",
                        lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threaded = maxsim(q, docs, compute_dtype=torch.float32)
        assert calls == [2]  # the job was large enough for the worker path
        torch.set_num_threads(1)
        single = maxsim(q, docs, compute_dtype=torch.float32)
        assert calls == [2]  # one thread: no workers
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(threaded, single, rtol=1e-5, atol=1e-4)


def test_cpu_kind_names_the_bf16_capability():
    kind = cpu.cpu_kind()
    assert kind.startswith("AVX-512 bf16") == cpu.cpu_has_native_bf16()


@needs_omp
def test_torch_threads_sets_this_thread_only_and_restores_it():
    previous = torch.get_num_threads()
    other: list[int] = []
    try:
        torch.set_num_threads(2)
        with cpu.torch_threads(1):
            assert torch.get_num_threads() == 1
            with cpu.torch_threads(2):  # nested: the forward inside the small ops
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1
            t = threading.Thread(target=lambda: other.append(torch.get_num_threads()))
            t.start()
            t.join()
        assert torch.get_num_threads() == 2  # restored, also after an error:
        with pytest.raises(RuntimeError, match="inside"):
            with cpu.torch_threads(1):
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert other == [2]  # another thread keeps its own count
