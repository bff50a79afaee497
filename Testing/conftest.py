"""Shared fixtures. Tests use small volumes and real files; nothing here fakes MRML or the engine."""

from __future__ import annotations

import os

# Two pytest workers on a 2-core machine: one thread each, or they fight for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def anatomy():
    from shmn.io.anatomy import load_anatomy

    return load_anatomy()


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A tiny phantom cohort (size 'small'): the two datasets' manifests under one folder."""
    from shmn.synthesis import CohortConfig, generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "cohort"
    generate_cohort(root, CohortConfig(seed=7, n_pvl=6, n_macs=9, n_ventricle_labels=3, size="small", heads=False), progress=False)
    return root


@pytest.fixture(scope="session")
def paper_cohort(tmp_path_factory):
    """Three phantom cases at clinical resolution (1-5 mm acquisitions), what the shipped model is for.

    Seed 11 was never used to train the shipped model (it was trained on seed 0).
    """
    from shmn.synthesis import CohortConfig, generate_cohort

    root = tmp_path_factory.mktemp("paper_cohort") / "cohort"
    generate_cohort(root, CohortConfig(seed=11, n_pvl=2, n_macs=1, n_ventricle_labels=0, size="paper", heads=False), progress=False)
    return root


# `make test-fast` runs `-m "not slow"`: the engine's unit tests. Besides the tests marked slow by
# hand, these are slow by what they are, so new tests of these kinds join the full tier by themselves:
# anything built on a phantom cohort, and the modules that run whole jobs (predict end to end on the
# shipped model, registration of clinical-size volumes, brain extraction of whole heads, cohort
# generation, multi-process training, the ablation benchmark, killed and concurrent batches, the report
# pages in a browser, active-learning ranking). The Slicer modules' tests are left out by folder (the
# Makefile's --ignore).
END_TO_END_MODULES = (
    "inference/test_predict.py",
    "inference/test_suggest.py",
    "battery/test_battery_outputs.py",
    "battery/test_battery_training.py",
    "preprocessing/test_brain_extraction.py",
    "reporting/test_browser.py",
    "reporting/test_case_report.py",
    "synthesis/test_ood_cohort.py",
    "preprocessing/test_preprocess.py",
    "synthesis/test_phantom.py",
    "training/test_ddp.py",
    "training/test_benchmark.py",
)
COHORT_FIXTURES = ("small_cohort", "paper_cohort")


def pytest_collection_modifyitems(config, items):
    testing = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        module = os.path.relpath(str(item.path), testing).replace(os.sep, "/")
        if module in END_TO_END_MODULES or any(name in COHORT_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
