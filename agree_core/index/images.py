"""Page images and records' files: where they live and how a client reads them.

Every stored file has a name relative to an image root, kept in the point's ``image``
payload: ``images/<doc_id>/<page>.<ext>`` for PDF pages, ``images/_records/<point id>-<hash>.<ext>``
for a record's file.

- :class:`ImageStore` (embedded indexes): the root is the index directory and the files are
  written there, atomically, before their points.
- :class:`PayloadImageStore` (server indexes): the bytes travel in the point's payload
  (``image_data``, base64) so that every client of a cluster can read them; a client writes
  a file under its local cache root the first time it needs a path (``Hit.image``). Names
  contain the file's sha256 (PDF pages through their document id), so a cached file is
  never stale. BENCHMARKS.md ("Page images with a server") measures this choice.

JPEG at quality 85 is the default: BENCHMARKS.md compares formats on real pages (size and
encode time); PNG costs about ten times the encode time and several times the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image

IMAGES_DIR = "images"
RECORDS_DIR = "_records"  # images/_records/<point id>-<content hash>.<ext>
IMAGE_DATA = "image_data"
_EXT = {"jpeg": "jpg", "webp": "webp", "png": "png"}
_BLOB_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "BMP": "bmp"}


def is_image_name(name: str) -> bool:
    """Whether a stored file (its payload ``image`` name) holds an image: PDF pages always,
    a record's blob when PIL could read it (:func:`blob_name`)."""
    return bool(name) and not name.endswith(".bin")


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    options = {"quality": quality} if fmt in ("jpeg", "webp") else {"optimize": False}
    image.convert("RGB").save(buf, format=fmt.upper(), **options)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def blob_name(point_id: str, blob: bytes) -> str:
    """The name of a record's file: a new version never overwrites the file a point names."""
    try:
        ext = _BLOB_EXT.get(Image.open(io.BytesIO(blob)).format or "", "img")
    except (OSError, ValueError):
        ext = "bin"
    return f"{IMAGES_DIR}/{RECORDS_DIR}/{point_id}-{hashlib.sha256(blob).hexdigest()[:16]}.{ext}"


class ImageStore:
    """Files in the index directory ``root`` (embedded indexes)."""

    in_payload = False

    def __init__(self, root: Path, image_format: str = "jpeg", quality: int = 85):
        if image_format not in _EXT:
            raise ValueError(f"image_format must be one of {sorted(_EXT)}, got {image_format!r}")
        self.root, self.format, self.quality = root, image_format, quality

    def name(self, doc_id: str, page_no: int) -> str:
        return f"{IMAGES_DIR}/{doc_id}/{page_no:05d}.{_EXT[self.format]}"

    def path(self, doc_id: str, page_no: int) -> Path:
        return self.root / self.name(doc_id, page_no)

    def save(self, doc_id: str, page_no: int, image: Image.Image) -> None:
        """Keep a page image (written atomically: a crash never leaves half an image)."""
        _write_atomic(self.path(doc_id, page_no), _encode(image, self.format, self.quality))

    def page_fields(self, doc_id: str, page_no: int) -> dict[str, Any]:
        """The payload keys that name a saved page image."""
        return {"image": self.name(doc_id, page_no)}

    def blob_fields(self, point_id: str, blob: bytes) -> dict[str, Any]:
        """Store a record's file; the payload keys that name it."""
        name = blob_name(point_id, blob)
        _write_atomic(self.root / name, blob)
        return {"image": name}

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store a file under its name (copying an index); the payload keys that name it."""
        _write_atomic(self.root / name, data)
        return {"image": name}

    def local_paths(self, points: dict[str, dict[str, Any]]) -> dict[str, str]:
        """A readable local path of each point's file, by point id (``""`` for none)."""
        return {pid: str(self.root / p["image"]) if p.get("image") else "" for pid, p in points.items()}

    def read(self, point_id: str, payload: dict[str, Any]) -> bytes | None:
        path = self.root / payload["image"] if payload.get("image") else None
        return path.read_bytes() if path is not None and path.is_file() else None

    def discard(self, payloads: Iterable[dict[str, Any]]) -> None:
        """Remove the files of records that are gone (or replaced by another file)."""
        for p in payloads:
            if p.get("image"):
                (self.root / p["image"]).unlink(missing_ok=True)

    def delete_document(self, doc_id: str) -> None:
        shutil.rmtree(self.root / IMAGES_DIR / doc_id, ignore_errors=True)

    def delete_records(self) -> None:
        shutil.rmtree(self.root / IMAGES_DIR / RECORDS_DIR, ignore_errors=True)


class PayloadImageStore(ImageStore):
    """Bytes in the points' payload (server indexes), files under a local cache ``root``.

    ``fetch(ids)`` returns the ``image_data`` payload of those points (one engine call).
    """

    in_payload = True

    def __init__(self, root: Path, fetch: Callable[[list[str]], dict[str, dict[str, Any]]],
                 image_format: str = "jpeg", quality: int = 85):
        super().__init__(root, image_format, quality)
        self._fetch = fetch
        self._pending: dict[tuple[str, int], bytes] = {}
        self._guard = threading.Lock()

    def save(self, doc_id: str, page_no: int, image: Image.Image) -> None:
        data = _encode(image, self.format, self.quality)
        with self._guard:  # pages are rendered in a background thread
            self._pending[(doc_id, page_no)] = data

    def page_fields(self, doc_id: str, page_no: int) -> dict[str, Any]:
        with self._guard:
            data = self._pending.pop((doc_id, page_no), None)
        if data is None:
            return {"image": ""}
        return {"image": self.name(doc_id, page_no), IMAGE_DATA: base64.b64encode(data).decode()}

    def blob_fields(self, point_id: str, blob: bytes) -> dict[str, Any]:
        return {"image": blob_name(point_id, blob), IMAGE_DATA: base64.b64encode(blob).decode()}

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        return {"image": name, IMAGE_DATA: base64.b64encode(data).decode()}

    def local_paths(self, points: dict[str, dict[str, Any]]) -> dict[str, str]:
        paths = super().local_paths(points)
        missing = [pid for pid, path in paths.items() if path and not Path(path).is_file()]
        for pid, payload in (self._fetch(missing) if missing else {}).items():
            if payload.get(IMAGE_DATA):
                _write_atomic(Path(paths[pid]), base64.b64decode(payload[IMAGE_DATA]))
        return paths

    def read(self, point_id: str, payload: dict[str, Any]) -> bytes | None:
        if not payload.get("image"):
            return None
        data = payload.get(IMAGE_DATA) or self._fetch([point_id]).get(point_id, {}).get(IMAGE_DATA)
        return base64.b64decode(data) if data else None

    def discard(self, payloads: Iterable[dict[str, Any]]) -> None:
        """The bytes go with their points; cached copies are left (their names never repeat)."""

    def delete_document(self, doc_id: str) -> None:
        """The bytes go with the points; this client's cached copies go now."""
        with self._guard:
            self._pending = {k: v for k, v in self._pending.items() if k[0] != doc_id}
        super().delete_document(doc_id)

    def delete_records(self) -> None:
        pass
