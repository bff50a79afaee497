"""Training: ``train(config, manifests, run_dir)`` -> summary dict (also `shmn train`).

Adam (lr 3e-4) with ReduceLROnPlateau on the validation loss; batch size 2; every epoch writes the
last model, the best model (lowest validation loss; the training loss when there is no validation
case), the resumable state, the metrics log and the curves (shmn.training.checkpoint describes the folder).

Reproducibility: the model is initialised from ``seed``; at the start of every epoch torch, numpy
and Python are re-seeded from (seed, epoch); the data order comes from a DistributedSampler seeded
with ``seed`` and the epoch; augmentation from (seed, epoch, item). So the random state is a
function of the epoch alone, and a run resumed after a kill reproduces the uninterrupted one (the
same final weights on the CPU; on a GPU up to cuDNN's own non-determinism).

The machine-readable progress line ``SHMN-EPOCH {json}`` (the metrics.jsonl record) is printed on
stdout once per epoch, for the SHMNTraining module and other watchers.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from shmn import __version__
from shmn import devices
from shmn.training import distributed
from shmn.io.atomic import ensure_writable_dir, write_json
from shmn.training.case_cache import CaseCache
from shmn.training.checkpoint import RunFiles, load_state, read_json_file, save_state, write_metrics_log
from shmn.training.config import TrainConfig, config_from_dict, differences
from shmn.training.curves import plot_curves
from shmn.training.data import ShmnDataset, Splits, collate, describe_training_data, load_manifests, training_splits
from shmn.training.initial_weights import load_initial_weights, with_init_model_pooling
from shmn.errors import ShmnError
from shmn.network.losses import class_balance_epsilon, shmn_loss
from shmn.io.manifest import Manifest
from shmn.network.model import SHMN
from shmn.network.model_file import save_model
from shmn.training.validation import TERM_LABEL, TERM_WEIGHT, validate
from shmn.contract import EPOCH_PREFIX, structured_line
from shmn.progress import progress_bar


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's tensors in state-dict order (to compare ranks or runs)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _tqdm(enabled: bool):
    return lambda iterable, **kw: progress_bar(iterable, enabled=enabled, file=sys.stderr, **kw)


def train(
    config: TrainConfig,
    manifests: Sequence[str | Path | Manifest],
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> dict:
    """Train (or resume) a run in ``run_dir``; every rank of a torchrun job calls this."""
    ctx = distributed.setup(config.device, config.dist_timeout_min)
    try:
        with _claim_run(Path(run_dir), ctx):
            return _train(config, manifests, Path(run_dir), resume, progress, cache_dir, log, ctx)
    finally:
        distributed.teardown(ctx)


def _claim_run(run_dir: Path, ctx):
    """One process trains in a run folder at a time: a second `shmn train -o RUN` (or --resume) started
    while the first runs is refused instead of both writing the same checkpoints (shmn.io.claim).
    A torchrun job skips this: its ranks share the folder by design, and a refusal on one rank would
    leave the others waiting at a barrier."""
    import contextlib

    from shmn.io.atomic import ensure_writable_dir
    from shmn.io.claim import exclusive

    if ctx.world_size > 1:
        return contextlib.nullcontext()
    ensure_writable_dir(run_dir.parent)
    busy = ShmnError(f"{run_dir}: another shmn train is running in this run folder; wait for it or choose another -o")
    return exclusive(run_dir.parent / f".{run_dir.name}.lock", busy)


def _open_run(files: RunFiles, config: TrainConfig, manifests: list[Manifest], resume: bool, ctx) -> dict | None:
    """Check the run folder (every rank, before anyone writes); return the saved state to resume from."""
    sources = [str(m.path.resolve()) for m in manifests]
    if not resume:
        if files.has_run():
            raise ShmnError(f"{files.root}: already holds a training run; use --resume to continue it or choose another -o")
        return None
    if not files.config.exists():
        raise ShmnError(f"{files.root}: no run to resume (no config.json); start it without --resume")
    saved = config_from_dict(read_json_file(files.config, "configuration"), str(files.config))
    changed = differences(saved, config)
    if changed:
        raise ShmnError(f"{files.config}: --resume with a different configuration ({', '.join(changed)}); give the run's own config.json")
    if files.run.exists():
        before = read_json_file(files.run, "run description").get("manifests", sources)
        if before != sources:
            raise ShmnError(f"{files.run}: --resume with other --data ({sources}) than the run's ({before})")
    return load_state(files.state) if files.state.exists() else None


def _model_card(config: TrainConfig, data: dict, record: dict, precision: str) -> dict:
    grid = config.grid_spec
    synthetic = data["synthetic"]
    return {
        "name": config.model_name,
        "version": config.version,
        "preset": config.preset,
        "resolution": config.resolution,
        "grid": {"name": config.grid, "spacing_mm": grid.spacing_mm, "size": list(grid.size)},
        "preprocessing": json.loads(json.dumps(config.to_dict()["preprocess"])),
        "tasks": list(config.network.tasks),
        "training_data": data,
        "metrics": {"epoch": record["epoch"], "val_loss": record["val_loss"], **record["val"]},
        "training": {"epochs": record["epoch"], "seed": config.seed, "batch_size": config.batch_size, "lr": config.lr,
                     "precision": precision, "loss": json.loads(json.dumps(config.to_dict()["loss"])), "shmn": __version__},
        "intended_use": "research only; trained on synthetic phantoms, not for clinical use" if synthetic
        else "research only; not validated for clinical use",
    }


def macs_balance_epsilon(train: list) -> float:
    """Eq. 1's epsilon for class balance: severe/mild among the MACS-labelled training cases (1.0 if a class is absent)."""
    return round(class_balance_epsilon([s.macs for s in train if s.macs is not None]), 4)


