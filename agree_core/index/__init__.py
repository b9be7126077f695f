"""Persistent page indexes over the embedded Qdrant Edge engine."""

from agree_core.index.config import IndexBusyError, IndexConfig, IndexConfigError, IndexError_
from agree_core.index.page_index import AddReport, Hit, PageIndex

__all__ = [
    "PageIndex", "Hit", "AddReport", "IndexConfig", "IndexError_", "IndexBusyError",
    "IndexConfigError",
]
