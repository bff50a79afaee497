"""Intensities from labels: a Gaussian mixture with one random mean and spread per class (SynthSeg's
generative model), sometimes ordered like a FLAIR (CSF dark, grey above white matter, lesions bright,
normal findings a little above white matter) and sometimes fully random, so that the network learns
shapes and context rather than one contrast. Some FLAIR-ordered images leave the CSF poorly suppressed
(an inversion time that does not null it, CSF with a long T1 in young children, inflow): the ventricles
then come close to white matter, as on some clinical scans, and only their shape and place tell them
apart. Then a slow multiplicative white-matter inhomogeneity and partial volume (a small blur:
neighbouring tissues mix at their borders).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from shmn.synthesis.randomised import labels as L
from shmn.synthesis.randomised.spatial import smooth_noise


@dataclass(frozen=True)
class IntensityConfig:
    flair_probability: float = 0.6  # the rest: every class's mean uniform in [0, 1]
    sd_range: tuple[float, float] = (0.005, 0.06)  # within-class spread
    wm_inhomogeneity: float = 0.15  # maximal amplitude of the slow WM field
    partial_volume_voxels: tuple[float, float] = (0.3, 0.8)  # Gaussian sigma of the tissue mixing
    # share of FLAIR-ordered images whose CSF is poorly nulled, and its mean then as a fraction of white matter's
    csf_unsuppressed_probability: float = 0.3
    csf_unsuppressed_fraction: tuple[float, float] = (0.45, 0.95)


def flair_means(rng: np.random.Generator, csf_unsuppressed: tuple[float, float] | None = None) -> np.ndarray:
    """Class means ordered as on a T2 FLAIR (values in about [0, 1]); `csf_unsuppressed`: the CSF mean is then
    this range's fraction of the white matter's, not near zero."""
    m = np.zeros(L.N_CLASSES)
    wm = rng.uniform(0.30, 0.45)
    gm = wm + rng.uniform(0.06, 0.2)
    csf = rng.uniform(0.0, 0.15) if csf_unsuppressed is None else wm * rng.uniform(*csf_unsuppressed)
    lesion = max(wm, gm) + rng.uniform(0.15, 0.45)
    m[L.BACKGROUND] = 0.0
    m[L.SCALP] = rng.uniform(0.4, 1.0)
    m[L.SKULL] = rng.uniform(0.0, 0.12)
    m[L.EXTRA_CSF] = csf + rng.uniform(0.0, 0.1)
    m[L.CORTEX] = gm
    m[L.WHITE_MATTER] = wm
    m[L.DEEP_GREY] = wm + rng.uniform(0.0, 1.0) * (gm - wm)
    m[L.VENTRICLE] = csf
    m[L.OTHER_CSF] = csf + rng.uniform(0.0, 0.05)
    m[L.HINDBRAIN] = wm + rng.uniform(-0.05, 1.0) * (gm - wm)
    m[L.LESION] = lesion
    m[L.CYST] = csf + rng.uniform(0.0, 0.25)  # a cavity: fluid, often not fully suppressed
    m[L.CYST_RIM] = lesion + rng.uniform(-0.05, 0.15)
    m[L.CAPS_RIM] = wm + rng.uniform(0.05, 0.3)  # may reach lesion brightness: the network must use shape and place
    m[L.TERMINAL_ZONE] = wm + rng.uniform(0.03, 0.2)
    # Between the CSF and the grey matter; unnulled CSF can read brighter than grey matter, and then the range turns
    # round (ordering it changes no draw where CSF is the darker, so earlier runs draw what they drew).
    m[L.CHOROID_PLEXUS] = rng.uniform(*sorted((csf + 0.1, gm + 0.1)))
    m[L.PERIVASCULAR] = csf + rng.uniform(0.0, 0.2)
    m[L.FLOW_ARTEFACT] = rng.uniform(wm, lesion + 0.2)
    return m


def random_means(rng: np.random.Generator) -> np.ndarray:
    means = rng.uniform(0.0, 1.0, L.N_CLASSES)
    means[L.BACKGROUND] = 0.0
    return means


def labels_to_image(labels: np.ndarray, rng: np.random.Generator, config: IntensityConfig) -> tuple[np.ndarray, str]:
    """(float32 image, "flair" or "random")."""
    ordered = rng.random() < config.flair_probability
    if ordered:
        # drawn only when possible, so that a configuration without it keeps the random stream it had before
        unsuppressed = config.csf_unsuppressed_probability > 0 and rng.random() < config.csf_unsuppressed_probability
        means = flair_means(rng, config.csf_unsuppressed_fraction if unsuppressed else None)
    else:
        means = random_means(rng)
    sds = rng.uniform(*config.sd_range, L.N_CLASSES)
    sds[L.BACKGROUND] = 0.0
    image = (means[labels] + sds[labels] * rng.standard_normal(labels.shape)).astype(np.float32)
    if config.wm_inhomogeneity > 0:
        slow = 1.0 + rng.uniform(0.0, config.wm_inhomogeneity) * np.clip(smooth_noise(labels.shape, rng, 5), -2.0, 2.0)
        wm = labels == L.WHITE_MATTER
        image[wm] *= slow[wm]
    sigma = rng.uniform(*config.partial_volume_voxels)
    image = ndimage.gaussian_filter(image, sigma, mode="constant", truncate=3.0)
    return np.clip(image, 0.0, None).astype(np.float32), ("flair" if ordered else "random")
