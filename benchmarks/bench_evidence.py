"""What evidence costs a search: `agree search --json` at k=5 on the sample index, the
search alone against the search plus every hit's evidence (query encoding, one engine read
of the hits' vectors and stored words, the attribution), in one run, interleaved.

    python benchmarks/bench_evidence.py [--index DIR] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=None, help="an index of the sample PDFs (default: built in a temp folder)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    from agree_core.index import PageIndex
    from agree_core.samples import SAMPLE_QUESTIONS, build_samples
    from agree_core.search_json import hits_evidence

    print(machine())
    tmp = tempfile.TemporaryDirectory()
    index_dir = args.index
    if index_dir is None:
        folder = Path(tmp.name) / "samples"
        build_samples(folder)
        index_dir = Path(tmp.name) / "index"
        with PageIndex.open(index_dir) as ix:
            ix.add([folder], progress=False)
    questions = [q for q, _, _ in SAMPLE_QUESTIONS]
    with PageIndex.open(index_dir, create=False) as ix:
        ix.search_batch(questions[:1], args.k)  # load the model
        hits_evidence(ix, questions[:1], ix.search_batch(questions[:1], args.k))
        search, extra = [], []
        for _ in range(args.rounds):
            for q in questions:
                t0 = time.perf_counter()
                results = ix.search_batch([q], args.k)
                t1 = time.perf_counter()
                found = hits_evidence(ix, [q], results)
                t2 = time.perf_counter()
                assert all(found[0].get(h.page_id) for h in results[0] if h.score > 0)
                search.append(t1 - t0)
                extra.append(t2 - t1)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print(f"{len(search)} queries at k={args.k}: search {ms(search):.1f} ms, evidence +{ms(extra):.1f} ms "
          f"per query (median; +{100 * statistics.median(extra) / statistics.median(search):.0f}%)")


if __name__ == "__main__":
    main()
