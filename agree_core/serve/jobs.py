"""The jobs of ``agree serve`` (one per ``POST /documents``) and where they are kept.

A :class:`JobStore` with a folder writes each job as ``ID.json`` there (atomically, at every
change of state and after every batch), so a restarted server still answers ``GET /jobs/ID``
for the jobs of an earlier run with their final state. A job that was queued or running when
the server died (``kill -9``, a crash) comes back ``interrupted``: posting the same paths
again resumes it, without redoing the pages it wrote. Without a folder (a server index,
``qdrant://``), jobs live in memory until the server stops.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Job", "JobStore", "KEEP_JOBS", "FINAL_STATES"]

KEEP_JOBS = 1000  # finished jobs remembered for GET /jobs/ID
FINAL_STATES = ("done", "failed", "stopped", "interrupted")
INTERRUPTED = ("the server stopped while the job was queued or running (killed, or it crashed): "
               "post the same paths again to resume")


@dataclass
class Job:
    """One ``POST /documents``: what ``GET /jobs/ID`` reports."""

    job: str
    paths: list[str]
    metadata: dict[str, Any] | None = None
    batch_size: int = 16
    state: str = "queued"  # queued -> running -> done | failed | stopped; interrupted after a crash
    pages_done: int = 0
    pages_total: int = 0
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"path", "reason", "code", "page"}
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("metadata")
        return out


class JobStore:
    """Jobs by id, oldest first; kept in ``directory`` when given (see the module docstring)."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory
        self._jobs: dict[str, Job] = {}
        self._guard = threading.Lock()
        if directory is not None and directory.is_dir():
            self._load()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Job) -> None:
        with self._guard:
            self._jobs[job.job] = job
            finished = [j for j in self._jobs.values() if j.state in FINAL_STATES]
            for old in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
                del self._jobs[old.job]
                self._remove(old.job)
        self.save(job)

    def save(self, job: Job) -> None:
        """Write ``job`` as it is now (a no-op in memory)."""
        if self.directory is None:
            return
        path = self.directory / f"{job.job}.json"
        tmp = path.with_suffix(".tmp")
        try:
            self.directory.mkdir(exist_ok=True)
            tmp.write_text(json.dumps(asdict(job)))
            os.replace(tmp, path)
        except OSError as e:  # a full disk must not fail the job itself
            log.warning("cannot keep job %s in %s: %s", job.job, self.directory, e)

    def _remove(self, job_id: str) -> None:
        if self.directory is not None:
            (self.directory / f"{job_id}.json").unlink(missing_ok=True)

    def _load(self) -> None:
        known = {f.name for f in fields(Job)}
        loaded = []
        for path in self.directory.glob("*.json"):
            try:
                data = json.loads(path.read_text())
                loaded.append(Job(**{k: v for k, v in data.items() if k in known}))
            except (OSError, ValueError, TypeError) as e:
                log.warning("ignoring the unreadable job file %s: %s", path, e)
        for job in sorted(loaded, key=lambda j: j.created):
            if job.state not in FINAL_STATES:
                job.state, job.error, job.finished = "interrupted", INTERRUPTED, time.time()
                self.save(job)
            self._jobs[job.job] = job
