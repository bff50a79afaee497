"""Whole-head FLAIRs: brain extraction (offline), registration of the extracted brain, refusals.

The heads are phantoms at clinical resolution (1 mm anatomy; tight, whole-head and partial 2D
fields of view) with their reference brain masks. deepbet runs for real, with sockets blocked.
"""

from __future__ import annotations

import dataclasses
import json
import socket

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.cli import main
from shmn.errors import ShmnError
from shmn.io.anatomy import load_anatomy
from shmn.preprocessing.brain_extraction import (
    DEEPBET_VERSION,
    check_is_volume_with_content,
    neighbour_correlation,
)
from shmn.preprocessing.preprocess import GRIDS, PreprocessConfig, preprocess
from shmn.reporting.report import _registration
from shmn.synthesis.acquisition import SIZES
from shmn.synthesis.atlas import build_reference
from shmn.synthesis.case import DATASET_CODES, CaseOptions, draw_head_plan, make_case
from shmn.synthesis.head import build_head_space

SEED = 41  # not the benchmark's seed
KINDS = ("head", "partial", "brain")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image) > 0


@pytest.fixture(scope="module")
def head_cases(anatomy):
    """One head phantom per field of view (whole head, partial 2D stack, tight box), child-sized."""
    ref = build_reference(anatomy, 1)
    ref = dataclasses.replace(ref, head=build_head_space(ref))
    first = {}
    for index in range(60):  # the field of view is the first draw of the case's head stream: cheap to look up
        kind = draw_head_plan(np.random.default_rng([SEED, DATASET_CODES["pvl"], index, 1])).field_of_view
        first.setdefault(kind, index)
        if len(first) == len(KINDS):
            break
    options = CaseOptions(heads=True, scale_range=(0.75, 1.05))
    return {kind: make_case(ref, SIZES["paper"], SEED, "pvl", index, f"head_{kind}", options) for kind, index in first.items()}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may download."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_head_phantoms_register_without_warning_and_the_brain_mask_follows_the_brain(head_cases, no_network, kind):
    case = head_cases[kind]
    assert case.stats["head"]["field_of_view"] == kind
    prep = preprocess(case.image, PreprocessConfig(grid=GRIDS["tiny"]), source=case.id)
    quality = prep.quality
    assert quality["ok"], quality["warning"]
    assert quality["warning"] is None or "registration" not in quality["warning"]
    reference = array(case.brain)
    assert dice(array(prep.brain_native.mask), reference) >= 0.9
    assert dice(array(prep.brain_native.unconstrained), reference) >= 0.85
    assert prep.params["brain_extraction"]["method"] == "deepbet+template"
    assert prep.params["brain_extraction"]["version"] == DEEPBET_VERSION
    # The child's size comes out of the registration: the phantom's scale against MNI152.
    assert quality["scale"] == pytest.approx(float(np.cbrt(np.prod(case.stats["scale"]))), abs=0.08)


@pytest.mark.slow
def test_no_register_uses_the_extracted_brain(no_network):
    """An input already in MNI space (the template itself): no registration, the brain is deepbet's."""
    template = load_anatomy().template
    prep = preprocess(template, PreprocessConfig(grid=GRIDS["tiny"], register=False), source="template")
    assert prep.quality["registered"] is False and prep.quality["ok"]
    reference = sitk.GetArrayFromImage(template) > 0
    assert dice(array(prep.brain_native.mask), reference) >= 0.9
    assert prep.brain_native.method == "deepbet"  # not cut by a template placement it did not compute
    assert prep.brain.sum() > 0.8 * prep.template_brain.sum()


def _write(path, array, spacing):
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _knee(rng) -> np.ndarray:
    _, y, x = np.mgrid[:100, :150, :150]
    knee = np.where((x - 75) ** 2 + (y - 75) ** 2 <= 55 ** 2, 250.0, 0.0)  # soft tissue around ...
    knee[(x - 75) ** 2 + (y - 70) ** 2 <= 25 ** 2] = 500.0  # ... a bright marrow-filled bone
    return np.abs(knee + rng.normal(0, 15, knee.shape))


