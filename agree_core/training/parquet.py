"""Hugging Face image-retrieval datasets stored as parquet -> the training format
(``agree dataset from-parquet``), without the ``datasets`` library.

The AGREE / ColPali recipe, end to end (``vidore/colpali_train_set``: 118k training rows, ~20 GB)::

    huggingface-cli download vidore/colpali_train_set --repo-type dataset \\
        --local-dir data/colpali_train_set_hf
    agree dataset from-parquet data/colpali_train_set_hf/data --out data/colpali_train_set --split train
    agree dataset from-parquet data/colpali_train_set_hf/data --out data/colpali_train_set --split test
    agree teacher build data/colpali_train_set/train.jsonl --out data/maps/qwen2.5-vl-7b
    torchrun --nproc-per-node 4 training/train.py --config training/configs/agree-colqwen2.5.yaml \\
        --output-dir runs/agree-colqwen2.5

(the config reads ``data/colpali_train_set/train.jsonl``, ``test.jsonl`` as its eval set, and the
maps in ``data/maps/qwen2.5-vl-7b``). The download's ``data/`` folder holds both splits
(``train-00000-of-00082.parquet``, ..., ``test-00000-of-00001.parquet``): from a folder that
holds several Hugging Face splits, only the files of ``--split`` are read; name files
explicitly (``.../data/test-*.parquet --split eval``) to choose them yourself.

Each row becomes one line of :mod:`agree_core.training.data`::

    {"qid": "colpali_train_set-000017", "query": "...", "image": "images/3f/3fa9...e1.png",
     "meta": {"source": ..., "image_filename": ..., "answer": ..., "answer_type": ...}}

Each distinct page image is written once, under its content's sha256, with its bytes unchanged
and the extension of its real format; many queries may share one page. Rows with an empty
query, no image, or image bytes that Pillow cannot read are reported and skipped. The JSONL is
rebuilt from scratch on every run and renamed into place at the end, while images already on
disk are kept, so an interrupted run is resumed by running it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from agree_core.training.data import DataError

log = logging.getLogger(__name__)

__all__ = ["ParquetReport", "from_parquet", "find_parquet", "image_path", "KEEP_COLUMNS"]

KEEP_COLUMNS = ("source", "image_filename", "answer", "answer_type")
BATCH_ROWS = 64  # rows in memory at once: ~10 MB of page images for colpali_train_set
_HF_SPLIT_FILE = re.compile(r"^(?P<split>[\w.]+?)-\d{5}-of-\d{5}\.parquet$")
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


@dataclass
class ParquetReport:
    """What :func:`from_parquet` did: ``rows`` read = ``examples`` written + ``len(skipped)``;
    ``examples`` = ``images_written`` + ``images_reused`` (already on disk, or shared by an
    earlier row); ``skipped``: ``(file, row in that file (0-based), reason)``."""

    rows: int = 0
    examples: int = 0
    images_written: int = 0
    images_reused: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.skipped


def image_path(sha: str, fmt: str) -> str:
    """Where a page image is stored, relative to the output folder, from its sha256 and its
    Pillow format.

    >>> image_path("3fa9e1", "JPEG")
    'images/3f/3fa9e1.jpg'
    """
    return f"images/{sha[:2]}/{sha}.{_EXTENSIONS.get(fmt, fmt.lower())}"


def find_parquet(paths: Sequence[str | Path], split_name: str | None = None) -> list[Path]:
    """The parquet files among ``paths``: files as given, folders searched recursively (sorted,
    hidden folders such as ``.cache`` skipped). From a folder whose files are named as Hugging
    Face splits (``train-00000-of-00082.parquet``) and hold more than one split, only
    ``split_name``'s files are taken.

    Raises:
        DataError: a path does not exist, no parquet file is found, or a folder holds several
            splits and none is ``split_name``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"{p}: no such file or folder (give parquet files or folders of them)")
        if p.is_file():
            files.append(p)
            continue
        found = sorted(f for f in p.rglob("*.parquet")
                       if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
        splits = {m["split"] for f in found if (m := _HF_SPLIT_FILE.match(f.name))}
        if len(splits) > 1 and split_name is not None:
            if split_name not in splits:
                raise DataError(f"{p} holds the splits {', '.join(sorted(splits))} and none is named "
                                f"{split_name!r}: choose one with --split, or pass its files "
                                f"({p}/{sorted(splits)[0]}-*.parquet)")
            found = [f for f in found if (m := _HF_SPLIT_FILE.match(f.name)) and m["split"] == split_name]
        files += found
    if not files:
        raise DataError(f"no parquet files in {', '.join(map(str, paths))} (looked for *.parquet, "
                        "recursively in folders)")
    return files


def from_parquet(paths: str | Path | Sequence[str | Path], out_dir: str | Path, *,
                 query_column: str = "query", image_column: str = "image",
                 keep_columns: Iterable[str] = KEEP_COLUMNS, split_name: str = "train",
                 limit: int | None = None, progress: bool = True) -> ParquetReport:
    """Write ``out_dir/<split_name>.jsonl`` and ``out_dir/images/`` from parquet files.

    Args:
        paths: parquet files, or folders of them (see :func:`find_parquet`).
        query_column: the question (a string). image_column: the page, a Hugging Face image
            (struct ``{bytes, path}``) or plain binary.
        keep_columns: copied into each line's ``meta`` when the files have them.
        split_name: the JSONL's name; also picks the split in a folder of several.
        limit: read only the first ``limit`` rows (``None``: all).

    Raises:
        DataError: a path is missing, no parquet file is found, a file cannot be read as parquet,
            or a file lacks ``query_column`` / ``image_column``.
    """
    pq = _pyarrow_parquet()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for all rows), got {limit}")
    if not split_name or "/" in split_name or split_name.startswith("."):
        raise ValueError(f"split_name must be a plain file name such as 'train', got {split_name!r}")
    files = find_parquet(paths, split_name)
    keep = tuple(keep_columns)
    opened = []
    for f in files:  # check every file before writing anything
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow.ArrowInvalid, OSError
            raise DataError(f"{f}: not a readable parquet file ({e})") from e
        names = pf.schema_arrow.names
        for col, flag in ((query_column, "--query-column"), (image_column, "--image-column")):
            if col not in names:
                raise DataError(f"{f}: no column {col!r}; the file has {', '.join(names)} "
                                f"(choose the column with {flag})")
        columns = [query_column, image_column] + [c for c in keep if c in names and
                                                  c not in (query_column, image_column)]
        opened.append((f, pf, columns))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, tmp = out_dir / f"{split_name}.jsonl", out_dir / f"{split_name}.jsonl.tmp"
    prefix = out_dir.absolute().name + ("" if split_name == "train" else f"-{split_name}")
    total = sum(pf.metadata.num_rows for _, pf, _ in opened)
    total = min(total, limit) if limit is not None else total
    report, stored = ParquetReport(), {}  # stored: sha256 -> path relative to out_dir
    from tqdm import tqdm

    with open(tmp, "w", encoding="utf-8") as out, tqdm(total=total, unit="row", disable=not progress,
                                                       desc=f"{split_name}.jsonl") as bar:
        for f, pf, columns in opened:
            row = 0
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                for rec in batch.to_pylist():
                    if limit is not None and report.rows >= limit:
                        break
                    n = report.rows
                    report.rows += 1
                    bar.update(1)
                    try:
                        query = _query(rec.get(query_column), query_column)
                        rel = _store(rec.get(image_column), image_column, out_dir, stored, report)
                    except _Skip as e:
                        report.skipped.append((str(f), row, str(e)))
                        log.debug("%s row %d skipped: %s", f, row, e)
                    else:
                        meta = {c: rec[c] for c in columns[2:]}
                        line = {"qid": f"{prefix}-{n:06d}", "query": query, "image": rel}
                        if meta:
                            line["meta"] = meta
                        out.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                        report.examples += 1
                    row += 1
    os.replace(tmp, jsonl)
    return report


