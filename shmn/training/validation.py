"""Validation during training: the loss (for the LR schedule and the best model) and quick metrics.

Cases run one at a time, spread over the ranks and gathered, so every rank gets the same numbers
(the LR scheduler must step identically everywhere). Each loss term is averaged over the cases
that carry its label; the validation loss is the lambda-weighted sum of those means, without the
pseudo-label term (its weight alpha changes with the epoch, which would make epochs incomparable).
Metrics are computed on the model grid (``shmn evaluate`` measures on each case's native grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from shmn import devices
from shmn.training import distributed
from shmn.network.losses import LossConfig, shmn_loss
from shmn.measures.metrics import dice, macs_metrics

TERM_WEIGHT = {"macs": "lambda_macs", "pvl": "lambda_pvl", "localization": "lambda_localization", "ventricles": "lambda_ventricles"}
# Which samples a loss term averages over (for per-epoch means): the label it needs.
TERM_LABEL = {"macs": "has_macs", "pvl": "has_pvl", "localization": "has_pvl", "ventricles": "has_ventricles"}


def _case_record(outputs: dict, batch: dict, loss_cfg: LossConfig, epoch: int) -> dict:
    _total, values = shmn_loss(outputs, batch, loss_cfg, epoch)
    labelled = {key: bool(batch[key][0]) for key in ("has_pvl", "has_ventricles", "has_macs")}
    record = {"terms": {t: v for t, v in values.items() if t in TERM_LABEL and labelled[TERM_LABEL[t]]}}
    if "pvl" in outputs and labelled["has_pvl"]:
        predicted = outputs["pvl"][0].argmax(0).cpu().numpy()
        record["pvl_dice"] = dice(predicted, batch["pvl"][0, 0].cpu().numpy())
    if "ventricles" in outputs and labelled["has_ventricles"]:
        record["ventricle_dice"] = dice(outputs["ventricles"][0, 0].cpu().numpy() > 0, batch["ventricles"][0, 0].cpu().numpy())
    if "macs" in outputs and labelled["has_macs"]:
        record["macs"] = (float(torch.sigmoid(outputs["macs"][0])), float(batch["macs"][0]))
    return record


def summarise(records: list[dict], loss_cfg: LossConfig) -> tuple[float | None, dict]:
    """(validation loss, metrics) from per-case records."""
    terms: dict[str, list[float]] = {}
    for record in records:
        for term, value in record["terms"].items():
            terms.setdefault(term, []).append(value)
    means = {term: float(np.mean(values)) for term, values in terms.items()}
    loss = sum(getattr(loss_cfg, TERM_WEIGHT[t]) * v for t, v in means.items()) if means else None
    metrics: dict = {f"loss_{t}": v for t, v in sorted(means.items())}
    for key in ("pvl_dice", "ventricle_dice"):
        values = [r[key] for r in records if key in r]
        if values:
            metrics[key] = float(np.mean(values))
    pairs = [r["macs"] for r in records if "macs" in r]
    if pairs:
        scores = macs_metrics([p for p, _ in pairs], [y for _, y in pairs])
        metrics.update({f"macs_{k}": (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()})
    metrics["cases"] = len(records)
    return loss, metrics


@torch.no_grad()
def validate(model: torch.nn.Module, loader, loss_cfg: LossConfig, epoch: int, ctx, mode: str) -> tuple[float | None, dict]:
    """Run ``model`` (unwrapped, not DDP) on the validation loader (batch size 1)."""
    model.eval()
    records = []
    for batch in loader:
        batch = {k: v.to(ctx.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with devices.autocast(ctx.device, mode):
            outputs = model(batch["image"])
        records.append(_case_record({k: v.float() for k, v in outputs.items()}, batch, loss_cfg, epoch))
    model.train()
    return summarise(distributed.gather_lists(records, ctx), loss_cfg)
