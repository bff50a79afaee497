"""FLAIR-like appearance: tissue contrast in the reference space, scanner effects on the acquired grid.

The T1 template's own intensity carries the real partial volume and gyral texture (no extra texture
field is painted on: it would cost a full-volume smoothing per subject for little); a non-monotonic
mapping turns it into FLAIR contrast: CSF (low T1) dark, grey matter (middle) brighter than white
matter (high). Ventricles that grew are blended toward CSF with sub-voxel edges, lesions toward a
patchy hyperintensity. The scanner adds a smooth multiplicative bias field and Rician noise (the
magnitude of a complex signal with Gaussian noise in both channels), then the value is stored as
int16 like a scanner would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from shmn.synthesis.atlas import ReferenceSpace
from shmn.synthesis.subject import Pathology


@dataclass(frozen=True)
class Contrast:
    """Tissue levels relative to white matter (= 1) and scanner settings for one subject."""

    csf: float
    grey: float
    lesion: float
    bias: float  # peak-to-peak of the log bias field
    noise: float  # Rician sigma relative to white matter
    gain: float  # stored value of white matter

    def as_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def draw_contrast(rng: np.random.Generator) -> Contrast:
    return Contrast(
        csf=rng.uniform(0.08, 0.2), grey=rng.uniform(1.08, 1.22), lesion=rng.uniform(1.65, 2.1),
        bias=rng.uniform(0.1, 0.35), noise=rng.uniform(0.02, 0.045),
        gain=rng.uniform(300.0, 800.0),
    )


def tissue_flair(t1: np.ndarray, contrast: Contrast) -> np.ndarray:
    """FLAIR level from the template's T1 level (both relative to WM)."""
    g, c = contrast.grey, contrast.csf
    t1_points = [0.0, 0.45, 0.58, 0.72, 0.82, 0.92, 1.0, 2.0]
    flair_points = [c, c, 0.55 * g, g, g, (g + 1.0) / 2 - 0.02, 1.0, 1.0]
    return np.interp(t1, t1_points, flair_points).astype(np.float32)


def render_flair(rng: np.random.Generator, ref: ReferenceSpace, pathology: Pathology, contrast: Contrast) -> np.ndarray:
    """The subject's noiseless FLAIR on the reference grid (WM ~ 1, 0 outside the brain)."""
    flair = tissue_flair(ref.t1, contrast)
    v = pathology.ventricle_fraction
    flair = flair * (1.0 - v) + contrast.csf * v
    box = pathology.lesion_box
    # Half a voxel of blur gives lesions the soft edge of real partial volume before acquisition adds more.
    soft = ndimage.gaussian_filter(pathology.lesions[box].astype(np.float32), 0.5)
    lesion_level = contrast.lesion * pathology.lesion_texture
    flair[box] = flair[box] * (1.0 - soft) + lesion_level * soft
    flair[~ref.brain] = 0.0
    return flair


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int], amplitude: float) -> np.ndarray:
    """Smooth multiplicative field: an exponentiated random second-order polynomial across the field of view.

    A polynomial in voxel coordinates is one in scanner coordinates too (they differ by an affine map),
    and broadcasting the axes keeps it cheap on large grids.
    """
    z, y, x = (np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape([-1 if a == i else 1 for a in range(3)])
               for i, n in enumerate(shape))
    terms = (x, y, z, x * y, y * z, x * z, x * x, y * y, z * z)
    log_field = sum(np.float32(rng.normal()) * t for t in terms)
    span = float(log_field.max() - log_field.min()) or 1.0
    log_field = (log_field - np.float32(log_field.mean())) * np.float32(amplitude / span)
    return np.exp(log_field).astype(np.float32)


def scanner_image(rng: np.random.Generator, acquired: np.ndarray, contrast: Contrast) -> np.ndarray:
    """Bias field, Rician noise and scanner scaling applied to an acquired noiseless image -> int16."""
    signal = acquired * bias_field(rng, acquired.shape, contrast.bias)
    sigma = contrast.noise
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    magnitude = np.sqrt(real * real + imaginary * imaginary) * contrast.gain
    return np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
