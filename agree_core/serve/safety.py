"""What keeps ``agree serve`` from serving more than its index: tokens, body sizes, paths.

- :func:`bearer_guard`: with a token, every API request must carry
  ``Authorization: Bearer TOKEN`` (compared in constant time), else 401; a page image also
  opens with its signature (:mod:`agree_core.serve.tokens`).
- :class:`BodyLimit`: request bodies are counted as they arrive; past the limit the request
  ends with 413, whatever Content-Length claimed (or did not).
- :func:`resolve_server_path`: a path sent by a client names a file or folder under one of
  the ``--allow-dir`` roots, or is refused: no ``..``, no absolute path elsewhere, no
  symbolic link out of a root.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path, PurePosixPath
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse

from agree_core.serve.tokens import SIGNATURE_PARAM, sign_path, signable

JSON_LIMIT = 4 << 20  # bytes of a JSON body (1,000 queries of 2,000 characters fit)


class PathRefused(PermissionError):
    """A client path outside the allowed folders."""


class BodyTooLarge(ValueError):
    """A request body past the limit."""


class Unauthorized(PermissionError):
    """A request without the server's bearer token."""


def bearer_guard(token: str | None) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: without ``token`` it lets everything through. With it, a request
    carries ``Authorization: Bearer TOKEN``, or is a GET of a page image with the path's
    signature (``?sig=``, :func:`~agree_core.serve.tokens.sign_path`)."""
    expected = token.encode() if token else None

    async def guard(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return
        signature = request.query_params.get(SIGNATURE_PARAM)
        path = request.scope.get("path", "")
        if (signature and request.method in ("GET", "HEAD") and signable(path)
                and hmac.compare_digest(signature.encode(), sign_path(token, path).encode())):
            return
        raise Unauthorized("this server needs a token: send Authorization: Bearer TOKEN")

    return guard


async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: multipart bodies, and JSON bodies to ``large_paths`` (records with
    their page images), up to ``upload_limit`` bytes; others up to :data:`JSON_LIMIT`."""

    def __init__(self, app: Any, upload_limit: int, large_paths: tuple[str, ...] = ()):
        self.app = app
        self.upload_limit = upload_limit
        self.large_paths = large_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        large = multipart or scope.get("path") in self.large_paths
        limit = self.upload_limit if large else JSON_LIMIT
        what = "upload" if multipart else "request body"
        message = (f"the {what} is larger than the server's limit of {limit:,} bytes"
                   + (" (agree serve --max-upload-mb)" if large else ""))
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(message)
            return msg

        await self.app(scope, counted, send)


def resolve_server_path(raw: str, roots: list[Path]) -> Path:
    """The absolute path a client means by ``raw``: relative paths are taken under the first
    root. Raises :class:`PathRefused` unless it lies under a root (after symbolic links)."""
    if not roots:
        raise PathRefused("this server reads no paths from its disk: start agree serve with "
                          "--allow-dir DIR, or upload the PDFs (multipart, field \"files\")")
    if not raw or "\x00" in raw:
        raise ValueError(f"{raw!r} is not a path")
    if ".." in PurePosixPath(raw).parts:
        raise PathRefused(f"{raw!r}: '..' is not allowed in paths")
    candidate = Path(os.path.abspath(raw if os.path.isabs(raw) else roots[0] / raw))
    real = Path(os.path.realpath(candidate))
    if any(real == root or root in real.parents for root in roots):
        return candidate
    raise PathRefused(f"{raw!r} is outside the folders this server may read "
                      f"({', '.join(str(r) for r in roots)}; see agree serve --allow-dir)")
