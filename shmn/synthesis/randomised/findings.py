"""Normal FLAIR findings that are not PVL, painted into the label map but never into a target, so the
network learns to leave them out:

- periventricular caps at the frontal horns and a thin periventricular (ependymal) rim;
- in children, the peritrigonal terminal zones of late myelination (dorsal and lateral to the trigones);
- choroid plexus in the trigones (part of the ventricle, as a reader outlines it);
- perivascular spaces: CSF-like dots and short lines in the white matter and the basal ganglia;
- CSF flow artefacts: bright patches inside the ventricles (part of the ventricle).

The slow white-matter inhomogeneity is an intensity effect (shmn.synthesis.randomised.intensities).
Findings replace white matter (or, inside the ventricles, ventricle) only, after the lesions are
painted, so they never overwrite a lesion and a lesion never hides inside a finding's class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shmn.synthesis.randomised import labels as L
from shmn.synthesis.randomised.anatomies import SourceAnatomy
from shmn.synthesis.randomised.pathology import _ellipsoid, _pick, posterior_weight
from shmn.synthesis.randomised.spatial import smooth_noise


@dataclass(frozen=True)
class FindingsConfig:
    probability: float = 0.8  # chance that a sample shows each finding (independently)


def _replace(labels: np.ndarray, mask: np.ndarray, cls: int, hosts: tuple[int, ...] = (L.WHITE_MATTER,)) -> int:
    hit = mask & np.isin(labels, hosts)
    labels[hit] = cls
    return int(hit.sum())


def caps_and_rim(labels, anatomy: SourceAnatomy, dist_v, rng) -> int:
    y = np.broadcast_to(anatomy.ras[1], labels.shape)
    ventricle_y = y[labels == L.VENTRICLE]
    front = float(ventricle_y.max()) if ventricle_y.size else 20.0
    caps = (dist_v <= rng.uniform(2.0, 7.0)) & (y >= front - rng.uniform(8.0, 16.0))
    rim = dist_v <= rng.uniform(0.5, 2.5)
    return _replace(labels, caps | rim, L.CAPS_RIM)


def terminal_zones(labels, anatomy: SourceAnatomy, dist_v, rng) -> int:
    z = np.broadcast_to(anatomy.ras[2], labels.shape)
    zone = (dist_v >= 1.0) & (dist_v <= rng.uniform(6.0, 14.0)) & (posterior_weight(anatomy) > 0.6) & (z > rng.uniform(-5.0, 10.0))
    patchy = smooth_noise(labels.shape, rng, 12) > rng.uniform(-0.5, 0.5)
    return _replace(labels, zone & patchy, L.TERMINAL_ZONE)


def choroid_plexus(labels, anatomy: SourceAnatomy, rng) -> int:
    y, z = (np.broadcast_to(a, labels.shape) for a in (anatomy.ras[1], anatomy.ras[2]))
    trigone = (y > -45.0) & (y < -15.0) & (z > -10.0) & (z < 25.0)
    patchy = smooth_noise(labels.shape, rng, 14) > rng.uniform(0.0, 1.0)
    return _replace(labels, trigone & patchy, L.CHOROID_PLEXUS, hosts=(L.VENTRICLE,))


def perivascular_spaces(labels, anatomy: SourceAnatomy, rng) -> int:
    s = anatomy.spacing_mm
    where = np.isin(labels, (L.WHITE_MATTER, L.DEEP_GREY))
    painted = 0
    for centre in _pick(where.astype(np.float32), rng, int(rng.integers(5, 60))):
        radii = np.array([rng.uniform(1.5, 5.0), rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0)]) / s  # a short line
        box, mask = _ellipsoid(labels, centre, np.maximum(radii, 0.5), rng)
        painted += _replace(labels[box], mask, L.PERIVASCULAR, hosts=(L.WHITE_MATTER, L.DEEP_GREY))
    return painted


def flow_artefacts(labels, rng) -> int:
    patchy = smooth_noise(labels.shape, rng, 16) > rng.uniform(0.8, 1.8)
    return _replace(labels, patchy, L.FLOW_ARTEFACT, hosts=(L.VENTRICLE, L.OTHER_CSF))


def add_findings(labels: np.ndarray, anatomy: SourceAnatomy, dist_v: np.ndarray, rng: np.random.Generator, config: FindingsConfig) -> list[str]:
    """Paint the normal findings in place (each with ``config.probability``); return the names drawn."""
    drawn = []
    steps = (
        ("caps and rim", lambda: caps_and_rim(labels, anatomy, dist_v, rng)),
        ("terminal zones", lambda: terminal_zones(labels, anatomy, dist_v, rng)),
        ("choroid plexus", lambda: choroid_plexus(labels, anatomy, rng)),
        ("perivascular spaces", lambda: perivascular_spaces(labels, anatomy, rng)),
        ("flow artefacts", lambda: flow_artefacts(labels, rng)),
    )
    for name, step in steps:
        if rng.random() < config.probability and step():
            drawn.append(name)
    return drawn
