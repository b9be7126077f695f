"""Fine-tune a late-interaction retriever with AGREE.

    python training/train.py --config training/configs/tiny.yaml --output-dir runs/tiny
    torchrun --nproc-per-node 4 training/train.py --config training/configs/agree-colqwen2.5.yaml \
        --output-dir runs/agree
    python training/train.py --config ... --output-dir runs/agree --resume   # latest checkpoint

Every field of :class:`Config` can be set in the YAML file and overridden on the command line
(``--lr 5e-5``, ``--local-loss kl``). The run directory ends up holding a LoRA adapter that
loads wherever an encoder name does: ``agree index --encoder colqwen2.5:RUN_DIR``.

One optimizer step: the global batch is split over ranks and micro-batches; each micro-batch
encodes its queries and pages (positives and explicit negatives), gathers the pages of every
rank as in-batch negatives, and adds ``global + local_weight * local`` (shared/AGREE.md):

- global: softplus of the hardest in-batch negative's score minus the positive's, or InfoNCE;
- local: on positive pairs with a teacher map, the page's patch relevance against the map
  aligned to the page's grid (cosine by default), optionally on the mismatch-first quarter.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agree_core import losses
from agree_core.training import distributed
from agree_core.training.checkpoints import (latest_checkpoint, load_checkpoint, prune_checkpoints,
                                             save_checkpoint)
from agree_core.training.data import DataError, PageLoader, check_files, read_examples
from agree_core.training.evaluate import ranking_metrics
from agree_core.training.models import LoraSettings, load_trainable
from agree_core.training.targets import check_map_fits, vector_targets

log = logging.getLogger("agree.train")


@dataclass
class Config:
    # model
    encoder: str = "colqwen2.5:vidore/colqwen2.5-base"  # NAME[:base checkpoint or adapter to train further]
    encoder_options: dict[str, Any] = field(default_factory=dict)  # e.g. {max_visual_tokens: 768}
    dtype: str = "auto"  # weights: bf16 on CUDA, float32 on CPU
    device: str = "auto"  # cuda:LOCAL_RANK when there is a GPU
    lora: bool = True  # False: full fine-tuning (text-layer only)
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] | str | None = None  # default: the published adapters' targets
    gradient_checkpointing: bool = False
    # data
    train_data: str = ""  # JSONL (agree_core/training/data.py)
    eval_data: str | None = None  # held-out JSONL; else eval_fraction of train_data's pages
    eval_fraction: float = 0.0
    eval_max_queries: int | None = None
    teacher_maps: str | None = None  # `agree teacher build` cache; needed for the local loss
    dpi: int = 150  # page rendering for visual encoders
    # losses
    global_loss: str = "softplus"  # "softplus" (hardest in-batch negative) or "infonce"
    temperature: float = 0.02  # infonce only
    local_loss: str = "cosine"  # "cosine", "kl", "topk" or "none"
    local_weight: float = 0.1
    top_k: float = 0.1  # topk: fraction of the teacher's highest cells
    mismatch_first: float | None = None  # e.g. 0.25: local loss on that fraction of pairs only
    # optimisation
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    stop_after: int | None = None  # stop this run after this step (the schedule spans max_steps)
    batch_size: int = 128  # queries per optimizer step, over all ranks and micro-batches
    micro_batch_size: int = 4  # queries per forward pass on one rank (in-batch negatives: x ranks)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "linear"  # linear, cosine or constant (after warm-up)
    max_grad_norm: float | None = 1.0
    seed: int = 0
    # bookkeeping
    output_dir: str = ""
    eval_every: int = 100  # steps (0: only at the end)
    eval_at_start: bool = True
    save_every: int = 500  # steps (0: only at the end)
    keep_checkpoints: int = 2
    log_every: int = 1


PATH_FIELDS = ("train_data", "eval_data", "teacher_maps")


# -- configuration ------------------------------------------------------------------------------
def parse_config(argv: list[str] | None = None) -> tuple[Config, str | None, bool]:
    """Config from ``--config YAML`` and ``--field value`` overrides; also ``--resume`` and
    ``--dry-run``."""
    import yaml

    fields = {f.name: f for f in dataclasses.fields(Config)}
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file of Config fields")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the latest checkpoint of --output-dir, or from CHECKPOINT")
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve the config and run one step of it on tiny stand-ins (model, "
                             "data, teacher) in a temporary directory, on the CPU")
    for name in fields:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUE",
                            help=f"(default {getattr(Config(), name)!r})")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            parser.error(f"{args.config}: unknown settings {unknown}; known: {', '.join(fields)}")
        here = Path(args.config).parent
        for name in PATH_FIELDS:  # paths in a config file are relative to the file
            if loaded.get(name) and not Path(loaded[name]).is_absolute():
                loaded[name] = str(here / loaded[name])
        values.update(loaded)
    for name in fields:
        raw = getattr(args, name)
        if raw is not None:
            values[name] = yaml.safe_load(raw)  # "0.1" -> float, "true" -> bool, "{a: 1}" -> dict
    for name, value in values.items():  # YAML reads "1e-4" (no dot) as a string
        if isinstance(value, str) and "float" in str(fields[name].type):
            try:
                values[name] = float(value)
            except ValueError:
                parser.error(f"{name} must be a number, got {value!r}")
    if args.dry_run:  # the stand-ins bring their own data and output directory
        values.setdefault("train_data", "-")
        values.setdefault("output_dir", "-")
    cfg = Config(**values)
    problems = check_config(cfg)
    if problems:
        parser.error("; ".join(problems))
    return cfg, args.resume, args.dry_run


def check_config(cfg: Config) -> list[str]:
    problems = []
    if not cfg.train_data:
        problems.append("train_data is required (a JSONL file)")
    if not cfg.output_dir:
        problems.append("output_dir is required (--output-dir DIR)")
    if cfg.global_loss not in ("softplus", "infonce"):
        problems.append(f"global_loss must be softplus or infonce, got {cfg.global_loss!r}")
    if cfg.local_loss not in (*losses.LOCAL_LOSSES, "none"):
        problems.append(f"local_loss must be one of {', '.join(losses.LOCAL_LOSSES)} or none, got {cfg.local_loss!r}")
    if cfg.local_loss != "none" and cfg.local_weight > 0 and not cfg.teacher_maps:
        problems.append("the local loss needs teacher_maps (a directory from `agree teacher build`); "
                        "or set local_loss: none")
    if cfg.schedule not in ("linear", "cosine", "constant"):
        problems.append(f"schedule must be linear, cosine or constant, got {cfg.schedule!r}")
    if cfg.micro_batch_size < 1 or cfg.batch_size < cfg.micro_batch_size:
        problems.append(f"need 1 <= micro_batch_size <= batch_size, got {cfg.micro_batch_size} and {cfg.batch_size}")
    if cfg.mismatch_first is not None and not 0 < cfg.mismatch_first <= 1:
        problems.append(f"mismatch_first is a fraction in (0, 1], got {cfg.mismatch_first}")
    if not 0 <= cfg.eval_fraction < 1:
        problems.append(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    return problems


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# -- data ---------------------------------------------------------------------------------------
def split_eval(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``fraction`` of the pages (all queries of a held-out page go to evaluation)."""
    pages = sorted({ex.page.where for ex in examples})
    random.Random(seed).shuffle(pages)
    held = set(pages[: round(len(pages) * fraction)])
    return [ex for ex in examples if ex.page.where not in held], [ex for ex in examples if ex.page.where in held]


