"""The 1 mm lesion path of `shmn predict`: the 2 mm SHMN's lesion probability refined at 1 mm inside the
periventricular box (the cascade's second stage), the 2 mm probability kept everywhere else.

After the 2 mm forward pass:
1. the input goes onto the refiner's 1 mm box through the case's own transform (linear, anti-aliased
   for 1 mm), N4's log bias field of the 2 mm grid is upsampled and divided out, and the 2 mm case's
   z-score statistics are applied inside the brain (the template brain at 1 mm, within the case's brain);
2. the refiner (MONAI sliding-window inference; by default the whole box is one window: the
   refiner's batch norm makes its output independent of the window) gives a 1 mm lesion probability from that image and, for a cascade, the 2 mm probability
   upsampled linearly to 1 mm;
3. on the input's grid, the 1 mm probability (linear) where the input's voxel lies inside the box, the
   2 mm probability (linear) elsewhere; `shmn predict` thresholds that as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from shmn import devices
from shmn.errors import ShmnError
from shmn.io.anatomy import load_anatomy
from shmn.network.refiner import Refiner
from shmn.preprocessing.preprocess import PreprocessedCase, _antialias, _brain_on_grid
from shmn.preprocessing.roi import RoiBox, coarse_to_roi


@dataclass
class LesionPath:
    """What the lesion path produced: the probability on the input's grid, what ran, and how long it took."""

    probability: sitk.Image
    lesion_grid: str
    seconds: float = 0.0
    roi_probability: np.ndarray | None = None  # the refiner's output in its box (z, y, x), for tests and benchmarks
    voxel_mm: float | None = None  # the edge of the grid the lesion probability was made on; None: the model grid


def describe(refiner: Refiner) -> str:
    return f"1 mm refiner {refiner.name} {refiner.sha256[:12]} inside ROI, 2 mm elsewhere"


def _nearest_on_box(array: np.ndarray, case: PreprocessedCase, box: RoiBox) -> np.ndarray:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
    image.CopyInformation(case.reference)
    out = sitk.Resample(image, box.reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out) > 0


def roi_inputs(native: sitk.Image, case: PreprocessedCase, box: RoiBox) -> tuple[np.ndarray, np.ndarray]:
    """(image, brain) on the box: the input at 1 mm, bias-corrected and normalised as the 2 mm case was."""
    if case.normalisation is None:
        raise ShmnError("1 mm lesion path: this preprocessed case has no normalisation statistics "
                        "(a cached case?); run it without --cache or with the 2 mm path")
    reference = box.reference()
    smoothed = _antialias(sitk.Cast(native, sitk.sitkFloat32), box.grid.spacing_mm)
    image = sitk.GetArrayFromImage(sitk.Resample(smoothed, reference, case.transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat32))
    in_view = np.isfinite(image)
    image = np.where(in_view, image, 0.0).astype(np.float32)
    if case.log_bias_field is not None:
        image = image / np.exp(coarse_to_roi(case.log_bias_field, case.reference, box))
    brain = in_view & _brain_on_grid(load_anatomy().template, reference) & _nearest_on_box(case.brain, case, box)
    mean, std = float(case.normalisation["mean"]), float(case.normalisation["std"])
    return np.where(brain, (image - mean) / std, 0.0).astype(np.float32), brain


def window_of(refiner: Refiner) -> tuple[int, int, int]:
    """The card's "window" (an edge in voxels), else the whole box rounded up to the network's divisor (16)."""
    window = refiner.card.get("window")
    if window:
        return (int(window),) * 3
    return tuple(-(-int(n) // 16) * 16 for n in refiner.box.size_zyx)


def refine_box(refiner: Refiner, image: np.ndarray, prior: np.ndarray | None, window: tuple[int, int, int], overlap: float = 0.25,
               cpu_bf16: bool | None = None) -> np.ndarray:
    """The refiner's lesion probability (z, y, x) on its box, by MONAI sliding windows of ``window`` voxels."""
    from monai.inferers import sliding_window_inference

    channels = [image] + ([prior] if refiner.uses_prior else [])
    if refiner.uses_prior and prior is None:
        raise ShmnError(f"{refiner.path}: this refiner needs the 2 mm lesion probability as its prior")
    x = torch.from_numpy(np.stack(channels).astype(np.float32))[None]
    device = torch.device("cpu")
    mode = devices.precision(device, "auto", cpu_bf16)
    with torch.inference_mode(), devices.autocast(device, mode):
        logits = sliding_window_inference(x, window, sw_batch_size=2, predictor=refiner.network, overlap=overlap, mode="gaussian")
    return torch.sigmoid(logits.float())[0, 0].numpy()


def native_lesion_probability(native: sitk.Image, case: PreprocessedCase, coarse_probability: np.ndarray, refiner: Refiner,
                              coarse_on_native: sitk.Image, cpu_bf16: bool | None = None) -> LesionPath:
    """The combined lesion probability on the input's grid (see the module docstring)."""
    tick = time.perf_counter()
    box = refiner.box
    image, brain = roi_inputs(native, case, box)
    prior = coarse_to_roi(np.where(case.brain, coarse_probability, 0.0), case.reference, box) if refiner.uses_prior else None
    fine = np.where(brain, refine_box(refiner, image, prior, window_of(refiner), cpu_bf16=cpu_bf16), 0.0).astype(np.float32)
    fine_image = sitk.GetImageFromArray(fine)
    fine_image.CopyInformation(box.reference())
    on_native = sitk.Resample(fine_image, native, case.transform.GetInverse(), sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    fine_native = sitk.GetArrayViewFromImage(on_native)
    combined = np.where(np.isfinite(fine_native), fine_native, sitk.GetArrayViewFromImage(coarse_on_native)).astype(np.float32)
    out = sitk.GetImageFromArray(combined)
    out.CopyInformation(native)
    return LesionPath(out, describe(refiner), time.perf_counter() - tick, fine, float(box.grid.spacing_mm))


COARSE_ONLY = "2 mm (SHMN model grid) everywhere"


def lesion_path(native: sitk.Image, case: PreprocessedCase, coarse_probability: np.ndarray | None, refiner: Refiner | None,
                coarse_on_native: sitk.Image, use_1mm: bool | None, model_name: str, cpu_bf16: bool | None = None) -> LesionPath:
    """The lesion path the options ask for: ``use_1mm`` None = the refiner when the model has one, False = 2 mm,
    True = the refiner or an error naming the model."""
    if use_1mm and refiner is None:
        raise ShmnError(f"--lesion-1mm: model {model_name} has no lesion refiner (registry entry 'lesion_refiner')")
    if use_1mm is False or refiner is None or coarse_probability is None:
        return LesionPath(coarse_on_native, COARSE_ONLY)
    if case.normalisation is None and not use_1mm:  # a case cached before the 1 mm path existed (`shmn evaluate --cache`)
        return LesionPath(coarse_on_native, COARSE_ONLY + " (1 mm path off: the cached case lacks its N4 field and z-score)")
    return native_lesion_probability(native, case, coarse_probability, refiner, coarse_on_native, cpu_bf16)
