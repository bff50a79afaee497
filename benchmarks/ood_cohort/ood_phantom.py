"""An out-of-distribution phantom cohort, written apart from the engine's synthesis on purpose.

It shares no code with `shmn.synthesis` (a test checks that importing and running it never loads that
package); from the engine it uses only file I/O (`shmn.io`: the anatomy cache paths, volume writing, the
manifest). Everything else is its own, and deliberately different from the training generators:

- anatomy: the ICBM 2009a nonlinear symmetric template with its grey/white matter maps (nilearn wheel,
  in the anatomy cache), never the MNI152 brain the shipped model was trained on; the tissue fractions
  are used as they are (natural partial volume), the ventricles are grown from seed points, and a head
  (CSF, bone, scalp fat with their own relaxation times) is wrapped around the brain;
- subject: a B-spline deformation of the whole head, a child's size (80-95 % of the adult template),
  head tilt in the scanner, ventricles dilated with the lesion burden;
- lesions: chains of overlapping spheres walking out from the ventricle wall (posterior-weighted), some
  with a fluid core (cystic), a burden from none to severe;
- contrast: the FLAIR signal equation from per-tissue T1, T2 and proton density with random TR, TE and TI
  (CSF nulled imperfectly), plus the template's own scalp and skull;
- acquisition: clinical 2D grids (axial, coronal or sagittal; 3-6 mm slices with a box profile, 0.7-1 mm
  in plane, up to 15 degrees oblique, LAS / RAS / LPS), a polynomial bias field and Rician noise;
- MACS: lesion volume in a box around the corticospinal tract and the ventricular enlargement, with 15 %
  of the labels flipped.

Labels are written on each image's own grid (the share of the voxel covered, >= 0.5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.io.anatomy import require_icbm2009
from shmn.io.manifest import Case, Manifest
from shmn.io.volume_io import write_volume

# Tissue relaxation parameters (ms) and proton density, child brain at 1.5-3 T: (T1 range, T2 range, PD)
TISSUES = {
    "wm": ((850.0, 1250.0), (75.0, 115.0), 0.70),
    "gm": ((1250.0, 1600.0), (85.0, 125.0), 0.80),
    "csf": ((3300.0, 4500.0), (1400.0, 2200.0), 1.00),
    "lesion": ((1150.0, 1700.0), (140.0, 260.0), 0.90),
    "cyst": ((2200.0, 3300.0), (600.0, 1500.0), 0.97),
    "fat": ((300.0, 420.0), (60.0, 100.0), 0.90),  # scalp: short T1, bright on FLAIR
    "bone": ((400.0, 600.0), (1.0, 3.0), 0.10),  # cortical bone: almost no signal
}
# Seeds inside the lateral ventricles' bodies and trigones (RAS mm, ICBM 2009 space).
VENTRICLE_SEEDS_RAS = [(-14.0, -5.0, 18.0), (14.0, -5.0, 18.0), (-22.0, -38.0, 10.0), (22.0, -38.0, 10.0), (-12.0, 10.0, 12.0), (12.0, 10.0, 12.0)]
MOTOR_BOX_RAS = ((10.0, 35.0), (-35.0, 5.0), (-5.0, 50.0))  # |x|, y, z: corticospinal tract by the ventricles
ORIENTATIONS = {  # LPS direction columns of the (i, j, k) axes
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([1.0, -1.0, 1.0]),
    "LPS": np.diag([1.0, 1.0, 1.0]),
}


@dataclass
class Template:
    t1: np.ndarray  # (z, y, x) 0..1, whole head
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray  # bool
    ventricles: np.ndarray  # bool
    ventricle_distance: np.ndarray  # mm from the ventricles
    outside_distance: np.ndarray  # mm out of the brain (0 inside): where the synthetic head's layers go
    image: sitk.Image  # geometry carrier
    ras: tuple  # (x, y, z) RAS coordinate arrays, broadcastable


def _ras_grid(image: sitk.Image) -> tuple:
    size = image.GetSize()
    idx = np.indices(size[::-1], dtype=np.float32)  # z, y, x
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.einsum("ij,jzyx->izyx", direction * np.array(image.GetSpacing()), idx[::-1]) + np.array(image.GetOrigin())[:, None, None, None]
    return (-points[0], -points[1], points[2])


def load_template() -> Template:
    files = require_icbm2009()
    images = {k: sitk.ReadImage(str(files[k]), sitk.sitkFloat32) for k in ("t1", "gm", "wm")}
    t1, gm, wm = (sitk.GetArrayFromImage(images[k]) / 255.0 for k in ("t1", "gm", "wm"))
    brain = ndimage.binary_fill_holes(ndimage.binary_closing((gm + wm) > 0.35, iterations=3))
    ras = _ras_grid(images["t1"])
    fluid = brain & ((gm + wm) < 0.45)
    parts, _ = ndimage.label(fluid)
    keep = set()
    for seed in VENTRICLE_SEEDS_RAS:
        index = images["t1"].TransformPhysicalPointToIndex((-seed[0], -seed[1], seed[2]))
        near = parts[index[2] - 2:index[2] + 3, index[1] - 2:index[1] + 3, index[0] - 2:index[0] + 3]
        keep.update(int(v) for v in np.unique(near) if v)
    ventricles = np.isin(parts, sorted(keep))
    if ventricles.sum() > 80_000:  # leaked into the subarachnoid space: keep the part near the midline
        ventricles &= (np.abs(ras[0]) < 35) & (ras[2] > -30) & (ras[2] < 40)
    return Template(t1=t1.astype(np.float32), gm=gm.astype(np.float32), wm=wm.astype(np.float32), brain=brain,
                    ventricles=ventricles, ventricle_distance=ndimage.distance_transform_edt(~ventricles).astype(np.float32),
                    outside_distance=ndimage.distance_transform_edt(~brain).astype(np.float32),
                    image=images["t1"], ras=ras)


def grow_ventricles(template: Template, mm: float, rng) -> np.ndarray:
    """Dilate the ventricles by ``mm`` behind y = 0 and by a third of it in front (PVL is mostly posterior)."""
    if mm < 0.5:
        return template.ventricles.copy()
    reach = np.where(template.ras[1] > 0, max(0.5, mm / 3), min(mm, 6.0))
    return ((template.ventricle_distance <= reach) & template.brain) | template.ventricles


def draw_lesions(template: Template, ventricles: np.ndarray, severity: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(lesion fraction 0..1, cyst core bool) in template space."""
    lesion = np.zeros(ventricles.shape, np.float32)
    cyst = np.zeros(ventricles.shape, bool)
    if severity == 0:
        return lesion, cyst
    shell = (template.ventricle_distance <= 3.0 + float(ventricles.sum() > template.ventricles.sum()) * 3.0) & ~ventricles & (template.wm > 0.4)
    weights = shell * (1.0 + 3.0 * (template.ras[1] < -15))
    flat = weights.ravel() / weights.sum()
    n = int(rng.integers(*[(1, 4), (3, 8), (5, 14)][severity - 1]))
    starts = np.array(np.unravel_index(rng.choice(flat.size, n, p=flat), ventricles.shape)).T
    centre = np.array(np.nonzero(ventricles)).mean(axis=1)
    for start in starts:
        point = start.astype(float)
        outward = point - centre
        outward /= np.linalg.norm(outward) + 1e-6
        for _ in range(int(rng.integers(1, 3 + 3 * severity))):
            radius = rng.uniform(1.2, 2.5 + 1.5 * severity)
            r = int(math.ceil(radius)) + 1
            lo = np.maximum(point.astype(int) - r, 0)
            hi = np.minimum(point.astype(int) + r + 1, ventricles.shape)
            zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            d = np.sqrt((zz - point[0]) ** 2 + (yy - point[1]) ** 2 + (xx - point[2]) ** 2)
            fraction = np.clip(radius + 0.5 - d, 0.0, 1.0).astype(np.float32)
            box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            lesion[box] = np.maximum(lesion[box], fraction * (template.wm[box] > 0.3))
            if severity == 3 and radius > 4.0 and rng.random() < 0.3:
                cyst[box] |= d < radius - 2.0
            step = rng.normal(0, 1, 3) + 1.2 * outward
            point = np.clip(point + step / (np.linalg.norm(step) + 1e-6) * rng.uniform(1.5, 4.0), 0, np.array(ventricles.shape) - 1)
    lesion[ventricles] = 0.0
    cyst &= lesion > 0.5
    return lesion, cyst