def resolve_maps(examples: list, cache) -> dict[int, str]:
    """Example line -> teacher-map key (the line's ``map``, else looked up by query and page)."""
    keys, unknown = {}, []
    for ex in examples:
        key = ex.map_key or cache.find(ex.query, ex.page.source, ex.page.page or 1)
        if ex.map_key and ex.map_key not in cache:
            unknown.append(f"line {ex.line}: map {ex.map_key!r} is not in {cache.directory}")
        elif key is not None:
            keys[ex.line] = key
    if unknown:
        raise SystemExit("teacher maps missing:\n  " + "\n  ".join(unknown[:10]))
    return keys


def global_batch(examples: list, step: int, steps_per_epoch: int, batch_size: int, seed: int) -> list:
    """The examples of optimizer step ``step``: a seeded shuffle per epoch, read in order."""
    epoch, index = divmod(step, steps_per_epoch)
    order = list(range(len(examples)))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return [examples[i] for i in order[index * batch_size : (index + 1) * batch_size]]


def page_key(ref) -> int:
    """A page's id, the same in every process (to recognise one page seen by two ranks)."""
    return int(hashlib.sha256(ref.where.encode()).hexdigest()[:15], 16)


# -- one micro-batch ----------------------------------------------------------------------------
_UNREADABLE: dict[str, str] = {}  # page -> why it cannot be read (warned about once)


