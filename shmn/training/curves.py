"""Training-curve figure from the metrics log (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from shmn.io.atomic import atomic_path

# Validation metrics worth a panel, when the run has them (keys of a metrics.jsonl record's "val").
METRIC_PANELS = ("pvl_dice", "ventricle_dice", "macs_accuracy", "macs_auc")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss terms (train and validation) and validation metrics per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, metric_axes = figure.subplots(1, 2)
    epochs = [record["epoch"] for record in history]
    terms = sorted({t for record in history for t in record.get("train", {})})
    for term in terms:
        values = [record.get("train", {}).get(term) for record in history]
        points = [(e, v) for e, v in zip(epochs, values) if _finite(v)]
        if points:
            loss_axes.plot(*zip(*points), label=f"train {term}", linewidth=1)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        points = [(e, r.get(key)) for e, r in zip(epochs, history) if _finite(r.get(key))]
        if points:
            loss_axes.plot(*zip(*points), style, color="black", label=key.replace("_", " "), linewidth=2)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("losses")
    if loss_axes.lines:
        loss_axes.legend(fontsize=7)
    for metric in METRIC_PANELS:
        points = [(e, r.get("val", {}).get(metric)) for e, r in zip(epochs, history)]
        points = [(e, v) for e, v in points if _finite(v)]
        if points:
            metric_axes.plot(*zip(*points), marker="o", markersize=3, label=metric.replace("_", " "))
    metric_axes.set_ylim(0, 1)
    metric_axes.set_xlabel("epoch")
    metric_axes.set_title("validation")
    if metric_axes.lines:
        metric_axes.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)
