"""A real predicted batch for the report tests: two small phantom cases through the shipped model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def predicted_batch(tmp_path_factory):
    """OUT folder of `shmn predict` (shipped model, CPU) over two phantom cases and one missing file."""
    from shmn.inference.batch import predict_many
    from shmn.inference.predict import PredictOptions, load_predictor
    from shmn.io.registry import shipped_registry_path
    from shmn.synthesis import CohortConfig, generate_cohort

    root = tmp_path_factory.mktemp("reports")
    generate_cohort(root / "cohort", CohortConfig(seed=5, n_pvl=1, n_macs=1, n_ventricle_labels=0, size="small"), progress=False)
    inputs = sorted((root / "cohort").glob("*/images/*.nii.gz")) + [root / "missing.nii.gz"]
    predictor = load_predictor(None, registries=[shipped_registry_path()])
    out = root / "out"
    outcomes = predict_many(inputs, out, predictor, PredictOptions(device="cpu"), progress=False)
    assert [o.status for o in outcomes] == ["ok", "ok", "failed"]
    return out
