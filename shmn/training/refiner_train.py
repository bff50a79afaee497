"""Training of the 1 mm lesion refiner on the bank (shmn.training.refiner_bank): patches, DiceCE, Adam, bf16.

Each step draws ``batch`` patches: half centred on a lesion voxel of a random sample, half anywhere in
the box; MONAI flips and intensity augmentation on top (intensity on the image channel only: the prior
is a probability). Every step's randomness comes from (seed, step), so a run killed and resumed from its
last checkpoint draws the same patches as one that was never stopped.

WORK/<run>/
  config.json      the RefinerTrainConfig (a resumed run must match it)
  checkpoint.pt    network, optimiser, step and loss history (shmn.training.checkpoint: tensors only, no pickle)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shmn import devices
from shmn.errors import ShmnError
from shmn.io.atomic import write_json
from shmn.network.refiner import DEFAULT_FEATURES, RefinerNetwork
from shmn.progress import progress_bar
from shmn.training.checkpoint import load_state, read_json_file, save_state
from shmn.training.refiner_bank import read_sample


@dataclass(frozen=True)
class RefinerTrainConfig:
    steps: int = 600
    batch: int = 2
    patch: int = 48            # cube edge, voxels (1 mm); a multiple of 16 (BasicUNet's 4 down-samplings)
    lesion_fraction: float = 0.5  # share of patches centred on a lesion voxel
    lr: float = 1e-3
    use_prior: bool = True     # False: the patch-only alternative (image channel alone)
    features: tuple[int, ...] = DEFAULT_FEATURES
    checkpoint_every: int = 50
    seed: int = 0
    amp: str = "auto"          # shmn.devices.precision: bf16 autocast on CPUs with bf16
    norm: str = "batch"        # shmn.network.refiner.RefinerNetwork.norm

    @property
    def network(self) -> RefinerNetwork:
        return RefinerNetwork(tuple(self.features), 2 if self.use_prior else 1, self.norm)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["features"] = list(self.features)
        return data


def load_bank(paths: list[Path]) -> list[dict[str, np.ndarray]]:
    return [read_sample(path) for path in paths]


def _corner(centre: np.ndarray, patch: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(centre - patch // 2, 0, np.array(shape) - patch)


def draw_patch(sample: dict, config: RefinerTrainConfig, rng: np.random.Generator, on_lesion: bool) -> dict[str, np.ndarray]:
    """(channels, p, p, p) image [+ prior] and (1, p, p, p) target, from one bank sample."""
    shape = sample["image"].shape
    if min(shape) < config.patch:
        raise ShmnError(f"patch {config.patch} is larger than the bank's box {shape}")
    lesion = np.flatnonzero(sample["pvl"]) if on_lesion else np.empty(0, np.int64)
    if lesion.size:
        centre = np.array(np.unravel_index(lesion[rng.integers(lesion.size)], shape))
    else:
        centre = np.array([rng.integers(0, n) for n in shape])
    z, y, x = _corner(centre, config.patch, shape)
    cut = (slice(z, z + config.patch), slice(y, y + config.patch), slice(x, x + config.patch))
    channels = [sample["image"][cut]] + ([sample["prior"][cut]] if config.use_prior else [])
    return {"image": np.stack(channels).astype(np.float32), "label": sample["pvl"][cut][None].astype(np.float32)}


def augmentation():
    """MONAI: left-right flip (image, prior and label together), intensity scale/shift/gamma/noise on the image."""
    from monai.transforms import Compose, RandFlipd

    return Compose([RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=2)])


def augment_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MONAI intensity transforms on channel 0 only (the prior channel is a probability, left as it is)."""
    from monai.transforms import RandAdjustContrast, RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

    seed = int(rng.integers(2**31))
    channel = image[:1]
    for number, transform in enumerate((RandScaleIntensity(factors=0.15, prob=0.8), RandShiftIntensity(offsets=0.15, prob=0.8),
                                        RandGaussianNoise(prob=0.3, std=0.08))):
        transform.set_random_state(seed + number)
        channel = np.asarray(transform(channel))
    gamma = RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25))  # on a positive copy: gamma needs a range
    gamma.set_random_state(seed + 7)
    low = float(channel.min())
    channel = np.asarray(gamma(channel - low)) + low
    return np.concatenate([channel.astype(np.float32), image[1:]], axis=0)


def draw_batch(bank: list[dict], config: RefinerTrainConfig, step: int, flips) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([config.seed, step])
    images, labels = [], []
    for item in range(config.batch):
        sample = bank[int(rng.integers(len(bank)))]
        patch = draw_patch(sample, config, rng, on_lesion=item < round(config.batch * config.lesion_fraction))
        flips.set_random_state(int(rng.integers(2**31)))
        patch = flips(patch)
        images.append(augment_intensity(np.asarray(patch["image"]), rng))
        labels.append(np.asarray(patch["label"]))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def _without_steps(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "steps"}


def _prepare_run(run_dir: Path, config: RefinerTrainConfig, resume: bool) -> dict | None:
    config_file, state_file = run_dir / "config.json", run_dir / "checkpoint.pt"
    if config_file.exists() or state_file.exists():
        if not resume:
            raise ShmnError(f"{run_dir}: a refiner run is already here; add --resume to continue it or choose another --work")
        # --steps may grow on --resume (a finished run trained further); every other option must match.
        if config_file.exists() and _without_steps(read_json_file(config_file, "config")) != _without_steps(config.to_json()):
            raise ShmnError(f"{config_file}: the run was started with another configuration; resume with the same options")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_file, config.to_json())
    return load_state(state_file) if state_file.exists() else None


def train_refiner(bank: list[dict], config: RefinerTrainConfig, run_dir: str | Path, resume: bool = False,
                  progress: bool = True, stop_after: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) to ``config.steps``; returns (network, run record). ``stop_after``: leave after
    that many steps of this call (a test's stand-in for a kill: the checkpoint is all that survives)."""
    run_dir = Path(run_dir)
    torch.manual_seed(config.seed)
    network = config.network.build()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    state = _prepare_run(run_dir, config, resume)
    step, losses, seconds = 0, [], 0.0
    if state is not None:
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
    from monai.losses import DiceCELoss

    loss_function = DiceCELoss(sigmoid=True)
    device = torch.device("cpu")
    mode = devices.precision(device, config.amp)
    flips = augmentation()
    network.train()
    bar = progress_bar(range(step, config.steps), enabled=progress, file=sys.stderr, desc=f"refiner (from step {step})", unit="step")
    done_here = 0
    for step in bar:
        tick = time.perf_counter()
        image, label = draw_batch(bank, config, step, flips)
        with devices.autocast(device, mode):
            logits = network(image)
        loss = loss_function(logits.float(), label)
        if not torch.isfinite(loss):
            raise ShmnError(f"refiner step {step}: the loss became {float(loss)}; resume with --amp off or a lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 5))
        seconds += time.perf_counter() - tick
        done_here += 1
        finished = step + 1
        if finished % config.checkpoint_every == 0 or finished == config.steps or (stop_after and done_here >= stop_after):
            save_state(run_dir / "checkpoint.pt", {"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                                                   "step": finished, "losses": losses, "seconds": seconds})
        if stop_after and done_here >= stop_after:
            break
    network.eval()
    record = {"steps_done": len(losses), "precision": mode, "train_seconds": round(seconds, 1),
              "loss_first_50": float(np.mean(losses[:50])) if losses else None,
              "loss_last_50": float(np.mean(losses[-50:])) if losses else None}
    (run_dir / "losses.json").write_text(json.dumps(losses) + "\n", encoding="utf-8")
    return network, record
