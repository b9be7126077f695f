"""The one filter language of the index: an engine-neutral tree, and what translates into it.

Callers write filters in the plain-dict syntax Haystack standardised: a comparison
``{"field": F, "operator": OP, "value": V}`` with OP one of ``== != > >= < <= in, not in``, or
a logic node ``{"operator": "AND" | "OR" | "NOT", "conditions": [...]}`` (NOT negates the AND
of its conditions). The CLI's flat form ``{"key": value, ...}`` (a scalar, a list of
alternatives, or a ``gte/gt/lte/lt`` range dict per key, all ANDed) is translated into it by
:func:`from_flat`. :func:`compile_filter` turns either into a tree of the small node types
below, which each engine compiles to its own filter objects in one place
(:mod:`agree_core.index.engines.edge`, :mod:`agree_core.index.engines.server`).

Fields: ``id``, ``content`` (the page text), ``meta.KEY`` (or a bare ``KEY``) for metadata;
``meta.source`` and ``meta.page`` also match the pages of indexed PDF files, which keep them
at the top of their payload. Semantics follow Haystack's reference store:

- ``== None`` matches a missing or null key (or an empty list: the engines cannot tell them
  apart); ``!= V`` and ``not in`` match documents that lack the key;
- numbers compare as numbers (``2 == 2.0``), strings exactly; ``> >= < <=`` take numbers or
  ISO 8601 date strings (compared as dates) and never match ``None``;
- anything else (a string that is not a date, a list, a tuple for ``in``) is a
  :class:`FilterError` before an engine sees it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Union

__all__ = ["FilterError", "compile_filter", "from_flat", "is_nested", "RECORD_KIND",
           "Match", "MatchAny", "Range", "DateRange", "IsEmpty", "HasId", "And", "Or", "Not",
           "Node", "NEVER", "all_of"]

RECORD_KIND = "record"  # payload "kind" of points written by callers (see records.py)
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=", "in", "not in")
_RANGE = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_TOP_LEVEL = ("source", "page")  # where PDF pages keep these (records keep them in meta)
_UNSUPPORTED = ("embedding", "sparse_embedding", "blob", "score", "multivector_embedding")


class FilterError(ValueError):
    """A filter that is malformed or that this index cannot evaluate."""


# -- the tree ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    """Payload ``key`` equals ``value`` (a string, int or bool)."""
    key: str
    value: Any


@dataclass(frozen=True)
class MatchAny:
    """Payload ``key`` is one of ``values`` (strings or ints)."""
    key: str
    values: tuple


@dataclass(frozen=True)
class Range:
    """A numeric payload ``key`` within the given bounds."""
    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class DateRange:
    """An ISO 8601 payload ``key`` within the given (ISO 8601) bounds."""
    key: str
    gt: str | None = None
    gte: str | None = None
    lt: str | None = None
    lte: str | None = None


@dataclass(frozen=True)
class IsEmpty:
    """Payload ``key`` is missing, null or an empty list."""
    key: str


@dataclass(frozen=True)
class HasId:
    """The point id is one of ``ids`` (no ids: matches nothing)."""
    ids: tuple


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: "Node"


Node = Union[Match, MatchAny, Range, DateRange, IsEmpty, HasId, And, Or, Not]
NEVER = HasId(())


def all_of(*nodes: Node | None) -> Node | None:
    """The AND of the nodes that are not ``None`` (``None`` when none is)."""
    items = tuple(n for n in nodes if n is not None)
    return None if not items else items[0] if len(items) == 1 else And(items)


# -- what callers write ----------------------------------------------------------------------
def is_nested(filters: dict[str, Any]) -> bool:
    """Whether ``filters`` is in the nested syntax (else the flat ``{"key": value}`` one):
    a flat filter on metadata keys named ``operator``, ``field`` or ``conditions`` must be
    written in the nested syntax."""
    return bool({"operator", "field", "conditions"} & set(filters))


def from_flat(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """The nested form of the flat ``{"source": ..., "page": ..., "<meta key>": ...}`` filter.

    A value may be a scalar (equality), a list (any of) or, for numbers, a dict with
    ``gte``/``gt``/``lte``/``lt``. ``source``, ``page`` and other keys name metadata.

    >>> from_flat({"page": {"gte": 2}, "team": ["a", "b"]})["conditions"]
    [{'field': 'meta.page', 'operator': '>=', 'value': 2}, {'field': 'meta.team', 'operator': 'in', 'value': ['a', 'b']}]
    """
    conditions = []
    ops = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
    for key, value in (filters or {}).items():
        field = f"meta.{key.removeprefix('meta.')}"
        if isinstance(value, dict):
            bad = set(value) - set(ops)
            if bad:
                raise FilterError(f"filter {key!r}: range keys are gte, gt, lte, lt; got {sorted(bad)}")
            conditions += [{"field": field, "operator": ops[k], "value": v} for k, v in value.items()]
        elif isinstance(value, (list, tuple, set)):
            values = list(value)
            if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                raise FilterError(f"filter {key!r}: a list must hold strings or integers, got {values!r}")
            conditions.append({"field": field, "operator": "in", "value": values})
        elif isinstance(value, (str, int, float)):
            conditions.append({"field": field, "operator": "==", "value": value})
        else:
            raise FilterError(f"filter {key!r}: unsupported value {value!r} "
                              "(use a string, number, bool, list or a range dict)")
    return {"operator": "AND", "conditions": conditions} if conditions else None


def compile_filter(filters: dict[str, Any] | None) -> Node | None:
    """The engine-neutral tree of ``filters``, nested or flat (``None`` for no filter).

    >>> compile_filter(None) is None, compile_filter({}) is None
    (True, True)
    >>> compile_filter({"field": "meta.n", "operator": ">", "value": "7"})
    Traceback (most recent call last):
    ...
    agree_core.index.filters.FilterError: filter on 'meta.n': '>' takes a number or an ISO 8601 date, got '7'
    >>> compile_filter({"field": "meta.team", "operator": "==", "value": "ops"})
    Match(key='meta.team', value='ops')
    """
    if not filters:
        return None
    if not isinstance(filters, dict):
        raise FilterError(f"filters must be a dict, got {type(filters).__name__}")
    if not is_nested(filters):
        filters = from_flat(filters)
        if filters is None:
            return None
    return _node(filters)


def _node(f: Any) -> Node:
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
    nodes = tuple(_node(c) for c in conditions)
    if op == "AND":
        return And(nodes)
    if op == "OR":
        return Or(nodes) if nodes else NEVER
    if op == "NOT":
        return Not(And(nodes))
    raise FilterError(f"unknown logic operator {op!r}: use AND, OR or NOT")


def _comparison(f: dict[str, Any]) -> Node:
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
    return Not(cond) if op in ("!=", "not in") else cond


def _id_condition(op: str, value: Any, where: str) -> Node:
    """Records carry the caller's id (``record_id``); PDF pages are known by their point id."""
    if op in (">", ">=", "<", "<="):
        raise FilterError(f"{where}: ids cannot be ordered; use ==, !=, in or not in")
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) for i in ids):
        raise FilterError(f"{where}: ids are strings, got {value!r}")
    if not ids:
        return NEVER
    uuids = tuple(sorted({i for i in ids if is_uuid(i)}))
    by_record = MatchAny("record_id", tuple(ids))
    return Or((by_record, HasId(uuids))) if uuids else by_record


