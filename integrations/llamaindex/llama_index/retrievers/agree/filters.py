"""LlamaIndex ``MetadataFilters`` -> agree_core's filters dict (see
:func:`agree_core.index.filters.from_flat`)."""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["to_agree_filters"]

_RANGES = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte",
           FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}
_SUPPORTED = "==, in, >, >=, <, <="
# the names LlamaIndex's PDF readers use for what agree calls source and page
_ALIASES = {"file_path": "source", "page_label": "page"}


def to_agree_filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """Translate filters on ``source`` (or ``file_path``), ``page`` (or ``page_label``),
    ``doc_id`` and document metadata keys.

    Operators: ``==`` (EQ, ExactMatchFilter), ``in``, ``>``, ``>=``, ``<``, ``<=``; filters
    combine with AND (nested AND groups too). Two bounds on one key make one range.

    Raises:
        ValueError: another operator, an OR or NOT condition, or a key given twice.
    """
    if filters is None:
        return None
    out: dict[str, Any] = {}
    for f in _flatten(filters):
        key = _ALIASES.get(f.key, f.key)
        value = _page(f.value) if key == "page" else f.value
        if f.operator == FilterOperator.EQ:
            new: Any = value
        elif f.operator == FilterOperator.IN:
            new = list(value) if isinstance(value, list) else [value]
        elif f.operator in _RANGES:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"filter {f.key!r} {f.operator.value} needs a number, got {value!r}")
            new = {_RANGES[f.operator]: value}
        else:
            raise ValueError(f"filter {f.key!r}: operator {f.operator.value!r} is not supported "
                             f"by agree; use one of {_SUPPORTED}")
        old = out.get(key)
        if old is None:
            out[key] = new
        elif isinstance(old, dict) and isinstance(new, dict) and not set(old) & set(new):
            old.update(new)  # e.g. page >= 2 and page <= 4
        else:
            raise ValueError(f"filters on {f.key!r} cannot be combined ({old!r} and {new!r}): "
                             "give one filter per key, or two bounds of one range")
    return out or None


def _flatten(filters: MetadataFilters) -> list[MetadataFilter]:
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT or (condition != FilterCondition.AND and len(filters.filters) > 1):
        raise ValueError(f"filter condition {condition.value!r} is not supported by agree: "
                         "filters combine with 'and'; use the 'in' operator for alternatives "
                         "on one key")
    flat: list[MetadataFilter] = []
    for f in filters.filters:
        flat.extend(_flatten(f) if isinstance(f, MetadataFilters) else [f])
    return flat


def _page(value: Any) -> Any:
    """Page numbers as ints (``page_label`` values are strings in LlamaIndex)."""
    if isinstance(value, list):
        return [_page(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"filter on page: pages are 1-based integers, got {value!r}")
