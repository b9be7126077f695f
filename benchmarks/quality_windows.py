"""Window granularity of the sentence part of the text-layer score, on the dev set, in memory.

    .venv/bin/python benchmarks/quality_windows.py --shard 0/2 & \
    .venv/bin/python benchmarks/quality_windows.py --shard 1/2; wait
    .venv/bin/python benchmarks/quality_windows.py

The token part is the product's (256-token windows, stride 192, stopwords and punctuation
dropped on pages and queries, IDF-weighted queries); only the sentence vectors change. One pass
over every page, with the encoder backend the product picks on this CPU (ONNX int8 on AVX2),
keeps per page the token vectors and MiniLM sentence embeddings (mean pooling, [CLS] and [SEP]
included) of:
- ``win256``: each 256-token window (the product's today, from the same forward as the tokens);
- ``c128`` / ``c64``: means over 128- / 64-token sub-spans (half overlap) of those windows'
  contextual outputs (no extra forward);
- ``w128`` / ``w64``: separate forwards of 128 / 64-token windows, stride half;
- ``sent``: sentences (split after . ? ! ;), short ones merged up to 16 word-pieces, long ones
  split at 62.

Variants (``(1 - λ) x token MaxSim + λ x sentence part``): the best window per granularity
(what a single MaxSim computes when those vectors are stored), the union of two granularities
(both stored: the max over all of them), two granularities summed (two extra dimensions),
soft combinations of the best windows (top-k mean, softmax), and second stages over the fused
default's top-N (score normalisation over the candidates, pseudo-relevance feedback). Chosen on
the odd-numbered questions by ``quality_variants.choose``, reported on the even ones and all.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, TYPES, cached_corpus, corpus_pages, load_questions, machine, table  # noqa: E402
from quality_variants import (_weights, choose, document_frequency, encode_queries, token_maxima,  # noqa: E402
                              variant_rows)

SHORT = {"w128": 128, "w64": 64}
CONTEXT_SPANS = {"c128": 128, "c64": 64}
GRANULARITIES = ("win256", *CONTEXT_SPANS, *SHORT, "sent")
ENDS = frozenset(".?!;")


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _forward(enc, seqs: list[list[int]]) -> list[torch.Tensor]:
    """Hidden states ``(len(seq), dim)`` of each sequence, batched by length."""
    out: list[torch.Tensor | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    i = 0
    while i < len(order):
        longest = len(seqs[order[i]])
        idx = order[i : i + max(1, 8192 // longest)]
        i += len(idx)
        ids = torch.zeros(len(idx), longest, dtype=torch.long)
        attn = torch.zeros(len(idx), longest, dtype=torch.long)
        for b, k in enumerate(idx):
            ids[b, : len(seqs[k])] = torch.tensor(seqs[k])
            attn[b, : len(seqs[k])] = 1
        with torch.inference_mode():
            if enc._fast is not None:
                h = enc._fast(ids, attn)
            else:
                h = enc._model(input_ids=ids, attention_mask=attn).last_hidden_state
        for b, k in enumerate(idx):
            out[k] = h[b, : len(seqs[k])].float()
    return out


def _spans(n: int, span: int, stride: int) -> list[tuple[int, int]]:
    if n == 0:
        return []
    starts = list(range(0, max(n - span, 0) + 1, stride))
    if starts[-1] + span < n:
        starts.append(n - span)
    return [(a, min(a + span, n)) for a in starts]


def _chunks(bounds: list[int], n: int, lo: int = 16, hi: int = 62) -> list[tuple[int, int]]:
    """Token spans between the cut points ``bounds``, short pieces merged up to ``lo`` tokens,
    long ones split at ``hi``."""
    out, start = [], 0
    for b in sorted(set(bounds) | {n}):
        if b - start >= lo or b == n:
            while b - start > hi:
                out.append((start, start + hi))
                start += hi
            if b > start:
                out.append((start, b))
            start = b
    return out


def _cuts(enc, ids) -> list[int]:
    """Token positions after which a sentence ends."""
    return [i + 1 for i, t in enumerate(enc._tokenizer.convert_ids_to_tokens(ids)) if t in ENDS]


def encode_corpus(enc, pages) -> list[dict]:
    from agree_core.encoders.text_layer import _windows

    tok = enc._tokenizer
    cls, sep = tok.cls_token_id, tok.sep_token_id
    span = enc.cfg.window - 2
    out, t0 = [], time.perf_counter()
    for n, page in enumerate(pages):
        words = enc._words(page)
        ids, _ = enc._tokenize_words(words)
        rec = {"ids": torch.tensor(ids, dtype=torch.long), "keep": enc._keep_mask(ids)}
        vecs = torch.zeros(len(ids), 384, dtype=torch.float16)
        wins = {g: [] for g in GRANULARITIES}
        main = _windows(len(ids), span, enc.cfg.stride)
        hidden = _forward(enc, [[cls, *ids[s : s + span], sep] for s, _, _ in main])
        for (s, lo, hi), h in zip(main, hidden):
            vecs[s + lo : s + hi] = _norm(h[1 + lo : 1 + hi]).half()
            wins["win256"].append(_norm(h.mean(0)))
            for g, L in CONTEXT_SPANS.items():
                inner = h[1:-1]
                wins[g] += [_norm(inner[a:b].mean(0)) for a, b in _spans(len(inner), L, L // 2)]
        seqs, names = [], []
        for g, L in SHORT.items():
            for a, b in _spans(len(ids), L - 2, (L - 2) // 2):
                seqs.append([cls, *ids[a:b], sep])
                names.append(g)
        if ids:
            for a, b in _chunks(_cuts(enc, ids), len(ids)):
                seqs.append([cls, *ids[a:b], sep])
                names.append("sent")
        for g, h in zip(names, _forward(enc, seqs)):
            wins[g].append(_norm(h.mean(0)))
        rec["vecs"] = vecs
        for g, v in wins.items():
            rec[g] = torch.stack(v).half() if v else torch.zeros(0, 384, dtype=torch.float16)
        out.append(rec)
        if n % 100 == 0:
            print(f"  {n}/{len(pages)} pages, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def window_sims(qs, corpus, g) -> list[torch.Tensor]:
    """Per page: ``(n_q, n_windows)`` cosines of each query's sentence vector with its windows."""
    s = torch.stack([q["sent"] for q in qs])
    return [s @ page[g].float().T for page in corpus]