def _on_field(field: str, build: Callable[[str], Node]) -> Node:
    """``build(payload key)`` for ``field``; for source and page, on both payload layouts."""
    if field in _UNSUPPORTED:
        raise FilterError(f"filtering on {field!r} is not supported; filter on id, content or meta fields")
    if field == "content":
        return build("text")
    key = field.removeprefix("meta.")
    if key in _TOP_LEVEL:
        is_record = Match("kind", RECORD_KIND)
        return Or((And((is_record, build(f"meta.{key}"))), And((build(key), Not(is_record)))))
    return build(f"meta.{key}")


def _equal(key: str, value: Any, where: str) -> Node:
    if value is None:
        return IsEmpty(key)
    if isinstance(value, bool):
        return Match(key, value)
    if isinstance(value, (int, float)):
        return Range(key, gte=value, lte=value)
    if isinstance(value, (datetime, date)):
        value = value.isoformat()
    if isinstance(value, str):
        return Match(key, value)
    raise FilterError(f"{where}: cannot compare with a {type(value).__name__} ({value!r}); "
                      "use a string, number, boolean, date or None")


def _any_of(key: str, values: list, where: str) -> Node:
    if not values:
        return NEVER
    return Or(tuple(_equal(key, v, where) for v in values))


def _range(key: str, op: str, value: Any, where: str) -> Node:
    if value is None:
        return NEVER  # nothing is greater or smaller than None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Range(key, **{_RANGE[op]: value})
    if isinstance(value, (datetime, date)):
        value = value.isoformat()
    if isinstance(value, str) and _is_iso_date(value):
        return DateRange(key, **{_RANGE[op]: value})
    raise FilterError(f"{where}: {op!r} takes a number or an ISO 8601 date, got {value!r}")


def _is_iso_date(s: str) -> bool:
    try:
        datetime.fromisoformat(s)
    except ValueError:
        return False
    return True


def is_uuid(s: str) -> bool:
    """Whether ``s`` is a UUID (a page id is the UUID of its point)."""
    try:
        uuid.UUID(s)
    except (ValueError, TypeError, AttributeError):
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
