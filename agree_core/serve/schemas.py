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


# -- records: the pages a framework writes and reads (agree_core.index.records) ----------------
# ``filters`` are the engine-neutral nested form (agree_core.index.filters): {"field": "meta.K",
# "operator": "==", "value": V} or {"operator": "AND" | "OR" | "NOT", "conditions": [...]}.
# ``vectors`` are {"dtype": "float32", "shape": [n, dim], "data": BASE64} (agree_core.serve.wire).

class RecordsFindBody(BaseModel):
    """Records and pages of ready PDFs matching ``filters`` (all when none); ``node_fields``:
    filters may name the keys framework nodes carry (``index_dir`` compared with
    ``index_dir``, the name the client knows this index by) and each record comes with
    ``doc_id`` and ``page_label`` (``RecordStore.find``)."""

    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] | None = None
    with_blobs: bool = True
    node_fields: bool = False
    index_dir: StrictStr | None = Field(None, min_length=1, max_length=4096)


class RecordsGetBody(BaseModel):
    """Records (by record id) or PDF pages (by page id) with these ids."""

    model_config = ConfigDict(extra="forbid")
    ids: list[StrictStr] = Field(max_length=100_000)
    with_blobs: bool = True


class RecordsSearchBody(BaseModel):
    """The ``k`` best records and PDF pages for a query: its text (weighted as PDF search
    weights it) or its token vectors from the index's encoder."""

    model_config = ConfigDict(extra="forbid")
    query: StrictStr | None = Field(None, min_length=1, max_length=2000)
    vectors: dict[str, Any] | list[list[float]] | None = None
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    filters: dict[str, Any] | None = None
    candidates: StrictInt | None = Field(None, ge=1, le=1_000_000)
    with_blobs: bool = True
    node_fields: bool = False  # as RecordsFindBody, and each record's evidence too
    index_dir: StrictStr | None = Field(None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one_form(self) -> "RecordsSearchBody":
        if (self.query is None) == (self.vectors is None):
            raise ValueError('give either "query" (a string) or "vectors" (its token vectors)')
        return self


class RecordsWriteBody(BaseModel):
    """Records to write (``Record`` fields, ``blob`` in base64); ``on_conflict`` for ids that
    exist: ``replace``, ``skip`` or ``error`` (409, nothing written)."""

    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]] = Field(max_length=100_000)
    on_conflict: StrictStr = Field("replace", pattern="^(replace|skip|error)$")
    batch_size: StrictInt = Field(16, ge=1, le=256)


class RecordsDeleteBody(BaseModel):
    """Delete records by ``ids`` or by ``filters`` (exactly one)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[StrictStr] | None = Field(None, max_length=100_000)
    filters: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "RecordsDeleteBody":
        if (self.ids is None) == (self.filters is None):
            raise ValueError('give "ids" or "filters" (exactly one); POST /records/delete_all empties the index')
        return self


class RecordsUpdateBody(BaseModel):
    """Merge ``meta`` into the metadata of the records matching ``filters``."""

    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] | None = None
    meta: dict[str, Any]


class RecordsCountBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] | None = None


class ResolveFiltersBody(BaseModel):
    """Filters on keys framework nodes carry (``file_name``, ``page_label``, ``index_dir``...)
    to rewrite into stored ones; ``index_dir``: the name the client knows this index by."""

    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] | None = None
    index_dir: StrictStr = Field(min_length=1, max_length=4096)


class PageLabelsBody(BaseModel):
    """``[[source, page], ...]``: pages of indexed PDFs whose printed labels are wanted."""

    model_config = ConfigDict(extra="forbid")
    pages: list[tuple[StrictStr, StrictInt]] = Field(max_length=100_000)


class IdsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[StrictStr] = Field(max_length=100_000)


class QueryVectorsBody(BaseModel):
    """Queries to encode as the index's search encodes them (IDF-weighted when it is)."""

    model_config = ConfigDict(extra="forbid")
    queries: list[StrictStr] = Field(min_length=1, max_length=MAX_QUERIES)
