"""Metadata statistics over what an index holds (records and PDF pages): the fields and
their types, distinct values, minimum and maximum. ``where`` filters as in
:mod:`agree_core.index.filters`; a ``key`` may carry the ``meta.`` prefix or not.

Values are distinct by type and value: ``1``, ``1.0``, ``"1"`` and ``True`` are four values.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from agree_core.index.records import RecordStore

__all__ = ["meta_values", "distinct_values", "meta_fields", "meta_min_max"]

_TYPES = {bool: "boolean", int: "long", float: "double", str: "keyword", list: "list", dict: "object"}


def _metas(records: RecordStore, where: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    return iter(records.metas(where))


def meta_values(records: RecordStore, key: str, where: dict[str, Any] | None = None) -> list[Any]:
    """The value of ``key`` in each document that has it (``None`` values left out)."""
    key = key.removeprefix("meta.")
    return [m[key] for m in _metas(records, where) if m.get(key) is not None]


def distinct_values(values: list[Any], search: str | None = None) -> list[Any]:
    """Distinct values, ordered by type then value; ``search``: keep the values whose text
    holds it (case-insensitive).

    >>> distinct_values([2, "b", 1, 1.0, True, "a", 2])
    [True, 1.0, 1, 2, 'a', 'b']
    >>> distinct_values(["All_Beauty", "Home"], search="beaut")
    ['All_Beauty']
    """
    seen: dict[tuple[str, str], Any] = {}
    for v in values:
        seen.setdefault((type(v).__name__, json.dumps(v, sort_keys=True)), v)
    out = [v for v in seen.values() if search is None or search.lower() in str(v).lower()]
    return sorted(out, key=_sort_key)


def meta_fields(records: RecordStore, where: dict[str, Any] | None = None) -> dict[str, str]:
    """Each metadata key and the type of its first non-null value (``keyword``, ``long``,
    ``double``, ``boolean``, ``list`` or ``object``)."""
    fields: dict[str, str] = {}
    for meta in _metas(records, where):
        for k, v in meta.items():
            if v is not None and k not in fields:
                fields[k] = _TYPES.get(type(v), type(v).__name__)
    return fields


def meta_min_max(records: RecordStore, key: str, where: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """``(min, max)`` of a numeric (or text) key; ``(None, None)`` when no document has it."""
    values = [v for v in meta_values(records, key, where) if not isinstance(v, (bool, list, dict))]
    numbers = [v for v in values if isinstance(v, (int, float))]
    values = numbers or [v for v in values if isinstance(v, str)]
    return (min(values), max(values)) if values else (None, None)


def _sort_key(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, "", v, type(v).__name__)
    if isinstance(v, str):
        return (2, v, 0, "")
    return (0 if isinstance(v, bool) else 3, json.dumps(v, sort_keys=True), 0, "")
