"""Where an index lives: the one place that maps an index name to its engine, catalog,
config and images. Three forms name an index everywhere (CLI, Python API, integrations):

- a folder: the embedded engine (Qdrant Edge), catalog in SQLite, images as files;
- ``qdrant://HOST:PORT/COLLECTION`` (``qdrants://`` for TLS; the API key comes from
  ``QDRANT_API_KEY``): a Qdrant server or cluster; catalog, config and images live in
  the server, so every client sees the same index;
- ``qdrant-local:PATH``: the same server engine over qdrant-client's local mode, for
  development and tests (brute-force search in Python: slow past a few thousand pages).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agree_core.index.catalog import Catalog
from agree_core.index.config import IndexConfig, IndexConfigError
from agree_core.index.engines.base import Engine
from agree_core.index.images import IMAGE_DATA, ImageStore, PayloadImageStore
from agree_core.index.lock import DirectoryLock
from agree_core.index.schema import INTEGER_FIELDS, KEYWORD_FIELDS, vector_specs

__all__ = ["Storage", "open_storage", "location_key", "is_url", "is_served", "SERVER_SETTINGS", "LOCAL_COLLECTION"]

SERVER_SETTINGS = ("shard_number", "replication_factor", "on_disk_payload")
LOCAL_COLLECTION = "agree"  # the collection of a qdrant-local: index
SHARD_DIR = "shard"
_COLLECTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a server index or a served one (``http(s)://``), else a folder."""
    return isinstance(location, str) and location.startswith(
        ("qdrant://", "qdrants://", "qdrant-local:", "http://", "https://"))


def is_served(location: str | Path) -> bool:
    """Whether ``location`` names an index that ``agree serve`` holds (``http(s)://HOST:PORT``)."""
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def location_key(location: str | Path) -> str:
    """One name per index, for sharing an open index inside a process."""
    if is_url(location):
        if str(location).startswith("qdrant-local:"):
            return "qdrant-local:" + str(Path(str(location)[len("qdrant-local:"):]).expanduser().absolute())
        return str(location).rstrip("/")
    return str(Path(location).expanduser().absolute())


