"""The out-of-distribution cohort (benchmarks/ood_cohort): a second generator that shares no code with
the training synthesis, writes a manifest `shmn evaluate` reads, and labels on each image's own grid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmn.io.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
OOD = ROOT / "benchmarks" / "ood_cohort"

PROBE = """
import json, sys
sys.path.insert(0, {folder!r})
import ood_phantom
ood_phantom.generate({out!r}, n=1, seed=3, log=lambda *_: None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("shmn"))))
"""


def test_the_ood_generator_imports_nothing_from_the_training_synthesis(tmp_path):
    for source in OOD.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+(shmn[\w.]*)(?:\s+import\s+([\w, ]+))?", source.read_text(), re.MULTILINE)
        assert all(module.startswith(("shmn.io", "shmn.errors")) for module, _names in imports), (source, imports)
    out = tmp_path / "ood"
    result = subprocess.run([sys.executable, "-c", PROBE.format(folder=str(OOD), out=str(out))], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded and all(m == "shmn" or m.startswith(("shmn.io", "shmn.errors", "shmn.contract")) for m in loaded), loaded  # file I/O and its names
    assert not any(m.startswith("shmn.synthesis") for m in loaded)

    # what it wrote is a dataset `shmn evaluate` can read: test split, labels on the image's grid
    manifest = load_manifest(out)
    (case,) = manifest.cases
    assert case.split == "test" and case.macs in ("mild", "severe") and manifest.synthetic
    image = sitk.ReadImage(str(manifest.resolve(case.image)))
    for label in (case.pvl, case.ventricles):
        mask = sitk.ReadImage(str(manifest.resolve(label)))
        assert mask.GetSize() == image.GetSize() and np.allclose(mask.GetDirection(), image.GetDirection())
        assert np.allclose(mask.GetOrigin(), image.GetOrigin())
    spacing = sorted(image.GetSpacing())
    assert spacing[-1] >= 3.0 and spacing[0] <= 1.0  # a clinical 2D grid: thick slices, fine in plane
    ventricles = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.resolve(case.ventricles))))
    ml = ventricles.sum() * np.prod(image.GetSpacing()) / 1000
    assert 5 < ml < 80, ml
    record = json.loads((out / "cases.json").read_text())[case.id]
    assert record["severity"] in ("none", "mild", "moderate", "severe")
