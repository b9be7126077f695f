"""Nested filter dicts -> Qdrant filters over the page payload.

The syntax is the plain-dict one Haystack standardised (and other frameworks can produce):
a comparison ``{"field": F, "operator": OP, "value": V}`` with OP one of ``== != > >= < <=
in, not in``, or a logic node ``{"operator": "AND" | "OR" | "NOT", "conditions": [...]}``
(NOT negates the AND of its conditions).

Fields: ``id``, ``content`` (the page text), ``meta.KEY`` (or a bare ``KEY``) for metadata;
``meta.source`` and ``meta.page`` also match the pages of indexed PDF files, which keep them
at the top of their payload. Semantics follow Haystack's reference store:

- ``== None`` matches a missing or null key (or an empty list: the engine cannot tell them
  apart); ``!= V`` and ``not in`` match documents that lack the key;
- numbers compare as numbers (``2 == 2.0``), strings exactly; ``> >= < <=`` take numbers or
  ISO 8601 date strings (compared as dates) and never match ``None``;
- anything else (a string that is not a date, a list, a tuple for ``in``) is a
  :class:`FilterError` before the engine sees it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Callable

import numpy as np

__all__ = ["FilterError", "compile_filter", "RECORD_KIND"]

RECORD_KIND = "record"  # payload "kind" of pages written by callers (see records.py)
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=", "in", "not in")
_RANGE = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_TOP_LEVEL = ("source", "page")  # where PDF pages keep these (records keep them in meta)
_UNSUPPORTED = ("embedding", "sparse_embedding", "blob", "score", "multivector_embedding")


class FilterError(ValueError):
    """A filter that is malformed or that this index cannot evaluate."""


def _qe():
    import qdrant_edge

    return qdrant_edge


def compile_filter(filters: dict[str, Any] | None) -> Any:
    """The Qdrant filter for ``filters`` (``None`` for no filter).

    >>> compile_filter(None) is None, compile_filter({}) is None
    (True, True)
    >>> compile_filter({"field": "meta.n", "operator": ">", "value": "7"})
    Traceback (most recent call last):
    ...
    agree_core.index.filters.FilterError: filter on 'meta.n': '>' takes a number or an ISO 8601 date, got '7'
    """
    if not filters:
        return None
    if not isinstance(filters, dict):
        raise FilterError(f"filters must be a dict, got {type(filters).__name__}")
    node = _node(filters)
    return node if isinstance(node, _qe().Filter) else _qe().Filter(must=[node])


def _node(f: Any) -> Any:
    qe = _qe()
    if not isinstance(f, dict):
        raise FilterError(f"a filter condition must be a dict, got {f!r}")
    if "field" in f:
        return _comparison(f)
    if "operator" not in f:
        raise FilterError(f"a logic filter needs an 'operator' (AND, OR, NOT): {f!r}")
    if "conditions" not in f:
        raise FilterError(f"a logic filter needs 'conditions' (a list): {f!r}")
    op, conditions = f["operator"], f["conditions"]
    if not isinstance(conditions, list):
        raise FilterError(f"'conditions' must be a list, got {conditions!r}")
    nodes = [_node(c) for c in conditions]
    if op == "AND":
        return qe.Filter(must=nodes)
    if op == "OR":
        return qe.Filter(should=nodes) if nodes else _never()
    if op == "NOT":
        return qe.Filter(must_not=[qe.Filter(must=nodes)])
    raise FilterError(f"unknown logic operator {op!r}: use AND, OR or NOT")


def _comparison(f: dict[str, Any]) -> Any:
    qe = _qe()
    missing = [k for k in ("field", "operator", "value") if k not in f]
    if missing:
        raise FilterError(f"a comparison needs 'field', 'operator' and 'value'; {missing} missing in {f!r}")
    field, op, value = f["field"], f["operator"], f["value"]
    if op not in _COMPARISONS:
        raise FilterError(f"unknown comparison operator {op!r}: use one of {', '.join(_COMPARISONS)}")
    if not isinstance(field, str) or not field:
        raise FilterError(f"'field' must be a non-empty string, got {field!r}")
    where = f"filter on {field!r}"
    if op in ("in", "not in") and not isinstance(value, list):
        raise FilterError(f"{where}: {op!r} takes a list, got {type(value).__name__}")
    if field == "id":
        cond = _id_condition(op, value, where)
    elif op in ("in", "not in"):
        cond = _on_field(field, lambda key: _any_of(key, value, where))
    elif op in ("==", "!="):
        cond = _on_field(field, lambda key: _equal(key, value, where))
    else:
        cond = _on_field(field, lambda key: _range(key, op, value, where))
    return qe.Filter(must_not=[cond]) if op in ("!=", "not in") else cond


def _id_condition(op: str, value: Any, where: str) -> Any:
    """Records carry the caller's id (``record_id``); PDF pages are known by their point id."""
    qe = _qe()
    if op in (">", ">=", "<", "<="):
        raise FilterError(f"{where}: ids cannot be ordered; use ==, !=, in or not in")
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) for i in ids):
        raise FilterError(f"{where}: ids are strings, got {value!r}")
    if not ids:
        return _never()
    conds = [qe.FieldCondition("record_id", match=qe.MatchAny(ids))]
    uuids = {i for i in ids if _is_uuid(i)}
    return qe.Filter(should=conds + ([qe.HasIdCondition(uuids)] if uuids else []))


