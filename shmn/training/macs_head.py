"""Train only the MACS classifier of a finished model, on many fresh MACS-labelled synthesised subjects.

Why a separate step: joint training never taught the paper's head to discriminate (its probability spans
a few hundredths over every subject), and probes on the v2.3 encoder showed that the bottleneck's global
average carries no lesion burden (benchmarks/train_macs_head.py compares the two poolings). With ``macs_pooling="lesion"`` the
classifier also reads the bottleneck where the PVL decoder sees lesions (shmn.network.model). The encoder
and decoders stay frozen, so lesion and ventricle outputs are the model's own, bit for bit; the pooled
features of each subject are computed once (plain and left-right mirrored: the MACS group does not change
with the side) and cached, and FC1 -> ReLU -> FC2 is fitted on them with eq. 1's weighted BCE.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from shmn.errors import ShmnError
from shmn.io.atomic import atomic_path
from shmn.measures.metrics import macs_metrics
from shmn.network.losses import class_balance_epsilon, macs_bce
from shmn.network.model import SHMN, MacsClassifier

X_AXIS = 4  # (B, C, z, y, x): the model grid is MNI-aligned, x (left-right) last


@dataclass(frozen=True)
class MacsHeadConfig:
    epochs: int = 80
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    validation_fraction: float = 0.1  # the last subjects: never fitted, their AUC is reported
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"MacsHeadConfig: epochs {self.epochs}, batch_size {self.batch_size}, lr {self.lr}; expected positive values")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"MacsHeadConfig.validation_fraction: {self.validation_fraction} is not in [0, 1)")


def with_macs_pooling(network: SHMN, pooling: str) -> SHMN:
    """A copy of ``network`` whose MACS classifier pools with ``pooling``; every other weight is kept, the
    classifier starts fresh (its input width changes)."""
    if network.macs is None:
        raise ShmnError("the model has no MACS classifier ('macs' is not among its tasks)")
    copy = SHMN(replace(network.config, macs_pooling=pooling))
    kept = {k: v for k, v in network.state_dict().items() if not k.startswith("macs.")}
    missing, unexpected = copy.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith("macs.") for k in missing):
        raise ShmnError(f"weights do not carry over to the {pooling!r} pooling model: missing {missing}, unexpected {unexpected}")
    return copy.eval()


@torch.no_grad()
def pooled_features(network: SHMN, image: torch.Tensor) -> np.ndarray:
    """(2, features): what FC1 reads for ``image`` (1, z, y, x) and for its left-right mirror."""
    x = image[None].float()
    views = []
    for view in (x, torch.flip(x, dims=(X_AXIS,))):
        features = network.encoder(view)
        pvl = network.decoders["pvl"](features) if "pvl" in network.decoders else None
        views.append(network.macs.pool(features[-1], pvl)[0].numpy())
    return np.stack(views).astype(np.float32)


def collect_features(network: SHMN, dataset, cache_dir: Path,
                     progress: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(X (N, 2, features), y (N,), per-subject records) for every item of ``dataset`` (items as
    shmn.synthesis.randomised.dataset.SynthesisDataset gives them). Each subject is cached in
    ``cache_dir`` as it is done, so a killed run picks up where it stopped."""
    network = network.eval()
    cache_dir.mkdir(parents=True, exist_ok=True)
    width = network.macs.fc1.in_features
    indices = range(len(dataset))
    rows, labels, records = [], [], []
    for index in (progress(indices) if progress else indices):
        path = cache_dir / f"{index:05d}.npz"
        if path.exists():
            stored = np.load(path)
            features, label, burden = stored["features"], float(stored["macs"]), float(stored["motor_ml"])
            if features.shape != (2, width):
                raise ShmnError(f"{path}: cached features of shape {features.shape}, expected (2, {width}); "
                                "the cache belongs to another model: give another --work folder")
        else:
            item = dataset[index]
            features, label = pooled_features(network, item["image"]), float(item["macs"])
            burden = float(item.get("motor_ml", float("nan")))
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, features=features, macs=label, motor_ml=burden)
        rows.append(features)
        labels.append(label)
        records.append({"index": index, "macs": label, "motor_ml": burden})
    return np.stack(rows), np.array(labels, dtype=np.float32), records


class SynthesisedSubjects:
    """MACS-labelled subjects for `collect_features`: a SynthesisDataset's samples with their motor burden
    (the training items leave the burden out: real cases have none, and a batch may mix both)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from shmn.synthesis.randomised.dataset import sample_seed
        from shmn.synthesis.randomised.sampler import synthesise

        d = self.dataset
        sample = synthesise(sample_seed(d.seed, d.epoch, index), d.grid, d.item_config(index))
        return {"image": torch.as_tensor(np.ascontiguousarray(sample.image, dtype=np.float32))[None],
                "macs": float(sample.macs), "motor_ml": float(sample.record["motor_ml"])}


def fit_macs_head(classifier: MacsClassifier, features: np.ndarray, labels: np.ndarray, config: MacsHeadConfig) -> dict:
    """Fit FC1 and FC2 of ``classifier`` (from a seeded fresh start) on ``features`` (N, 2, F); the last ``validation_fraction`` of the
    subjects are held out. Returns the loss per epoch and the held-out metrics (both views averaged)."""
    n = len(labels)
    n_val = int(round(n * config.validation_fraction))
    if n - n_val < 4 or len(np.unique(labels[: n - n_val])) < 2:
        raise ShmnError(f"{n - n_val} training subjects with labels {sorted(set(labels[: n - n_val].tolist()))}: "
                        "the MACS head needs both groups among at least 4 subjects")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    for layer in (classifier.fc1, classifier.fc2):  # a fresh, seeded start: the same features give the same head
        layer.reset_parameters()
    train_x = torch.from_numpy(features[: n - n_val].reshape(-1, features.shape[-1]))
    train_y = torch.from_numpy(np.repeat(labels[: n - n_val], 2))
    epsilon = class_balance_epsilon(labels[: n - n_val])
    optimiser = torch.optim.AdamW(classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    classifier.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(train_y), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            optimiser.zero_grad()
            loss = macs_bce(classifier.classify(train_x[batch]), train_y[batch], epsilon)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(train_y))
    classifier.eval()
    history = {"epsilon": round(epsilon, 4), "n_train": n - n_val, "n_validation": n_val, "loss": [round(v, 4) for v in losses]}
    if n_val and len(np.unique(labels[n - n_val:])) == 2:
        history["validation"] = macs_metrics(head_probability(classifier, features[n - n_val:]), labels[n - n_val:])
    return history


@torch.no_grad()
def head_probability(classifier: MacsClassifier, features: np.ndarray) -> np.ndarray:
    """p(severe) of each subject: the mean of the logits of its two views, through the sigmoid."""
    logits = classifier.classify(torch.from_numpy(features.reshape(-1, features.shape[-1]))).reshape(-1, 2).mean(dim=1)
    return torch.sigmoid(logits).numpy()
