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