class _Skip(Exception):
    """A row that cannot become an example (the message says why)."""


def _query(value: Any, column: str) -> str:
    if value is not None and not isinstance(value, str):
        raise _Skip(f"{column!r} is not a string (got {type(value).__name__})")
    if value is None or not value.strip():
        raise _Skip(f"empty {column!r}")
    return value


def _store(value: Any, column: str, out_dir: Path, stored: dict[str, str],
           report: ParquetReport) -> str:
    """Write one page image (once per content) and return its path relative to ``out_dir``."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        where = value.get("path") if isinstance(value, dict) else None
        raise _Skip(f"no image in {column!r}" + (f" (only a path, {where!r}, and no bytes)" if where else ""))
    if not isinstance(data, (bytes, bytearray)):
        raise _Skip(f"{column!r} holds {type(data).__name__}, not image bytes")
    sha = hashlib.sha256(data).hexdigest()
    if sha in stored:
        report.images_reused += 1
        return stored[sha]
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "bin"
            rel = image_path(sha, fmt)
            dest = out_dir / rel
            if dest.is_file() and dest.stat().st_size == len(data):
                stored[sha] = rel  # written (and checked) by an earlier run
                report.images_reused += 1
                return rel
            im.verify()
    except Exception as e:  # PIL.UnidentifiedImageError, OSError, SyntaxError from verify
        raise _Skip(f"image bytes Pillow cannot read ({type(e).__name__}: {e})") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".tmp")
    part.write_bytes(data)
    os.replace(part, dest)  # never a half-written image under the final name
    stored[sha] = rel
    report.images_written += 1
    return rel


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading parquet needs pyarrow: pip install 'agree[train]' "
                          "(or pip install pyarrow)") from e
    return pq
