"""Encoder and query-side variants of the text-layer encoder on the dev set, in memory.

    .venv/bin/python benchmarks/quality_variants.py [--window 256 --stride 192]

One forward pass over every page (all tokens kept) gives what every variant needs:
- for each query token, its best match on each page over all page tokens and over the
  non-stopword page tokens (the product's pages): any query-side weighting (stopwords kept or
  dropped, IDF to a power) is then a weighted sum of these maxima, exactly MaxSim;
- MiniLM's sentence embeddings of each page window (mean pooling over the window, what
  all-MiniLM-L6-v2 was trained for) and of each query, for fusing MaxSim with window
  similarity.
Variants are chosen on the odd-numbered questions and reported on the even ones (and all), so
that the choice does not fit the questions it is reported on.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agree_core.encoders.text_layer import STOPWORDS  # noqa: E402
from common import DATA, TYPES, cached_corpus, corpus_pages, evaluate, key, load_questions, machine, table  # noqa: E402


def encode_corpus(enc, pages, spans=(128,)):
    """Per page: token ids, kept mask (non-stopword), token vectors (fp16), window embeddings
    ``{span_name: (n_windows, dim)}``: the exact window mean (``"win"``) and means over
    sub-spans of ``span`` tokens of each window's contextual vectors."""
    from agree_core.encoders.text_layer import _windows

    model, tok = enc._model, enc._tokenizer
    span_len = enc.cfg.window - 2
    out = []
    t0 = time.perf_counter()
    for n, page in enumerate(pages):
        ids, _ = enc._tokenize_words(enc._words(page))
        vecs = torch.zeros(len(ids), 384, dtype=torch.float16)
        wins = {"win": [], **{f"sub{s}": [] for s in spans}}
        for start, lo, hi in _windows(len(ids), span_len, enc.cfg.stride):
            seq = [tok.cls_token_id, *ids[start : start + span_len], tok.sep_token_id]
            with torch.inference_mode():
                h = model(input_ids=torch.tensor([seq])).last_hidden_state[0].float()
            vecs[start + lo : start + hi] = torch.nn.functional.normalize(h[1 + lo : 1 + hi], dim=-1).half()
            wins["win"].append(torch.nn.functional.normalize(h.mean(0), dim=0))
            for s in spans:
                inner = h[1:-1]
                for a in range(0, max(len(inner) - s, 0) + 1, s // 2):
                    wins[f"sub{s}"].append(torch.nn.functional.normalize(inner[a : a + s].mean(0), dim=0))
        keep = enc._keep_mask(ids) if ids else torch.zeros(0, dtype=torch.bool)
        out.append({"ids": torch.tensor(ids, dtype=torch.long), "keep": keep, "vecs": vecs,
                    **{k: torch.stack(v) if v else torch.zeros(0, 384) for k, v in wins.items()}})
        if n % 200 == 0:
            print(f"  {n}/{len(pages)} pages, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def encode_queries(enc, queries):
    """Per query: ids, keep mask, contextual token vectors (all tokens), sentence embedding."""
    tok, model = enc._tokenizer, enc._model
    out = []
    for q in queries:
        ids = tok(q, add_special_tokens=False)["input_ids"]
        seq = [tok.cls_token_id, *ids, tok.sep_token_id]
        with torch.inference_mode():
            h = model(input_ids=torch.tensor([seq])).last_hidden_state[0].float()
        out.append({"ids": torch.tensor(ids), "keep": enc._keep_mask(ids),
                    "vecs": torch.nn.functional.normalize(h[1:-1], dim=-1),
                    "sent": torch.nn.functional.normalize(h.mean(0), dim=0)})
    return out


def token_maxima(queries, corpus):
    """``(max over all page tokens, max over kept page tokens)``, each a list per query of
    ``(n_q_tokens, n_pages)``."""
    n = len(corpus)
    qv = torch.cat([q["vecs"] for q in queries])  # (T, dim)
    m_all = torch.full((len(qv), n), -1.0)
    m_kept = torch.full((len(qv), n), -1.0)
    for p, page in enumerate(corpus):
        if not len(page["ids"]):
            continue
        sims = qv @ page["vecs"].float().T  # (T, n_tokens)
        m_all[:, p] = sims.max(dim=1).values
        if page["keep"].any():
            m_kept[:, p] = sims[:, page["keep"]].max(dim=1).values
    sizes = [len(q["ids"]) for q in queries]
    return list(m_all.split(sizes)), list(m_kept.split(sizes))


def document_frequency(corpus, kept_only):
    df = {}
    for page in corpus:
        ids = page["ids"][page["keep"]] if kept_only else page["ids"]
        for t in set(ids.tolist()):
            df[t] = df.get(t, 0) + 1
    return df


def idf(ids, df, n):
    d = torch.tensor([df.get(int(t), 0) for t in ids], dtype=torch.float64)
    return torch.log((n - d + 0.5) / (d + 0.5) + 1.0).float()


def window_scores(queries, corpus, name, top=1):
    """``(n_q, n_pages)``: the best (or mean of the ``top`` best) window cosine per page."""
    s = torch.stack([q["sent"] for q in queries])
    out = torch.full((len(queries), len(corpus)), -1.0)
    for p, page in enumerate(corpus):
        w = page[name]
        if len(w):
            sims = s @ w.T
            out[:, p] = sims.topk(min(top, sims.shape[1]), dim=1).values.mean(dim=1)
    return out


def token_scores(queries, maxima, weights):
    """MaxSim as a weighted mean of per-token maxima: ``(n_q, n_pages)``."""
    rows = []
    for q, m, w in zip(queries, maxima, weights):
        rows.append((w[:, None] * m).sum(0) / w.sum().clamp_min(1e-9))
    return torch.stack(rows)


def _weights(qs, stop_weight, alpha, page_df, n):
    """Per query token: IDF^alpha (mean 1 over the non-stopword tokens), stopwords times ``stop_weight``."""
    out = []
    for q in qs:
        w = idf(q["ids"], page_df, n) ** alpha if alpha else torch.ones(len(q["ids"]))
        w = w / w[q["keep"]].mean() if q["keep"].any() else w
        if stop_weight == 0 and q["keep"].any():
            w = w * q["keep"].float()
        elif stop_weight != 1:
            w = torch.where(q["keep"], w, w * stop_weight)
        out.append(w)
    return out


def choose(rows, base_name, half="choose (odd)", keyword_loss=0.01):
    """The variant with the best paraphrase nDCG@5 on ``half`` among those losing at most
    ``keyword_loss`` on its keyword questions and none overall, against ``base_name``."""
    base = next(r for r in rows if r["variant"] == base_name)
    ok = [r for r in rows if r[f"{half} keyword"] >= base[f"{half} keyword"] - keyword_loss
          and r[f"{half} nDCG@5"] >= base[f"{half} nDCG@5"]]
    return max(ok, key=lambda r: (r[f"{half} paraphrase"], r[f"{half} nDCG@5"]))


def rankings(scores, pages, questions, k=10):
    top = scores.topk(k, dim=1).indices
    return {q["qid"]: [key(pages[i].source, pages[i].page_no) for i in row] for q, row in zip(questions, top.tolist())}


def variant_rows(variants: dict, halves: dict[str, list[dict]], questions: list[dict], pages: list,
                 totals: bool = False) -> list[dict]:
    """One row per variant (a score matrix, questions x pages): nDCG@5 overall and per question
    type on each half; with ``totals`` also nDCG@1 and recall@10 on the half named "all"."""
    rows = []
    for name, s in variants.items():
        row = {"variant": name}
        for half, qq in halves.items():
            idx = [questions.index(q) for q in qq]
            r = evaluate(rankings(s[idx], pages, qq), qq)
            row[f"{half} nDCG@5"] = r["nDCG@5"]
            for t in TYPES:
                row[f"{half} {t}"] = r.get(f"nDCG@5 {t}", math.nan)
            if totals and half == "all":
                row["all nDCG@1"], row["all recall@10"] = r["nDCG@1"], r["recall@10"]
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--shard", default=None, metavar="I/N",
                    help="only encode every N-th page from the I-th and cache it (run N of these in parallel)")
    args = ap.parse_args()
    from agree_core.encoders.text_layer import TextLayerEncoder

    torch.set_num_threads(1)  # one thread per process: on a busy machine N processes beat N threads
    questions = load_questions()
    pages = corpus_pages()
    print(f"dev set: {len(questions)} questions, {len(pages)} pages; {machine()}")
    enc = TextLayerEncoder(dtype="float32", window=args.window, stride=args.stride, device="cpu")
    enc._load()
    cache = DATA / "cache" / f"variants-w{enc.cfg.window}-s{enc.cfg.stride}.pkl"
    corpus = cached_corpus(cache, pages, lambda ps: encode_corpus(enc, ps), args.shard)
    if corpus is None:
        return
    qs = encode_queries(enc, [q["query"] for q in questions])
    m_all, m_kept = token_maxima(qs, corpus)
    n = len(pages)
    df_kept, df_all = document_frequency(corpus, True), document_frequency(corpus, False)
    win = {name: window_scores(qs, corpus, name) for name in ("win", "sub128")}
    win["win top2"] = window_scores(qs, corpus, "win", top=2)

    def weights(stop_weight, alpha, page_df):
        return _weights(qs, stop_weight, alpha, page_df, n)

    variants = {}
    for pages_side, maxima, df in (("pages w/o stopwords", m_kept, df_kept), ("pages all tokens", m_all, df_all)):
        for stop in (0.0, 0.3, 1.0):
            for alpha in (0.0, 1.0, 2.0):
                variants[f"{pages_side}; query stopwords x{stop}; idf^{alpha:g}"] = token_scores(qs, maxima, weights(stop, alpha, df))
    for name, s in win.items():
        variants[f"window only: {name}"] = s
    # query-token normalisation: the query's stopwords removed from its text before the forward
    stripped = [" ".join(w for w in q["query"].split() if w.lower().strip("?,.") not in STOPWORDS) or q["query"]
                for q in questions]
    qs_stripped = encode_queries(enc, stripped)
    m_strip = token_maxima(qs_stripped, corpus)[1]
    variants["pages w/o stopwords; query text stripped of stopwords before encoding; idf^1"] = token_scores(
        qs_stripped, m_strip, [w for w in _weights(qs_stripped, 0.0, 1.0, df_kept, n)])
    for tname in ("pages w/o stopwords; query stopwords x0.0; idf^1", "pages w/o stopwords; query stopwords x0.3; idf^1",
                  "pages all tokens; query stopwords x0.3; idf^1"):
        for wname in win:
            for lam in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
                variants[f"{tname} + {lam:g} x {wname}"] = (1 - lam) * variants[tname] + lam * win[wname]
    halves = {"choose (odd)": [q for q in questions if int(q["qid"][1:]) % 2 == 1],
              "report (even)": [q for q in questions if int(q["qid"][1:]) % 2 == 0], "all": questions,
              "q001-q088": [q for q in questions if int(q["qid"][1:]) <= 88]}
    rows = variant_rows(variants, halves, questions, pages)
    cols = ["variant"] + [f"{h} {m}" for h in halves for m in ("nDCG@5", *TYPES)]
    out = table(rows, cols)
    base_name = "pages w/o stopwords; query stopwords x0.0; idf^1"
    best = choose(rows, base_name)
    base = next(r for r in rows if r["variant"] == base_name)
    out += (f"\n\nchosen on the odd questions: {best['variant']}\n"
            + table([{"": "default (base)", **base}, {"": "chosen", **best}], ["", *cols[1:]]))
    print(out)
    (DATA / f"variants-w{enc.cfg.window}.md").write_text(out + "\n")


if __name__ == "__main__":
    main()
