"""How well the ventricles stand out (shmn.measures.ventricle_visibility): read by the real native-boundary step on
constructed thick-slice images, carried into report.json, its warnings and the findings line (the Segmenter's summary and table:
Testing/SHMNSegmenter/test_segmenter_review.py).

Each image: an ellipsoidal ventricle on a 0.8 x 0.8 x 4 mm grid over tissue with grey-white texture (spread about
0.1 of the tissue level) and noise; the "model" gives a slightly smaller smooth mask, as the 2 mm network does."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from shmn.inference.native_boundary import refine_native
from shmn.measures.ventricle_visibility import VISIBLE_MIN_CONTRAST_TO_SPREAD, ventricle_visibility, visibility_warning
from shmn.reporting.report import ModelInfo, build_report, findings

SPACING_ZYX = (4.0, 0.8, 0.8)
SHAPE = (16, 80, 80)


def _ellipsoid(semi_axes_mm: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5) * s - 32.0 for n, s in zip(SHAPE, SPACING_ZYX)], indexing="ij")
    return (z / semi_axes_mm[0]) ** 2 + (y / semi_axes_mm[1]) ** 2 + (x / semi_axes_mm[2]) ** 2 <= 1.0


def _boundary_fields(csf: float, seed: int = 0) -> dict:
    """refine_native's report fields for CSF at ``csf`` times a tissue of level 1."""
    rng = np.random.default_rng(seed)
    ventricle = _ellipsoid((14.0, 18.0, 9.0))
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), (0.5, 2.5, 2.5))
    tissue = 1.0 + 0.1 * texture / texture.std()
    image = np.where(ventricle, csf, tissue) + rng.normal(0, 0.03, SHAPE)
    model = ndimage.gaussian_filter(_ellipsoid((12.8, 16.8, 7.8)).astype(np.float32), (0.3, 1.5, 1.5))
    native = sitk.GetImageFromArray(image.astype(np.float32))
    native.SetSpacing(SPACING_ZYX[::-1])
    maps = {}
    for task, array in (("ventricles", model), ("pvl", np.zeros(SHAPE, np.float32))):
        maps[task] = sitk.GetImageFromArray(array)
        maps[task].CopyInformation(native)
    return refine_native(native, maps, {"ventricles": 0.5, "pvl": 0.5})[1]


@pytest.mark.parametrize("csf, visible, sign", [(0.2, True, 1), (0.95, False, 1), (1.3, False, -1)],
                         ids=["nulled-flair", "nearly-isointense", "csf-brighter-than-tissue"])
def test_the_boundary_step_reads_how_far_the_csf_stands_out(csf, visible, sign):
    visibility = ventricle_visibility(_boundary_fields(csf))
    figure = visibility["contrast_to_spread"]
    assert np.sign(figure) == sign  # positive where the CSF is the darker, as FLAIR nulls it
    assert visibility["visible"] is visible and (figure >= VISIBLE_MIN_CONTRAST_TO_SPREAD) is visible
    warning = visibility_warning(visibility)
    if visible:
        assert figure > 5 and warning is None
    else:
        assert "no clear ventricle boundary" in warning and ("brighter than" if sign < 0 else "barely darker than") in warning


def _report(ventricle_volume_ml, boundary: dict | None) -> dict:
    model = ModelInfo(name="m", version="1", sha256="ab", file="m.safetensors", registered=False, tasks=["pvl", "ventricles"],
                      grid={}, training_data="synthetic phantoms", intended_use="research", metrics={})
    return build_report(case="c", input_path="c.nii.gz", input_geometry={}, macs_probability=None, pvl_volume_ml=None, lesions=[],
                        localization_centres=None, ventricle_volume_ml=ventricle_volume_ml, model=model, preprocessing={},
                        inference={"boundary": boundary} if boundary is not None else {}, thresholds={}, outputs={},
                        timings_s={}, warnings=["an earlier warning"])


def test_report_json_warns_and_the_findings_say_check_where_the_ventricles_do_not_stand_out():
    unclear = _report(14.2, _boundary_fields(0.95))
    assert unclear["ventricles"]["visibility"]["visible"] is False
    assert unclear["warnings"][0] == "an earlier warning" and "no clear ventricle boundary" in unclear["warnings"][1]
    assert "ventricles 14.2 mL (boundary not visible: check)" in findings(unclear)
    clear = _report(14.2, _boundary_fields(0.2))
    assert clear["ventricles"]["visibility"]["visible"] is True and clear["warnings"] == ["an earlier warning"]
    assert "ventricles 14.2 mL" in findings(clear) and not any("check" in part for part in findings(clear))


def test_without_the_boundary_step_or_the_ventricle_task_nothing_is_claimed():
    model_boundary = _report(14.2, {"method": "the model's, resampled (--boundary model)"})
    assert model_boundary["ventricles"]["visibility"]["visible"] is None and model_boundary["warnings"] == ["an earlier warning"]
    assert _report(None, _boundary_fields(0.95))["ventricles"]["visibility"] is None



def test_the_batch_summary_row_says_whether_the_boundary_was_visible():
    from shmn.reporting.report import SUMMARY_COLUMNS, summary_row

    def row(report: dict) -> dict:
        return summary_row({**report, "macs": {**report["macs"], "group": None}}, 1.0)

    assert "ventricle_boundary_visible" in SUMMARY_COLUMNS
    assert row(_report(14.2, _boundary_fields(0.95)))["ventricle_boundary_visible"] == "False"
    assert row(_report(14.2, _boundary_fields(0.2)))["ventricle_boundary_visible"] == "True"
    assert row(_report(None, None))["ventricle_boundary_visible"] == ""
