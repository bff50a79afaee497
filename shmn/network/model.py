"""The Semi-supervised Heterogeneous Multi-task Network (SHMN, Yang et al., MICCAI 2021).

One shared 3D U-Net encoder; one U-Net decoder (with skip connections) per enabled dense task
("pvl", "ventricles", "localization"); the MACS classifier on the bottleneck features. Switching
tasks off builds the paper's ablations (single-task U-Net, SHMN-2, SHMN-3, SHMN-4).

Building blocks are MONAI's nnU-Net blocks: ``UnetBasicBlock`` (two 3x3x3 convolutions, each
followed by instance norm and leaky ReLU), ``UnetUpBlock`` (2x2x2 transposed convolution, concat
with the skip, then a basic block) and ``UnetOutBlock`` (1x1x1 convolution). Down-sampling between
levels is the first convolution of the level with stride 2 (as nnU-Net/DynUNet do): cheaper on CPU
than a full-resolution convolution followed by max-pooling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

ALL_TASKS = ("pvl", "ventricles", "localization", "macs")
DENSE_TASKS = ("pvl", "ventricles", "localization")
# Output channels of each dense task's last 1x1x1 convolution.
DENSE_CHANNELS = {"pvl": 2, "ventricles": 1, "localization": 1}
# nnU-Net's cap: deeper levels stop widening, which keeps a 5+ level net affordable on CPU.
MAX_FILTERS = 320
_NORM = ("instance", {"affine": True})
_ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})
# "mean": the paper's global average of the bottleneck. Instance norm makes that average almost the same
# for every image (each channel is normalised over space before its activation), so the classifier sees
# little of the image (benchmarks/train_macs_head.py compares both poolings on the same subjects).
# "lesion": the bottleneck's average, its average over where the PVL decoder sees lesions (weights: lesion
# voxels per bottleneck cell, from the decoder's detached softmax), and log(1 + lesion voxels / 1000).
MACS_POOLINGS = ("mean", "lesion")


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the network; stored in every model file's card (``dataclasses.asdict``)."""

    base_filters: int = 16
    levels: int = 5
    tasks: tuple[str, ...] = ALL_TASKS
    in_channels: int = 1
    macs_hidden: int = 64
    dropout: float = 0.0  # dropout before FC2 of the MACS classifier only
    macs_pooling: str = "mean"  # how the classifier pools the bottleneck: one of MACS_POOLINGS

    def __post_init__(self) -> None:
        # Accept a list (as read back from JSON) but store a tuple so the config stays hashable.
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("NetworkConfig.tasks: empty; enable at least one of " + ", ".join(ALL_TASKS))
        unknown = [t for t in self.tasks if t not in ALL_TASKS]
        if unknown:
            raise ValueError(f"NetworkConfig.tasks: unknown task(s) {unknown}; expected a subset of {list(ALL_TASKS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"NetworkConfig.tasks: {list(self.tasks)} repeats a task")
        if self.base_filters < 1 or self.levels < 1 or self.in_channels < 1 or self.macs_hidden < 1:
            raise ValueError(
                "NetworkConfig: base_filters, levels, in_channels and macs_hidden must be positive integers, got "
                f"{self.base_filters}, {self.levels}, {self.in_channels}, {self.macs_hidden}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NetworkConfig.dropout: {self.dropout} is not in [0, 1)")
        if self.macs_pooling not in MACS_POOLINGS:
            raise ValueError(f"NetworkConfig.macs_pooling: {self.macs_pooling!r}; expected one of {list(MACS_POOLINGS)}")
        if self.macs_pooling == "lesion" and not {"macs", "pvl"} <= set(self.tasks):
            raise ValueError("NetworkConfig.macs_pooling 'lesion' pools where the PVL decoder sees lesions: tasks must include 'macs' and 'pvl'")

    @property
    def filters(self) -> tuple[int, ...]:
        """Feature channels at each level: base * 2**level, capped at MAX_FILTERS."""
        return tuple(min(self.base_filters * 2**level, MAX_FILTERS) for level in range(self.levels))

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this (one halving per level below the top)."""
        return 2 ** (self.levels - 1)

    @property
    def dense_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks if t in DENSE_TASKS)


class Encoder(nn.Module):
    """Shared encoder; returns the feature map of every level, the last one being the bottleneck."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        filters = config.filters
        blocks = []
        for level, out_channels in enumerate(filters):
            in_channels = config.in_channels if level == 0 else filters[level - 1]
            stride = 1 if level == 0 else 2
            blocks.append(UnetBasicBlock(3, in_channels, out_channels, 3, stride, norm_name=_NORM, act_name=_ACT))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    """U-Net decoder of one dense task: transposed-conv up-sampling + skip at every level."""

    def __init__(self, config: NetworkConfig, out_channels: int):
        super().__init__()
        filters = config.filters
        self.ups = nn.ModuleList(
            UnetUpBlock(3, filters[level], filters[level - 1], 3, 1, 2, norm_name=_NORM, act_name=_ACT)
            for level in range(len(filters) - 1, 0, -1)
        )
        self.head = UnetOutBlock(3, filters[0], out_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1])):
            x = up(x, skip)
        return self.head(x)


