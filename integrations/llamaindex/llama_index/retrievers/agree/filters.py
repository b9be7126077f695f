"""LlamaIndex ``MetadataFilters`` -> agree_core's filter tree (the nested-dict syntax of
:mod:`agree_core.index.filters`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["to_agree_filters"]

_OPERATORS = {
    FilterOperator.EQ: "==", FilterOperator.NE: "!=", FilterOperator.GT: ">",
    FilterOperator.GTE: ">=", FilterOperator.LT: "<", FilterOperator.LTE: "<=",
    FilterOperator.IN: "in", FilterOperator.NIN: "not in",
    FilterOperator.ANY: "in",  # a list field holding any of the values
    FilterOperator.CONTAINS: "==",  # a list field holding the value
}
_SUPPORTED = "==, !=, >, >=, <, <=, in, nin, any, all, contains, is_empty"
_PATHS = ("source", "file_path")
_PAGES = ("page", "page_number")


def to_agree_filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """The filter tree for LlamaIndex ``filters``: ``AND``, ``OR`` and ``NOT`` conditions,
    nested, on any metadata key a node carries (``source``, ``file_path``, ``file_name``,
    ``page``, ``page_label``, ``doc_id``, ``index_dir`` and the documents' own keys; the
    index resolves those it does not store, see :mod:`agree_core.index.node_fields`).

    Only types are translated here: paths made absolute (the index stores absolute paths),
    page numbers given as digit strings made ints. The index checks the values.

    Raises:
        ValueError: an operator agree cannot evaluate (``text_match``).
    """
    if filters is None or not filters.filters:
        return None
    return _tree(filters)


def _tree(filters: MetadataFilters) -> dict[str, Any]:
    conditions = [_tree(f) if isinstance(f, MetadataFilters) else _comparison(f) for f in filters.filters]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:  # LlamaIndex: none of the filters holds
        return {"operator": "NOT", "conditions": [{"operator": "OR", "conditions": conditions}]}
    return {"operator": "OR" if condition == FilterCondition.OR else "AND", "conditions": conditions}


def _comparison(f: MetadataFilter) -> dict[str, Any]:
    key, value = f.key, f.value
    if key in _PATHS:
        value = _absolute(value)
    elif key in _PAGES:
        value = _page(value)
    field = f"meta.{key}"
    if f.operator == FilterOperator.IS_EMPTY:
        return {"field": field, "operator": "==", "value": None}
    if f.operator == FilterOperator.ALL:
        values = value if isinstance(value, list) else [value]
        return {"operator": "AND", "conditions": [{"field": field, "operator": "==", "value": v} for v in values]}
    if f.operator not in _OPERATORS:
        raise ValueError(f"filter {key!r}: operator {f.operator.value!r} is not supported by agree; "
                         f"use one of {_SUPPORTED}")
    op = _OPERATORS[f.operator]
    if op in ("in", "not in") and not isinstance(value, list):
        value = [value]
    return {"field": field, "operator": op, "value": value}


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return str(Path(value).expanduser().absolute()) if isinstance(value, str) and value else value


def _page(value: Any) -> Any:
    if isinstance(value, list):
        return [_page(v) for v in value]
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value