def flair_signal(template: Template, ventricles: np.ndarray, lesion: np.ndarray, cyst: np.ndarray, rng) -> np.ndarray:
    tr, te = rng.uniform(7000, 11000), rng.uniform(85, 140)
    params = {k: (rng.uniform(*t1), rng.uniform(*t2), pd) for k, (t1, t2, pd) in TISSUES.items()}
    ti = params["csf"][0] * math.log(2.0) * rng.uniform(0.9, 1.08)  # CSF nulled, imperfectly

    def signal(name: str) -> float:
        t1, t2, pd = params[name]
        return pd * abs(1 - 2 * math.exp(-ti / t1) + math.exp(-tr / t1)) * math.exp(-te / t2)

    gm, wm = template.gm.copy(), template.wm.copy()
    gm[ventricles] = 0.0
    wm[ventricles] = 0.0
    les = lesion * np.clip(gm + wm, 0.0, 1.0)
    wm_left = np.clip(wm - les, 0.0, None)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    brain = gm * signal("gm") + wm_left * signal("wm") + csf * signal("csf") + les * np.where(cyst, signal("cyst"), signal("lesion"))
    # The template is a brain: the head around it is ours, CSF, then bone, then scalp, of random thickness.
    d = template.outside_distance
    csf_mm = rng.uniform(1.0, 3.5)
    bone_mm = csf_mm + rng.uniform(3.0, 7.0)
    scalp_mm = bone_mm + rng.uniform(3.0, 9.0)
    outside = np.where(d <= csf_mm, signal("csf"), np.where(d <= bone_mm, signal("bone"), np.where(d <= scalp_mm, signal("fat"), 0.0)))
    head = np.where(template.brain, brain, outside)
    texture = 1.0 + 0.03 * ndimage.gaussian_filter(rng.normal(size=head.shape).astype(np.float32), 1.0) * 3.0
    return (head * texture).astype(np.float32)