def reduce(sims: list[torch.Tensor], how: str) -> torch.Tensor:
    """``(n_q, n_pages)`` from per-page window cosines: ``max``, ``topK`` (mean of the K best)
    or ``softT`` (T x logsumexp(cos / T), a soft max)."""
    n_q = sims[0].shape[0]
    out = torch.full((n_q, len(sims)), -1.0)
    for p, m in enumerate(sims):
        if not m.shape[1]:
            continue
        if how == "max":
            out[:, p] = m.max(1).values
        elif how.startswith("top"):
            out[:, p] = m.topk(min(int(how[3:]), m.shape[1]), dim=1).values.mean(1)
        elif how.startswith("soft"):
            t = float(how[4:])
            out[:, p] = t * torch.logsumexp(m / t, dim=1) - t * math.log(m.shape[1])  # soft mean..max
    return out


def zscore_rerank(fused, token, sent, n_top, lam):
    """Second stage: the fused score's top ``n_top`` reranked by ``(1 - λ) z(token) + λ z(sent)``,
    z over the candidates (per query); the rest keep their order below them."""
    out = fused.clone()
    top = fused.topk(n_top, dim=1).indices
    for q in range(len(fused)):
        c = top[q]
        z = lambda x: (x - x.mean()) / x.std().clamp_min(1e-6)  # noqa: E731
        out[q, c] = 100.0 + (1 - lam) * z(token[q, c]) + lam * z(sent[q, c])
    return out


