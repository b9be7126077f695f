"""``agree first-stage --index DIR``: give an index built before the MUVERA first stage its
encodings (see :mod:`agree_core.index.first_stage_build`)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "first-stage", help="build the fast first stage (MUVERA encodings) of an older index",
        description="Indexes built before the MUVERA first stage search large collections by "
                    "scanning every pooled centroid. This encodes the vectors the index stores "
                    "(no page is re-encoded) and builds the HNSW graph; new indexes have it.")
    p.add_argument("--index", required=True, help="the index (folder, qdrant://..., qdrant-local:...)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another process holds the index")


def cmd_first_stage(args: argparse.Namespace) -> int:
    from agree_core.index import PageIndex
    from agree_core.index.first_stage import usable
    from agree_core.index.first_stage_build import build_first_stage

    with PageIndex.open(args.index, create=False, wait=args.wait) as index:
        had = usable(index.config)
        n = build_first_stage(index, progress=not args.quiet)
    sys.stdout.write(f"{index.location}: the first stage was there already\n" if had else
                     f"{index.location}: first stage built for {n} points\n")
    return 0
