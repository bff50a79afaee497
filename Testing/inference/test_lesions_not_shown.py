"""predict_native leaves out of the lesion mask, and out of the motor burden, what the input does not show.

A real tiny SHMN (random weights) preprocesses and reads the MNI152 brain on a clinical-like grid; its lesion
output is whatever its weights give. The same network output is then brought back onto two inputs of one grid:
the brain itself, and the brain with its intensities flattened to one noisy tissue level, where no component
can stand out. On the second every component leaves the mask and is listed, and the model-grid lesions the
motor burden reads lose them too.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from engine_fixtures import make_tiny_model
from shmn.inference.predict import MASK_THRESHOLD, PredictOptions, load_predictor, predict_native
from shmn.measures.lesion_visibility import VISIBLE_MIN_CONTRAST_TO_SPREAD
from shmn.preprocessing.preprocess import preprocess

pytestmark = pytest.mark.xdist_group("predict")


@pytest.fixture(scope="module")
def predicted(anatomy, tmp_path_factory):
    from test_predict import DIRECTIONS, brain_on_grid

    predictor = load_predictor(make_tiny_model(tmp_path_factory.mktemp("not-shown"))[0])
    native = brain_on_grid(anatomy.template, DIRECTIONS["RAS"])
    prep = preprocess(native, predictor.preprocess)
    array = sitk.GetArrayFromImage(native).astype(np.float32)
    flat = np.where(array > 0, 100.0 + 5.0 * np.random.default_rng(0).standard_normal(array.shape), 0.0).astype(np.float32)
    flattened = sitk.GetImageFromArray(flat)
    flattened.CopyInformation(native)
    options = PredictOptions(device="cpu", tta=False)
    return {name: predict_native(image, predictor, options, prep=prep) for name, image in (("brain", native), ("flat", flattened))}


def test_on_a_flat_image_every_component_leaves_the_mask_and_is_listed(predicted):
    network = predicted["flat"].probabilities["pvl"]
    candidates = sitk.GetArrayFromImage(network) >= MASK_THRESHOLD
    assert candidates.any(), "the random-weight network marks some lesion"
    flat = predicted["flat"]
    assert not sitk.GetArrayFromImage(flat.masks["pvl"]).any()
    listed = flat.not_shown.candidates
    assert listed and all(abs(row["contrast_to_spread"]) < VISIBLE_MIN_CONTRAST_TO_SPREAD for row in listed)
    assert np.array_equal(sitk.GetArrayFromImage(flat.not_shown.mask) > 0, candidates)
    # The motor burden reads the model grid: the components behind them are gone there too.
    assert not (flat.burden_lesions >= MASK_THRESHOLD).any()
    assert (flat.result.pvl_probability >= MASK_THRESHOLD).any()


def test_on_the_brain_what_the_image_shows_stays(predicted):
    brain = predicted["brain"]
    shown = sitk.GetArrayFromImage(brain.masks["pvl"]) > 0
    left_out = sitk.GetArrayFromImage(brain.not_shown.mask) > 0
    assert shown.any()
    assert not (shown & left_out).any()
    assert np.array_equal(shown | left_out, sitk.GetArrayFromImage(brain.probabilities["pvl"]) >= MASK_THRESHOLD)
    if not brain.not_shown.candidates:
        assert brain.burden_lesions is brain.result.pvl_probability