@dataclass
class Storage:
    """An opened location: engine, catalog and images, once :meth:`attach` ran."""

    location: str
    directory: Path | None  # the index folder (embedded), else None
    engine: Engine | None = None
    catalog: Any = None
    images: ImageStore | None = None
    _lock: DirectoryLock | None = None
    _client: Any = None
    _collection: str = ""
    _local: bool = False
    _options: dict | None = None

    # the dispatch: one small function, one line per form
    @classmethod
    def open(cls, location: str | Path, *, create: bool, wait: float, **options: Any) -> "Storage":
        if is_served(location):  # PageIndex.open hands back a client; this needs the index itself
            raise IndexConfigError(f"{location} is served by agree serve, which holds the index: "
                                   "run this where the server runs, on the index it serves")
        if is_url(location):
            return cls._server(str(location), create=create, wait=wait, **options)
        return cls._directory(Path(location).expanduser().absolute(), create=create, wait=wait)

    # -- config -----------------------------------------------------------------------------
    def load_config(self) -> IndexConfig | None:
        if self.directory is not None:
            return IndexConfig.load(self.directory) if (self.directory / "agree-index.json").is_file() else None
        data = self.catalog.load_config()
        return IndexConfig.from_dict(data, self.location) if data is not None else None

    def save_config(self, config: IndexConfig) -> None:
        if self.directory is not None:
            config.save(self.directory)
            return
        if not self._local:  # local mode stores float32 whatever it is asked; a server may refuse
            from agree_core.index.engines.server import check_datatype

            check_datatype(self._client, config.vector_datatype, self.location)
        self.catalog.save_config(json.loads(json.dumps(asdict(config))))

    def first_stage_datatype(self) -> str:
        """How a new first stage stores its encodings here: :data:`~agree_core.index.first_stage.FDE_DATATYPE`,
        or float16 on a Qdrant server too old for it."""
        from agree_core.index.first_stage import FDE_DATATYPE, OLD_FDE_DATATYPE

        if self.directory is not None or self._local:
            return FDE_DATATYPE
        from agree_core.index.engines.server import supports_datatype

        return FDE_DATATYPE if supports_datatype(self._client, FDE_DATATYPE) else OLD_FDE_DATATYPE

    def attach(self, config: IndexConfig) -> None:
        """Open the page engine and image store for an index built with ``config``."""
        specs = vector_specs(config.dim, config.vector_datatype, config.pooled_vectors > 0,
                             config.first_stage)
        if self.directory is not None:
            from agree_core.index.engines.edge import EdgeEngine

            self.engine = EdgeEngine(self.directory / SHARD_DIR, specs, KEYWORD_FIELDS, INTEGER_FIELDS)
            for key in KEYWORD_FIELDS:  # indexes made before records existed lack some
                self.engine.ensure_field_index(key, "keyword")
            for key in INTEGER_FIELDS:
                self.engine.ensure_field_index(key, "integer")
            self.catalog = Catalog(self.directory)
            self.images = ImageStore(self.directory, config.image_format, config.image_quality)
            return
        from agree_core.index.engines.server import ServerEngine

        self.engine = ServerEngine(self._client, self._collection, specs, local=self._local,
                                   keyword_fields=KEYWORD_FIELDS, integer_fields=INTEGER_FIELDS,
                                   **(self._options or {}))
        engine = self.engine
        self.images = PayloadImageStore(
            _cache_root(self.location), lambda ids: {pid: p.payload for pid, p in
                                                     engine.retrieve(ids, payload=[IMAGE_DATA]).items()},
            config.image_format, config.image_quality)

    def close(self) -> None:
        try:
            if self.engine is not None:
                self.engine.flush()
                if self.directory is not None:
                    self.engine.close()
            if self.catalog is not None:
                self.catalog.close()  # the server catalog closes the shared client
            elif self._client is not None:
                self._client.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # -- the forms --------------------------------------------------------------------------
    @classmethod
    def _directory(cls, directory: Path, *, create: bool, wait: float) -> "Storage":
        exists = (directory / "agree-index.json").is_file()
        if not exists:
            if not create:
                IndexConfig.load(directory)  # raises the "not an agree index" error
            if directory.exists() and not directory.is_dir():
                raise IndexConfigError(f"{directory} exists and is not a directory")
            if directory.is_dir() and any(p.name != ".lock" for p in directory.iterdir()):
                raise IndexConfigError(f"{directory} is not empty and holds no agree index; "
                                       "choose an empty or new directory")
            directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(directory)
        lock.acquire(wait)
        return cls(str(directory), directory, _lock=lock)

    @classmethod
    def _server(cls, location: str, *, create: bool, wait: float, **options: Any) -> "Storage":
        from agree_core.index.engine_catalog import EngineCatalog
        from agree_core.index.engines.server import ServerEngine, connect

        client_options = options.pop("client_options", None) or {}
        unknown = set(options) - set(SERVER_SETTINGS)
        if unknown:
            raise ValueError(f"unknown server settings {sorted(unknown)}; use {', '.join(SERVER_SETTINGS)}")
        if location.startswith("qdrant-local:"):
            path = Path(location[len("qdrant-local:"):]).expanduser().absolute()
            if not str(location[len("qdrant-local:"):]).strip():
                raise IndexConfigError("qdrant-local: needs a folder: qdrant-local:PATH")
            if not create and not path.is_dir():
                raise IndexConfigError(f"qdrant-local:{path} is not an agree index (no such folder); "
                                       f"create one with `agree index PDF... --index qdrant-local:{path}`")
            path.mkdir(parents=True, exist_ok=True)
            client = connect(path=str(path), wait=wait, **client_options)
            collection, local, shown = LOCAL_COLLECTION, True, f"qdrant-local:{path}"
        else:
            url, collection = _parse_url(location)
            client = connect(url=url, api_key=os.environ.get("QDRANT_API_KEY") or None, **client_options)
            local, shown = False, location.rstrip("/")
        try:
            if not create and not client.collection_exists(collection):
                raise IndexConfigError(f"{shown} is not an agree index (collection {collection!r} does "
                                       f"not exist); create one with `agree index PDF... --index {shown}`")
            catalog = EngineCatalog(ServerEngine(client, f"{collection}-catalog", (), local=local,
                                                 keyword_fields=("kind", "source", "state")))
        except BaseException:
            client.close()
            raise
        return cls(shown, None, catalog=catalog, _client=client, _collection=collection,
                   _local=local, _options=options)


def _parse_url(location: str) -> tuple[str, str]:
    """``qdrant[s]://HOST:PORT/COLLECTION`` -> (http[s]://HOST:PORT, COLLECTION)."""
    parts = urlsplit(location)
    collection = parts.path.strip("/")
    if not parts.hostname or not collection or "/" in collection or not _COLLECTION.match(collection):
        raise IndexConfigError(f"{location!r} is not an index URL: use qdrant://HOST:PORT/COLLECTION "
                               "(or qdrants:// for TLS; the collection is letters, digits, _ . -)")
    scheme = "https" if parts.scheme == "qdrants" else "http"
    port = parts.port or 6333
    return f"{scheme}://{parts.hostname}:{port}", collection


def _cache_root(location: str) -> Path:
    """Where a client keeps the page images it has read from a server index."""
    if location.startswith("qdrant-local:"):
        return Path(location[len("qdrant-local:"):]) / "agree-images"
    base = Path(os.environ.get("AGREE_CACHE_DIR") or Path.home() / ".cache" / "agree")
    return base / re.sub(r"[^A-Za-z0-9_.-]+", "_", location.split("://", 1)[1])


def open_storage(location: str | Path, *, create: bool = True, wait: float = 0.0, **options: Any) -> Storage:
    return Storage.open(location, create=create, wait=wait, **options)


def resolve_location(location: str | Path, *, must_exist: bool = True) -> str | Path:
    """An index name as components keep it: an absolute folder path (checked to hold an
    index when ``must_exist``), or a server URL as given (checked when the index opens)."""
    if is_url(location):
        return location_key(location)
    path = Path(location).expanduser().absolute()
    if must_exist:
        IndexConfig.load(path)  # "not an agree index" now rather than at the first query
    return path
