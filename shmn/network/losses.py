"""SHMN's losses (paper eq. 1-6) on heterogeneous, partially labelled batches.

Every term is computed only over the samples whose label exists (``has_pvl``, ``has_ventricles``,
``has_macs``); a batch may mix the PVL dataset and the MACS dataset. A term with no labelled sample
in the batch is exactly 0 (kept in the autograd graph with zero gradient, so ``backward`` works
even when every term is empty). Terms of tasks the network does not output are skipped.

Batch keys: "pvl" (B,1,D,H,W) {0,1} + "has_pvl" (B,) bool; "density" (B,1,D,H,W), valid where
``has_pvl``; "ventricles" (B,1,D,H,W) {0,1} + "has_ventricles" (B,) bool; "macs" (B,) {0,1}
(1 = severe) + "has_macs" (B,) bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss


@dataclass(frozen=True)
class LossConfig:
    lambda_macs: float = 1.0
    lambda_pvl: float = 1.0
    lambda_localization: float = 1.0
    lambda_ventricles: float = 1.0
    # Weight of the mild (negative) class in the MACS BCE; eq. 1's epsilon. 1.0 = plain BCE.
    # (TrainConfig.macs_balance replaces it with the training set's severe/mild ratio.)
    macs_epsilon: float = 1.0
    # Ventricles: BCE alone left the head under-confident (p peaked at 0.41 after 9 epochs, so it
    # needed an operating threshold); a soft Dice term, as for the lesions, pulls the mask to 0.5.
    ventricle_dice: bool = False
    # Pseudo-labels for cases without a ventricle mask (SHMN-4*, eq. 4-6).
    pseudo_labels: bool = False
    alpha_final: float = 1.0
    # Epochs of the pseudo-label ramp (eq. 6). Pseudo-labels are worthless until the ventricle
    # decoder has learned from the labelled cases (ventricles are large and high-contrast: a few
    # epochs), so they start at t1 = 10 and reach full weight at t2 = 40, a ramp slow enough that
    # early mistakes are not reinforced, and short enough to act within the fast preset's training.
    t1: float = 10.0
    t2: float = 40.0

    def __post_init__(self) -> None:
        for name in ("lambda_macs", "lambda_pvl", "lambda_localization", "lambda_ventricles", "alpha_final"):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name}: {getattr(self, name)} is negative; weights must be >= 0")
        if self.macs_epsilon <= 0:
            raise ValueError(f"LossConfig.macs_epsilon: {self.macs_epsilon}; must be > 0")
        if not 0 <= self.t1 < self.t2:
            raise ValueError(f"LossConfig.t1/t2: {self.t1}/{self.t2}; expected 0 <= t1 < t2 (epochs)")


def alpha(epoch: float, cfg: LossConfig) -> float:
    """Pseudo-label weight (eq. 6): 0 before t1, linear ramp to alpha_final at t2, alpha_final after."""
    if epoch < cfg.t1:
        return 0.0
    if epoch < cfg.t2:
        return cfg.alpha_final * (epoch - cfg.t1) / (cfg.t2 - cfg.t1)
    return cfg.alpha_final


def _zero(prediction: torch.Tensor) -> torch.Tensor:
    # Exactly 0, yet attached to the graph so that backward() works and yields zero gradients.
    return prediction.sum() * 0.0


def _mask(batch: dict, key: str, n: int, device: torch.device) -> torch.Tensor:
    """The (B,) bool mask ``key``; a batch without it has no such labels."""
    if key not in batch:
        return torch.zeros(n, dtype=torch.bool, device=device)
    mask = torch.as_tensor(batch[key], device=device).bool().reshape(-1)
    if mask.numel() != n:
        raise ValueError(f"batch[{key!r}]: {mask.numel()} entries for a batch of {n}")
    return mask


def _label(batch: dict, key: str, mask: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    if key not in batch:
        raise ValueError(f"batch: {int(mask.sum())} sample(s) are marked as labelled for {key!r} but the key is missing")
    return torch.as_tensor(batch[key]).to(device=reference.device, dtype=reference.dtype)[mask]


def class_balance_epsilon(labels) -> float:
    """Eq. 1's epsilon for class balance: severe/mild among the training labels (0/1 MACS groups; 1.0 when a
    class is absent, i.e. plain BCE)."""
    severe = sum(1 for v in labels if v >= 0.5)
    mild = sum(1 for v in labels if v < 0.5)
    return severe / mild if severe and mild else 1.0


def macs_bce(logit: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Eq. 1: mean of -[y log p + eps (1-y) log(1-p)], p = sigmoid(logit), computed stably in log space."""
    terms = target * F.logsigmoid(logit) + epsilon * (1.0 - target) * F.logsigmoid(-logit)
    return -terms.mean()