def load_or_skip(loader: PageLoader, ref, line: int | None):
    """The page, or None when it cannot be read: an unreadable file is named once and its
    examples are skipped, so one corrupt file does not end a long run."""
    if ref.where in _UNREADABLE:
        return None
    try:
        return loader.load(ref)
    except DataError as e:
        if str(e) not in _UNREADABLE.values():  # a broken file: named once, not once per page
            log.warning("skipping %s%s", f"line {line}: " if line else "a negative: ", e)
        _UNREADABLE[ref.where] = str(e)
        return None


def micro_step(cfg: Config, model, examples: list, loader: PageLoader, maps, map_keys: dict,
               world: distributed.World) -> tuple[torch.Tensor, dict[str, float]] | None:
    """``global + local_weight * local`` for these examples (this rank's share of a micro-batch),
    or None when too few of them can be read to compare pages (a single process skips it)."""
    refs, pages, where = [], [], {}  # this rank's pages: positives, then explicit negatives, no repeats
    kept = []
    for ex in examples:
        for ref in (ex.page, *ex.negatives):
            if ref.where in where:
                continue
            page = load_or_skip(loader, ref, ex.line if ref is ex.page else None)
            if page is not None:
                where[ref.where] = len(refs)
                refs.append(ref)
                pages.append(page)
            elif ref is ex.page:
                break  # no positive, no example (its negatives are not loaded)
        if ex.page.where in where:
            kept.append(ex)
    examples = kept
    if len(refs) < 2 or not examples:
        if world.size > 1:
            raise RuntimeError(f"rank {world.rank}: the pages of a whole micro-batch are unreadable "
                               "(see the warnings above); fix or drop those lines")
        return None
    queries = model.encode_queries([ex.query for ex in examples])
    docs = model.encode_pages(pages)

    # in-batch negatives from every rank; padded page slots (ranks with fewer pages) excluded
    n_local = len(pages)
    n_max = n_local
    if world.size > 1:
        n_max_t = torch.tensor([n_local], device=docs.vectors.device)
        torch.distributed.all_reduce(n_max_t, op=torch.distributed.ReduceOp.MAX)
        n_max = int(n_max_t)
    vectors, mask = docs.vectors, docs.mask
    ids = torch.tensor([page_key(r) for r in refs], dtype=torch.long)
    if n_max > n_local:
        extra = n_max - n_local
        vectors = torch.cat([vectors, vectors.new_zeros(extra, *vectors.shape[1:])])
        mask = torch.cat([mask, mask.new_zeros(extra, mask.shape[1])])
        ids = torch.cat([ids, torch.full((extra,), -1, dtype=torch.long)])
    all_vectors = distributed.gather_with_grad(vectors, pad_dim=1)
    all_mask = distributed.gather_with_grad(mask.long(), pad_dim=1).bool()
    all_ids = distributed.gather_with_grad(ids.to(vectors.device)).cpu()
    positives = torch.tensor([world.rank * n_max + where[ex.page.where] for ex in examples],
                             device=vectors.device)
    exclude = (all_ids[None, :] == all_ids[positives.cpu()][:, None]) | (all_ids[None, :] == -1)
    exclude = exclude.to(vectors.device)

    scores = losses.late_interaction_scores(queries.vectors, queries.mask, all_vectors, all_mask)
    if cfg.global_loss == "softplus":
        global_loss = losses.hardest_negative_softplus(scores, positives, exclude)
    else:
        global_loss = losses.info_nce(scores, positives, temperature=cfg.temperature,
                                      query_lengths=queries.mask.sum(1), exclude=exclude)
    parts = {"global": global_loss.detach().item()}
    loss = global_loss

    if maps is not None and cfg.local_loss != "none" and cfg.local_weight > 0:
        teacher = []
        for ex in examples:
            key = map_keys.get(ex.line)
            if key is None:
                teacher.append(None)
                continue
            values = maps.load(key)
            page = pages[where[ex.page.where]]
            problem = check_map_fits(tuple(values.shape), (page.width_pt, page.height_pt))
            if problem:
                raise ValueError(f"{cfg.train_data}:{ex.line}: teacher map {key}: {problem}; rebuild "
                                 "the maps for this data (agree teacher build)")
            teacher.append(values)
        pos = torch.tensor([where[ex.page.where] for ex in examples], device=vectors.device)
        target, on_grid, has_map = vector_targets(teacher, docs.cells[pos], [docs.grids[i] for i in pos.tolist()])
        on_grid &= docs.mask[pos]
        relevance = losses.patch_relevance(queries.vectors, queries.mask, docs.vectors[pos])
        per_pair = losses.local_loss(cfg.local_loss, relevance, target, on_grid, top_k=cfg.top_k)
        chosen = has_map
        if cfg.mismatch_first is not None:
            chosen = losses.mismatch_first(relevance, target, on_grid, cfg.mismatch_first, eligible=has_map)
        local_loss = per_pair[chosen].mean() if bool(chosen.any()) else per_pair.sum() * 0
        parts["local"] = local_loss.detach().item()
        loss = loss + cfg.local_weight * local_loss
    parts["loss"] = loss.detach().item()
    return loss, parts


