"""Teacher maps on disk: safetensors shards plus a JSONL manifest, resumable, one writer per rank.

Layout of a cache directory::

    cache.json                  the TeacherConfig that made every map here (checked on open)
    manifest-r{rank}.jsonl      one line per stored map: key, qid, query, page digest, source,
                                page, grid, shard (each rank appends only to its own file)
    maps-r{rank}-{n:05d}.safetensors   the maps ((rows, cols) float32), named by key

A map's key is ``sha256(teacher key, query, page digest)``; the page digest hashes the page
image's pixels, so the same page given as a PNG or as a PDF page rendered the same way is
one page. Maps are buffered and written a shard at a time: the shard file first (atomically,
by rename), then its manifest lines. A run killed in between loses at most the maps of the
shard in flight; a shard no manifest line names is ignored, and the rerun recomputes exactly
what is missing. Under ``torchrun`` every rank writes its own shards and manifest, and reads
all of them, so a rerun with another number of processes resumes too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image

from agree_core.teacher.qwen import TeacherConfig

__all__ = ["MapCache", "page_digest", "map_key"]

CACHE_FORMAT = 1
_SHARD = re.compile(r"^maps-r(\d+)-(\d+)\.safetensors$")


def page_digest(image: Image.Image) -> str:
    """sha256 of a page image's RGB pixels and size."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    h = hashlib.sha256(f"{image.width}x{image.height}\x00".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def map_key(teacher_key: str, query: str, digest: str) -> str:
    return hashlib.sha256(f"{teacher_key}\x00{query}\x00{digest}".encode()).hexdigest()[:32]


class MapCache:
    """A directory of teacher maps.

    Args:
        directory: created on first use.
        teacher: the config of the teacher that writes here; required to create a cache, and
            checked against the one recorded (maps of another teacher config are other maps:
            use another directory). ``None`` opens an existing cache to read.
        rank: this writer's rank (its own manifest and shards).
        shard_size: maps per shard file.
    """

    def __init__(self, directory: str | Path, teacher: TeacherConfig | None = None, *,
                 rank: int = 0, shard_size: int = 64):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.rank, self.shard_size = rank, shard_size
        header = self.directory / "cache.json"
        if header.is_file():
            recorded = json.loads(header.read_text())
            if recorded.get("format") != CACHE_FORMAT:
                raise ValueError(f"{self.directory} holds a teacher-map cache of format "
                                 f"{recorded.get('format')}; this agree reads format {CACHE_FORMAT}")
            self.teacher = TeacherConfig(**recorded["teacher"])
            if teacher is not None and asdict(teacher) != recorded["teacher"]:
                diff = sorted(k for k, v in asdict(teacher).items() if recorded["teacher"].get(k) != v)
                raise ValueError(f"{self.directory} holds maps of another teacher config (differs in "
                                 f"{', '.join(diff)}): choose another --out directory")
        elif teacher is None:
            raise ValueError(f"{self.directory} is not a teacher-map cache (no cache.json); "
                             "build one with `agree teacher build DATA.jsonl --out DIR`")
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = header.with_suffix(f".{os.getpid()}.tmp")  # ranks may race to create it
            tmp.write_text(json.dumps({"format": CACHE_FORMAT, "teacher": asdict(teacher)}, indent=2) + "\n")
            os.replace(tmp, header)
            self.teacher = teacher
        self.teacher_key = self.teacher.key()
        self._records: dict[str, dict[str, Any]] = {}
        self._by_page: dict[tuple[str, str], str] = {}
        self._by_source: dict[tuple[str, str, int], str] = {}
        self._pending: list[tuple[str, torch.Tensor, dict[str, Any]]] = []
        self._open_shards: dict[str, Any] = {}
        self.reload()

    # -- reading ----------------------------------------------------------------------------
    def reload(self) -> None:
        """Read every rank's manifest (lines of shards that exist; a torn last line is skipped)."""
        self._records.clear()
        self._by_page.clear()
        self._by_source.clear()
        for manifest in sorted(self.directory.glob("manifest-r*.jsonl")):
            for line in manifest.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if (self.directory / rec["shard"]).is_file():
                    self._index(rec)

    def _index(self, rec: dict[str, Any]) -> None:
        self._records[rec["key"]] = rec
        if "query" in rec and "page_digest" in rec:
            self._by_page[(rec["query"], rec["page_digest"])] = rec["key"]
        if "query" in rec and "source" in rec and "page" in rec:
            self._by_source[(rec["query"], str(rec["source"]), int(rec["page"]))] = rec["key"]

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records or any(k == key for k, _, _ in self._pending)

    def key(self, query: str, digest: str) -> str:
        return map_key(self.teacher_key, query, digest)

    def get(self, query: str, digest: str) -> torch.Tensor | None:
        """The map of ``query`` over the page with ``digest`` (:func:`page_digest`), or None."""
        key = self._by_page.get((query, digest))
        return self.load(key) if key is not None else None

    def find(self, query: str, source: str | Path, page: int) -> str | None:
        """The key of the map recorded for ``query`` over page ``page`` (1-based; 1 for an
        image) of the file ``source`` (as recorded: the absolute path), or None."""
        return self._by_source.get((query, str(source), int(page)))

    def load(self, key: str) -> torch.Tensor:
        """The ``(rows, cols)`` map stored under ``key``."""
        from safetensors import safe_open

        rec = self._records[key]
        handle = self._open_shards.get(rec["shard"])
        if handle is None:
            handle = self._open_shards[rec["shard"]] = safe_open(
                str(self.directory / rec["shard"]), framework="pt")
        return handle.get_tensor(key)

    def records(self) -> Iterator[dict[str, Any]]:
        """Manifest records: key, qid, query, page_digest, source, page, grid, shard."""
        return iter(list(self._records.values()))

    # -- writing ----------------------------------------------------------------------------
    def add(self, key: str, values: torch.Tensor, **meta: Any) -> None:
        """Queue a map (written with the next full shard, or :meth:`flush`)."""
        if values.dim() != 2:
            raise ValueError(f"a teacher map is 2-D (rows, cols), got shape {tuple(values.shape)}")
        self._pending.append((key, values.detach().float().cpu().contiguous(), meta))
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the queued maps: the shard file atomically, then its manifest lines."""
        from safetensors.torch import save_file

        if not self._pending:
            return
        name = f"maps-r{self.rank}-{self._next_shard():05d}.safetensors"
        tmp = self.directory / (name + ".tmp")
        save_file({k: v for k, v, _ in self._pending}, str(tmp), metadata={"teacher": self.teacher_key})
        os.replace(tmp, self.directory / name)
        lines = []
        for key, values, meta in self._pending:
            rec = {"key": key, **meta, "grid": list(values.shape), "shard": name}
            lines.append(json.dumps(rec, ensure_ascii=False))
            self._index(rec)
        manifest = self.directory / f"manifest-r{self.rank}.jsonl"
        torn = manifest.is_file() and manifest.stat().st_size > 0 and not _ends_with_newline(manifest)
        with open(manifest, "a", encoding="utf-8") as f:
            f.write(("\n" if torn else "") + "\n".join(lines) + "\n")  # never extend a torn line
            f.flush()
            os.fsync(f.fileno())
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._open_shards.clear()

    def __enter__(self) -> "MapCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _next_shard(self) -> int:
        taken = [int(m.group(2)) for p in self.directory.iterdir()
                 if (m := _SHARD.match(p.name.removesuffix(".tmp"))) and int(m.group(1)) == self.rank]
        return max(taken, default=-1) + 1


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