def _on_field(field: str, build: Callable[[str], Any]) -> Any:
    """``build(payload key)`` for ``field``; for source and page, on both payload layouts."""
    qe = _qe()
    if field in _UNSUPPORTED:
        raise FilterError(f"filtering on {field!r} is not supported; filter on id, content or meta fields")
    if field == "content":
        return build("text")
    key = field.removeprefix("meta.")
    if key in _TOP_LEVEL:
        is_record = qe.FieldCondition("kind", match=qe.MatchValue(RECORD_KIND))
        return qe.Filter(should=[
            qe.Filter(must=[is_record, build(f"meta.{key}")]),
            qe.Filter(must=[build(key)], must_not=[is_record]),
        ])
    return build(f"meta.{key}")


def _equal(key: str, value: Any, where: str) -> Any:
    qe = _qe()
    if value is None:
        return qe.IsEmptyCondition(key)
    if isinstance(value, bool):  # numpy's bool: qdrant-edge-py 0.9 reads a Python bool as 0 or 1
        return qe.FieldCondition(key, match=qe.MatchValue(np.bool_(value)))
    if isinstance(value, (int, float)):
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=value, lte=value))
    if isinstance(value, (datetime, date)):
        value = value.isoformat()
    if isinstance(value, str):
        return qe.FieldCondition(key, match=qe.MatchValue(value))
    raise FilterError(f"{where}: cannot compare with a {type(value).__name__} ({value!r}); "
                      "use a string, number, boolean, date or None")


def _any_of(key: str, values: list, where: str) -> Any:
    if not values:
        return _never()
    return _qe().Filter(should=[_equal(key, v, where) for v in values])


def _range(key: str, op: str, value: Any, where: str) -> Any:
    qe = _qe()
    if value is None:
        return _never()  # nothing is greater or smaller than None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return qe.FieldCondition(key, range=qe.RangeFloat(**{_RANGE[op]: value}))
    if isinstance(value, (datetime, date)):
        value = value.isoformat()
    if isinstance(value, str) and _is_iso_date(value):
        return qe.FieldCondition(key, range=qe.RangeDateTime(**{_RANGE[op]: value}))
    raise FilterError(f"{where}: {op!r} takes a number or an ISO 8601 date, got {value!r}")


def _never() -> Any:
    return _qe().HasIdCondition(set())


def _is_iso_date(s: str) -> bool:
    try:
        datetime.fromisoformat(s)
    except ValueError:
        return False
    return True


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True


def check_types(filters: dict[str, Any] | None, types_of: Callable[[str], set[type]]) -> None:
    """Raise :class:`FilterError` where a comparison cannot be evaluated on the values the
    index holds, as Haystack's ``InMemoryDocumentStore`` raises rather than matching nothing:
    ``> >= < <=`` with a number on a field that holds strings, or with a date on a field that
    holds numbers. ``types_of(key)``: the types of the stored values of a metadata key (called
    only for the fields that an ordering comparison names). Checked on the engine-neutral tree,
    before any engine compiles it.

    >>> check_types({"field": "meta.name", "operator": ">", "value": 3}, lambda key: {str})
    Traceback (most recent call last):
    ...
    agree_core.index.filters.FilterError: filter on 'meta.name': '>' with the number 3 on a field that holds strings; strings compare with > >= < <= only as ISO 8601 dates
    >>> check_types({"operator": "OR", "conditions": [{"field": "meta.n", "operator": "<", "value": 3}]},
    ...             lambda key: {int, float})
    """
    if not isinstance(filters, dict) or not filters:
        return
    if "field" not in filters:
        for condition in filters.get("conditions") or []:
            check_types(condition, types_of)
        return
    field, op, value = filters.get("field"), filters.get("operator"), filters.get("value")
    if op not in _RANGE or not isinstance(field, str) or field in ("id", "content") or value is None:
        return
    key = field.removeprefix("meta.")
    stored = types_of(key) - {type(None), bool}
    where = f"filter on {field!r}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and str in stored:
        raise FilterError(f"{where}: {op!r} with the number {value!r} on a field that holds strings; "
                          "strings compare with > >= < <= only as ISO 8601 dates")
    if isinstance(value, (str, date, datetime)) and not is_number and stored & {int, float}:
        raise FilterError(f"{where}: {op!r} with {value!r} on a field that holds numbers; compare it "
                          "with a number")