def _subject_transform(template: Template, rng) -> sitk.Transform:
    """Acquisition-space (subject) point -> template point: a child's size, tilt, and a smooth warp."""
    centre = template.image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in template.image.GetSize()])
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    size = rng.uniform(0.80, 0.95) * (1.0 + rng.uniform(-0.05, 0.05, 3))
    angles = np.deg2rad(rng.uniform(-12, 12, 3))
    rotation = sitk.Euler3DTransform(centre, *angles)
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.diag(1.0 / size)
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(rng.uniform(-8, 8, 3).tolist())
    bspline = sitk.BSplineTransformInitializer(template.image, [4, 4, 4], 3)
    params = np.array(bspline.GetParameters())
    bspline.SetParameters((rng.normal(0, rng.uniform(1.0, 3.5), params.size)).tolist())
    # The same warp as a displacement field on a 4 mm grid: far cheaper to evaluate at millions of points.
    field = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, [int(math.ceil(n / 4)) + 1 for n in template.image.GetSize()],
                                              template.image.GetOrigin(), [4.0 * d for d in template.image.GetSpacing()], template.image.GetDirection())
    warp = sitk.DisplacementFieldTransform(field)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(warp)  # applied last: template-side warp
    composite.AddTransform(affine)  # applied first
    return composite


def _acquisition_grid(rng, fov_centre) -> tuple[sitk.Image, int, str, str, float]:
    plane = str(rng.choice(["axial", "axial", "coronal", "sagittal"]))
    code = str(rng.choice(list(ORIENTATIONS)))
    thick = float(rng.uniform(3.0, 6.0))
    in_plane = float(rng.uniform(0.7, 1.0))
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    spacing = [in_plane] * 3
    spacing[axis] = thick
    extent = np.array([180.0, 216.0, 180.0])
    size = [int(math.ceil(e / s)) for e, s in zip(extent, spacing)]
    tilt = sitk.Euler3DTransform((0, 0, 0), *np.deg2rad(rng.uniform(-15, 15, 3) * (rng.random() < 0.6)))
    direction = np.array(tilt.GetMatrix()).reshape(3, 3) @ ORIENTATIONS[code]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(direction.ravel().tolist())
    half = direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    grid.SetOrigin((np.array(fov_centre) - half).tolist())
    oblique = bool(not np.allclose(direction, ORIENTATIONS[code]))
    return grid, axis, plane, code + (" oblique" if oblique else ""), thick


