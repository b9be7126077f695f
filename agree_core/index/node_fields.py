"""Filters on the metadata keys that framework nodes and Documents carry but the index does
not store as such, rewritten into conditions on what it does store.

A page of an indexed PDF is stored with ``source`` and ``page``; the frameworks' readers
name the same facts ``file_path``, ``file_name``, ``page_number``, ``page_label`` (the PDF's
printed label), and LlamaIndex nodes carry ``doc_id`` and ``index_dir`` too. So that a
filter on any key a returned node or Document carries matches what it says, those keys are
rewritten, on the engine-neutral filter tree (:mod:`agree_core.index.filters`):

- ``file_path`` is ``source``, ``page_number`` is ``page``;
- ``file_name`` and ``doc_id`` become ``source in [the indexed files with that name / id]``;
- ``page_label`` becomes, per indexed file, ``source == F and page in [pages with that label]``;
- ``index_dir`` matches every page of this index, or none (locations compared as
  :func:`~agree_core.index.storage.location_key` names them: a folder, or a URL).

Resolving reads the catalog and, for ``page_label``, the indexed PDFs: it runs where the
index is (:meth:`PageIndex.node_filters`); a client of ``agree serve`` asks the server
(``POST /filters/resolve``), never reading the server's paths on its own disk.

Records written by a framework keep their own metadata: a record that has the key itself is
matched on it as well (``OR`` for ``== in > ...``, ``AND`` for ``!= not in``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from agree_core.index.filters import FilterError
from agree_core.index.storage import location_key
from agree_core.page_identity import page_labels

__all__ = ["resolve_node_fields", "names_derived_fields", "DERIVED_FIELDS"]

DERIVED_FIELDS = ("file_path", "page_number", "file_name", "doc_id", "page_label", "index_dir")
_ALIASES = {"file_path": "source", "page_number": "page"}
_NEGATIVE = ("!=", "not in")
_EQUALITY = ("==", "!=", "in", "not in")
_NEVER = {"operator": "OR", "conditions": []}
_ALWAYS = {"operator": "NOT", "conditions": [_NEVER]}


def resolve_node_fields(filters: dict[str, Any] | None, documents: Sequence[Any], index_dir: str | Path,
                        labels_of: Callable[[str], list[str]] = page_labels) -> dict[str, Any] | None:
    """``filters`` with conditions on :data:`DERIVED_FIELDS` rewritten (module docstring).
    ``documents``: the index's ready documents (``doc_id``, ``source``, ``pages``).

    >>> class D:
    ...     doc_id, source, pages = "d1", "/pdfs/a.pdf", 3
    >>> resolve_node_fields({"field": "file_name", "operator": "==", "value": "a.pdf"}, [D()], "/ix")
    {'operator': 'OR', 'conditions': [{'field': 'meta.file_name', 'operator': '==', 'value': 'a.pdf'}, {'field': 'meta.source', 'operator': 'in', 'value': ['/pdfs/a.pdf']}]}
    """
    if not isinstance(filters, dict) or not filters:
        return filters
    if "field" not in filters:
        if not isinstance(filters.get("conditions"), list):
            return filters  # malformed: compile_filter names the problem
        return {**filters, "conditions": [resolve_node_fields(c, documents, index_dir, labels_of)
                                          for c in filters["conditions"]]}
    field = filters.get("field")
    key = field.removeprefix("meta.") if isinstance(field, str) else None
    if key not in DERIVED_FIELDS:
        return filters
    op, value = filters.get("operator"), filters.get("value")
    raw = {**filters, "field": f"meta.{key}"}
    if key in _ALIASES:
        derived: dict[str, Any] = {**filters, "field": f"meta.{_ALIASES[key]}"}
        return _combine(op, raw, derived)
    if op not in _EQUALITY:
        raise FilterError(f"filter on {field!r}: compare it with ==, !=, in or not in, not {op!r}")
    values = value if isinstance(value, list) else [value]
    positive = {"==": "==", "!=": "==", "in": "in", "not in": "in"}[op]
    matched = _matching(key, values, documents, index_dir, labels_of)
    derived = matched if positive == op else {"operator": "NOT", "conditions": [matched]}
    return _combine(op, raw, derived)


def names_derived_fields(filters: Any) -> bool:
    """Whether ``filters`` has a condition on one of :data:`DERIVED_FIELDS` (work for
    :func:`resolve_node_fields`).

    >>> names_derived_fields({"operator": "AND", "conditions": [{"field": "meta.page_label", "operator": "==", "value": "iv"}]})
    True
    >>> names_derived_fields({"field": "meta.page", "operator": "==", "value": 3}), names_derived_fields(None)
    (False, False)
    """
    if not isinstance(filters, dict):
        return False
    if "field" in filters:
        field = filters.get("field")
        return isinstance(field, str) and field.removeprefix("meta.") in DERIVED_FIELDS
    conditions = filters.get("conditions")
    return isinstance(conditions, list) and any(names_derived_fields(c) for c in conditions)


def _matching(key: str, values: list, documents: Sequence[Any], index_dir: str | Path,
              labels_of: Callable[[str], list[str]]) -> dict[str, Any]:
    """The condition matching the indexed pages whose ``key`` is one of ``values``."""
    if key == "index_dir":
        here = location_key(index_dir)
        return _ALWAYS if any(isinstance(v, str) and v and location_key(v) == here for v in values) else _NEVER
    if key in ("file_name", "doc_id"):
        wanted = {str(v) for v in values if v is not None}
        sources = sorted({d.source for d in documents
                          if (Path(d.source).name if key == "file_name" else d.doc_id) in wanted})
        return {"field": "meta.source", "operator": "in", "value": sources}
    wanted = {str(v) for v in values if v is not None}  # page_label
    per_file = []
    for d in documents:
        try:
            labels = labels_of(d.source)
        except (OSError, ValueError):
            continue  # the file is gone or unreadable: its labels are unknown, nothing matches
        pages = [i + 1 for i, label in enumerate(labels[: d.pages]) if label in wanted]
        if pages:
            per_file.append({"operator": "AND", "conditions": [
                {"field": "meta.source", "operator": "==", "value": d.source},
                {"field": "meta.page", "operator": "in", "value": pages}]})
    return {"operator": "OR", "conditions": per_file}


def _combine(op: str, raw: dict[str, Any], derived: dict[str, Any]) -> dict[str, Any]:
    return {"operator": "AND" if op in _NEGATIVE else "OR", "conditions": [raw, derived]}
