"""Registration of an extracted brain: the brain-mask check and the refinement on the cut brain.

Real parts throughout: head phantoms at clinical resolution, deepbet run for real, SimpleITK's
registration. The reference placement of each head is the registration of its brain-only twin (the
same acquisition without the head), which passes the check with the phantom's own brain mask.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.io.anatomy import load_anatomy
from shmn.preprocessing.brain_extraction import extract_brain
from shmn.preprocessing.brain_registration import register_extracted_brain
from shmn.preprocessing.registration import (
    RegistrationConfig,
    block_average,
    judge,
    register_to_template,
    template_pyramid_inputs,
)
from shmn.synthesis.acquisition import SIZES
from shmn.synthesis.atlas import build_reference
from shmn.synthesis.case import DATASET_CODES, CaseOptions, draw_head_plan, make_case
from shmn.synthesis.head import build_head_space

pytestmark = pytest.mark.slow
CONFIG = RegistrationConfig()


@pytest.fixture(scope="module")
def template():
    return load_anatomy().template


@pytest.fixture(scope="module")
def reference_space(anatomy):
    ref = build_reference(anatomy, 1)
    return dataclasses.replace(ref, head=build_head_space(ref))


def _head(reference_space, seed: int, index: int):
    return make_case(reference_space, SIZES["paper"], seed, "pvl", index, f"head_{index:03d}",
                     CaseOptions(heads=True, scale_range=(0.75, 1.05), twin=True))


def _template_points(template: sitk.Image, step: int = 8) -> np.ndarray:
    """Physical points on a coarse lattice inside the template brain."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(template)[::step, ::step, ::step] > 0)[:, ::-1] * step
    return np.array([template.TransformIndexToPhysicalPoint([int(v) for v in index]) for index in indices])


def _displacement_mm(a: sitk.Transform, b: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.array([a.TransformPoint(p) for p in points]) - np.array([b.TransformPoint(p) for p in points]), axis=1)


def _quality(transform: sitk.Transform, image: sitk.Image, brain: sitk.Image, template: sitk.Image) -> dict:
    fixed, mask = template_pyramid_inputs(template, CONFIG.spacing_mm)
    moving = block_average(sitk.Mask(sitk.Cast(image, sitk.sitkFloat32), brain), CONFIG.spacing_mm)
    return judge(transform, fixed, mask, moving, CONFIG, None, brain_mask=brain)


def _shifted(transform: sitk.Transform, shift_mm, scale: float = 1.0) -> sitk.AffineTransform:
    wrong = sitk.AffineTransform(transform)
    wrong.SetMatrix((np.array(wrong.GetMatrix()).reshape(3, 3) * scale).ravel().tolist())
    wrong.SetTranslation((np.array(wrong.GetTranslation()) + np.array(shift_mm, dtype=float)).tolist())
    return wrong


@pytest.fixture(scope="module")
def clean_head(reference_space, template):
    """The first whole-head phantom of seed 41 (the neck in view) and its twin's registration."""
    index = next(i for i in range(60) if draw_head_plan(np.random.default_rng([41, DATASET_CODES["pvl"], i, 1])).field_of_view == "head")
    case = _head(reference_space, 41, index)
    twin = register_to_template(sitk.Cast(case.brain_only_twin, sitk.sitkFloat32), template, CONFIG, brain_mask=case.brain)
    return case, twin


def test_the_brain_mask_check_passes_the_right_placement_and_flags_wrong_ones(clean_head, template):
    case, twin = clean_head
    right = _quality(twin.transform, case.image, case.brain, template)
    assert right["ok"], right["warning"]
    assert right["brain_mask_dice"] >= 0.95
    for shift, scale in (((8.0, 0.0, 0.0), 1.0), ((0.0, 0.0, 0.0), 1.12), ((0.0, -10.0, 0.0), 1.0)):
        wrong = _quality(_shifted(twin.transform, shift, scale), case.image, case.brain, template)
        assert not wrong["ok"], (shift, scale, wrong)
        assert wrong["brain_mask_dice"] < CONFIG.min_brain_mask_dice
        assert "overlap only" in wrong["warning"] and "the registered template brain" in wrong["warning"]


def test_the_benchmark_outlier_registers_within_tolerance_or_is_flagged(reference_space, template):
    """head_016 of seed 2029 (3D LPS whole head, child scale 0.80): deepbet leaks (brain Dice 0.86), and
    its extracted brain registered 10 mm off before the refinement. Now: within 2 mm of its twin, or flagged."""
    case = _head(reference_space, 2029, 16)
    twin = register_to_template(sitk.Cast(case.brain_only_twin, sitk.sitkFloat32), template, CONFIG, brain_mask=case.brain)
    extracted = extract_brain(sitk.Cast(case.image, sitk.sitkFloat32), case.id)
    points = _template_points(template)
    # Before the refinement: the extracted brain, leak included, registered once: pulled off.
    once = register_to_template(sitk.Mask(sitk.Cast(case.image, sitk.sitkFloat32), extracted.mask), template,
                                dataclasses.replace(CONFIG, retry_rotations=False), brain_mask=extracted.mask)
    once_moved = _displacement_mm(once.transform, twin.transform, points)
    result = register_extracted_brain(case.image, extracted, template, CONFIG)
    moved = _displacement_mm(result.transform, twin.transform, points)
    assert "cut brain pass" in result.start
    assert np.median(once_moved) > np.median(moved) + 1.0
    assert (np.median(moved) <= 1.0 and moved.max() <= 2.5) or not result.quality["ok"], (np.median(moved), result.quality)
    assert result.quality["ok"], result.quality["warning"]  # and, measured, it is the former


def test_a_clean_extraction_is_registered_once(clean_head, template, monkeypatch):
    """Seed 41's whole head: deepbet's mask loses only a thin rim to the cut (< refine_min_removed), so no
    second registration is paid for (2-4 s of `shmn predict`), and the one done lands where the twin's does."""
    import shmn.preprocessing.brain_registration as brain_registration

    case, twin = clean_head
    extracted = extract_brain(sitk.Cast(case.image, sitk.sitkFloat32), case.id)
    calls = []
    monkeypatch.setattr(brain_registration, "register_to_template",
                        lambda *args, **kwargs: calls.append(1) or register_to_template(*args, **kwargs))
    result = register_extracted_brain(case.image, extracted, template, CONFIG)
    assert len(calls) == 1 and result.start == "header", (len(calls), result.start)
    assert result.quality["ok"], result.quality["warning"]
    assert np.median(_displacement_mm(result.transform, twin.transform, _template_points(template))) <= 1.0
