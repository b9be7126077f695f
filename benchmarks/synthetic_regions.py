"""Synthetic multi-region pages with oracle teacher maps, for the AGREE experiment.

Why this data set: AGREE adds a local loss that pulls the retriever's per-region relevance
toward a teacher map of the evidence. That can only help where the page-level label leaves the
retriever confused about *which part* of a page answers the query. Here every page is a grid
of 4-6 boxed paragraphs ("regions"), each stating one fact (entity, relation, value) about a
fictional entity with a made-up, syllable-built name. A query asks for one fact, in a paraphrase
(question templates do not reuse the statement's wording), so words alone are weak evidence.

Distractors make surface matching fail on purpose:
- the query's entity also appears on about 3 other pages, in facts about other relations;
- the relation's words appear on many pages, for other entities;
- pages are filled preferring entities of a kind already on the page, so relations recur: for
  ~90% of eval queries another page holds the entity in one box and the relation in another, and
  on the positive page other regions share the entity or the relation words.
A page that holds the entity in one box and the relation's words in another looks, token by
token, like the positive page; only the *binding* of entity and relation inside one region tells
them apart -- exactly what a region-level (oracle) map can teach and a page label cannot.

Splits: train and eval use disjoint entities (same relations and templates), so eval measures
generalisation. Each (entity, relation) occurs once per split: exactly one positive page.

Output (``--out DIR``): ``pdfs/*.pdf`` (10 pages each, reportlab, US letter, deterministic via
``invariant=1``), ``train.jsonl`` / ``eval.jsonl`` (agree_core.training.data format, with the
map key and a ``meta`` object), ``maps/`` (a MapCache with teacher ``oracle:synthetic-regions``:
1.0 on the teacher-grid cells the evidence box touches, else 0 or ``map_noise * U(0, 1)``),
``regions.jsonl`` (boxes normalised 0-1 from the top-left), ``params.json`` (written last; a
rerun with the same parameters returns at once).

Page digest: not a hash of a 150-dpi render (minutes on two cores) but ``sha256("synthetic-regions",
PDF file sha256, page)``, stable as the PDFs are byte-identical per seed; the trainer uses ``map``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agree_core.pages import file_sha256, iter_pages  # noqa: E402

TEACHER_MODEL = "oracle:synthetic-regions"
PAGES_PER_PDF = 10
NEAR = 0.75  # chance a page takes its next fact from an entity of a kind already on it
W, H, MARGIN = 612.0, 792.0, 48.0

# kind -> relation -> (statement templates, question templates, value maker)
_NUM = lambda lo, hi, fmt="{:,}": lambda r: fmt.format(r.randint(lo, hi))  # noqa: E731
RELATIONS = {
    "material": {
        "boiling point": (["{e} reaches its boiling point at {v} K under standard pressure.",
                           "Under standard pressure the boiling point of {e} lies at {v} kelvin."],
                          ["How hot must {e} get before it turns into vapour?",
                           "At what temperature does liquid {e} start to evaporate?"], _NUM(300, 900)),
        "melting point": (["Solid {e} melts at {v} K, as measured in the reference furnace.",
                           "The melting point of {e} was fixed at {v} kelvin."],
                          ["When does a block of {e} turn liquid as it is heated?",
                           "Above which temperature is {e} no longer solid?"], _NUM(150, 600)),
        "density": (["{e} has a density of {v} grams per cubic centimetre.",
                     "One cubic centimetre of {e} weighs {v} grams."],
                    ["How heavy is {e} for its volume?", "What mass does a small cube of {e} have?"],
                    lambda r: f"{r.uniform(1.5, 21):.2f}"),
        "discoverer": (["{e} was first isolated by the chemist {v}.",
                        "The chemist {v} is credited with isolating {e}."],
                       ["Who found {e} in the first place?", "Which scientist identified {e}?"], "person"),
        "toxicity": (["Exposure limit for {e} vapour: {v} parts per million over eight hours.",
                      "Workers may breathe at most {v} parts per million of {e}."],
                     ["How dangerous is it to inhale {e}?", "What airborne amount of {e} is safe for staff?"],
                     _NUM(1, 400)),
    },
    "company": {
        "founding year": (["{e} was founded in {v} by a group of former railway clerks.",
                           "The company {e} was established in {v}."],
                          ["When did {e} start doing business?", "How old is the firm {e}?"], _NUM(1850, 2015, "{}")),
        "headquarters": (["{e} has its headquarters in the city of {v}.",
                          "The head office of {e} is located in {v}."],
                         ["Where is {e} based?", "In which town does {e} run its main office?"], "city"),
        "chief engineer": (["The chief engineer of {e} is {v}.",
                            "{v} serves as chief engineer at {e}."],
                           ["Who leads the technical staff at {e}?", "Who is in charge of engineering for {e}?"], "person"),
        "workforce": (["{e} employs {v} people across its sites.",
                       "The staff of {e} numbers {v} employees."],
                      ["How many workers does {e} have?", "How large is the team at {e}?"], _NUM(40, 90000)),
        "annual revenue": (["{e} reported annual revenue of {v} million euros.",
                            "Yearly sales of {e} came to {v} million euros."],
                           ["How much money does {e} bring in each year?", "What turnover does {e} make?"],
                           _NUM(3, 9000)),
    },
    "structure": {
        "maximum load": (["{e} is rated for a maximum load of {v} tonnes.",
                          "The load limit of {e} is set at {v} tonnes."],
                         ["How much weight can {e} safely carry?", "What is the heaviest cargo {e} can bear?"],
                         _NUM(20, 5000)),
        "span length": (["{e} has a total span of {v} metres.",
                         "From end to end, {e} measures {v} metres."],
                        ["How long is {e}?", "What distance does {e} cover?"], _NUM(30, 3000)),
        "completion year": (["Construction of {e} was completed in {v}.",
                             "{e} was finished and opened in {v}."],
                            ["When did building work on {e} end?", "In what year could people first use {e}?"],
                            _NUM(1880, 2022, "{}")),
        "designer": (["{e} was designed by the architect {v}.",
                      "The architect {v} drew the plans of {e}."],
                     ["Who created the design of {e}?", "Whose plans was {e} built from?"], "person"),
        "location": (["{e} stands near the city of {v}.", "{e} is located just outside {v}."],
                     ["Where can {e} be found?", "Which town is close to {e}?"], "city"),
    },
}
KIND_LABEL = {"material": "compound", "company": "company", "structure": "bridge"}
FILLERS = ["Figures were confirmed in the latest survey.", "Earlier records give a slightly different value.",
           "This entry was reviewed by the registry board.", "Values are rounded to the nearest unit.",
           "The source is the annual register of the ministry.", "See the appendix for the method used.",
           "No later correction has been filed.", "The entry dates from the second edition.",
           "Independent auditors checked this record twice.", "A footnote in the archive disputes it."]
SYL = "ka ve lo rin ta mor sel du bra qui xen zo pel fa nor vi ost ium ar dex lu gon tri shi".split()
FIRST = "Anna Boris Clara Dmitri Elise Farid Greta Hugo Ines Jonas Katya Lionel Mira Nils Olga Pavel".split()
STOP = set("a an and are as at be by can does did do for from get has have how in is it its "
           "of on or the to was what when where which who whose with".split())


def _name(rng: random.Random, n: tuple[int, int] = (2, 3)) -> str:
    return "".join(rng.choice(SYL) for _ in range(rng.randint(*n))).capitalize()


def _value(rng: random.Random, maker) -> str:
    if maker == "person":
        return f"{rng.choice(FIRST)} {_name(rng)}"
    if maker == "city":
        return _name(rng) + rng.choice(["burg", "ton", "ville", "port", "stad"])
    return maker(rng)


def _facts(rng: random.Random, n_slots: int, used: set[str]) -> list[dict]:
    """Entities (names not in ``used``) with 4-5 facts each until ``n_slots`` facts exist."""
    facts = []
    while len(facts) < n_slots:
        name = _name(rng)
        if name in used or len(name) < 5:
            continue
        used.add(name)
        kind = rng.choice(sorted(RELATIONS))
        for rel in rng.sample(sorted(RELATIONS[kind]), rng.randint(4, 5)):
            stmts, _, maker = RELATIONS[kind][rel]
            facts.append({"entity": name, "kind": kind, "relation": rel, "value": _value(rng, maker),
                          "statement": rng.choice(stmts)})
    return facts


def _pages(rng: random.Random, facts: list[dict], sizes: list[int]) -> list[list[dict]]:
    """Fill pages with facts: an entity's facts spread over pages (chunks of 1-2), and a page
    prefers entities of a kind it already holds (so relations recur across its regions)."""
    chunks, by_entity = [], {}
    for f in facts:
        by_entity.setdefault(f["entity"], []).append(f)
    for fs in by_entity.values():
        while fs:
            k = rng.choice([1, 1, 1, 2])
            chunks.append(fs[:k])
            fs = fs[k:]
    rng.shuffle(chunks)
    pages = []
    for size in sizes:
        page: list[dict] = []
        while len(page) < size and chunks:
            ents = {f["entity"] for f in page}
            kinds = {f["kind"] for f in page}
            ok = [c for c in chunks[:200] if c[0]["entity"] not in ents and len(c) <= size - len(page)]
            if not ok:  # only 2-fact chunks left for one slot: split one
                two = next((c for c in chunks if c[0]["entity"] not in ents), None)
                if two is None:
                    break
                page.append(two.pop(0))
                if not two:
                    chunks.remove(two)
                continue
            near = [c for c in ok if c[0]["kind"] in kinds]
            pick = rng.choice(near) if near and rng.random() < NEAR else rng.choice(ok)
            chunks.remove(pick)
            page += pick
        if page:
            pages.append(page)
    return pages


def _draw_page(c, rng: random.Random, title: str, regions: list[dict]) -> None:
    """Boxed paragraphs in a 2-column grid (an odd region spans both columns), random gaps."""
    from reportlab.lib.utils import simpleSplit

    c.setFont("Helvetica-Bold", 15)
    c.drawString(MARGIN, H - MARGIN - 12, title)
    k = len(regions)
    rows, i = [], 0
    wide = rng.randrange((k + 1) // 2) if k % 2 else -1
    for r in range((k + 1) // 2):
        n = 1 if r == wide else 2
        rows.append(regions[i:i + n])
        i += n
    gap_x, gap_y, pad, lead = 30.0, 27.0, 8.0, 13.0  # gaps wider than a teacher cell: no cell
    # touches two boxes
    laid = []
    for row in rows:
        bw = (W - 2 * MARGIN - gap_x * (len(row) - 1)) / len(row)
        cells = [(reg, simpleSplit(reg["text"], "Helvetica", 10.5, bw - 2 * pad)) for reg in row]
        bh = max(2 * pad + 16 + lead * len(lines) for _, lines in cells)
        laid.append((bw, bh, cells))
    top, bottom = H - MARGIN - 36, MARGIN
    free = top - bottom - sum(bh for _, bh, _ in laid)
    weights = [rng.random() + 0.3 for _ in range(len(laid) + 1)]
    free -= gap_y * (len(laid) - 1)
    y = top - free * weights[0] / sum(weights)
    for (bw, bh, cells), wgt in zip(laid, weights[1:]):
        for j, (reg, lines) in enumerate(cells):
            x = MARGIN + j * (bw + gap_x)
            c.setStrokeGray(0.45)
            c.rect(x, y - bh, bw, bh)
            c.setFont("Helvetica-Bold", 12)
            c.drawString(x + pad, y - pad - 11, reg["heading"])
            c.setFont("Helvetica", 10.5)
            for n, line in enumerate(lines):
                c.drawString(x + pad, y - pad - 16 - lead * (n + 1) + 2, line)
            reg["box"] = [round(x / W, 5), round((H - y) / H, 5), round((x + bw) / W, 5), round((H - y + bh) / H, 5)]
        y -= bh + gap_y + free * wgt / sum(weights)
    c.showPage()


def oracle_map(box, grid=(32, 24), noise: float = 0.0, rng: random.Random | None = None) -> torch.Tensor:
    """1.0 on every grid cell the normalised box overlaps, else 0 (or ``noise * U(0, 1)``)."""
    rows, cols = grid
    m = torch.zeros(rows, cols)
    if noise:
        g = torch.Generator().manual_seed((rng or random).randrange(1 << 31))
        m = noise * torch.rand(rows, cols, generator=g)
    r0, r1 = int(box[1] * rows), min(rows, math.ceil(box[3] * rows))
    c0, c1 = int(box[0] * cols), min(cols, math.ceil(box[2] * cols))
    m[r0:r1, c0:c1] = 1.0
    return m


def _tok(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOP]


def _ndcg(scores: torch.Tensor, positives: list[int]) -> tuple[float, float]:
    """Mean nDCG@1 and @5 with one relevant page, ties broken at random (in expectation)."""
    n1 = n5 = 0.0
    for row, p in zip(scores, positives):
        above, ties = int((row > row[p]).sum()), int((row == row[p]).sum()) - 1
        n1 += (above == 0) / (ties + 1)
        n5 += sum(1 / math.log2(r + 2) for r in range(above, above + ties + 1) if r < 5) / (ties + 1)
    return round(n1 / len(positives), 3), round(n5 / len(positives), 3)


def sanity(out: Path, split: str = "eval", encoder: bool = True) -> dict:
    """nDCG@1/@5 of BM25 (and the untrained text-layer encoder) over the split's pages."""
    import bm25s

    lines = [json.loads(s) for s in (out / f"{split}.jsonl").read_text().splitlines()]
    pages = [p for pdf in sorted((out / "pdfs").glob(f"{split}-*.pdf")) for p in iter_pages(pdf, render=False)]
    where = {(p.source.name, p.page_no): i for i, p in enumerate(pages)}
    pos = [where[(Path(q["pdf"]).name, q["page"])] for q in lines]
    bm = bm25s.BM25()
    bm.index([_tok(p.text) for p in pages], show_progress=False)
    scores = torch.zeros(len(lines), len(pages))
    for i, q in enumerate(lines):
        scores[i] = torch.as_tensor(bm.get_scores(_tok(q["query"])))
    res = {"pages": len(pages), "queries": len(lines), "bm25_ndcg@1,@5": _ndcg(scores, pos)}
    if encoder:
        from agree_core.encoders import load_encoder
        from agree_core.scoring import maxsim

        enc = load_encoder("text-layer")
        pv = [e.vectors for e in enc.encode_pages(pages)]
        qv = enc.encode_queries([q["query"] for q in lines])
        res["text_layer_ndcg@1,@5"] = _ndcg(maxsim(qv, pv, compute_dtype=torch.float32), pos)
    return res


