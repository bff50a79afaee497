"""One training sample from a seed: anatomy -> pathology -> normal findings -> head layers -> deformation
-> intensities -> scanner -> skull strip and normalisation as in `shmn predict` -> targets.

Everything random comes from one ``numpy.random.Generator`` seeded by the caller, so a seed gives the
same sample in any process (the trainer seeds with (run seed, epoch, index)).

The sample lives on the model grid, as the network sees a preprocessed image: MNI space, masked with the
template's brain mask (what preprocessing's skull strip keeps) and z-scored inside it. The subject's own
brain is deformed and mis-registered against that mask, so the scalp, skull and CSF of a head show at its
edges (or nothing, for an image that came skull-stripped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from shmn.measures.lesions import density_map
from shmn.preprocessing.preprocess import GridSpec, normalise
from shmn.synthesis.randomised import labels as L
from shmn.synthesis.randomised.anatomies import SOURCES, source_anatomy, template_brain
from shmn.synthesis.randomised.artefacts import ArtefactConfig, scanner
from shmn.synthesis.randomised.findings import FindingsConfig, add_findings
from shmn.synthesis.randomised.intensities import IntensityConfig, labels_to_image
from shmn.synthesis.randomised.pathology import PathologyConfig, add_pathology
from shmn.synthesis.randomised.spatial import SpatialConfig, apply_warp, random_warp


@dataclass(frozen=True)
class SynthesisConfig:
    anatomies: tuple[str, ...] = SOURCES
    head_probability: float = 0.7  # the rest came skull-stripped: nothing outside the subject's brain
    macs_label_noise: float = 0.1
    density_sigma_mm: float = 4.0
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    pathology: PathologyConfig = field(default_factory=PathologyConfig)
    findings: FindingsConfig = field(default_factory=FindingsConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    artefacts: ArtefactConfig = field(default_factory=ArtefactConfig)


@dataclass
class SyntheticSample:
    image: np.ndarray  # float32 (z, y, x), normalised inside ``brain``, 0 outside
    brain: np.ndarray  # bool, the template brain mask (preprocessing's)
    labels: np.ndarray  # uint8 tissue classes after deformation (shmn.synthesis.randomised.labels)
    pvl: np.ndarray  # uint8
    ventricles: np.ndarray  # uint8
    density: np.ndarray  # float32 lesion-centre density map
    macs: float  # 1.0 severe, 0.0 mild
    record: dict  # what was drawn (anatomy, severity, shapes, findings, contrast, acquisition)


@lru_cache(maxsize=4)
def _template_brain(spacing_mm: float, size: tuple[int, int, int]) -> np.ndarray:
    return template_brain(GridSpec(spacing_mm, size))


def add_head(labels: np.ndarray, dist_out_mm: np.ndarray, rng: np.random.Generator) -> None:
    """Extracerebral CSF, skull and scalp as shells around the brain, of random thickness."""
    csf = rng.uniform(0.5, 4.0)
    skull = csf + rng.uniform(2.0, 7.0)
    scalp = skull + rng.uniform(2.0, 8.0)
    outside = labels == L.BACKGROUND
    labels[outside & (dist_out_mm <= scalp)] = L.SCALP
    labels[outside & (dist_out_mm <= skull)] = L.SKULL
    labels[outside & (dist_out_mm <= csf)] = L.EXTRA_CSF


def macs_from_burden(pvl: np.ndarray, motor: np.ndarray, voxel_ml: float, growth_mm: float, rng: np.random.Generator, noise: float) -> tuple[float, dict]:
    """Severe (MACS III-V) when the motor-weighted lesion burden is high; a logistic draw, then label noise."""
    motor_ml = float((pvl * motor).sum() * voxel_ml)
    total_ml = float(pvl.sum() * voxel_ml)
    score = (motor_ml - 0.8) / 0.3 + (total_ml - 8.0) / 6.0 + (growth_mm - 3.0) / 3.0
    severe = rng.random() < 1.0 / (1.0 + np.exp(-score))
    flipped = rng.random() < noise
    return float(severe != flipped), {"motor_ml": round(motor_ml, 3), "pvl_ml": round(total_ml, 3), "label_flipped": bool(flipped)}


def synthesise(seed: int | np.random.SeedSequence, grid: GridSpec, config: SynthesisConfig | None = None) -> SyntheticSample:
    config = config or SynthesisConfig()
    rng = np.random.default_rng(seed)
    name = config.anatomies[int(rng.integers(0, len(config.anatomies)))]
    anatomy = source_anatomy(name, float(grid.spacing_mm), tuple(int(v) for v in grid.size))
    labels = anatomy.labels.copy()
    drawn = add_pathology(labels, anatomy, rng, config.pathology)
    findings = add_findings(labels, anatomy, drawn.pop("dist_ventricles_mm"), rng, config.findings)
    head = rng.random() < config.head_probability
    if head:
        add_head(labels, anatomy.dist_out_of_brain_mm, rng)
    warp = random_warp(labels.shape, grid.spacing_mm, rng, config.spatial)
    labels = apply_warp(labels, warp, nearest=True)
    motor = apply_warp(anatomy.motor, warp, nearest=False)
    image, contrast = labels_to_image(labels, rng, config.intensity)
    image, acquisition = scanner(image, grid.spacing_mm, rng, config.artefacts)
    brain = _template_brain(float(grid.spacing_mm), tuple(int(v) for v in grid.size))
    image, _stats = normalise(np.where(brain, image, 0.0).astype(np.float32), brain, (1.0, 99.0))
    pvl = L.pvl_target(labels)
    ventricles = L.ventricle_target(labels)
    spacing = (grid.spacing_mm,) * 3
    macs, burden = macs_from_burden(pvl, motor, grid.spacing_mm**3 / 1000.0, drawn["ventricle_growth_mm"], rng, config.macs_label_noise)
    record = {"anatomy": name, **drawn, "findings": findings, "head": head, "contrast": contrast, **acquisition, **burden, "macs": macs}
    return SyntheticSample(
        image=image, brain=brain, labels=labels, pvl=pvl, ventricles=ventricles,
        density=density_map(pvl, spacing, config.density_sigma_mm).astype(np.float32), macs=macs, record=record,
    )


def warm_up(grid: GridSpec, config: SynthesisConfig | None = None) -> None:
    config = config or SynthesisConfig()
    """Prepare every anatomy and the brain mask of ``grid`` in this process (forked workers inherit them)."""
    for name in config.anatomies:
        source_anatomy(name, float(grid.spacing_mm), tuple(int(v) for v in grid.size))
    _template_brain(float(grid.spacing_mm), tuple(int(v) for v in grid.size))
