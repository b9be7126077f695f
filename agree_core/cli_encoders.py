"""``agree encoders [--json]``: the registered encoder names, their default checkpoints, vector
dims, and whether they need a GPU to be practical."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "cmd_encoders"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("encoders", help="list the encoders --encoder NAME[:CKPT] accepts")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"name", "default_checkpoint", "dim", "gpu", '
                        '"layouts", "parameters"}')


def cmd_encoders(args: argparse.Namespace) -> int:
    from agree_core.encoders.registry import encoder_info

    rows = encoder_info()
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    sys.stdout.write(f"{'name':16} {'default checkpoint':38} {'dim':>5}  {'GPU':10} size\n")
    for r in rows:
        gpu = {True: "needed", False: "not needed", None: "depends"}[r["gpu"]]
        sys.stdout.write(f"{r['name']:16} {r['default_checkpoint'] or '(give NAME:CKPT)':38} "
                         f"{r['dim'] or 'ckpt':>5}  {gpu:10} {r['parameters']}\n")
    sys.stdout.write("\n".join(f"  {r['name']}: {r['layouts']}" for r in rows) + "\n")
    return 0
