"""Does AGREE's local loss help? The same retriever trained with the global loss only and with
global + local (cosine, KL, top-K), at equal steps, over several seeds, on synthetic pages
whose queries hinge on one region (benchmarks/synthetic_regions.py, oracle maps as teacher).

    python benchmarks/bench_training.py                      # 3 seeds x 4 variants, ~40 min on 2 cores
    python benchmarks/bench_training.py --steps 20 --seeds 0 --variants global cosine   # quick look
    python benchmarks/bench_training.py --teacher-run         # + the real teacher path (tiny random teacher)

The retriever is the text-layer encoder (MiniLM, LoRA), the one pretrained model that trains on
a CPU. Besides nDCG@1/@5 on held-out pages (entities never seen in training), it reports the
*evidence share*: of each eval query's MaxSim score on its positive page, the fraction that comes
from vectors inside the evidence region (what a heatmap would show). Results go to
``benchmarks/results/training.json``; the table is printed and belongs in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import machine, table  # noqa: E402

import synthetic_regions  # noqa: E402

VARIANTS = {  # name -> (local_loss, extra settings)
    "global": ("none", {}),
    "cosine": ("cosine", {}),
    "kl": ("kl", {}),
    "topk": ("topk", {"top_k": 0.1}),
    "cosine-mismatch": ("cosine", {"mismatch_first": 0.25}),
}


def load_train():
    import importlib.util

    spec = importlib.util.spec_from_file_location("agree_train", ROOT / "training" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def evidence_share(encoder_spec: str, data: Path, maps_dir: Path, limit: int | None = None) -> float:
    """Mean fraction of the MaxSim score of each eval query on its positive page that comes from
    vectors in the evidence region (oracle map > 0.5 at the vector's cell)."""
    from agree_core.encoders import load_encoder
    from agree_core.teacher.align import align_to_grid
    from agree_core.teacher.cache import MapCache
    from agree_core.training.data import PageLoader, read_examples

    examples = read_examples(data)[:limit]
    encoder = load_encoder(encoder_spec, device="cpu", dtype="float32")
    cache = MapCache(maps_dir)
    loader = PageLoader(render=False)
    refs = list({ex.page.where: ex.page for ex in examples}.values())
    embedded = dict(zip((r.where for r in refs), encoder.encode_pages([loader.load(r) for r in refs])))
    queries = encoder.encode_queries([ex.query for ex in examples])
    shares = []
    for ex, q in zip(examples, queries):
        page = embedded[ex.page.where]
        inside = align_to_grid(cache.load(ex.map_key), page.grid).flatten()[page.cells.clamp_min(0)] > 0.5
        inside &= page.cells >= 0
        best, where = (q @ page.vectors.T).max(dim=1)  # per query token
        best = best.clamp_min(0)
        shares.append(float(best[inside[where]].sum() / best.sum().clamp_min(1e-9)))
    return statistics.mean(shares)


def with_hard_negatives(data: dict, k: int, out: Path) -> str:
    """train.jsonl plus each query's top-``k`` wrong pages under the untrained text-layer encoder,
    mined the product's way: ``agree index`` the training PDFs, ``agree dataset convert``."""
    from agree_core.encoders import load_encoder
    from agree_core.index import PageIndex
    from agree_core.pages import find_pdfs
    from agree_core.training.convert import convert

    target = Path(data["out"]) / f"train-hard{k}.jsonl"
    if target.is_file():
        return str(target)
    index_dir = out / "train-index"
    pdfs, _ = find_pdfs([Path(data["pdfs"])])
    with PageIndex.open(index_dir, encoder=load_encoder("text-layer")) as index:
        index.add([p for p in pdfs if p.name.startswith("train-")])
    labelled = Path(data["out"]) / "train-labelled.jsonl"
    root = Path(data["train"]).parent
    with open(labelled, "w") as f:
        for line in Path(data["train"]).read_text().splitlines():
            ex = json.loads(line)
            f.write(json.dumps({"qid": ex["qid"], "query": ex["query"], "source": str(root / ex["pdf"]),
                                "page": ex["page"]}) + "\n")
    convert(index_dir, labelled, target, hard_negatives=k)
    return str(target)


def teacher_run(train, data: dict, out: Path, steps: int) -> dict:
    """The real teacher path: a tiny random Qwen2.5-VL builds maps for a slice of the training
    set (``agree teacher build``'s code), the trainer finds them by query and page. Random maps:
    this checks the plumbing, not the method."""
    from agree_core.encoders.colvision.testing import save_tiny_teacher
    from agree_core.teacher.build import build_maps
    from agree_core.teacher.qwen import QwenVLTeacher
    from agree_core.training.data import read_examples

    lines = Path(data["train"]).read_text().splitlines()[:64]
    subset = Path(data["out"]) / "train-teacher-slice.jsonl"
    subset.write_text("".join(json.dumps({k: v for k, v in json.loads(l).items() if k != "map"}) + "\n"
                              for l in lines))
    teacher = QwenVLTeacher(str(save_tiny_teacher("colqwen2.5", out / "tiny-teacher")), device="cpu",
                            max_image_tokens=256)
    started = time.perf_counter()
    report = build_maps(read_examples(subset), out / "tiny-teacher-maps", teacher, dpi=50, progress=False)
    build_s = time.perf_counter() - started
    cfg = train.Config(encoder="text-layer", train_data=str(subset), eval_data=data["eval"],
                       teacher_maps=str(out / "tiny-teacher-maps"), local_loss="cosine",
                       output_dir=str(out / "teacher-run"), device="cpu", batch_size=16, micro_batch_size=16,
                       lr=5e-4, warmup_steps=0, max_steps=steps, eval_at_start=False, eval_every=0,
                       save_every=0, log_every=1)
    result = train.train(cfg)
    logged = [json.loads(l) for l in (out / "teacher-run" / "log.jsonl").read_text().splitlines()]
    local = [e["local"] for e in logged if "local" in e]
    return {"maps": report.computed, "skipped": len(report.skipped), "build_s": round(build_s, 1),
            "local_first": local[0], "local_last": local[-1], **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE / "data" / "synthetic-regions"))
    parser.add_argument("--out", default=str(HERE / "data" / "training-runs"))
    parser.add_argument("--variants", nargs="+", default=["global", "cosine", "kl", "topk"], choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--local-weight", type=float, default=0.1)
    parser.add_argument("--hard-negatives", type=int, default=0,
                        help="add each query's top K wrong pages under the untrained encoder as explicit negatives")
    parser.add_argument("--teacher-run", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)

    data = synthetic_regions.build(Path(args.data), check=False)
    train = load_train()
    out = Path(args.out)
    results_file = HERE / "results" / "training.json"
    results_file.parent.mkdir(exist_ok=True)
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    setting = f"steps={args.steps} batch={args.batch} lr={args.lr} lambda={args.local_weight}"
    train_data = data["train"]
    if args.hard_negatives:
        setting += f" hard_negatives={args.hard_negatives}"
        train_data = with_hard_negatives(data, args.hard_negatives, out)
    runs = results.setdefault(setting, {})
    if "base" not in runs:
        started = time.perf_counter()
        cfg = train.Config(encoder="text-layer", train_data=data["train"], eval_data=data["eval"],
                           local_loss="none", output_dir=str(out / "base"), device="cpu", batch_size=args.batch,
                           micro_batch_size=args.batch, max_steps=1, lr=0.0, warmup_steps=0, eval_every=0,
                           save_every=0, stop_after=0)
        runs["base"] = {"0": {**train.train(cfg), "evidence_share": evidence_share("text-layer", Path(data["eval"]),
                                                                                      Path(data["maps"])),
                              "seconds": round(time.perf_counter() - started)}}
        results_file.write_text(json.dumps(results, indent=1))
    for seed in args.seeds:
        for name in args.variants:
            if str(seed) in runs.get(name, {}):
                continue
            local, extra = VARIANTS[name]
            run_dir = out / f"{name}-s{seed}{f'-hard{args.hard_negatives}' if args.hard_negatives else ''}"
            started = time.perf_counter()
            cfg = train.Config(encoder="text-layer", train_data=train_data, eval_data=data["eval"],
                               teacher_maps=data["maps"], local_loss=local, local_weight=args.local_weight,
                               output_dir=str(run_dir), device="cpu", batch_size=args.batch,
                               micro_batch_size=args.batch, lr=args.lr, warmup_steps=args.steps // 10,
                               max_steps=args.steps, seed=seed, eval_at_start=False, eval_every=0,
                               save_every=0, log_every=1, **extra)
            metrics = train.train(cfg)
            metrics["evidence_share"] = evidence_share(f"text-layer:{run_dir.absolute()}", Path(data["eval"]),
                                                       Path(data["maps"]))
            metrics["seconds"] = round(time.perf_counter() - started)
            runs.setdefault(name, {})[str(seed)] = metrics
            results_file.write_text(json.dumps(results, indent=1))
            print(name, seed, metrics, flush=True)
    if args.teacher_run and "teacher-run" not in runs:
        runs["teacher-run"] = teacher_run(train, data, out, steps=10)
        results_file.write_text(json.dumps(results, indent=1))

    rows = []
    for name in ["base", *args.variants]:
        seeds = runs.get(name, {})
        if not seeds:
            continue
        row = {"variant": name if name != "base" else "untrained", "seeds": len(seeds)}
        for metric in ("ndcg@1", "ndcg@5", "recall@5", "evidence_share"):
            values = [s[metric] for s in seeds.values()]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            row[metric] = f"{statistics.mean(values):.3f}{spread}"
        row["per seed nDCG@1"] = " ".join(f"{s['ndcg@1']:.3f}" for s in seeds.values())
        rows.append(row)
    print(f"\n{machine()}\n{setting}; eval: {len(Path(data['eval']).read_text().splitlines())} queries on "
          f"held-out pages\n")
    print(table(rows, ["variant", "seeds", "ndcg@1", "ndcg@5", "recall@5", "evidence_share", "per seed nDCG@1"]))
    if "teacher-run" in runs:
        print("\nreal teacher path (tiny random Qwen2.5-VL):", runs["teacher-run"])


if __name__ == "__main__":
    main()
