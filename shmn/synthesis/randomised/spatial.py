"""Where each output voxel takes its label from: a random affine (children's proportions, the residual
mis-registration preprocessing leaves) and a smooth elastic deformation, applied to a label map in one
nearest-neighbour resampling, so that every label moves with the others and image and targets stay aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SpatialConfig:
    rotation_deg: float = 5.0  # residual mis-registration: +-5 degrees about each axis
    translation_mm: float = 5.0  # +-5 mm
    scale: float = 0.05  # +-5 % isotropic scale error
    proportions: float = 0.08  # +-8 % per axis: a child's head is not the template's shape
    elastic_mm: float = 4.0  # maximal sd of the smooth displacement
    elastic_cells: int = 5  # control points along each axis


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Zero-mean, unit-sd smooth random field: Gaussian noise on a coarse grid, upsampled (linear)."""
    coarse = rng.standard_normal(tuple(max(2, int(np.ceil(n * cells / max(shape)))) for n in shape)).astype(np.float32)
    field = F.interpolate(torch.from_numpy(coarse)[None, None], size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()
    sd = float(field.std())
    return (field - field.mean()) / (sd if sd > 1e-6 else 1.0)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cz, cy, cx = np.cos(angles)
    sz, sy, sx = np.sin(angles)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_warp(shape: tuple[int, int, int], spacing_mm: float, rng: np.random.Generator, config: SpatialConfig) -> torch.Tensor:
    """A sampling grid (1, D, H, W, 3) for torch's grid_sample: output voxel -> source position (normalised)."""
    angles = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg, 3))
    scales = (1.0 + rng.uniform(-config.scale, config.scale)) * (1.0 + rng.uniform(-config.proportions, config.proportions, 3))
    matrix = _rotation(angles) @ np.diag(1.0 / scales)  # output -> source, in voxel units (z, y, x)
    shift = rng.uniform(-config.translation_mm, config.translation_mm, 3) / spacing_mm
    centre = (np.array(shape) - 1) / 2.0
    axes = [torch.arange(n, dtype=torch.float32) - float(c) for n, c in zip(shape, centre)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([zz, yy, xx], dim=-1)  # (D, H, W, 3) voxel offsets from the centre
    source = points @ torch.as_tensor(matrix.T, dtype=torch.float32) + torch.as_tensor(centre + shift, dtype=torch.float32)
    sd = rng.uniform(0.0, config.elastic_mm) / spacing_mm
    if sd > 0:
        coarse = torch.as_tensor(rng.standard_normal((1, 3, config.elastic_cells, config.elastic_cells, config.elastic_cells)) * sd,
                                 dtype=torch.float32)
        displacement = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0].permute(1, 2, 3, 0)
        source = source + displacement
    # grid_sample wants (x, y, z) order, normalised to [-1, 1] with align_corners=True
    size = torch.as_tensor([n - 1 for n in shape], dtype=torch.float32)
    normalised = source / size * 2.0 - 1.0
    return normalised.flip(-1)[None]


def apply_warp(volume: np.ndarray, grid: torch.Tensor, nearest: bool) -> np.ndarray:
    """Resample ``volume`` (z, y, x) at the warp's positions; outside the volume is 0."""
    tensor = torch.as_tensor(np.ascontiguousarray(volume), dtype=torch.float32)[None, None]
    out = F.grid_sample(tensor, grid, mode="nearest" if nearest else "bilinear", padding_mode="zeros", align_corners=True)
    return out[0, 0].numpy().astype(volume.dtype, copy=False)
