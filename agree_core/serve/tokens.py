"""The token's names, and signed page-image URLs: a GET that needs no ``Authorization`` header.

:data:`TOKEN_ENV` names the environment variable that holds the bearer token, for the client,
``agree serve`` and the ``agree`` command's help alike.

A server started with a token answers only requests that carry it. A page image, though, is
often fetched by code that knows only a URL: LlamaIndex's ``ImageNode.resolve_image`` calls
``requests.get(image_url)`` with no headers (and no status check, so a 401 body would be read
as the image). So the client signs each image path it hands out with the token it holds:
``/pages/ID/image?sig=HMAC-SHA256(token, "GET /pages/ID/image")``. The signature opens that one
image and nothing else, and does not reveal the token; the server checks it in constant time
(:func:`agree_core.serve.safety.bearer_guard`).

Standard library only: the client, the server and the CLI import it at no cost (the CLI
builds its parser, ``agree serve``'s included, without importing httpx or the server stack).
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["TOKEN_ENV", "SIGNATURE_PARAM", "sign_path", "signable", "signed_path"]

TOKEN_ENV = "AGREE_TOKEN"
SIGNATURE_PARAM = "sig"
_SIGNABLE = re.compile(r"^/pages/[0-9a-fA-F-]{36}/image$")  # page images only


def signable(path: str) -> bool:
    """Whether ``path`` may be opened by a signature (a page image: ``/pages/UUID/image``).

    >>> signable("/pages/0f8e6a52-4d0b-5c7e-9a55-2b1f3c4d5e6f/image"), signable("/records/find")
    (True, False)
    """
    return bool(_SIGNABLE.match(path))


def sign_path(token: str, path: str) -> str:
    """The signature of a GET of ``path`` under ``token`` (hex HMAC-SHA256).

    >>> sign_path("s3cret", "/pages/0f8e6a52-4d0b-5c7e-9a55-2b1f3c4d5e6f/image")[:16]
    '99bc0e136f25c1e3'
    """
    return hmac.new(token.encode("utf-8"), b"GET " + path.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_path(token: str | None, path: str) -> str:
    """``path`` with its signature as a query parameter (unchanged without a token, or for a
    path a signature cannot open)."""
    if not token or not signable(path):
        return path
    return f"{path}?{SIGNATURE_PARAM}={sign_path(token, path)}"