class MacsClassifier(nn.Module):
    """Bottleneck -> pooling (``NetworkConfig.macs_pooling``) -> FC1 -> ReLU -> (dropout) -> FC2 -> one logit (severe)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.pooling = config.macs_pooling
        width = config.filters[-1] * 2 + 1 if self.pooling == "lesion" else config.filters[-1]
        self.fc1 = nn.Linear(width, config.macs_hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.macs_hidden, 1)

    def pool(self, bottleneck: torch.Tensor, pvl_logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, features) that FC1 reads; ``pvl_logits`` (B, 2, D, H, W) are needed by "lesion" pooling."""
        mean = bottleneck.mean(dim=(2, 3, 4))
        if self.pooling == "mean":
            return mean
        if pvl_logits is None:
            raise ValueError("MacsClassifier: 'lesion' pooling needs the PVL decoder's logits")
        # Detached: the MACS loss must not move the lesion decoder towards what helps it classify.
        lesion = torch.softmax(pvl_logits.detach().float(), dim=1)[:, 1:2]
        factor = [full // part for full, part in zip(lesion.shape[2:], bottleneck.shape[2:])]
        voxels = F.avg_pool3d(lesion, factor) * float(math.prod(factor))  # lesion voxels in each bottleneck cell
        total = voxels.sum(dim=(2, 3, 4))
        at_lesions = (voxels * bottleneck).sum(dim=(2, 3, 4)) / (total + 1.0)
        return torch.cat([mean, at_lesions, torch.log1p(total / 1000.0)], dim=1)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(torch.relu(self.fc1(pooled)))).squeeze(1)

    def forward(self, bottleneck: torch.Tensor, pvl_logits: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.pool(bottleneck, pvl_logits))


class SHMN(nn.Module):
    """forward(x (B, C, D, H, W)) -> dict with only the enabled tasks:

    - "pvl": (B, 2, D, H, W) logits (softmax over channel 1 = lesion probability)
    - "ventricles": (B, 1, D, H, W) logits (sigmoid = ventricle probability)
    - "localization": (B, 1, D, H, W) density map, a plain linear regression output (trained with
      MSE against Gaussian blobs of peak 1; it may dip slightly below 0, which peak finding ignores)
    - "macs": (B,) logit of the severe group (``macs_probability`` turns it into a probability)
    """

    def __init__(self, config: NetworkConfig | None = None):
        super().__init__()
        self.config = config or NetworkConfig()
        self.encoder = Encoder(self.config)
        self.decoders = nn.ModuleDict(
            {task: Decoder(self.config, DENSE_CHANNELS[task]) for task in self.config.dense_tasks}
        )
        self.macs = MacsClassifier(self.config) if "macs" in self.config.tasks else None

    def check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"SHMN input: shape {tuple(x.shape)}; expected (batch, {cfg.in_channels}, depth, height, width)"
            )
        spatial = tuple(x.shape[2:])
        if any(size % cfg.divisor for size in spatial):
            raise ValueError(
                f"SHMN input: spatial size {spatial} is not divisible by {cfg.divisor} (2**(levels-1) with "
                f"levels={cfg.levels}); crop or pad the volume to multiples of {cfg.divisor}"
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(x)
        features = self.encoder(x)
        outputs = {task: decoder(features) for task, decoder in self.decoders.items()}
        if self.macs is not None:
            outputs["macs"] = self.macs(features[-1], outputs.get("pvl"))
        return outputs


def macs_probability(logit: torch.Tensor) -> torch.Tensor:
    """Probability of the severe group (MACS III-V); > 0.5 means severe."""
    return torch.sigmoid(logit)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