def pvl_dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 3: voxel-mean cross-entropy + soft Dice of the lesion class, Dice averaged over samples.

    The background class is left out of the Dice: it is ~1 on every brain and would only dilute the
    signal of the small lesion class (cross-entropy still covers both classes).
    """
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(logits, target)


def localization_mse(density: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(density, target)


def ventricles_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def ventricles_dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of the ventricle mask (sigmoid), Dice averaged over samples."""
    return DiceCELoss(sigmoid=True)(logits, target)


def pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 4: argmax of the current prediction; for one binary logit that is logit > 0. Detached."""
    return (logits.detach() > 0).to(logits.dtype)


def shmn_loss(
    outputs: dict[str, torch.Tensor], batch: dict, cfg: LossConfig, epoch: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss = sum of lambda * term, and the value of each term.

    The returned dict holds the unweighted value of every term the network outputs ("macs", "pvl",
    "localization", "ventricles", and "ventricles_pseudo" when pseudo-labels are on) plus "alpha".
    The ventricle term entering the total is ventricles + alpha * ventricles_pseudo (eq. 5).
    """
    if not outputs:
        raise ValueError("shmn_loss: the network returned no outputs")
    # Losses in float32 even when the forward ran under bf16 autocast (log/exp need the range).
    outputs = {task: prediction.float() for task, prediction in outputs.items()}
    reference = next(iter(outputs.values()))
    n, device = reference.shape[0], reference.device
    terms: dict[str, torch.Tensor] = {}
    weighted: list[torch.Tensor] = []
    a = alpha(epoch, cfg) if cfg.pseudo_labels else 0.0

    if "macs" in outputs:
        logit = outputs["macs"].reshape(-1)
        has = _mask(batch, "has_macs", n, device)
        terms["macs"] = (
            macs_bce(logit[has], _label(batch, "macs", has, logit).reshape(-1), cfg.macs_epsilon)
            if has.any()
            else _zero(logit)
        )
        weighted.append(cfg.lambda_macs * terms["macs"])

    has_pvl = _mask(batch, "has_pvl", n, device)
    if "pvl" in outputs:
        logits = outputs["pvl"]
        terms["pvl"] = pvl_dice_ce(logits[has_pvl], _label(batch, "pvl", has_pvl, logits)) if has_pvl.any() else _zero(logits)
        weighted.append(cfg.lambda_pvl * terms["pvl"])

    if "localization" in outputs:
        density = outputs["localization"]
        terms["localization"] = (
            localization_mse(density[has_pvl], _label(batch, "density", has_pvl, density))
            if has_pvl.any()
            else _zero(density)
        )
        weighted.append(cfg.lambda_localization * terms["localization"])

    if "ventricles" in outputs:
        logits = outputs["ventricles"]
        has = _mask(batch, "has_ventricles", n, device)
        terms["ventricles"] = (
            (ventricles_dice_bce if cfg.ventricle_dice else ventricles_bce)(logits[has], _label(batch, "ventricles", has, logits))
            if has.any() else _zero(logits)
        )
        ventricle_total = terms["ventricles"]
        if cfg.pseudo_labels:
            unlabelled = ~has
            # Recomputed every step from the current weights; skipped (exactly 0) while alpha is 0.
            if a > 0 and unlabelled.any():
                own = logits[unlabelled]
                terms["ventricles_pseudo"] = ventricles_bce(own, pseudo_labels(own))
            else:
                terms["ventricles_pseudo"] = _zero(logits)
            ventricle_total = ventricle_total + a * terms["ventricles_pseudo"]
        weighted.append(cfg.lambda_ventricles * ventricle_total)

    total = sum(weighted[1:], weighted[0])
    values = {name: float(term.detach()) for name, term in terms.items()}
    values["alpha"] = a
    return total, values
