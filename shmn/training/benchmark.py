"""The ablation benchmark (paper Table 1): train and evaluate each task preset over several seeds.

Every preset trains on the same manifests and the same splits (the manifests' own 70/10/20 target
splits; the ventricle task's 9:1 split is made by the data pipeline), shares one preprocessing cache,
and is evaluated on the test split. Runs are resumable: an interrupted benchmark picks up where it
stopped. Results are mean ± sd over seeds; a preset without a task leaves that column empty.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from shmn.io.atomic import ensure_writable_dir, write_json, write_text
from shmn.training.config import TASK_PRESETS, load_config

# Table 1 of the paper: MACS accuracy and F1 (severe positive), PVL Dice; plus what SHMN adds.
# (column key, title, where it sits in shmn.training.evaluate's summary: ("macs", metric) or (case metric, "mean")).
COLUMNS = (
    ("macs_accuracy", "MACS acc", ("macs", "accuracy")),
    ("macs_f1", "MACS F1", ("macs", "f1")),
    ("macs_auc", "MACS AUC", ("macs", "auc")),
    ("pvl_dice", "PVL Dice", ("pvl_dice", "mean")),
    ("pvl_lesion_f1", "PVL lesion F1", ("pvl_lesion_f1", "mean")),
    ("ventricle_dice", "Ventricle Dice", ("ventricle_dice", "mean")),
)
PAPER_ORDER = ("single", "shmn2", "shmn3", "shmn4")


@dataclass(frozen=True)
class BenchmarkConfig:
    presets: tuple[str, ...] = tuple(TASK_PRESETS)
    seeds: tuple[int, ...] = (0, 1, 2)
    resolution: str = "fast"
    epochs: int | None = None
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


def _summary_value(summary: dict, path: tuple[str, str]) -> float | None:
    value = (summary.get(path[0]) or {}).get(path[1])
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


def run_benchmark(manifests: Sequence[str | Path], out_dir: str | Path, config: BenchmarkConfig,
                  progress: bool = True, log: Callable[[str], None] = print) -> dict:
    from shmn.training.evaluate import evaluate
    from shmn.training.train import train

    out = ensure_writable_dir(out_dir)
    cache = out / "cache"
    results: dict[str, list[dict]] = {}
    # Every run's config first, so that a bad override fails before hours of training.
    configs = {(preset, seed): run_config(config, preset, seed) for preset in config.presets for seed in config.seeds}
    for preset in config.presets:
        for seed in config.seeds:
            run_dir = out / "runs" / f"{preset}-seed{seed}"
            cfg = configs[preset, seed]
            log(f"benchmark: {preset} seed {seed} -> {run_dir}")
            summary = train(cfg, manifests, run_dir, resume=(run_dir / "config.json").exists(),
                            progress=progress, cache_dir=cache, log=log)
            metrics_path = run_dir / "test-metrics.json"
            if metrics_path.exists():
                metrics = json.loads(metrics_path.read_text())
            else:
                metrics = evaluate(run_dir, manifests, split="test", device=config.device, progress=progress)
                write_json(metrics_path, metrics)
            row = {key: _summary_value(metrics["summary"], path) for key, _, path in COLUMNS}
            row.update(seed=seed, epochs=cfg.epochs, best_epoch=summary.get("best_epoch"))
            results.setdefault(preset, []).append(row)
    table = aggregate(results)
    report = {"resolution": config.resolution, "seeds": list(config.seeds), "presets": list(config.presets),
              "epochs": sorted({cfg.epochs for cfg in configs.values()}), "overrides": dict(config.overrides),
              "manifests": [str(m) for m in manifests], "runs": results, "table": table,
              "paper_ordering": paper_ordering(table),
              "note": "Measured on synthetic phantoms; not clinical performance."}
    write_json(out / "benchmark.json", report)
    write_text(out / "benchmark.md", markdown(report))
    return report


def run_config(config: BenchmarkConfig, preset: str, seed: int):
    overrides = dict(config.overrides, seed=seed, device=config.device)
    if config.epochs is not None:
        overrides["epochs"] = config.epochs
    return load_config(f"{preset}:{config.resolution}", overrides)


def aggregate(results: dict[str, list[dict]]) -> dict[str, dict]:
    table = {}
    for preset, rows in results.items():
        table[preset] = {}
        for key, _, _ in COLUMNS:
            values = [r[key] for r in rows if r[key] is not None]
            if values:
                table[preset][key] = {"mean": statistics.fmean(values),
                                      "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return table


def paper_ordering(table: dict[str, dict]) -> dict:
    """Does single < SHMN-2 < SHMN-3 < SHMN-4 hold for each target metric (means)?"""
    def score(preset: str, key: str) -> float | None:
        if preset == "single":
            preset = "single-macs" if key.startswith("macs") else "single-pvl"
        cell = table.get(preset, {}).get(key)
        return None if cell is None else cell["mean"]

    verdict = {}
    for key in ("macs_accuracy", "macs_f1", "pvl_dice"):
        scores = [score(p, key) for p in PAPER_ORDER]
        if any(s is None for s in scores):
            verdict[key] = None
        else:
            verdict[key] = all(a < b for a, b in zip(scores, scores[1:]))
    return verdict


def markdown(report: dict) -> str:
    header = "| preset | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for preset, cells in report["table"].items():
        values = []
        for key, _, _ in COLUMNS:
            cell = cells.get(key)
            values.append("—" if cell is None else f"{cell['mean']:.3f} ± {cell['sd']:.3f}")
        lines.append(f"| {preset} | " + " | ".join(values) + " |")
    order = report["paper_ordering"]
    verdict = ", ".join(f"{k}: {'yes' if v else 'no' if v is not None else 'n/a'}" for k, v in order.items())
    settings = f"Resolution `{report['resolution']}`, seeds {report['seeds']}"
    if report.get("epochs"):
        settings += f", {'/'.join(str(e) for e in report['epochs'])} epochs"
    if report.get("overrides"):
        settings += ", overrides " + ", ".join(f"{k}={json.dumps(v)}" for k, v in report["overrides"].items())
    lines += ["", f"{settings}; mean ± sd over seeds, test split.",
              f"Paper ordering single < SHMN-2 < SHMN-3 < SHMN-4 reproduces — {verdict}.",
              "Synthetic phantoms: these are not clinical figures."]
    return "\n".join(lines) + "\n"
