"""``agree serve``: one process holds the index and answers everybody over HTTP."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

from agree_core.serve.tokens import TOKEN_ENV  # not the client: building the CLI's parser loads no httpx

log = logging.getLogger("agree")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="hold an index and serve it over HTTP: JSON API, web page, remote clients",
        description="Open the index once and answer searches, page images, heatmaps and "
                    "indexing jobs over HTTP, for any number of clients (`--index "
                    "http://HOST:PORT` in every agree command, PageIndex.open, LlamaIndex and "
                    "Haystack). The web page is at /, the API reference at /docs. SIGTERM "
                    "finishes the current batch and closes the index.")
    p.add_argument("--index", required=True, metavar="DIR",
                   help="the index directory (created when missing)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--token-file", metavar="FILE",
                   help=f"a file holding the bearer token every request must send (default: "
                        f"the {TOKEN_ENV} environment variable, if set)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a folder whose PDFs clients may index by path (repeatable); without "
                        "it clients can only upload")
    p.add_argument("--upload-dir", metavar="DIR",
                   help="where uploaded PDFs are kept (default DIR/uploads inside the index)")
    p.add_argument("--max-upload-mb", type=int, default=100, metavar="MB",
                   help="largest upload accepted (default 100)")
    p.add_argument("--encoder", default=None, metavar="NAME",
                   help="encoder of a new index (default text-layer); an existing index keeps its own")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another process holds the index (default 0: exit 4)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The token from ``token_file``, else ``AGREE_TOKEN``, else ``None``."""
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"--token-file {token_file} is empty; write the token into it")
        return token
    return os.environ.get(TOKEN_ENV) or None


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from threadpoolctl import threadpool_limits

        from agree_core.serve.app import create_app
    except ImportError as e:
        raise ImportError(f"agree serve needs the serve extra: pip install 'agree[serve]' ({e})") from e
    from agree_core.serve.host import IndexHost

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {args.port}")
    if args.max_upload_mb < 1:
        raise ValueError(f"--max-upload-mb must be >= 1, got {args.max_upload_mb}")
    token = read_token(args.token_file)
    if token is None and not is_loopback(args.host):
        raise ValueError(f"--host {args.host} can be reached from other machines: give a token "
                         f"(--token-file FILE or {TOKEN_ENV}), or serve on 127.0.0.1")
    for d in args.allow_dir:
        if not Path(d).is_dir():
            raise ValueError(f"--allow-dir {d} is not a folder")
    options = {"device": args.device} if args.device else {}
    # one BLAS thread: the server's numpy products (a hit's evidence) are small and many, and
    # a second BLAS thread spinning for each costs more than it does (4x an answer's evidence
    # time on 2 busy cores); torch keeps its own threads
    threadpool_limits(1, user_api="blas")
    host = IndexHost(args.index, encoder=args.encoder, wait=args.wait, encoder_options=options)
    host.start()  # IndexBusyError (exit 4, naming the holder) before anything listens
    try:
        upload_dir = Path(args.upload_dir) if args.upload_dir else Path(args.index) / "uploads"
        app = create_app(host, token=token, allow_dirs=[Path(d) for d in args.allow_dir],
                         upload_dir=upload_dir.absolute(), max_upload_bytes=args.max_upload_mb << 20)
        log.info("serving %s on http://%s:%d (web page at /, API at /docs)%s", args.index,
                 args.host, args.port, " with a token" if token else "")
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                               log_level="warning", timeout_graceful_shutdown=30))
        # uvicorn shuts down on SIGTERM/SIGINT, then raises the signal again for the handler
        # it found: let that one say so instead of dying before the index is closed
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: log.info("stopped by %s", signal.Signals(signum).name))
        server.run()
    finally:
        host.close()
    return 0
