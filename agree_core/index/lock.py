"""One process at a time per index directory.

The embedded Qdrant engine holds its write-ahead log exclusively: a second process cannot
open the shard while the first has it. We take an advisory ``flock`` first, so the second
process gets a clear :class:`IndexBusyError` naming who holds the index (or waits for it),
instead of the engine's "Can't init WAL: WouldBlock". The kernel drops the lock when its
holder exits, even on ``kill -9``, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from agree_core.index.config import IndexBusyError

LOCK_FILE = ".lock"
WAIT_HINT = "pass wait=SECONDS to wait for it"  # Python words; the CLI says --wait SECONDS


class DirectoryLock:
    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, retrying for up to ``wait`` seconds."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise IndexBusyError(
                        f"index {self.path.parent} is busy: {holder} holds it. Only one process "
                        f"can open an index at a time; wait for it to finish, or {WAIT_HINT}"
                    ) from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "cmd": " ".join(sys.argv)[:200]}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"process {info['pid']} ({info['cmd']})"
        except (ValueError, KeyError):
            return "another process"
