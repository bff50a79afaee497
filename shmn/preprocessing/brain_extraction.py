"""Brain extraction on the input's own grid, before registration: what a hospital FLAIR needs.

Method (chosen by measurement, see README "Brain extraction"): deepbet 1.0.2 (Fisch et al. 2024),
two small 3D U-Nets shipped inside its PyPI wheel: a 128^3 bounding-box net, then a 256^3 mask net
on the brain's box. It was trained on T1w images; on FLAIR-like head phantoms (2D thick slices and
3D, every orientation, children's sizes) its masks follow the brain (benchmarks/bench_heads.py).

Safety: deepbet's networks are TorchScript archives (a pickle inside a zip). They are loaded only
from the installed wheel's own files, and only after their SHA-256 matches the digest the wheel
shipped with (the pins below): a user path is never accepted, nothing is downloaded.

The array deepbet sees is the input in the closest RAS voxel order (as nibabel's
``as_closest_canonical`` gives it); the mask goes back onto the input's own grid by the inverse
permutation and flips, so it is exact on oblique and LAS inputs alike (no interpolation).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.errors import ShmnError

DEEPBET_VERSION = "1.0.2"
# sha256 of the wheel's two networks (from deepbet-1.0.2.dist-info/RECORD, checked before loading).
DEEPBET_WEIGHTS = {
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
}
# A head MRI's brain: children of 2 (about 0.9 L; the smallest phantom, scale 0.75, 0.78 L) to adult
# heads (about 1.8 L), with room either side.
# A mask outside this range is not a brain (noise, a knee, an abdomen, an empty field of view).
BRAIN_ML_RANGE = (500.0, 4000.0)  # upper end generous: deepbet may leak into the neck before it is cut
TEMPLATE_MARGIN_MM = 5.0  # the extracted brain may reach this far beyond the registered template brain
MIN_CONTRAST = 1e-3  # (p99.5 - p0.5) / max |value|: below, the volume is flat (empty field of view)
# Correlation of each voxel with its in-plane neighbour: anatomy is smooth at the voxel scale
# (head phantoms and MRIs: > 0.8), white noise is not (about 0).
MIN_NEIGHBOUR_CORRELATION = 0.3
CHECK_STEP = 4  # the content checks look at every 4th voxel (percentiles) and every 4th slice (correlation)
# deepbet runs its mask network on the brain's box resampled to 256^3 (about 0.7 mm voxels for an
# adult brain): most of its time on a CPU. 192^3 (about 0.9 mm; 42 % of the voxels) keeps the masks
# (brain-mask Dice on the head phantoms, README) at well under half the network's time
# (benchmarks/bench_brain_extraction.py compares the two back to back).
MASK_NETWORK_SHAPE = (192, 192, 192)


@dataclass
class BrainMask:
    mask: sitk.Image  # uint8 on the input's own grid
    volume_ml: float
    method: str
    version: str
    seconds: float
    unconstrained: sitk.Image | None = None  # deepbet's own mask, before constrain_to_template cut it

    def describe(self) -> dict:
        return {"method": self.method, "version": self.version, "volume_ml": round(self.volume_ml, 2)}


class _DeepbetNetworks:
    """The two networks, loaded once per process (thread-safe); ``None`` until first use."""

    lock = threading.Lock()
    networks: object | None = None


def _weights_folder() -> Path:
    try:
        import deepbet.utils as deepbet_utils
    except ImportError:
        raise ShmnError(f"brain extraction needs the Python package deepbet=={DEEPBET_VERSION}, which is not installed; "
                        f"install it with `pip install deepbet=={DEEPBET_VERSION}`") from None
    return Path(deepbet_utils.DATA_PATH) / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_deepbet():
    with _DeepbetNetworks.lock:
        if _DeepbetNetworks.networks is None:
            from importlib.metadata import version

            from deepbet.bet import BrainExtraction

            installed = version("deepbet")
            folder = _weights_folder()
            for name, expected in DEEPBET_WEIGHTS.items():
                path = folder / name
                if not path.is_file() or _sha256(path) != expected:
                    raise ShmnError(f"{path}: not the network shipped with deepbet {DEEPBET_VERSION} (missing or "
                                    f"changed; installed version {installed}); reinstall `pip install deepbet=={DEEPBET_VERSION}`")
            _DeepbetNetworks.networks = BrainExtraction(no_gpu=True, model_path=str(folder / "model.pt"),
                                                        bbox_model_path=str(folder / "bbox_model.pt"))
        return _DeepbetNetworks.networks


def canonical(image: sitk.Image) -> sitk.Image:
    """The same voxels reordered so that i, j, k point (closest) to Right, Anterior, Superior."""
    # SimpleITK's DICOMOrient letters name where each axis comes FROM: "LPI" means i runs toward R.
    return sitk.DICOMOrient(image, "LPI")


def check_is_volume_with_content(image: sitk.Image, source: str) -> None:
    """An empty or flat field of view is refused before any network runs."""
    values = sitk.GetArrayViewFromImage(image)
    finite = values[np.isfinite(values)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    if peak == 0.0:
        raise ShmnError(f"{source}: the image is empty (every voxel 0); expected a head MRI (T2 FLAIR)")
    # Statistics of a whole head need not every voxel (profiled: 2 s of a loaded 2-core CPU on a 3D
    # head); every CHECK_STEP-th voxel (percentiles) or slice (in-plane neighbours) says the same.
    low, high = np.percentile(finite[::CHECK_STEP], (0.5, 99.5))
    if (high - low) / peak < MIN_CONTRAST:
        raise ShmnError(f"{source}: the image is flat (no contrast); expected a head MRI (T2 FLAIR)")
    correlation = neighbour_correlation(np.nan_to_num(np.asarray(values[::CHECK_STEP], dtype=np.float32)))
    if correlation < MIN_NEIGHBOUR_CORRELATION:
        raise ShmnError(f"{source}: this looks like noise, not a head MRI (neighbouring voxels correlate {correlation:.2f}, "
                        f"expected > {MIN_NEIGHBOUR_CORRELATION}); expected a T2 FLAIR of the head")


def neighbour_correlation(values: np.ndarray) -> float:
    """Mean correlation of voxels with their next neighbour along the two in-plane axes (x and y of the array)."""
    out = []
    for axis in (1, 2):
        if values.shape[axis] < 2:
            continue
        a = np.take(values, range(values.shape[axis] - 1), axis=axis).ravel()
        b = np.take(values, range(1, values.shape[axis]), axis=axis).ravel()
        if a.std() > 0 and b.std() > 0:
            out.append(float(np.corrcoef(a, b)[0, 1]))
    return min(out) if out else 0.0


def deepbet_mask(image: sitk.Image, mask_network_shape: tuple[int, int, int] = MASK_NETWORK_SHAPE) -> np.ndarray:
    """deepbet's brain mask, bool (z, y, x) on ``image``'s own grid."""
    import torch

    oriented = canonical(sitk.Cast(image, sitk.sitkFloat32))
    x = np.ascontiguousarray(sitk.GetArrayFromImage(oriented).transpose(2, 1, 0))  # (R, A, S) like nibabel's canonical
    networks = _load_deepbet()
    with torch.inference_mode():
        try:
            probability = networks.run_model(x, shape=tuple(mask_network_shape))
        except (AssertionError, ValueError) as exc:  # no foreground at all for the box network
            raise ShmnError(f"brain extraction found no head in the image ({exc}); expected a head MRI") from None
    mask = probability > 0.5
    if mask.any():
        mask = networks.postprocess(mask)  # largest component, holes filled (deepbet's own post-processing)
    on_canonical = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8))
    on_canonical.CopyInformation(oriented)
    back = sitk.Resample(on_canonical, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(back) > 0


def template_mask(image: sitk.Image, transform: sitk.Transform, template: sitk.Image) -> np.ndarray:
    """The MNI152 template's brain carried onto the input's grid by a registration (MNI -> native)."""
    brain = sitk.Cast(template > 0, sitk.sitkFloat32)
    on_native = sitk.Resample(brain, image, transform.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(on_native) >= 0.5


def constrain_to_template(extracted: BrainMask, transform: sitk.Transform, template: sitk.Image,
                          margin_mm: float = TEMPLATE_MARGIN_MM) -> BrainMask:
    """The extracted brain, cut to within ``margin_mm`` of the registered template brain.

    deepbet, trained on T1w heads, can leak from the brainstem into FLAIR's grey neck muscles or the
    face; the registered template says where a brain can be. Measured on head phantoms (README).
    """
    native = extracted.mask
    placed = template_mask(native, transform, template)
    distance = sitk.SignedMaurerDistanceMap(as_mask_image(placed, native), insideIsPositive=False,
                                            squaredDistance=False, useImageSpacing=True)
    near = sitk.GetArrayFromImage(distance) <= margin_mm
    mask = (sitk.GetArrayViewFromImage(native) > 0) & near
    return BrainMask(as_mask_image(mask, native), mask_volume_ml(mask, native), "deepbet+template",
                     extracted.version, extracted.seconds, unconstrained=native)


def as_mask_image(mask: np.ndarray, image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out


def mask_volume_ml(mask: np.ndarray, image: sitk.Image) -> float:
    return float(mask.sum()) * float(np.prod(image.GetSpacing())) / 1000.0


def check_brain_volume(volume_ml: float, in_view: float, source: str) -> None:
    """Refuse what is not a head MRI: the extracted 'brain' has no plausible size.

    ``in_view``: how much of a whole brain the field of view can hold (1 for a whole-head
    acquisition; less for a partial 2D stack), so a partial brain is not refused as too small.
    """
    low, high = BRAIN_ML_RANGE
    if volume_ml < low * in_view or volume_ml > high:
        raise ShmnError(
            f"{source}: this does not look like a head MRI: brain extraction found {volume_ml:.0f} mL of brain "
            f"(expected {low * in_view:.0f}-{high:.0f} mL); expected a T2 FLAIR of the head")


MIN_COVERAGE_OF_A_HEAD = 0.5  # after registration, the extracted region holds at least this share of the template brain


def check_registered_region(quality: dict, source: str) -> None:
    """Refuse what registration could not fit a brain into: the extracted region holds little of MNI152's brain.

    A head with a failed registration still covers most of the template brain (its extracted brain
    is brain-sized and brain-shaped) and gets the warning instead; a knee or a phantom of something
    else does not.
    """
    coverage = quality.get("brain_coverage", 1.0)
    if not quality.get("ok", True) and coverage < MIN_COVERAGE_OF_A_HEAD:
        raise ShmnError(
            f"{source}: this does not look like a head MRI: after registration the extracted region holds only "
            f"{coverage:.0%} of the MNI152 brain (a head holds > {MIN_COVERAGE_OF_A_HEAD:.0%}); expected a T2 FLAIR of the head")


def field_of_view_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSize()) * np.prod(image.GetSpacing())) / 1000.0


def extract_brain(image: sitk.Image, source: str = "input",
                  mask_network_shape: tuple[int, int, int] = MASK_NETWORK_SHAPE) -> BrainMask:
    """deepbet's mask on the input's grid, refused when it cannot be a brain."""
    import time

    check_is_volume_with_content(image, source)
    tick = time.perf_counter()
    mask = deepbet_mask(image, mask_network_shape)
    # One brain: keep the largest 26-connected part (deepbet keeps its largest 6-connected one).
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count > 1:
        mask = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    seconds = time.perf_counter() - tick
    volume = mask_volume_ml(mask, image)
    # A partial acquisition holds at most its own volume of brain: judge a small mask against that.
    check_brain_volume(volume, min(1.0, field_of_view_ml(image) / 1200.0), source)
    return BrainMask(as_mask_image(mask, image), volume, "deepbet", DEEPBET_VERSION, seconds)
