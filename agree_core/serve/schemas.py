"""Request bodies of the JSON API, validated at the boundary (pydantic): a wrong type, an
unknown field or a value out of range is a 422 that names the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

MAX_QUERIES = 1000
MAX_K = 1000


class SearchBody(BaseModel):
    """``{"query": str}`` or ``{"queries": [str, ...]}``, optional ``k``, ``filters``
    (as ``PageIndex.search_batch``: source, page, metadata keys) and ``candidates``."""

    model_config = ConfigDict(extra="forbid")
    query: StrictStr | None = Field(None, min_length=1, max_length=2000)
    queries: list[StrictStr] | None = Field(None, min_length=1, max_length=MAX_QUERIES)
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    filters: dict[str, Any] | None = None
    candidates: StrictInt | None = Field(None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_form(self) -> "SearchBody":
        if (self.query is None) == (self.queries is None):
            raise ValueError('give either "query" (a string) or "queries" (a list of strings)')
        for q in self.queries or []:
            if not q.strip() or len(q) > 2000:
                raise ValueError("every query must be a non-empty string of at most 2000 characters")
        if self.query is not None and not self.query.strip():
            raise ValueError('"query" must not be blank')
        return self

    def query_list(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class DocumentsBody(BaseModel):
    """``{"paths": [...]}``: files or folders on the server's disk, under ``--allow-dir``;
    optional ``metadata`` (JSON values, stored with every page) and ``batch_size``."""

    model_config = ConfigDict(extra="forbid")
    paths: list[StrictStr] = Field(min_length=1, max_length=10_000)
    metadata: dict[str, Any] | None = None
    batch_size: StrictInt = Field(16, ge=1, le=256)


class DeleteBody(BaseModel):
    """``{"source": PATH}``: the path of an indexed PDF, as ``agree info`` lists it."""

    model_config = ConfigDict(extra="forbid")
    source: StrictStr = Field(min_length=1, max_length=4096)
