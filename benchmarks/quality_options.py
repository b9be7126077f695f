"""`agree eval` on indexes built with other text-layer encoder options, over a few dev-set PDFs.

    .venv/bin/python benchmarks/quality_options.py [--docs lme4.pdf,xts.pdf,survival-timedep.pdf]
        [--out DIR] '{}' '{"layout": "overlap"}' '{"layout": "even"}' ...

Each JSON argument is a set of ``TextLayerEncoder`` options; its index (the product's
``PageIndex.add``, the options recorded in the index config as for any index) is built under
``--out`` unless it is there already, then queried with the product's own `agree eval` over the
dev-set questions all of whose relevant pages are in ``--docs``. Prints nDCG@5 overall and per
question type, nDCG@1, recall@10, MRR@10, and the CPU seconds of each build.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEVSET, ROOT, ensure_devset, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("options", nargs="+", help="JSON objects of TextLayerEncoder options")
    ap.add_argument("--docs", default="lme4.pdf,xts.pdf,survival-timedep.pdf")
    ap.add_argument("--out", default=str(ROOT / "data" / "quality-options"))
    args = ap.parse_args()
    ensure_devset()
    docs = args.docs.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    queries = out / f"questions-{len(docs)}docs.jsonl"
    lines = [x for x in (ROOT / "devset" / "questions.jsonl").read_text().splitlines() if x.strip()]
    queries.write_text("".join(x + "\n" for x in lines
                               if all(r["doc"] in docs for r in json.loads(x)["relevant"])))
    print(f"{len(docs)} PDFs; {machine()}")
    from agree_core.encoders.text_layer import TextLayerEncoder
    from agree_core.index.page_index import PageIndex

    for spec in args.options:
        opts = json.loads(spec)
        name = "-".join(f"{k}={v}" for k, v in sorted(opts.items())) or "defaults"
        ix = out / f"{len(docs)}docs-{name}"
        if not ix.exists():
            cpu = time.process_time()
            with PageIndex.open(ix, encoder=TextLayerEncoder(device="cpu", **opts)) as index:
                index.add([DEVSET / d for d in docs], progress=False)
            print(f"{name}: built in {time.process_time() - cpu:.1f} CPU s", flush=True)
        run = subprocess.run([sys.executable, "-m", "agree_core.cli", "eval", "--index", str(ix), str(queries),
                              "--json"], capture_output=True, text=True, check=True)
        res = json.loads(run.stdout)
        m = res["metrics"]
        types = ", ".join(f"{t} ({v['queries']}) {v['metrics']['ndcg@5']:.3f}" for t, v in res["by_type"].items())
        print(f"{name}: {res['queries']} questions, nDCG@5 {m['ndcg@5']:.3f} ({types}); nDCG@1 {m['ndcg@1']:.3f}, "
              f"recall@10 {m['recall@10']:.3f}, MRR@10 {m['mrr@10']:.3f}", flush=True)


if __name__ == "__main__":
    main()