@pytest.mark.parametrize("what, message", [
    ("noise", "looks like noise"),
    ("empty", "empty"),
    ("knee", "does not look like a head MRI"),
])
def test_what_is_not_a_head_is_refused_with_one_line_and_exit_2(tmp_path, capsys, no_network, what, message):
    rng = np.random.default_rng(0)
    volumes = {
        "noise": (np.abs(rng.normal(0, 100, (80, 128, 128))), (1.5, 1.5, 2.0)),
        "empty": (np.zeros((40, 64, 64)), (1.0, 1.0, 1.0)),
        "knee": (_knee(rng), (0.8, 0.8, 1.0)),
    }
    path = _write(tmp_path / f"{what}.nii.gz", *volumes[what])
    assert main(["-q", "predict", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shmn: error:") and message in err[0] and what in err[0]
    assert not (tmp_path / "out" / what).exists()


def test_anatomy_is_smooth_and_noise_is_not(head_cases):
    image = sitk.GetArrayFromImage(head_cases["head"].image).astype(np.float32)
    assert neighbour_correlation(image) > 0.8
    noise = np.random.default_rng(1).normal(0, 1, image.shape).astype(np.float32)
    assert abs(neighbour_correlation(noise)) < 0.05
    check_is_volume_with_content(head_cases["head"].image, "head")  # no error
    with pytest.raises(ShmnError, match="noise"):
        check_is_volume_with_content(sitk.GetImageFromArray(np.abs(noise)), "noise.nii.gz")


def test_weights_are_checked_against_the_wheel_before_loading(monkeypatch, tmp_path):
    """A changed network file (e.g. someone's pickle put in its place) is refused, never loaded."""
    import deepbet.utils

    from shmn.preprocessing import brain_extraction

    fake = tmp_path / "models"
    fake.mkdir()
    for name in brain_extraction.DEEPBET_WEIGHTS:
        (fake / name).write_bytes(b"not the shipped network")
    monkeypatch.setattr(deepbet.utils, "DATA_PATH", str(tmp_path))
    monkeypatch.setattr(brain_extraction._DeepbetNetworks, "networks", None)
    with pytest.raises(ShmnError, match="not the network shipped with deepbet"):
        brain_extraction._load_deepbet()


@pytest.mark.slow
def test_predict_on_a_head_writes_the_brain_and_reports_it(head_cases, tmp_path, no_network):
    case = head_cases["head"]
    path = tmp_path / "head.nii.gz"
    sitk.WriteImage(case.image, str(path))
    assert main(["-q", "predict", str(path), "-o", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "head"
    report = json.loads((folder / "report.json").read_text())
    brain = sitk.ReadImage(str(folder / "brain.nii.gz"))
    assert brain.GetSize() == case.image.GetSize() and np.allclose(brain.GetDirection(), case.image.GetDirection())
    assert dice(array(brain), array(case.brain)) >= 0.9
    assert report["brain"]["volume_ml"] == pytest.approx(case.stats["brain_volume_ml"], rel=0.1)
    assert report["brain"]["extraction"] == {"method": "deepbet+template", "version": DEEPBET_VERSION,
                                             "seconds": report["brain"]["extraction"]["seconds"]}
    # The whole head is in view: the intracranial volume is estimated, near the phantom's own.
    assert report["brain"]["intracranial_volume_ml"] == pytest.approx(case.stats["head"]["intracranial_volume_ml"], rel=0.15)
    assert report["registration"]["ok"] is True and report["warnings"] == []
    assert report["outputs"]["brain"] == "brain.nii.gz"
    assert (folder / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_registration_check_is_reported_never_silent():
    quality = {"ok": False, "warning": "registration to MNI152 looks failed: ...", "nmi": 1.01, "registered": True}
    assert _registration(quality) == {"ok": False, "warning": quality["warning"], "nmi": 1.01, "registered": True}
    assert _registration({})["ok"] is False  # no figures: not ok