# -- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, examples: list, loader: PageLoader, batch: int) -> dict[str, float]:
    """nDCG@1, nDCG@5, recall@5 of the held-out queries over the held-out pages."""
    from agree_core.scoring import maxsim

    model.module.eval()
    refs: dict[str, tuple[Any, int | None]] = {}  # where -> (page ref, line of a query it answers)
    for ex in examples:
        refs.setdefault(ex.page.where, (ex.page, ex.line))
    for ex in examples:
        for ref in ex.negatives:
            refs.setdefault(ref.where, (ref, None))
    todo = list(refs.values())
    encoded: list[str] = []  # pages are loaded one batch at a time: memory stays bounded
    page_vectors, query_vectors = [], []
    for lo in range(0, len(todo), batch):
        loaded = [(ref, load_or_skip(loader, ref, line)) for ref, line in todo[lo : lo + batch]]
        loaded = [(ref, page) for ref, page in loaded if page is not None]
        if not loaded:
            continue
        out = model.encode_pages([page for _, page in loaded])
        page_vectors += [v[m].float().cpu() for v, m in zip(out.vectors, out.mask)]
        encoded += [ref.where for ref, _ in loaded]
    column = {where: i for i, where in enumerate(encoded)}
    examples = [ex for ex in examples if ex.page.where in column]
    for lo in range(0, len(examples), batch):
        out = model.encode_queries([ex.query for ex in examples[lo : lo + batch]])
        query_vectors += [v[m].float().cpu() for v, m in zip(out.vectors, out.mask)]
    model.module.train()
    scores = maxsim(query_vectors, page_vectors)
    return ranking_metrics(scores, [{column[ex.page.where]} for ex in examples])


