"""Test-time mirroring (`shmn predict --tta`, `shmn evaluate --tta`): the plain pass and the left-right
mirrored pass, averaged, and how much the PVL probability changes between them.

The network is trained with left-right flips only (shmn.training.data.augmentation; the model grid is
MNI-aligned, x the last axis), so only that mirror is a fair question: the image is flipped, run once
more, and its outputs flipped back. The segmentation and lesion-centre maps are the mean over the passes
(nnU-Net's test-time mirroring); the MACS output stays the plain pass's, since its calibration was fitted
on single-pass outputs. The per-voxel standard deviation of the PVL probability over the passes is the
disagreement map; per lesion it feeds shmn.measures.lesion_uncertainty.
Cost: one more forward pass per flip axis (the README states it in seconds per case).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from shmn.inference.engine import InferenceOptions, InferenceResult, run_inference

FLIP_AXES = (2,)  # model-grid axes (z, y, x) to mirror: left-right only, as in training
AVERAGED = ("pvl_probability", "ventricle_probability", "localization")  # dense outputs averaged over the passes
# What report.json's inference.test_time_mirroring says, with and without the mirrored pass.
MIRRORING_NOTE = {True: "--tta: the plain and the left-right mirrored pass averaged (segmentations, lesion centres); MACS from "
                        "the plain pass", False: "off (one pass)"}


def mirrored_inference(network, image_zyx: np.ndarray, options: InferenceOptions,
                       axes: tuple = FLIP_AXES) -> tuple[InferenceResult, np.ndarray | None, float]:
    """(the plain pass with its dense outputs averaged over it and each mirrored pass, the per-voxel standard
    deviation of the PVL probability over the passes (None: the model has no lesion output), seconds of the
    mirrored passes). The result's ``seconds`` stay the plain pass's."""
    plain = run_inference(network, image_zyx, options)
    tick = time.perf_counter()
    passes = {name: [getattr(plain, name)] for name in AVERAGED if getattr(plain, name) is not None}
    warnings = list(plain.warnings)
    for axis in axes:
        mirrored = run_inference(network, np.ascontiguousarray(np.flip(image_zyx, axis)), options)
        warnings += [w for w in mirrored.warnings if w not in warnings]
        for name, values in passes.items():
            values.append(np.flip(getattr(mirrored, name), axis))
    averaged = {name: np.mean(np.stack(values), axis=0).astype(np.float32) for name, values in passes.items()}
    spread = np.std(np.stack(passes["pvl_probability"]), axis=0).astype(np.float32) if "pvl_probability" in passes else None
    return dataclasses.replace(plain, warnings=warnings, **averaged), spread, time.perf_counter() - tick


def model_grid_passes(network, image_zyx: np.ndarray, options: InferenceOptions,
                      mirrored: bool) -> tuple[InferenceResult, np.ndarray | None, float]:
    """The network on the model grid, with the mirrored pass averaged in (``mirrored_inference``) or alone:
    (result, PVL spread between the passes or None, seconds of the mirrored pass, 0 without it)."""
    if mirrored:
        return mirrored_inference(network, image_zyx, options)
    return run_inference(network, image_zyx, options), None, 0.0
