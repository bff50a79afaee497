"""Test-time mirror flips (`shmn predict --tta`): how much the PVL probability changes under a flip.

The network is trained with left-right flips only (shmn.training.data.augmentation; the model grid is
MNI-aligned, x the last axis), so only that mirror is a fair question: the image is flipped, run once
more, and its PVL probability flipped back. The per-voxel standard deviation over the passes (the
plain one and each flip) is the disagreement map; per lesion it feeds shmn.measures.lesion_uncertainty.
Cost: one more forward pass per flip axis (the README states it in seconds per case).
"""

from __future__ import annotations

import time

import numpy as np

from shmn.inference.engine import InferenceOptions, run_inference

FLIP_AXES = (2,)  # model-grid axes (z, y, x) to mirror: left-right only, as in training


def flip_disagreement(network, image_zyx: np.ndarray, plain_probability: np.ndarray, options: InferenceOptions,
                      axes: tuple = FLIP_AXES) -> tuple[np.ndarray, float]:
    """(per-voxel standard deviation of the PVL probability over the plain and flipped passes, seconds)."""
    tick = time.perf_counter()
    passes = [np.asarray(plain_probability, dtype=np.float32)]
    for axis in axes:
        flipped = run_inference(network, np.ascontiguousarray(np.flip(image_zyx, axis)), options)
        passes.append(np.flip(flipped.pvl_probability, axis))
    spread = np.std(np.stack(passes), axis=0).astype(np.float32)
    return spread, time.perf_counter() - tick


def native_flip_disagreement(prediction, network, native, options: InferenceOptions):
    """predict_native's prediction -> (the flip disagreement map on the input's grid, seconds, mapping included)."""
    from shmn.inference.masks import native_probability

    tick = time.perf_counter()
    spread, _ = flip_disagreement(network, prediction.prep.image, prediction.result.pvl_probability, options)
    return native_probability(spread, prediction.prep, native), time.perf_counter() - tick
