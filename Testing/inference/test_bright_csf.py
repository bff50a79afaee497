"""`shmn predict` with the shipped default on a child whose FLAIR does not null the CSF: the lesions at the ventricle
wall are flagged for review with the reason, and report.json says why (shmn.measures.lesion_uncertainty).

The child is one of the out-of-distribution generator's (benchmarks/ood_cohort), cohort seed 37, ood020: its
inversion time leaves the CSF brighter than the tissue (contrast -8.2 x the tissue's spread with v2.7), and the
network reads the ventricle wall there as two lesions of 4-5 mL, only one of them a lesion in the reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from shmn.inference.predict import PredictOptions, load_predictor, predict_case
from shmn.measures.lesions import lesion_components
from shmn.measures.ventricle_visibility import NEXT_TO_BRIGHT_CSF

OOD_FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "ood_cohort"


@pytest.mark.slow
def test_lesions_next_to_bright_csf_are_flagged_and_the_report_says_why(tmp_path):
    sys.path.insert(0, str(OOD_FOLDER))
    try:
        import ood_phantom
    finally:
        sys.path.remove(str(OOD_FOLDER))
    case = ood_phantom.make_case(ood_phantom.load_template(), int(np.random.SeedSequence([37, 20]).generate_state(1)[0]))
    path = tmp_path / "ood020.nii.gz"
    sitk.WriteImage(case["image"], str(path), True)
    predict_case(path, tmp_path / "out", load_predictor(None), PredictOptions(device="cpu"))
    folder = tmp_path / "out" / "ood020"
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["ventricles"]["visibility"]["contrast_to_spread"] < 0  # the CSF is brighter than the tissue
    lesions = report["pvl"]["lesions"]
    # Which lesions touch the ventricle mask (a voxel in or next to it), read from the written masks.
    pvl = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pvl.nii.gz")))
    near = ndimage.binary_dilation(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "ventricles.nii.gz"))) > 0, np.ones((3, 3, 3), bool))
    labels, n = lesion_components(pvl)
    touching = sorted((int((labels == label).sum()), bool((near & (labels == label)).any())) for label in range(1, n + 1))
    assert n == len(lesions) and any(flag for _, flag in touching)
    for lesion in lesions:
        expected = dict(touching)[lesion["voxels"]]
        assert (NEXT_TO_BRIGHT_CSF in lesion.get("review_reason", "")) is expected, lesion
        assert lesion["review"] or not expected
    assert any(NEXT_TO_BRIGHT_CSF in warning and "lesion(s) touch the ventricles" in warning for warning in report["warnings"])
