"""Fixtures for testing the Slicer modules against the real MRML (a pytest plugin).

Use from a test module with ``pytest_plugins = ["slicer_fixtures"]``. The Slicer stand-in is
``slicer_harness.py``; the engine is the real one (``shmn predict`` in a subprocess) with a tiny
random-weight model saved by ``shmn.network.model_file.save_model``: enough to test geometry and plumbing
end to end in seconds. Lesion-finding accuracy needs the trained default model (its own test).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SEGMENTER_DIR = REPO / "SHMNSegmenter"
CORE_DIR = REPO / "SHMNCore"  # the modules' shared library (SHMNCoreLib), a module folder of its own

# A real SHMN (4 base filters, 4 levels) on the 4 mm "tiny" grid (40x48x40 voxels). N4 off: it is
# the slowest preprocessing step and geometry does not depend on it.
TINY_MODEL_CARD = {
    "name": "slicer-test-tiny",
    "version": "0.0.1",
    "grid": {"spacing_mm": 4.0, "size": [40, 48, 40]},
    "preprocessing": {"n4": False},
    "training_data": "none: random weights for plumbing tests (synthetic)",
    "intended_use": "tests only",
}


@pytest.fixture(scope="session")
def slicer_app(tmp_path_factory):
    """The installed stand-in (slicer.app, slicer.mrmlScene, slicer.modules, base classes).

    Also puts the module folder on sys.path, as Slicer does for each module path.
    """
    from slicer_harness import install_harness

    harness = install_harness(tmp_path_factory.mktemp("slicer-temporary"))
    for folder in (CORE_DIR, SEGMENTER_DIR):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    return harness


@pytest.fixture(scope="session")
def slicer_qt(slicer_app, tmp_path_factory):
    """Real Qt (PySide6, offscreen) behind Slicer's names: the panels and their .ui files (slicer_qt_harness.py)."""
    import PySide6  # noqa: F401 - the test extra installs it; without it these tests fail, never skip
    from slicer_qt_harness import install_qt

    return install_qt(slicer_app, tmp_path_factory.mktemp("qsettings"))


@pytest.fixture
def scene(slicer_app):
    """The MRML scene, emptied after the test (like closing the scene in Slicer)."""
    yield slicer_app.scene
    slicer_app.clear_scene()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from shmn.network.model import SHMN, NetworkConfig
    from shmn.network.model_file import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "slicer-test-tiny.safetensors"
    save_model(path, SHMN(NetworkConfig(base_filters=4, levels=4, macs_hidden=16)), TINY_MODEL_CARD)
    return path


CLINIC_MODEL = "clinic-model@2.0.0"


@pytest.fixture
def registry(tmp_path, tiny_model, monkeypatch):
    """A user registry holding one model besides the shipped ones (what SHMN Training's Register writes)."""
    from shmn.io.registry import register_model

    path = tmp_path / "models.json"
    register_model(tiny_model, path, name="clinic-model", version="2.0.0")
    monkeypatch.setenv("SHMN_MODEL_REGISTRY", str(path))
    return path


def _flip_first_axis(path: Path, out: Path) -> Path:
    """The same physical image stored with the first voxel axis reversed (flips the affine's handedness)."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(path))
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, image.shape[0] - 1  # voxel i -> n-1-i
    data = np.asanyarray(image.dataobj)[::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), image.affine @ flip), str(out))
    return out


@pytest.fixture(scope="session")
def phantom_case(small_cohort, tmp_path_factory) -> dict:
    """One PVL-labelled phantom case written twice: affine determinant > 0 and < 0 (LAS-like).

    Returns {"positive": FLAIR path, "negative": FLAIR path, "pvl": mask path (on the positive grid)}.
    Slicer reverses K when it loads the negative one (docs/DESIGN.md section 6): same physical image,
    different array, which is exactly what the geometry tests must see through.
    """
    from shmn.io.manifest import load_manifest

    return _phantom_pair(load_manifest(small_cohort / "pvl"), tmp_path_factory.mktemp("phantom"), largest=False)


@pytest.fixture(scope="session")
def paper_phantom_case(paper_cohort, tmp_path_factory) -> dict:
    """As ``phantom_case``, from clinical-resolution phantoms: the case with the most lesion volume."""
    from shmn.io.manifest import load_manifest

    return _phantom_pair(load_manifest(paper_cohort / "pvl"), tmp_path_factory.mktemp("paper_phantom"), largest=True)


def _phantom_pair(manifest, folder, largest: bool) -> dict:
    import nibabel as nib
    import numpy as np

    cases = [c for c in manifest.cases if c.pvl]
    if largest:
        cases.sort(key=lambda c: int(np.count_nonzero(np.asarray(nib.load(str(manifest.resolve(c.pvl))).dataobj))), reverse=True)
    case = cases[0]
    image, pvl = manifest.resolve(case.image), manifest.resolve(case.pvl)
    flipped = _flip_first_axis(image, folder / f"{case.id}_flipped.nii.gz")
    flipped_pvl = _flip_first_axis(pvl, folder / f"{case.id}_flipped_pvl.nii.gz")
    if np.linalg.det(nib.load(str(image)).affine[:3, :3]) > 0:
        return {"positive": image, "negative": flipped, "pvl": pvl, "negative_pvl": flipped_pvl, "id": case.id}
    return {"positive": flipped, "negative": image, "pvl": flipped_pvl, "negative_pvl": pvl, "id": case.id}


def mini_dataset(cohort: Path, folder: Path, cases: dict) -> Path:
    """Phantom cases copied into one dataset (images and masks keep their relative paths).

    ``cases``: {(dataset, case id): split}, e.g. {("pvl", "pvl_001"): "train"}.
    """
    import shutil
    from dataclasses import replace

    from shmn.io.manifest import Manifest, load_manifest

    chosen = []
    for (dataset, caseId), split in cases.items():
        manifest = load_manifest(Path(cohort) / dataset)
        case = manifest.case(caseId)
        for relative in (case.image, case.pvl, case.ventricles):
            if relative:
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(manifest.resolve(relative), folder / relative)
        chosen.append(replace(case, split=split))
    Manifest(root=folder, cases=chosen, name="mini", description=f"{len(chosen)} SYNTHETIC phantom cases", synthetic=True).save()
    return folder
