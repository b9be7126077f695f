"""The metadata queries of Haystack's extended store API, for AgreeDocumentStore."""

from __future__ import annotations

from typing import Any, Callable

from agree_core.index import record_meta


class MetadataQueries:
    """Mixed into :class:`AgreeDocumentStore` (which provides ``_run`` and ``_arun``)."""

    _run: Callable
    _arun: Callable

    def count_unique_metadata_by_filter(self, filters: dict[str, Any] | None,
                                        metadata_fields: list[str]) -> dict[str, int]:
        """The number of distinct values of each field among the Documents matching ``filters``."""
        return self._run(_unique_counts(filters, metadata_fields))

    def get_metadata_fields_info(self) -> dict[str, dict[str, str]]:
        """Each metadata field and its type: ``{"category": {"type": "keyword"}, ...}``."""
        return self._run(_fields_info)

    def get_metadata_field_min_max(self, metadata_field: str) -> dict[str, Any]:
        """``{"min": ..., "max": ...}`` of a field (``None`` when no Document has it)."""
        return self._run(_min_max(metadata_field))

    def get_metadata_field_unique_values(self, metadata_field: str, search_term: str | None = None,
                                         from_: int = 0, size: int = 10,
                                         filters: dict[str, Any] | None = None) -> tuple[list[Any], int]:
        """One page (``from_``, ``size``) of a field's distinct values, sorted, with their total;
        ``search_term`` keeps the values that contain it (case-insensitive)."""
        return self._run(_unique_values(metadata_field, search_term, from_, size, filters))

    async def count_unique_metadata_by_filter_async(self, filters: dict[str, Any] | None,
                                                    metadata_fields: list[str]) -> dict[str, int]:
        return await self._arun(_unique_counts(filters, metadata_fields))

    async def get_metadata_fields_info_async(self) -> dict[str, dict[str, str]]:
        return await self._arun(_fields_info)

    async def get_metadata_field_min_max_async(self, metadata_field: str) -> dict[str, Any]:
        return await self._arun(_min_max(metadata_field))

    async def get_metadata_field_unique_values_async(
            self, metadata_field: str, search_term: str | None = None, from_: int = 0, size: int = 10,
            filters: dict[str, Any] | None = None) -> tuple[list[Any], int]:
        return await self._arun(_unique_values(metadata_field, search_term, from_, size, filters))


def _unique_counts(filters: dict[str, Any] | None, fields: list[str]) -> Callable:
    return lambda ix: {f: len(record_meta.distinct_values(record_meta.meta_values(ix.records, f, filters)))
                       for f in fields}


def _fields_info(ix: Any) -> dict[str, dict[str, str]]:
    return {k: {"type": t} for k, t in record_meta.meta_fields(ix.records).items()}


def _min_max(field: str) -> Callable:
    def op(ix: Any) -> dict[str, Any]:
        low, high = record_meta.meta_min_max(ix.records, field)
        return {"min": low, "max": high}
    return op


def _unique_values(field: str, search: str | None, from_: int, size: int,
                   filters: dict[str, Any] | None) -> Callable:
    if from_ < 0 or size < 1:
        raise ValueError(f"from_ must be >= 0 and size >= 1, got from_={from_}, size={size}")

    def op(ix: Any) -> tuple[list[Any], int]:
        values = record_meta.distinct_values(record_meta.meta_values(ix.records, field, filters), search)
        return values[from_ : from_ + size], len(values)
    return op
