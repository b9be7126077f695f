"""``agree migrate SRC DST``: copy an index between engines without re-encoding."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate", help="copy an index to another engine (folder, qdrant://, qdrant-local:)",
        description="Copy an index, without re-encoding, between a folder (embedded engine), a "
                    "Qdrant server or cluster (qdrant://HOST:PORT/COLLECTION, qdrants:// for TLS "
                    "with QDRANT_API_KEY) and qdrant-local:PATH. DST must be new, or an "
                    "interrupted copy of SRC (a rerun completes it).")
    p.add_argument("source", metavar="SRC", help="the index to copy")
    p.add_argument("destination", metavar="DST", help="where to copy it")
    p.add_argument("--batch-size", type=int, default=64, help="points per write (default 64)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another process holds an index")
    p.add_argument("--json", action="store_true", help="print what was copied as JSON")


def cmd_migrate(args: argparse.Namespace) -> int:
    from agree_core.index.migrate import migrate

    report = migrate(args.source, args.destination, batch_size=args.batch_size, wait=args.wait,
                     progress=not args.quiet)
    if args.json:
        sys.stdout.write(json.dumps(vars(report)) + "\n")
    return 0