def _acquire(volumes: list, template: Template, transform: sitk.Transform, grid: sitk.Image, axis: int) -> list:
    """Sample the template-space ``volumes`` (one resampling of a vector image) on a fine copy of ``grid``
    (sub-slices about 1.5 mm apart) and average each slice's thickness: a box slice profile."""
    source = sitk.Compose([sitk.GetImageFromArray(v.astype(np.float32)) for v in volumes])
    source.CopyInformation(template.image)
    thick = grid.GetSpacing()[axis]
    factor = max(1, int(round(thick / 1.5)))
    fine = sitk.Image([n * factor if a == axis else n for a, n in enumerate(grid.GetSize())], sitk.sitkVectorFloat32, len(volumes))
    spacing = list(grid.GetSpacing())
    spacing[axis] = thick / factor
    fine.SetSpacing(spacing)
    fine.SetDirection(grid.GetDirection())
    shift = np.zeros(3)
    shift[axis] = -(thick - spacing[axis]) / 2
    fine.SetOrigin((np.array(grid.GetOrigin()) + np.array(grid.GetDirection()).reshape(3, 3) @ shift).tolist())
    sampled = sitk.GetArrayFromImage(sitk.Resample(source, fine, transform, sitk.sitkLinear, 0.0))  # (z, y, x, c)
    np_axis = 2 - axis
    shape = list(sampled.shape)
    shape[np_axis:np_axis + 1] = [shape[np_axis] // factor, factor]
    averaged = sampled.reshape(shape).mean(axis=np_axis + 1)
    return [averaged[..., c] for c in range(len(volumes))]


def _bias(shape, rng) -> np.ndarray:
    axes = [np.linspace(-1, 1, n) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    c = rng.normal(0, 0.2, 9)
    return np.exp(c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * y * z + c[5] * x * z + c[6] * x * x + c[7] * y * y + c[8] * z * z)


def make_case(template: Template, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    severity = int(rng.choice(4, p=[0.15, 0.35, 0.3, 0.2]))
    growth = rng.uniform(0.0, 1.5) + severity * rng.uniform(0.5, 1.5)
    ventricles = grow_ventricles(template, growth, rng)
    lesion, cyst = draw_lesions(template, ventricles, severity, rng)
    signal = flair_signal(template, ventricles, lesion, cyst, rng)
    transform = _subject_transform(template, rng)
    inverse_centre = template.image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in template.image.GetSize()])
    grid, axis, plane, orientation, thick = _acquisition_grid(rng, inverse_centre)
    image, pvl, vent = _acquire([signal, lesion, ventricles.astype(np.float32)], template, transform, grid, axis)
    pvl, vent = pvl >= 0.5, vent >= 0.5
    image = image * _bias(image.shape, rng)
    sigma = rng.uniform(0.01, 0.04) * float(np.percentile(image, 99))
    image = np.sqrt((image + rng.normal(0, sigma, image.shape)) ** 2 + rng.normal(0, sigma, image.shape) ** 2)
    voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
    (xl, xh), (yl, yh), (zl, zh) = MOTOR_BOX_RAS
    x, y, z = template.ras
    motor = (np.abs(x) > xl) & (np.abs(x) < xh) & (y > yl) & (y < yh) & (z > zl) & (z < zh)
    motor_ml = float((lesion * motor).sum()) / 1000.0  # template voxels are 1 mm
    score = motor_ml / 1.5 + growth / 4.0 + float(lesion.sum()) / 1000.0 / 15.0
    severe = score > 1.0
    flipped = rng.random() < 0.15
    group = "severe" if severe != flipped else "mild"

    def volume(array, dtype):
        out = sitk.GetImageFromArray(array.astype(dtype))
        out.CopyInformation(grid)
        return out

    return {
        "image": volume(image * 1000.0 / max(1e-6, float(np.percentile(image, 99.5))), np.float32),
        "pvl": volume(pvl, np.uint8), "ventricles": volume(vent, np.uint8), "macs": group,
        "record": {"severity": ["none", "mild", "moderate", "severe"][severity], "plane": plane, "orientation": orientation,
                   "slice_mm": round(thick, 2), "in_plane_mm": round(grid.GetSpacing()[(axis + 1) % 3], 2),
                   "pvl_ml": round(float(pvl.sum()) * voxel_ml, 3), "ventricles_ml": round(float(vent.sum()) * voxel_ml, 2),
                   "motor_ml": round(motor_ml, 3), "macs_flipped": bool(flipped), "ventricle_growth_mm": round(float(growth), 2)},
    }


def generate(out: Path, n: int = 24, seed: int = 0, log=print) -> Manifest:
    """Write ``n`` cases (all in the "test" split) with a manifest `shmn evaluate` reads."""
    out = Path(out)
    if (out / "manifest.json").exists():
        raise SystemExit(f"{out}: already holds a cohort; choose another folder")
    template = load_template()
    cases, records = [], {}
    for i in range(n):
        case_id = f"ood{i:03d}"
        case = make_case(template, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        for key, sub in (("image", "images"), ("pvl", "labels/pvl"), ("ventricles", "labels/ventricles")):
            write_volume(case[key], out / sub / f"{case_id}.nii.gz", overwrite=False)
        cases.append(Case(id=case_id, image=f"images/{case_id}.nii.gz", pvl=f"labels/pvl/{case_id}.nii.gz",
                          ventricles=f"labels/ventricles/{case_id}.nii.gz", macs=case["macs"], split="test"))
        records[case_id] = {**case["record"], "macs": case["macs"]}
        log(f"{case_id}: {json.dumps(records[case_id])}")
    manifest = Manifest(root=out, cases=cases, name="ood", synthetic=True,
                        description="out-of-distribution phantoms: ICBM 2009a head anatomy, FLAIR signal equation, clinical 2D grids (benchmarks/ood_cohort)")
    manifest.save()
    (out / "cases.json").write_text(json.dumps(records, indent=1))
    return manifest
