"""How records, vectors and documents travel between ``agree serve`` and its clients (JSON).

- vectors: ``{"dtype": "float32", "shape": [n, dim], "data": BASE64}``, the float32 bytes in
  little-endian order, so a vector read back over HTTP is bit for bit the one stored;
- a record: :class:`~agree_core.index.records.Record`'s fields by name, ``blob`` in base64,
  ``vectors`` as above, ``cells`` a list of ints; the server sends ``image_url`` (a path on
  the server) for a record whose file it serves as an image;
- a catalog document: :class:`~agree_core.index.catalog.Document`'s fields by name.

Both ends use these functions; torch and numpy are imported only when a vector is decoded
or encoded, so a client that only searches PDFs never loads them.
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Any

__all__ = ["vectors_to_json", "vectors_from_json", "record_to_json", "record_from_json",
           "document_to_json", "document_from_json"]


def vectors_to_json(vectors: Any) -> dict[str, Any]:
    """A tensor or array ``(n, dim)`` as JSON."""
    import numpy as np

    array = vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else np.asarray(vectors)
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "float32", "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def vectors_from_json(data: Any) -> Any:
    """The ``torch.Tensor`` (float32) that :func:`vectors_to_json` wrote; a plain list of
    lists of floats is accepted too. Raises ValueError on a malformed value."""
    import numpy as np
    import torch

    if isinstance(data, list):
        return torch.tensor(data, dtype=torch.float32)
    if not isinstance(data, dict) or data.get("dtype") != "float32" or not isinstance(data.get("shape"), list):
        raise ValueError('vectors must be {"dtype": "float32", "shape": [n, dim], "data": BASE64} '
                         "or a list of lists of floats")
    try:
        raw = base64.b64decode(data.get("data") or "", validate=True)
        array = np.frombuffer(raw, dtype="<f4").reshape([int(s) for s in data["shape"]])
    except (ValueError, TypeError) as e:
        raise ValueError(f"vectors: the data does not hold float32 values of shape {data['shape']} ({e})") from None
    return torch.from_numpy(array.astype(np.float32))


def record_to_json(record: Any) -> dict[str, Any]:
    """A :class:`Record` as JSON (what the server returns and the client sends)."""
    return {
        "id": record.id, "text": record.text,
        "blob": base64.b64encode(bytes(record.blob)).decode("ascii") if record.blob is not None else None,
        "mime_type": record.mime_type, "meta": record.meta,
        "vectors": vectors_to_json(record.vectors) if record.vectors is not None else None,
        "grid": list(record.grid) if record.grid is not None else None,
        "cells": _ints(record.cells) if record.cells is not None else None,
        "extra": record.extra, "kind": record.kind, "score": record.score,
        "image_path": record.image_path, "image_url": record.image_url,
        # what a search or find asked for node_fields adds (RecordStore.search); absent otherwise
        **{k: getattr(record, k) for k in _NODE_FIELDS if getattr(record, k) is not None},
    }


_NODE_FIELDS = ("doc_id", "page_label", "evidence")


def _ints(values: Any) -> list[int]:
    return [int(c) for c in (values.tolist() if hasattr(values, "tolist") else values)]


def record_from_json(data: dict[str, Any]) -> Any:
    """The :class:`Record` that :func:`record_to_json` wrote. Raises ValueError on a malformed one."""
    from agree_core.index.records import Record

    if not isinstance(data, dict):
        raise ValueError(f"a record must be a JSON object, got {type(data).__name__}")
    known = {"id", "text", "blob", "mime_type", "meta", "vectors", "grid", "cells", "extra", "kind",
             "score", "image_path", "image_url", *_NODE_FIELDS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"record {data.get('id')!r}: unknown field(s) {unknown}; a record has {sorted(known)}")
    fields = dict(data)
    try:
        if fields.get("blob") is not None:
            fields["blob"] = base64.b64decode(fields["blob"], validate=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"record {data.get('id')!r}: blob is not base64 ({e})") from None
    if fields.get("vectors") is not None:
        fields["vectors"] = vectors_from_json(fields["vectors"])
    if fields.get("cells") is not None:
        import torch

        fields["cells"] = torch.tensor(fields["cells"], dtype=torch.long)
    if fields.get("grid") is not None:
        fields["grid"] = tuple(fields["grid"])
    for key in ("meta", "extra"):
        if fields.get(key) is None:
            fields.pop(key, None)
    if fields.get("kind") is None:
        fields.pop("kind", None)
    return Record(**fields)


def document_to_json(doc: Any) -> dict[str, Any]:
    return asdict(doc)


def document_from_json(data: dict[str, Any]) -> Any:
    from agree_core.index.catalog import Document

    return Document(**data)