def _loader(dataset, ctx, config: TrainConfig, training: bool) -> tuple[DataLoader, DistributedSampler | None]:
    if training:
        # A DistributedSampler even in one process: its order depends on (seed, epoch) only.
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
    else:
        sampler = range(ctx.rank, len(dataset), ctx.world_size)  # each validation case once, on one rank
    loader = DataLoader(dataset, batch_size=config.batch_size if training else 1, sampler=sampler,
                        num_workers=config.num_workers, collate_fn=collate, pin_memory=ctx.device.type == "cuda")
    return loader, sampler if training else None


def _train_epoch(model, loader, optimizer, scaler, config: TrainConfig, epoch: int, ctx, mode: str, bar) -> tuple[dict, float]:
    model.train()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    alpha = 0.0
    # The epoch's progress as the run's share (epoch 3/10 half done: 25%), for a GUI's one bar.
    def run_share(done: int, total: int) -> float:
        return 100.0 * (epoch + (done / total if total else 0.0)) / config.epochs

    for batch in bar(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, unit="batch", share=run_share):
        batch = {k: v.to(ctx.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with devices.autocast(ctx.device, mode):
            outputs = model(batch["image"])
        outputs = {k: v.float() for k, v in outputs.items()}  # losses in fp32
        loss, values = shmn_loss(outputs, batch, config.loss, epoch)
        if not torch.isfinite(loss):
            raise ShmnError(f"epoch {epoch + 1}: the loss became {float(loss)} (cases {batch['id']}); --resume with \"amp\": \"off\" "
                            "in the config, or start a new run with a lower \"lr\"")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        alpha = values.pop("alpha", 0.0)
        for term, value in values.items():
            has = batch.get(TERM_LABEL.get(term, ""))
            n = float(has.sum()) if has is not None else float((~batch["has_ventricles"]).sum())
            sums[term] = sums.get(term, 0.0) + value * n
            counts[term] = counts.get(term, 0.0) + n
    terms = sorted(sums)
    reduced = distributed.sum_across([sums[t] for t in terms] + [counts[t] for t in terms], ctx)
    k = len(terms)
    means = {t: (reduced[i] / reduced[k + i] if reduced[k + i] else None) for i, t in enumerate(terms)}
    # Comparable with the validation loss: lambda-weighted means over the labelled cases, no pseudo term.
    means["loss"] = sum(getattr(config.loss, TERM_WEIGHT[t]) * v for t, v in means.items() if t in TERM_WEIGHT and v is not None)
    return means, alpha


def _prepare_cache(cache: CaseCache, splits: Splits, ctx, progress: bool, log, synthesis: str = "off") -> dict:
    stats = None
    if ctx.is_local_main:
        cases = splits.val if synthesis == "on-the-fly" else splits.train + splits.val  # synthesised samples need no cache
        stats = cache.prepare(cases, progress=lambda items: _tqdm(progress and ctx.is_main)(items, desc="preprocessing", unit="case"))
        for case_id, warning in stats.warnings.items():
            log(f"shmn: warning: {case_id}: {warning}")
    distributed.barrier(ctx)
    return stats.as_dict() if stats else {}


def _train(config, manifests, run_dir: Path, resume, progress, cache_dir, log, ctx) -> dict:
    start_time = time.perf_counter()
    manifests = load_manifests(manifests)
    files = RunFiles(run_dir)
    config = with_init_model_pooling(config)
    state = _open_run(files, config, manifests, resume, ctx)
    # Before anything is written: a wrong init_model leaves no run behind. A resumed run's weights are its checkpoint's.
    initial = load_initial_weights(config.init_model, config.network) if state is None and config.init_model else None
    distributed.barrier(ctx)  # every rank has checked the folder before rank 0 writes into it
    splits = training_splits(manifests, config)
    data_card = describe_training_data(manifests, splits)
    mode = devices.precision(ctx.device, config.amp, config.cpu_bf16)
    cache = CaseCache(Path(cache_dir) if cache_dir else files.cache, config.preprocess_config(), config.density_sigma_mm)
    cache_stats = _prepare_cache(cache, splits, ctx, progress, log, config.synthesis)
    if config.synthesis != "off":
        from shmn.synthesis.randomised.dataset import describe_synthesis

        data_card = describe_synthesis(config, data_card)
    if ctx.is_main:  # only now: a case that fails to preprocess leaves no half-started run behind
        ensure_writable_dir(files.root)
        write_json(files.config, config.to_dict())
        write_json(files.run, {"shmn": __version__, "manifests": [str(m.path.resolve()) for m in manifests],
                               "splits": splits.notes, "train_ids": [s.id for s in splits.train], "val_ids": [s.id for s in splits.val],
                               "device": str(ctx.device), "precision": mode, "world_size": ctx.world_size, "cache": str(cache.folder)})

    seed_everything(config.seed)
    core = SHMN(config.network).to(ctx.device)
    model = torch.nn.parallel.DistributedDataParallel(core, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) if ctx.distributed else core
    optimizer = torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                           patience=config.plateau_patience, min_lr=config.min_lr)
    scaler = devices.grad_scaler(ctx.device, mode)
    history: list[dict] = []
    best = {"epoch": None, "loss": None}
    if initial is not None:
        core.load_state_dict(initial.state)
    # Kept in the checkpoint, so that a resumed run's card still says what the run started from.
    initialised_from = initial.source if initial is not None else (state or {}).get("initialised_from")
    if initialised_from:
        data_card = {**data_card, "initialised_from": initialised_from}
    if config.macs_balance:
        config = replace(config, loss=replace(config.loss, macs_epsilon=macs_balance_epsilon(splits.train)))
        data_card = {**data_card, "macs_balance": {"epsilon": config.loss.macs_epsilon,
                                                   "synthesis": "severity draws alternate mild-/severe-leaning"}}
        if ctx.is_main:
            log(f"shmn: MACS class balance: epsilon {config.loss.macs_epsilon:.3f} (severe/mild of the training cases)")
    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history, best = list(state["history"]), dict(state["best"])
    first_epoch = int(state["epoch"]) if state else 0

    train_set = ShmnDataset(splits.train, cache, augment=config.augment, seed=config.seed)
    if config.synthesis != "off":
        from shmn.synthesis.randomised.dataset import synthesis_training_set

        train_set = synthesis_training_set(config, train_set)
    val_set = ShmnDataset(splits.val, cache, augment=False, seed=config.seed)
    loader, sampler = _loader(train_set, ctx, config, training=True)
    val_loader, _ = _loader(val_set, ctx, config, training=False)
    bar = _tqdm(progress and ctx.is_main)
    if first_epoch and ctx.is_main:
        log(f"shmn: resuming {files.root} after epoch {first_epoch}")

    for epoch in range(first_epoch, config.epochs):
        tick = time.perf_counter()
        seed_everything(epoch_seed(config.seed, epoch))
        train_set.epoch = epoch
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_terms, alpha = _train_epoch(model, loader, optimizer, scaler, config, epoch, ctx, mode, bar)
        due = (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs
        val_loss, val_metrics = validate(core, val_loader, replace(config.loss, pseudo_labels=False), epoch, ctx, mode) if due and len(val_set) else (None, {})
        monitored = val_loss if val_loss is not None else (train_terms["loss"] if not len(val_set) else None)
        improved = monitored is not None and (best["loss"] is None or monitored < best["loss"])
        if monitored is not None:
            scheduler.step(monitored)
        if improved:
            best = {"epoch": epoch + 1, "loss": monitored}
        record = {"epoch": epoch + 1, "train_loss": train_terms.pop("loss"), "train": train_terms, "val_loss": val_loss,
                  "val": val_metrics, "lr": lr, "alpha": alpha, "seconds": round(time.perf_counter() - tick, 3), "best": improved}
        history.append(record)
        if ctx.is_main:
            card = _model_card(config, data_card, record, mode)
            save_model(files.last_model, core, card)
            if improved:
                save_model(files.best_model, core, card)
            save_state(files.state, {"epoch": epoch + 1, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                     "history": history, "best": best, "initialised_from": initialised_from})
            write_metrics_log(files.metrics, history)
            plot_curves(history, files.curves, title=f"{config.model_name} ({config.preset}, {config.resolution})")
            print(structured_line(EPOCH_PREFIX, record), flush=True)

    return {
        "run_dir": str(files.root),
        "best_model": str(files.best_model) if files.best_model.exists() else None,
        "last_model": str(files.last_model) if files.last_model.exists() else None,
        "curves": str(files.curves) if files.curves.exists() else None,
        "metrics_log": str(files.metrics),
        "epochs_completed": len(history),
        "resumed_after": first_epoch,
        "best_epoch": best["epoch"],
        "best_loss": best["loss"],
        "final": history[-1] if history else None,
        "cache": cache_stats,
        "splits": splits.notes,
        "device": str(ctx.device),
        "precision": mode,
        "world_size": ctx.world_size,
        "rank": ctx.rank,
        "seconds": round(time.perf_counter() - start_time, 3),
        "weights_sha256": weights_digest(core),
    }
