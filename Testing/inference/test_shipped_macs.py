"""The shipped default model's MACS probability discriminates (issue 13, item 2): its probability for heavily
lesioned subjects lies above its probability for lesion-free ones.

Two estimates, two tests. The network's classifier (a known failure, strict xfail) on fresh domain-randomised
samples (seeds no training run used) at the model's grid, seen as `shmn predict` sees a preprocessed case. The
report's primary estimate (the motor burden, ``macs_primary``) through the whole `shmn predict` on children of
the out-of-distribution generator (benchmarks/ood_cohort: another anatomy, contrast model, lesion model and
clinical grids, whole heads), the phantoms nobody trained on."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.inference.calibration import calibrate_macs, calibration_from_card
from shmn.inference.engine import InferenceOptions, run_inference
from shmn.inference.predict import PredictOptions, load_predictor, predict_case
from shmn.measures.burden_macs import MACS_PRIMARY
from shmn.preprocessing.preprocess import GridSpec
from shmn.synthesis.randomised.dataset import sample_seed
from shmn.synthesis.randomised.pathology import PathologyConfig
from shmn.synthesis.randomised.sampler import SynthesisConfig, synthesise


def _probabilities(predictor, grid: GridSpec, severity_weights: tuple[float, ...], seeds: range) -> tuple[list[float], list[float]]:
    config = replace(SynthesisConfig(anatomies=("mni152",)), pathology=PathologyConfig(severity_weights=severity_weights))
    calibration = calibration_from_card(predictor.card, predictor.info.file)
    probabilities, burdens = [], []
    for seed in seeds:
        sample = synthesise(sample_seed(seed, 3000, 0), grid, config)
        result = run_inference(predictor.network, sample.image, InferenceOptions(device="cpu"))
        probabilities.append(calibrate_macs(result.macs_probability, result.macs_logit, calibration)[0])
        burdens.append(sample.record["motor_ml"])
    return probabilities, burdens


# Known failure, kept strict so that it announces the day it passes. Measured (benchmarks/macs_vs_burden.py
# --n 24): the shipped classifier's probability spans 0.234-0.282 (v1) and 0.540-0.549 (v2, before Platt
# scaling) over fresh randomised subjects, Spearman with motor burden -0.09 / -0.15. A logistic probe on the
# v2 encoder's pooled bottleneck (120 subjects, 5-fold) ranks MACS at AUC 0.47 (average pool) / 0.60 (max):
# the shared encoder does not carry lesion burden to its bottleneck, so no head on it can discriminate.
# v2.4 (lesion pooling, head trained on 800 subjects; not shipped, README) ranks the OOD cohort at AUC 0.903
# yet fails here too: heavy 0.444 / 0.209 / 0.224 against lesion-free 0.299 / 0.150 / 0.158, because the
# segmentation it reads finds little of the burden in fully random contrasts and 4.7 mL of false lesion in
# the first lesion-free subject.
# v2.5 (the default since stop 22): heavy 0.658 / 0.834 / 0.957 against lesion-free 0.477 / 0.942 / 0.081: the
# mean gap (0.32) passes, the ordering does not (one lesion-free subject at 0.942).
# v2.7's frozen encoder with the lesion-pooling head (stop 30; train_macs_head.py, 800 subjects, held-out AUC 0.751;
# not shipped, README): heavy 0.530 / 0.013 / 0.010 against lesion-free 0.085 / 0.026 / 0.019.
@pytest.mark.xfail(strict=True, reason="the network's MACS head does not discriminate on randomised subjects (issue 13 item 2 open); "
                                       "the motor-burden estimate is the primary MACS estimate")
def test_macs_probability_of_heavily_lesioned_phantoms_is_above_lesion_free_ones():
    predictor = load_predictor(None)
    grid = GridSpec(predictor.info.grid["spacing_mm"], tuple(predictor.info.grid["size"]))
    free, free_burden = _probabilities(predictor, grid, (1.0, 0.0, 0.0, 0.0), range(3))
    heavy, heavy_burden = _probabilities(predictor, grid, (0.0, 0.0, 0.0, 1.0), range(3))
    assert max(free_burden) == 0.0 and min(heavy_burden) > 1.0, (free_burden, heavy_burden)
    assert min(heavy) > max(free), (free, heavy)
    assert np.mean(heavy) - np.mean(free) > 0.15, (free, heavy)


OOD_FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "ood_cohort"
# OOD cohort seed 0 (the one the README and the model card score): its first three children without lesions and its
# first three with a severe burden, in cohort order, by the generator's own record (not by any model's output).
OOD_SEED0_LESION_FREE = (0, 16, 19)
OOD_SEED0_SEVERE = (1, 10, 11)


def _primary_macs_of_ood_children(indices: tuple[int, ...], severity: str, folder: Path, predictor, template, ood_phantom) -> list[float]:
    probabilities = []
    for index in indices:
        case = ood_phantom.make_case(template, int(np.random.SeedSequence([0, index]).generate_state(1)[0]))
        assert case["record"]["severity"] == severity, (index, case["record"])
        path = folder / f"ood{index:03d}.nii.gz"
        sitk.WriteImage(case["image"], str(path), True)
        predict_case(path, folder / "out", predictor, PredictOptions(device="cpu"))
        report = json.loads((folder / "out" / path.name.split(".")[0] / "report.json").read_text(encoding="utf-8"))
        assert report["macs_primary"] == MACS_PRIMARY == "burden", report["macs_primary"]
        probabilities.append(report["macs_from_burden"]["probability_severe"])
    return probabilities


@pytest.mark.slow
def test_primary_macs_probability_of_severely_lesioned_ood_children_is_above_lesion_free_ones(tmp_path):
    """Measured with v2.7 (`shmn evaluate` on the seed-0 cohort): lesion-free 0.052 / 0.053 / 0.052, severe
    0.408 / 0.669 / 0.653; the network head on the same children 0.094 / 0.220 / 0.101 against 0.156 / 0.369 / 0.238."""
    sys.path.insert(0, str(OOD_FOLDER))
    try:
        import ood_phantom
    finally:
        sys.path.remove(str(OOD_FOLDER))
    template = ood_phantom.load_template()
    predictor = load_predictor(None)
    free = _primary_macs_of_ood_children(OOD_SEED0_LESION_FREE, "none", tmp_path, predictor, template, ood_phantom)
    severe = _primary_macs_of_ood_children(OOD_SEED0_SEVERE, "severe", tmp_path, predictor, template, ood_phantom)
    assert min(severe) > max(free), (free, severe)
    assert np.mean(severe) - np.mean(free) > 0.15, (free, severe)