def prf(qs, corpus, fused, g, n_fb, beta, lam, token):
    """Pseudo-relevance feedback on the sentence part: the query's sentence vector moved toward
    the best ``g`` window of each of the fused score's top ``n_fb`` pages, then fused again."""
    top = fused.topk(n_fb, dim=1).indices
    new = []
    for q, rows in zip(qs, top.tolist()):
        best = [corpus[p][g].float()[(corpus[p][g].float() @ q["sent"]).argmax()] for p in rows if len(corpus[p][g])]
        new.append({**q, "sent": _norm(q["sent"] + beta * torch.stack(best).mean(0)) if best else q["sent"]})
    return (1 - lam) * token + lam * reduce(window_sims(new, corpus, g), "max")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard", default=None, metavar="I/N", help="encode every N-th page from the I-th and cache it")
    ap.add_argument("--limit", type=int, default=0, help="encode only the first N pages (timing)")
    args = ap.parse_args()
    from agree_core.encoders.text_layer import TextLayerEncoder

    torch.set_num_threads(1)
    questions, pages = load_questions(), corpus_pages()
    enc = TextLayerEncoder(device="cpu")
    enc._load()
    print(f"dev set: {len(questions)} questions, {len(pages)} pages; {machine()}; "
          f"backend {getattr(enc._fast, 'backend', 'torch')}", flush=True)
    cache = DATA / "cache" / "windows-v1.pkl"
    if args.limit:
        t = time.perf_counter()
        encode_corpus(enc, pages[: args.limit])
        print(f"{args.limit} pages in {time.perf_counter() - t:.1f} s")
        return
    corpus = cached_corpus(cache, pages, lambda ps: encode_corpus(enc, ps), args.shard)
    if corpus is None:
        return
    print("windows per page: " + ", ".join(f"{g} {sum(len(p[g]) for p in corpus) / len(corpus):.1f}"
                                           for g in GRANULARITIES), flush=True)
    qs = encode_queries(enc, [q["query"] for q in questions])
    n = len(pages)
    m_kept = token_maxima(qs, corpus)[1]
    token = torch.stack([(w[:, None] * m).sum(0) / w.sum().clamp_min(1e-9)
                         for m, w in zip(m_kept, _weights(qs, 0.0, 1.0, document_frequency(corpus, True), n))])
    sims = {g: window_sims(qs, corpus, g) for g in GRANULARITIES}
    best = {g: reduce(s, "max") for g, s in sims.items()}
    default = 0.6 * token + 0.4 * best["win256"]
    variants = {"token MaxSim only (sentence_weight 0)": token}
    lams = (0.2, 0.3, 0.4, 0.5, 0.6)
    for g in GRANULARITIES:
        variants[f"{g} only"] = best[g]
        for lam in lams:
            variants[f"+ {lam:g} x {g}"] = (1 - lam) * token + lam * best[g]
    for g in GRANULARITIES[1:]:
        union = torch.maximum(best["win256"], best[g])
        for lam in lams:
            variants[f"+ {lam:g} x max(win256, {g})"] = (1 - lam) * token + lam * union
        for l1, l2 in ((0.2, 0.2), (0.2, 0.3), (0.3, 0.2), (0.25, 0.25), (0.3, 0.3)):
            variants[f"+ {l1:g} x win256 + {l2:g} x {g}"] = (1 - l1 - l2) * token + l1 * best["win256"] + l2 * best[g]
    for g in ("win256", "w128", "w64", "sent"):
        for how in ("top2", "top3", "soft0.05", "soft0.02"):
            r = reduce(sims[g], how)
            for lam in (0.3, 0.4, 0.5):
                variants[f"+ {lam:g} x {g} {how}"] = (1 - lam) * token + lam * r
    for g in ("win256", "w128", "w64", "sent"):
        for n_top in (20, 50):
            for lam in (0.3, 0.5):
                variants[f"2nd stage top{n_top} z-scores, λ {lam:g}, {g}"] = zscore_rerank(default, token, best[g], n_top, lam)
        for n_fb, beta in ((3, 0.5), (5, 0.5), (3, 1.0)):
            variants[f"PRF top{n_fb} beta {beta:g}, + 0.4 x {g}"] = prf(qs, corpus, default, g, n_fb, beta, 0.4, token)
    halves = {"odd": [q for q in questions if int(q["qid"][1:]) % 2 == 1],
              "even": [q for q in questions if int(q["qid"][1:]) % 2 == 0], "all": questions}
    rows = variant_rows(variants, halves, questions, pages, totals=True)
    cols = ["variant"] + [f"{h} {m}" for h in halves for m in ("nDCG@5", *TYPES)] + ["all nDCG@1", "all recall@10"]
    base = "+ 0.4 x win256"
    chosen = choose(rows, base, half="odd")
    out = table(rows, cols) + f"\n\nchosen on the odd questions: {chosen['variant']}\n" + table(
        [{"": "default (base)", **next(r for r in rows if r["variant"] == base)}, {"": "chosen", **chosen}],
        ["", *cols[1:]])
    print(out)
    (DATA / "windows-variants.md").write_text(f"{machine()}\n\n{out}\n")


if __name__ == "__main__":
    main()