# -- the run ------------------------------------------------------------------------------------
def train(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Run (or continue) training; returns the last evaluation's metrics (rank 0)."""
    import yaml
    from tqdm import tqdm
    from transformers import get_scheduler

    from agree_core.teacher.cache import MapCache

    world, device = distributed.init(cfg.device)
    _UNREADABLE.clear()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # data: every line checked, every file present, before any model is loaded
    train = read_examples(cfg.train_data)
    missing = check_files(train)
    if missing:
        raise SystemExit(f"{len(missing)} files of {cfg.train_data} are missing:\n  " + "\n  ".join(missing[:10]))
    if cfg.eval_data:
        held_out = read_examples(cfg.eval_data)
    else:
        train, held_out = split_eval(train, cfg.eval_fraction, cfg.seed)
    if cfg.eval_max_queries:
        held_out = held_out[: cfg.eval_max_queries]
    maps, map_keys = None, {}
    if cfg.local_loss != "none" and cfg.local_weight > 0:
        maps = MapCache(cfg.teacher_maps)
        map_keys = resolve_maps(train, maps)
        if not map_keys:
            raise SystemExit(f"no teacher map in {cfg.teacher_maps} belongs to an example of {cfg.train_data}: "
                             "build them with `agree teacher build` on this file")
        log.info("teacher maps for %d of %d training examples", len(map_keys), len(train))

    per_rank = cfg.batch_size // world.size
    if cfg.batch_size % world.size or per_rank % cfg.micro_batch_size:
        raise SystemExit(f"batch_size {cfg.batch_size} must split into {world.size} ranks x micro-batches "
                         f"of {cfg.micro_batch_size}: choose a multiple of {world.size * cfg.micro_batch_size}")
    steps_per_epoch = len(train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train)} training examples are fewer than one batch of {cfg.batch_size}")
    total = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)

    # model, optimizer, schedule (the same seed on every rank: the same LoRA init)
    seed_everything(cfg.seed)
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets) if cfg.lora else None
    model = load_trainable(cfg.encoder, lora=lora, device=str(device), dtype=cfg.dtype, **cfg.encoder_options)
    # the record next to every checkpoint names the settings the model is trained with (defaults included)
    cfg = dataclasses.replace(cfg, encoder_options=model.recorded_options)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    params = [p for p in model.module.parameters() if p.requires_grad]
    distributed.broadcast_parameters(params)
    log.info("%s: %.2fM trained parameters, %d steps of %d queries (%d per forward pass x %d ranks)",
             cfg.encoder, sum(p.numel() for p in params) / 1e6, total, cfg.batch_size,
             cfg.micro_batch_size, world.size)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler({"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule),
                              optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total)
    seed_everything(cfg.seed + 7919 * world.rank)  # dropout differs by rank; a resume restores its state
    step = 0
    if resume:
        checkpoint = latest_checkpoint(out) if resume == "latest" else Path(resume)
        if checkpoint is None or not (checkpoint / "state.pt").is_file():
            raise SystemExit(f"no checkpoint to resume from in {checkpoint or out / 'checkpoints'}")
        step = load_checkpoint(checkpoint, model, optimizer, scheduler, world)
        log.info("resumed from %s at step %d", checkpoint, step)

    loader = PageLoader(render=model.needs_images, dpi=cfg.dpi)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.dtype != "float32"
                else contextlib.nullcontext())
    log_file = open(out / "log.jsonl", "a", encoding="utf-8") if world.main else None

    def record(entry: dict[str, Any]) -> None:
        if log_file:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    last: dict[str, Any] = {}

    def run_eval() -> None:
        if world.main and held_out:
            with autocast:
                metrics = evaluate(model, held_out, loader, cfg.micro_batch_size * 2)
            record({"step": step, "eval": metrics})
            last.update(metrics)
            log.info("step %d eval: %s", step, metrics)

    if cfg.eval_at_start and step == 0:
        run_eval()
    model.module.train()
    stop = min(total, cfg.stop_after or total)
    bar = tqdm(total=total, initial=step, desc="training", unit="step", disable=not world.main, dynamic_ncols=True)
    while step < stop:
        started = time.perf_counter()
        batch = global_batch(train, step, steps_per_epoch, cfg.batch_size, cfg.seed)
        mine = batch[world.rank * per_rank : (world.rank + 1) * per_rank]
        sums: dict[str, float] = {}
        for lo in range(0, per_rank, cfg.micro_batch_size):
            micro = mine[lo : lo + cfg.micro_batch_size]
            with autocast:
                result = micro_step(cfg, model, micro, loader, maps, map_keys, world)
            if result is None:
                continue
            loss, parts = result
            (loss * len(micro) / per_rank).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(micro) / per_rank
        distributed.average_gradients(params)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        rate = cfg.batch_size / (time.perf_counter() - started)
        if step % cfg.log_every == 0 or step == stop:
            record({"step": step, **{k: round(v, 6) for k, v in sums.items()},
                    "lr": scheduler.get_last_lr()[0], "queries_per_s": round(rate, 2)})
        bar.set_postfix({k: f"{v:.4f}" for k, v in sums.items()} | {"q/s": f"{rate:.1f}"})
        bar.update(1)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
            run_eval()
        if cfg.save_every and step % cfg.save_every == 0 or step == stop < total:
            save_checkpoint(out / "checkpoints" / f"step-{step}", model, optimizer, scheduler, step,
                            dataclasses.asdict(cfg), world)
            if world.main:
                prune_checkpoints(out, cfg.keep_checkpoints)
    bar.close()
    if _UNREADABLE:
        log.warning("%d pages could not be read; their examples were skipped (the files are named above)",
                    len(_UNREADABLE))
    if world.size > 1:  # every rank must hold the same weights: check, cheaply, and say so
        gap = distributed.max_difference_from_rank0(params)
        record({"step": step, "ranks_max_abs_diff": gap})
        if gap > 1e-5:
            raise RuntimeError(f"ranks disagree after {step} steps (max |difference| {gap:.3g})")
    if step >= total:
        run_eval()
        if world.main:
            model.save(out)
            (out / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
            log.info("done: %s holds the trained model; index with --encoder %s:%s", out,
                     cfg.encoder.split(":")[0], out.absolute())
    if log_file:
        log_file.close()
    if world.size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {"step": step, **last}


def main(argv: list[str] | None = None) -> int:
    cfg, resume, dry = parse_config(argv)
    logging.basicConfig(level=logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if dry:
        from agree_core.training.dry_run import dry_run

        print(dry_run(cfg, train))
        return 0
    train(cfg, resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
