"""RemoteIndex: an index that ``agree serve`` holds, used over HTTP with PageIndex's methods.

``PageIndex.open("http://HOST:PORT")`` returns one; so does ``--index http://HOST:PORT`` on
the command line. It needs httpx only: no torch and no model, since the server encodes the
queries, so a web app's workers stay light. The token (when the server asks for one) comes
from the ``token`` argument or the ``AGREE_TOKEN`` environment variable.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import httpx

from agree_core.serve.tokens import TOKEN_ENV, signed_path

__all__ = ["RemoteIndex", "RemoteHit", "RemoteAddReport", "RemoteIndexError", "open_remote", "TOKEN_ENV"]

SEARCH_CHUNK = 256  # queries per request of a long search_batch
_POLL = 0.25  # seconds between job polls


class RemoteIndexError(RuntimeError):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RemoteRequestError(RemoteIndexError, ValueError):
    """The server refused the request as malformed (HTTP 400, 413, 415, 422)."""


@dataclass
class RemoteHit:
    """One ranked page, as :class:`agree_core.index.Hit` (``image`` is the server's path);
    ``doc_id`` and ``meta`` as the search response gave them (from a server that sends
    none, fetched on first use)."""

    source: str
    page: int
    score: float
    image: str
    image_url: str  # absolute URL of the page image on the server (signed: RemoteIndex.image_url)
    page_id: str
    _index: "RemoteIndex | None" = field(default=None, repr=False, compare=False)
    _record: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    evidence: list[dict[str, Any]] = field(default_factory=list, compare=False)  # as the server found it

    @property
    def doc_id(self) -> str:
        return self._page()["doc_id"]

    @property
    def meta(self) -> dict[str, Any]:
        return self._page()["meta"]

    def _page(self) -> dict[str, Any]:
        if self._record is None:
            if self._index is None:
                raise RemoteIndexError(f"hit {self.page_id} is not bound to a server")
            self._record = self._index.page(self.page_id)
        return self._record

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "page": self.page, "score": self.score, "image": self.image}


@dataclass
class Skipped:
    """A file the job skipped, or (with ``page``) a page of a file that failed."""

    path: str
    reason: str
    code: str = "failed"
    page: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.path, "page": self.page, "code": self.code, "message": self.reason}


@dataclass
class RemoteAddReport:
    """:class:`agree_core.index.AddReport` of a job the server ran."""

    job: str
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    pages: int = 0
    failed_pages: list[Skipped] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.failed_pages

    def problems(self) -> list[Skipped]:
        return [*self.skipped, *self.failed_pages]


def open_remote(url: str, encoder: Any = None, *, create: bool = True, wait: float = 0.0,
                **_: Any) -> "RemoteIndex":
    """What ``PageIndex.open(url)`` does for ``http(s)://`` URLs: a client checked to reach
    the server (retrying for up to ``wait`` seconds)."""
    if encoder is not None:
        raise ValueError(f"{url} is served by agree serve, which encodes with its index's own "
                         f"encoder; drop the encoder ({encoder!r})")
    index = RemoteIndex(url)
    deadline = time.monotonic() + wait
    while True:
        try:
            index.health()
            return index
        except RemoteIndexError as e:
            if e.status is not None or time.monotonic() >= deadline:
                index.close()
                raise
            time.sleep(0.2)


class RemoteIndex:
    """The client of one ``agree serve``. Thread-safe (one pooled httpx client)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a remote index is an http:// or https:// URL, got {url!r}")
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)
        self._config: Any = None
        self._encoder: Any = None

    # -- PageIndex's methods ---------------------------------------------------------------
    def search(self, query: str, k: int = 10, filters: dict[str, Any] | None = None,
               candidates: int | None = None) -> list[RemoteHit]:
        return self.search_batch([query], k, filters, candidates)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10,
                     filters: dict[str, Any] | None = None,
                     candidates: int | None = None) -> list[list[RemoteHit]]:
        """Top ``k`` pages for each query (``filters`` as :meth:`PageIndex.search_batch`)."""
        queries = list(queries)
        body: dict[str, Any] = {"k": k}
        if filters:
            body["filters"] = filters
        if candidates is not None:
            body["candidates"] = candidates
        results: list[list[RemoteHit]] = []
        for start in range(0, len(queries), SEARCH_CHUNK):
            got = self._json("POST", "/search", json={**body, "queries": queries[start:start + SEARCH_CHUNK]})
            results.extend([self._hit(h) for h in r["hits"]] for r in got["results"])
        return results

    def info(self) -> dict[str, Any]:
        """The ``agree info --json`` object of the served index."""
        return self._json("GET", "/info")

    def add(self, paths: Sequence[str | Path], *, metadata: dict[str, Any] | None = None,
            batch_size: int = 16, progress: bool = True,
            on_progress: Callable[[int, int], None] | None = None,
            page_timeout: float | None = None, ocr_workers: int | None = None) -> RemoteAddReport:
        """Index PDF files and folders on the server's disk (under its ``--allow-dir``) and
        wait for the job. The paths name files there, so they are absolute paths on the
        server: a relative path is a ValueError (this machine's working directory says
        nothing of the server's disk); to index files of this machine, :meth:`upload` them.
        ``page_timeout`` and ``ocr_workers`` are the server's own settings (accepted for the
        same call as a local index; not sent)."""
        if isinstance(paths, (str, Path)):
            paths = [paths]  # one path alone is one path, never its characters
        body: dict[str, Any] = {"paths": [self._server_path(p) for p in paths],
                                "batch_size": batch_size}
        if metadata is not None:
            body["metadata"] = metadata
        job = self._json("POST", "/documents", json=body)["job"]
        return self.wait_job(job, progress=progress, on_progress=on_progress)

    def upload(self, paths: Sequence[str | Path], *, metadata: dict[str, Any] | None = None,
               progress: bool = False) -> RemoteAddReport:
        """Send PDF files from this machine, and the ``*.pdf`` files under folders (recursive),
        to the server and index them there, one file a request; waits for each job. On the
        server a file's source is its copy in the upload folder (``UPLOAD_DIR/<sha256
        prefix>-<name>.pdf``, what search results and ``agree info`` name); sending the same
        file again changes nothing. Files that cannot be sent (missing here, not a PDF, over
        the server's upload limit) are in the report's ``skipped``; they never stop the
        others. ``job``: the last job's id."""
        import json

        from agree_core.pages import find_pdfs

        files, missing = find_pdfs([paths] if isinstance(paths, (str, Path)) else list(paths))
        report = RemoteAddReport("", skipped=[Skipped(e.path, e.reason, e.code) for e in missing])
        data = {"metadata": json.dumps(metadata)} if metadata is not None else None
        for f in files:
            try:
                with open(f, "rb") as handle:
                    job = self._json("POST", "/documents", files=[("files", (f.name, handle, "application/pdf"))],
                                     data=data)["job"]
            except RemoteRequestError as e:  # this file only: not a PDF, too large
                report.skipped.append(Skipped(str(f), str(e), "refused"))
                continue
            got = self.wait_job(job, progress=progress)
            report.job = got.job
            report.added += got.added
            report.unchanged += got.unchanged
            report.skipped += got.skipped
            report.pages += got.pages
            report.failed_pages += got.failed_pages
        return report

    def delete(self, source: str | Path) -> int:
        """Remove a document by its path on the server, absolute, as ``agree info`` lists it
        (a relative path is a ValueError); the number of pages removed (0 if absent)."""
        try:
            return int(self._json("DELETE", "/documents",
                                  json={"source": self._server_path(source)})["pages"])
        except RemoteIndexError as e:
            if e.status == 404:
                return 0
            raise

    def similarity_maps(self, query: str, hits: Sequence[RemoteHit], mode: str = "maxsim") -> list[Any]:
        """Per-cell relevance of each hit's page for ``query``, as ``(rows, cols)`` numpy
        arrays (the server computes them: :meth:`PageIndex.similarity_maps`)."""
        import numpy as np

        return [np.asarray(self.evidence(h.page_id, query, mode)["map"], dtype=np.float32) for h in hits]

    def page_text(self, page_id: str) -> str:
        return self.page(page_id)["text"]

    # -- what the framework components use (agree_core.serve.remote_records) --------------
    directory = None  # not a folder on this machine

    @property
    def records(self) -> Any:
        """The served index's records, as ``PageIndex.records`` (one request per call)."""
        from agree_core.serve.remote_records import RemoteRecords

        return RemoteRecords(self)

    @property
    def catalog(self) -> Any:
        """The served index's documents: ``catalog.documents(state=..., source=...)``."""
        from agree_core.serve.remote_records import RemoteCatalog

        return RemoteCatalog(self)

    @property
    def config(self) -> Any:
        """The served index's :class:`~agree_core.index.config.IndexConfig` (read once)."""
        if self._config is None:
            from agree_core.index.config import IndexConfig

            self._config = IndexConfig.from_dict(self._json("GET", "/config"), self.url)
        return self._config

    @property
    def encoder(self) -> Any:
        """The index's encoder loaded here, for pages the index does not hold (a reranker's
        candidates from elsewhere); loaded on first use only: searches never need it."""
        if self._encoder is None:
            from agree_core.index.shared import shared_encoder

            self._encoder = shared_encoder(self.config.encoder, **self.config.encoder_config)
        return self._encoder

    def warm_up(self) -> None:
        """:meth:`PageIndex.warm_up`: check that the server answers and read its config;
        no model is loaded here (the server encodes queries)."""
        self.config  # noqa: B018 - one request, kept

    def encode_queries(self, queries: Sequence[str]) -> list[Any]:
        """Query vectors ``(n_tokens, dim)`` as the server's search weights them."""
        from agree_core.serve.wire import vectors_from_json

        got = self._json("POST", "/queries/vectors", json={"queries": list(queries)})["vectors"]
        return [vectors_from_json(v) for v in got]

    def find_page(self, source: str | Path, page: int) -> str | None:
        """The id of page ``page`` of ``source`` (an absolute path on the server, as ``agree
        info`` lists it; a relative path is a ValueError) when it is indexed."""
        from agree_core.pages import page_id

        src = self._server_path(source)
        for doc in self.catalog.documents(state="ready", source=src):
            if 1 <= page <= doc.pages:
                return page_id(src, doc.sha256, page)
        return None

    def node_filters(self, filters: dict[str, Any] | None, location: str | None = None
                     ) -> dict[str, Any] | None:
        """:meth:`PageIndex.node_filters`, decided by the server (its catalog and its PDFs;
        ``index_dir`` compared with ``location``, default this URL): one request, and none
        when ``filters`` name no such key."""
        from agree_core.index.node_fields import names_derived_fields

        if not names_derived_fields(filters):
            return filters
        body = {"filters": filters, "index_dir": str(location) if location is not None else self.url}
        return self._json("POST", "/filters/resolve", json=body)["filters"]

    def page_labels(self, pages: Sequence[tuple[str, int]]) -> list[str]:
        """:meth:`PageIndex.page_labels` of indexed PDFs, read by the server from its disk
        (``str(page)`` for a file it does not index)."""
        pages = [(str(source), int(page)) for source, page in pages]
        if not pages:
            return []
        return list(self._json("POST", "/pages/labels", json={"pages": pages})["labels"])

    def page_vectors(self, page_ids: Sequence[str]) -> dict[str, Any]:
        """Stored vectors ``(n, dim)`` of the pages found, by page id."""
        return self.records.vectors(page_ids)

    def page_embedding(self, page_id: str) -> tuple[Any, dict[str, Any]]:
        """A stored page's (or record's) embedding and its place; KeyError when absent."""
        import torch

        from agree_core.encoders import PageEmbedding
        from agree_core.serve.wire import vectors_from_json

        try:
            got = self._json("GET", f"/records/{page_id}/embedding")
        except RemoteIndexError as e:
            if e.status == 404:
                raise KeyError(f"page {page_id} is not in the index") from None
            raise
        emb = PageEmbedding(vectors_from_json(got["vectors"]), tuple(got["grid"]),
                            torch.tensor(got["cells"], dtype=torch.long), got.get("text"))
        return emb, got["payload"]

    # -- what only a remote index has ------------------------------------------------------
    def page(self, page_id: str) -> dict[str, Any]:
        """A page's ``doc_id``, ``source``, ``page``, ``meta`` and ``text``."""
        return self._json("GET", f"/pages/{page_id}")

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def wait_job(self, job_id: str, *, progress: bool = False,
                 on_progress: Callable[[int, int], None] | None = None) -> RemoteAddReport:
        """Poll a job until it ends; its report, or :class:`RemoteIndexError` if it failed."""
        from tqdm import tqdm

        bar = tqdm(desc="indexing (server)", unit="page", disable=not progress, dynamic_ncols=True)
        try:
            while True:
                state = self.job(job_id)
                bar.total = state["pages_total"]
                bar.update(state["pages_done"] - bar.n)
                if on_progress is not None:
                    on_progress(state["pages_done"], state["pages_total"])
                if state["state"] in ("done", "failed", "stopped", "interrupted"):
                    break
                time.sleep(_POLL)
        finally:
            bar.close()
        if state["state"] != "done":
            raise RemoteIndexError(f"job {job_id} {state['state']}: {state.get('error') or 'no reason given'}"
                                   + (" (post the same paths again to resume)" if state["state"] in ("stopped", "interrupted") else ""))
        problems = [Skipped(s["path"], s["reason"], s.get("code") or "failed", s.get("page"))
                    for s in state["skipped"]]
        return RemoteAddReport(job_id, list(state["added"]), list(state["unchanged"]),
                               [e for e in problems if e.page is None], int(state["pages_done"]),
                               [e for e in problems if e.page is not None])

    def image_url(self, path: str) -> str:
        """The absolute URL of a page image the server names by ``path`` (``/pages/ID/image``),
        signed with the token when there is one, so that a plain GET (LlamaIndex's
        ``resolve_image``, a browser) opens it without the token (:mod:`agree_core.serve.tokens`)."""
        # joined as text (httpx's URL join costs 0.7 ms a hit)
        return self.url + signed_path(self._token, path) if path.startswith("/") else str(self._http.base_url.join(path))

    def page_image(self, page_id: str) -> bytes:
        """The stored image of a page (PNG or JPEG bytes)."""
        return self._request("GET", f"/pages/{page_id}/image").content

    def heatmap(self, page_id: str, query: str, mode: str = "maxsim") -> bytes:
        """The page with its similarity map for ``query`` laid over it (PNG bytes)."""
        return self._request("GET", f"/pages/{page_id}/heatmap",
                             params={"query": query, "mode": mode}).content

    def evidence(self, page_id: str, query: str, mode: str = "maxsim") -> dict[str, Any]:
        """Why a page matched ``query``: its score, grid and per-cell map, and the best cells."""
        return self._json("GET", f"/pages/{page_id}/evidence", params={"query": query, "mode": mode})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RemoteIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteIndex({self.url!r})"

    # -- HTTP ------------------------------------------------------------------------------
    def _server_path(self, path: str | Path) -> str:
        """``path`` as sent: a path on the server's disk, which only an absolute path names."""
        text = str(path)
        if not text or "\x00" in text:
            raise ValueError(f"{text!r} is not a path")
        if not PurePosixPath(text).is_absolute() and not Path(text).is_absolute():
            raise ValueError(f"{text!r} is a relative path, but the index at {self.url} reads paths on the "
                             "server's disk: give the absolute path there (as `agree info` lists documents), "
                             "or send this machine's files (RemoteIndex.upload, `agree index --upload`)")
        return text

    def _hit(self, h: dict[str, Any]) -> RemoteHit:
        url = h["image_url"]
        page_id = url.rstrip("/").split("/")[-2]  # /pages/PAGE_ID/image
        record = {"doc_id": h["doc_id"], "meta": h["meta"]} if "doc_id" in h and "meta" in h else None
        return RemoteHit(h["source"], int(h["page"]), float(h["score"]), h["image"],
                         self.image_url(url), page_id, self, record, evidence=h.get("evidence", []))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise RemoteIndexError(f"cannot reach agree serve at {self.url}: {e}. Is it running "
                                   "(agree serve --index DIR)?") from None
        if response.status_code < 400:
            return response
        try:
            error = response.json()
            message = error.get("error") or response.text
        except (ValueError, AttributeError):
            error, message = {}, response.text or response.reason_phrase
        status = response.status_code
        if error.get("code") == "duplicate":  # the same exceptions as a local index
            from agree_core.index.records import DuplicateRecordError

            raise DuplicateRecordError(list(error.get("ids") or []))
        if error.get("code") == "filter":
            from agree_core.index.filters import FilterError

            raise FilterError(message)
        if status == 401:
            message += f" (set {TOKEN_ENV} to the server's token)"
        cls = RemoteRequestError if status in (400, 413, 415, 422) else RemoteIndexError
        raise cls(f"{self.url}: {message} (HTTP {status})", status)

