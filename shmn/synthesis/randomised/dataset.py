"""The torch Dataset the trainer draws synthesised samples from (`"synthesis": "on-the-fly"`).

Map-style, so the trainer's DistributedSampler, batching and background workers work unchanged: item
``index`` of epoch ``epoch`` is synthesised from the seed (run seed, epoch, index), whichever worker or
rank draws it, so a run is reproducible with any number of workers and a resumed run draws what the
uninterrupted one would have. Items follow the batch contract of shmn.network.losses (as
shmn.training.data.ShmnDataset's); every synthesised sample carries all labels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from shmn.preprocessing.preprocess import GridSpec
from shmn.synthesis.randomised.intensities import IntensityConfig
from shmn.synthesis.randomised.pathology import PathologyConfig
from shmn.synthesis.randomised.sampler import SynthesisConfig, synthesise


def sample_seed(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    # 12 tags synthesised samples apart from the trainer's other streams (shmn.training.data.item_seed)
    return np.random.SeedSequence([int(seed), int(epoch), int(index), 12])


# MACS class balance (TrainConfig.macs_balance): severity weights (none, mild, moderate, severe) of the
# even (severe-leaning) and odd (mild-leaning) items. The label still follows the drawn motor burden, so
# these only move the class mix: from about 37 % severe (the default weights; 60 samples measured) towards
# half, with each class drawn from the burdens that make it.
SEVERE_LEANING = (0.0, 0.0, 0.3, 0.7)
MILD_LEANING = (0.2, 0.5, 0.3, 0.0)


class SynthesisDataset(Dataset):
    """``length`` fresh samples per epoch on ``grid``. Set ``epoch`` before each epoch (the trainer does)."""

    def __init__(self, grid: GridSpec, length: int, seed: int = 0, config: SynthesisConfig | None = None, macs_balanced: bool = False):
        self.grid = grid
        self.length = int(length)
        self.seed = int(seed)
        self.config = config or SynthesisConfig()
        self.macs_balanced = bool(macs_balanced)
        self.epoch = 0

    def item_config(self, index: int) -> SynthesisConfig:
        if not self.macs_balanced:
            return self.config
        weights = SEVERE_LEANING if index % 2 == 0 else MILD_LEANING
        return replace(self.config, pathology=replace(self.config.pathology, severity_weights=weights))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        sample = synthesise(sample_seed(self.seed, self.epoch, index), self.grid, self.item_config(index))

        def channel(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None]

        return {
            "image": channel(sample.image),
            "pvl": channel(sample.pvl),
            "density": channel(sample.density),
            "ventricles": channel(sample.ventricles),
            "has_pvl": torch.tensor(True),
            "has_ventricles": torch.tensor(True),
            "has_macs": torch.tensor(True),
            "macs": torch.tensor(sample.macs, dtype=torch.float32),
            "id": f"synthetic-e{self.epoch}-{index}",
            "index": index,
        }


class EpochConcat(ConcatDataset):
    """Real cases and synthesised samples in one training set (`"synthesis": "mixed"`); ``epoch`` reaches both."""

    @property
    def epoch(self) -> int:
        return getattr(self.datasets[0], "epoch", 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        for dataset in self.datasets:
            dataset.epoch = value


def synthesis_config(config) -> SynthesisConfig:
    """The synthesis settings of a TrainConfig (shmn.training.config)."""
    share, low, high = config.synthesis_csf_unsuppressed
    narrowed, narrow_low, narrow_high = config.synthesis_ventricle_narrowing
    return SynthesisConfig(anatomies=tuple(config.synthesis_anatomies), density_sigma_mm=config.density_sigma_mm,
                           intensity=IntensityConfig(csf_unsuppressed_probability=share, csf_unsuppressed_fraction=(low, high)),
                           pathology=PathologyConfig(ventricle_narrowing_probability=narrowed,
                                                     ventricle_narrowing_wall=(narrow_low, narrow_high)))


def synthesis_training_set(config, real: Dataset) -> Dataset:
    """The training set of a TrainConfig whose ``synthesis`` is "on-the-fly" or "mixed".

    The anatomies are prepared here, in the main process, so that forked loader workers inherit them
    instead of each rebuilding them every epoch.
    """
    from shmn.synthesis.randomised.sampler import warm_up

    grid = config.grid_spec
    length = config.synthesis_samples or max(8, len(real))
    synthesised = SynthesisDataset(grid, length, config.seed, synthesis_config(config), macs_balanced=config.macs_balance)
    warm_up(grid, synthesised.config)
    return synthesised if config.synthesis == "on-the-fly" else EpochConcat([real, synthesised])


def describe_synthesis(config, data_card: dict) -> dict:
    """The model card's training-data entry, with what the synthesis contributed."""
    card = dict(data_card)
    card["synthesis"] = {
        "mode": config.synthesis,
        "samples_per_epoch": config.synthesis_samples or "as many as train cases (at least 8)",
        "anatomies": list(config.synthesis_anatomies),
        "csf_unsuppressed": dict(zip(("share", "low", "high"), config.synthesis_csf_unsuppressed)),  # of FLAIR-ordered samples
        # of subjects without or with mild PVL: slit-like ventricles, low-high of the wall moved one voxel inward
        "ventricle_narrowing": dict(zip(("share", "low", "high"), config.synthesis_ventricle_narrowing)),
        "generator": "shmn.synthesis.randomised (domain-randomised label-map synthesis)",
    }
    if config.synthesis == "on-the-fly":
        card["synthetic"] = True
        card["any_synthetic"] = True
    else:
        card["any_synthetic"] = True
    return card
