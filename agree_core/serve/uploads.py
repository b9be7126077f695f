"""PDFs uploaded to ``POST /documents`` (multipart field ``files``), kept in the upload folder.

Each file is stored once under ``UPLOAD_DIR/<sha256 prefix>-<safe name>.pdf``: that path is
the document's source (what search results and ``agree info`` name), and uploading the same
file again is a no-op for the index, as indexing the same path twice is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class NotAPdf(ValueError):
    """An uploaded file that is not a PDF."""


def safe_name(filename: str | None) -> str:
    """A file name with no folders and no surprising characters, ending in ``.pdf``."""
    name = _SAFE.sub("_", Path((filename or "").replace("\\", "/")).name).strip("._") or "upload"
    return name if name.lower().endswith(".pdf") else name + ".pdf"


def save_uploads(form: FormData, upload_dir: Path) -> tuple[list[str], dict[str, Any] | None]:
    """Store the form's PDFs; their paths and the ``metadata`` field (a JSON object)."""
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise ValueError('the upload holds no files: send PDFs in the multipart field "files"')
    metadata = None
    if form.get("metadata") not in (None, ""):
        try:
            metadata = json.loads(str(form.get("metadata")))
        except json.JSONDecodeError as e:
            raise ValueError(f'the "metadata" field is not valid JSON ({e})') from None
        if not isinstance(metadata, dict):
            raise ValueError('the "metadata" field must be a JSON object')
    upload_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for upload in files:
        upload.file.seek(0)
        if upload.file.read(5) != b"%PDF-":
            raise NotAPdf(f"{upload.filename!r} is not a PDF (it does not start with %PDF-)")
        upload.file.seek(0)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=upload_dir, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := upload.file.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            dest = upload_dir / f"{digest.hexdigest()[:16]}-{safe_name(upload.filename)}"
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(str(dest))
    return paths, metadata
