"""What the CPU can do, and worker threads that each run torch ops single-threaded.

- :func:`cpu_kind` and :func:`cpu_has_native_bf16`: bf16 matrix products are native on CPUs
  with AVX512-BF16 or AMX and emulated (about 100x slower than fp32) elsewhere, so the code
  paths that use bf16 ask here first; benchmarks print :func:`cpu_kind`.
- :func:`run_in_workers`: a job split into chunks, run by a few Python threads, each with
  OpenMP set to one thread for itself (through the OpenMP runtime torch loaded,
  :func:`single_threaded_ops`). On a busy machine this beats splitting every product over all
  cores: a preempted core delays only its own chunk, and an idle worker takes chunks over.
- :func:`torch_threads`: the calling thread's torch ops on so many OpenMP threads for a while
  (one for the small per-page ops around a model's forward).
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

__all__ = ["cpu_kind", "cpu_has_native_bf16", "cpu_packs_bf16", "run_in_workers", "single_threaded_ops", "torch_threads"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True on CPUs that multiply bf16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_packs_bf16() -> bool:
    """True on CPUs where oneDNN lays bf16 weights out for its kernels (AVX512-BW/VL/DQ or
    AVX-NE-CONVERT); on AVX2 its reorder raises instead."""
    flags = _cpu_flags()
    return "avx_ne_convert" in flags or {"avx512bw", "avx512vl", "avx512dq"} <= flags


def cpu_kind() -> str:
    """``"AVX-512 bf16"``, ``"AVX-512"``, ``"AVX2"`` or what torch reports: the kind of CPU a
    benchmark ran on (figures from one kind do not carry to another)."""
    flags = _cpu_flags()
    if cpu_has_native_bf16():
        return "AVX-512 bf16" + (" + AMX" if "amx_bf16" in flags else "")
    if "avx512f" in flags:
        return "AVX-512 (no native bf16)"
    if "avx2" in flags:
        return "AVX2 (no native bf16)"
    return f"{torch.backends.cpu.get_cpu_capability()} (torch's capability)"


def run_in_workers(fn: Callable[[int, dict], None], starts: Sequence[int], workers: int) -> None:
    """Call ``fn(start, state)`` for every item of ``starts`` from ``workers`` threads, each
    running torch ops single-threaded and keeping its own ``state`` dict (scratch buffers).

    Each worker walks its own contiguous share of the items (two cores streaming separate
    halves of the data measured 25% faster than interleaving); one that runs out takes items
    from the far end of the largest remaining share, so a slow or preempted core is covered
    by the others. A worker's exception is re-raised here. Requires
    :func:`single_threaded_ops` to be available (check it first)."""
    set_omp_threads = single_threaded_ops()
    if set_omp_threads is None:
        raise RuntimeError("run_in_workers needs the OpenMP runtime torch runs on; "
                           "check single_threaded_ops() first and run in the caller otherwise")
    n = len(starts)
    workers = max(1, min(workers, n))
    nxt = [n * w // workers for w in range(workers)]  # next item of each share
    end = nxt[1:] + [n]  # end of each share (exclusive)
    lock = threading.Lock()
    inference = torch.is_inference_mode_enabled()  # thread-local: carry the caller's over

    def take(w: int) -> int | None:
        with lock:
            if nxt[w] < end[w]:
                nxt[w] += 1
                return nxt[w] - 1
            v = max(range(workers), key=lambda v: end[v] - nxt[v])
            if end[v] > nxt[v]:
                end[v] -= 1
                return end[v]
            return None

    def work(w: int) -> None:
        torch.get_num_threads()  # let torch initialise this thread's OpenMP settings first
        set_omp_threads(1)  # this thread only: OpenMP's thread count is per thread
        state: dict = {}
        with torch.inference_mode(inference), torch.no_grad():
            while (i := take(w)) is not None:
                fn(starts[i], state)

    with ThreadPoolExecutor(workers, thread_name_prefix="agree-worker") as pool:
        for f in [pool.submit(work, w) for w in range(workers)]:
            f.result()  # re-raises a worker's error


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch ops of the calling thread run on ``n`` OpenMP threads inside (other threads keep
    theirs); without a per-thread OpenMP setting (:func:`single_threaded_ops`) nothing changes.

    One thread is what the many small ops around a model's forward want (copies, norms,
    concatenations of a page's vectors): spread over the cores they wait on each other, and
    next to ONNX Runtime's own threads, a page producer or other processes they measured 10x
    the CPU time of one thread (BENCHMARKS.md, "Indexing speed", session 6)."""
    setter = single_threaded_ops()
    if setter is None:
        yield
        return
    before = torch.get_num_threads()
    setter(max(1, int(n)))
    try:
        yield
    finally:
        setter(before)


_OMP_SETTER: list = []  # [omp_set_num_threads or None], filled on first use


def single_threaded_ops() -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of the OpenMP runtime torch runs on, if a thread that calls it
    then really gets single-threaded torch ops while the caller's thread count is untouched;
    else None (no OpenMP, another runtime, another platform): callers then stay in the calling
    thread and let each op use torch's threads."""
    if _OMP_SETTER:
        return _OMP_SETTER[0]
    setter = None
    try:
        if torch.__config__.parallel_info().find("parallel backend: OpenMP") >= 0:
            lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
            for name in sorted(os.listdir(lib_dir)):
                if name.startswith(("libgomp", "libiomp5", "libomp")) and ".so" in name:
                    try:  # only a runtime already loaded by torch, never a second one
                        fn = ctypes.CDLL(os.path.join(lib_dir, name), mode=os.RTLD_NOLOAD).omp_set_num_threads
                    except (OSError, AttributeError):
                        continue
                    fn.argtypes, fn.restype = [ctypes.c_int], None
                    setter = fn
                    break
    except Exception:  # noqa: BLE001 - any surprise: no worker threads
        setter = None
    if setter is not None:
        before = torch.get_num_threads()
        seen: list[int] = []

        def probe() -> None:
            torch.get_num_threads()
            setter(1)
            seen.append(torch.get_num_threads())

        t = threading.Thread(target=probe)
        t.start()
        t.join()
        if seen != [1] or torch.get_num_threads() != before:
            setter = None
    _OMP_SETTER.append(setter)
    return setter