def build(out: Path, *, train_pages: int = 300, train_queries: int = 600, eval_pages: int = 120,
          eval_queries: int = 200, seed: int = 0, regions: tuple[int, int] = (4, 6),
          map_grid: tuple[int, int] = (32, 24), map_noise: float = 0.0, check: bool = True) -> dict:
    """Build (or find already built) the data set in ``out``; returns paths and sanity figures."""
    from reportlab.pdfgen import canvas

    from agree_core.teacher.cache import MapCache
    from agree_core.teacher.qwen import TeacherConfig

    out = Path(out).absolute()
    params = {"train_pages": train_pages, "train_queries": train_queries, "eval_pages": eval_pages,
              "eval_queries": eval_queries, "seed": seed, "regions": list(regions),
              "map_grid": list(map_grid), "map_noise": map_noise, "version": 2}
    done = out / "params.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old["params"] == params:
            if check and "sanity" not in old["result"]:
                old["result"]["sanity"] = sanity(out)
                done.write_text(json.dumps(old, indent=1) + "\n")
            return old["result"]
    t0 = time.time()
    for stale in ("pdfs", "maps", "params.json", "train.jsonl", "eval.jsonl", "regions.jsonl"):
        p = out / stale
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    (out / "pdfs").mkdir(parents=True)
    rng = random.Random(seed)
    cache = MapCache(out / "maps", TeacherConfig(model=TEACHER_MODEL))
    used: set[str] = set()
    region_lines = []
    result = {"out": str(out), "pdfs": str(out / "pdfs"), "maps": str(out / "maps"),
              "regions": str(out / "regions.jsonl")}
    for split, n_pages, n_queries, prefix in (("train", train_pages, train_queries, "t"),
                                              ("eval", eval_pages, eval_queries, "e")):
        sizes = [rng.randint(*regions) for _ in range(n_pages)]
        facts = _facts(rng, sum(sizes), used)
        pages = _pages(rng, facts, sizes)[:n_pages]
        located = []  # (fact, pdf rel path, page no)
        for start in range(0, len(pages), PAGES_PER_PDF):
            rel = f"pdfs/{split}-{start // PAGES_PER_PDF:03d}.pdf"
            c = canvas.Canvas(str(out / rel), pagesize=(W, H), invariant=1)
            for page_no, page in enumerate(pages[start:start + PAGES_PER_PDF], 1):
                for f in page:
                    filler = " " + " ".join(rng.sample(FILLERS, rng.choice([1, 1, 2])))
                    f["heading"] = f"{f['entity']} ({KIND_LABEL[f['kind']]})"
                    f["text"] = f["statement"].format(e=f["entity"], v=f["value"]) + filler
                    located.append((f, rel, page_no))
                _draw_page(c, rng, f"Technical register, sheet {split[0].upper()}{start + page_no}", page)
            c.save()
        digests = {}
        for f, rel, page_no in located:
            if (rel, page_no) not in digests:
                sha = digests.setdefault(rel, file_sha256(out / rel))
                digests[(rel, page_no)] = hashlib.sha256(
                    f"synthetic-regions\x00{sha}\x00{page_no}".encode()).hexdigest()
            region_lines.append({"split": split, "pdf": rel, "page": page_no, "box": f["box"],
                                 "entity": f["entity"], "relation": f["relation"], "value": f["value"],
                                 "heading": f["heading"], "text": f["text"]})
        picks = rng.sample(located, min(n_queries, len(located)))
        with open(out / f"{split}.jsonl", "w") as fh:
            for i, (f, rel, page_no) in enumerate(picks):
                query = rng.choice(RELATIONS[f["kind"]][f["relation"]][1]).format(e=f["entity"])
                digest = digests[(rel, page_no)]
                key = cache.key(query, digest)
                qid = f"{prefix}{i}"
                cache.add(key, oracle_map(f["box"], map_grid, map_noise, rng), qid=qid, query=query,
                          page_digest=digest, source=str(out / rel), page=page_no)
                meta = {"entity": f["entity"], "relation": f["relation"], "box": f["box"]}
                fh.write(json.dumps({"qid": qid, "query": query, "pdf": rel, "page": page_no,
                                     "map": key, "meta": meta}) + "\n")
        result[split] = str(out / f"{split}.jsonl")
        result[f"{split}_counts"] = {"pages": len(pages), "queries": len(picks), "entities": len(
            {f["entity"] for f in facts})}
    cache.close()
    (out / "regions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in region_lines))
    result["build_seconds"] = round(time.time() - t0, 1)
    if check:
        result["sanity"] = sanity(out)
    done.write_text(json.dumps({"params": params, "result": result}, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    for name, default in (("seed", 0), ("train-pages", 300), ("train-queries", 600),
                          ("eval-pages", 120), ("eval-queries", 200)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--regions", type=int, nargs=2, default=(4, 6), metavar=("MIN", "MAX"))
    ap.add_argument("--map-grid", type=int, nargs=2, default=(32, 24), metavar=("ROWS", "COLS"))
    ap.add_argument("--map-noise", type=float, default=0.0, help="off-evidence cells: noise * U(0, 1)")
    ap.add_argument("--no-check", action="store_true", help="skip the BM25/encoder sanity check")
    a = vars(ap.parse_args(argv))
    a["regions"], a["map_grid"], a["check"] = tuple(a["regions"]), tuple(a["map_grid"]), not a.pop("no_check")
    print(json.dumps(build(a.pop("out"), **a), indent=1))


if __name__ == "__main__":
    main()
