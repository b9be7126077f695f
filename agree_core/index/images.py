"""Page images on disk, one folder per document: ``images/<doc_id>/<page>.<ext>``.

JPEG at quality 85 is the default: BENCHMARKS.md compares formats on real pages (size and
encode time); PNG costs about ten times the encode time and several times the bytes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

IMAGES_DIR = "images"
_EXT = {"jpeg": "jpg", "webp": "webp", "png": "png"}


class ImageStore:
    def __init__(self, root: Path, image_format: str = "jpeg", quality: int = 85):
        if image_format not in _EXT:
            raise ValueError(f"image_format must be one of {sorted(_EXT)}, got {image_format!r}")
        self.root = root / IMAGES_DIR
        self.format = image_format
        self.quality = quality

    def path(self, doc_id: str, page_no: int) -> Path:
        return self.root / doc_id / f"{page_no:05d}.{_EXT[self.format]}"

    def save(self, doc_id: str, page_no: int, image: Image.Image) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half an image."""
        path = self.path(doc_id, page_no)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        options = {"quality": self.quality} if self.format in ("jpeg", "webp") else {"optimize": False}
        image.convert("RGB").save(tmp, format=self.format.upper(), **options)
        os.replace(tmp, path)
        return path

    def delete_document(self, doc_id: str) -> None:
        shutil.rmtree(self.root / doc_id, ignore_errors=True)
