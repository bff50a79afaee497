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
  ``acquisition="clinical"``: the same subjects acquired otherwise, as a 2D sequence does and a rater labels:
  a Gaussian slice profile (FWHM the thickness) with a gap of 0-30 % of it between slices, an in-plane point
  spread (Gaussian, 0.3-0.6 voxel), and labels read at each voxel's centre instead of its covered share;
  ``acquisition="3d"``: a 3D FLAIR of the same subjects (isotropic 0.9-1.2 mm voxels, a Gaussian point spread of
  0.3-0.6 voxel on every axis, labels at the voxel centres);
- MACS: lesion volume in a box around the corticospinal tract and the ventricular enlargement, with 15 %
  of the labels flipped.
- ``normal_findings=True``: normal FLAIR findings that are not lesions and are never labelled, from their own stream
  (the subjects stay the same): caps at the frontal horns, a thin periventricular rim, peritrigonal terminal zones
  of late myelination, as "wet" white matter whose T2 lies between white matter's and a lesion's.

Labels are written on each image's own grid (the share of the voxel covered, >= 0.5; "clinical" and
"3d": the template's label at the voxel's centre, >= 0.5).
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

from ood_acquisition import acquire_box_profile, acquire_gaussian_profile, acquisition_grid, polynomial_bias

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
# Normal findings: white matter with more water (T1 range, T2 range, PD); not lesion, only less bright.
WET_WHITE_MATTER = ((1000.0, 1400.0), (100.0, 135.0), 0.74)
# Seeds inside the lateral ventricles' bodies and trigones (RAS mm, ICBM 2009 space).
VENTRICLE_SEEDS_RAS = [(-14.0, -5.0, 18.0), (14.0, -5.0, 18.0), (-22.0, -38.0, 10.0), (22.0, -38.0, 10.0), (-12.0, 10.0, 12.0), (12.0, 10.0, 12.0)]
MOTOR_BOX_RAS = ((10.0, 35.0), (-35.0, 5.0), (-5.0, 50.0))  # |x|, y, z: corticospinal tract by the ventricles


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


def draw_normal_findings(template: Template, ventricles: np.ndarray, lesion: np.ndarray, rng) -> tuple[np.ndarray, list]:
    """(share of "wet" white matter 0..1, the findings drawn) in template space: frontal caps, a periventricular rim,
    peritrigonal terminal zones; each drawn with its own chance, at least one; never where there is lesion."""
    kinds = [k for k, chance in (("caps", 0.7), ("rim", 0.6), ("terminal zones", 0.5)) if rng.random() < chance]
    kinds = kinds or [str(rng.choice(["caps", "rim", "terminal zones"]))]
    x, y, z = template.ras
    white = np.clip((template.wm - 0.3) / 0.4, 0.0, 1.0) * ~ventricles
    # mm from the subject's ventricles (the template is 1 mm): caps and rim only, a whole-head transform
    distance = ndimage.distance_transform_edt(~ventricles).astype(np.float32) if {"caps", "rim"} & set(kinds) else None
    wet = np.zeros(ventricles.shape, np.float32)
    if "caps" in kinds:  # crescents in front of the frontal horns' tips
        tip = float(y[ventricles].max())
        depth = rng.uniform(2.5, 5.0)
        front = np.clip((y - (tip - 14.0)) / 8.0, 0.0, 1.0)
        wet = np.maximum(wet, rng.uniform(0.5, 0.9) * front * np.clip(1.0 - distance / depth, 0.0, 1.0))
    if "rim" in kinds:  # a thin smooth lining of the lateral ventricles
        wet = np.maximum(wet, rng.uniform(0.3, 0.6) * np.clip(1.0 - distance / rng.uniform(1.0, 2.0), 0.0, 1.0))
    if "terminal zones" in kinds:  # hazy patches above and behind the trigones
        for side in (-1.0, 1.0):
            cx, cy, cz = side * 24.0 + rng.normal(0, 3), -44.0 + rng.normal(0, 4), 20.0 + rng.normal(0, 4)
            sigma = rng.uniform(4.0, 7.0)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma ** 2))
            wet = np.maximum(wet, rng.uniform(0.3, 0.6) * blob.astype(np.float32))
    wet *= white
    wet[lesion > 0] = 0.0
    return wet, kinds


def flair_signal(template: Template, ventricles: np.ndarray, lesion: np.ndarray, cyst: np.ndarray, rng,
                 wet: np.ndarray | None = None, wet_rng=None) -> np.ndarray:
    """The FLAIR signal; ``wet``: the share of white matter that is "wet" (normal findings), its relaxation times
    drawn from ``wet_rng`` (the findings' own stream)."""
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
    white_signal = signal("wm")
    if wet is not None:
        (t1_low, t1_high), (t2_low, t2_high), pd = WET_WHITE_MATTER
        params["wet"] = (wet_rng.uniform(t1_low, t1_high), wet_rng.uniform(t2_low, t2_high), pd)
        white_signal = (1.0 - wet) * white_signal + wet * signal("wet")
    brain = gm * signal("gm") + wm_left * white_signal + csf * signal("csf") + les * np.where(cyst, signal("cyst"), signal("lesion"))
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


def make_case(template: Template, seed: int, acquisition: str = "box", normal_findings: bool = False) -> dict:
    """One subject; ``acquisition``: "box" (box slice profile, labels by covered share), "clinical" (the same
    subject: Gaussian slice profile with gaps, in-plane blur, labels at the voxel centre) or "3d" (a 3D FLAIR);
    ``normal_findings``: unlabelled caps, rim and terminal zones (module docstring)."""
    if acquisition not in ("box", "clinical", "3d"):
        raise ValueError(f"acquisition: expected 'box', 'clinical' or '3d', got {acquisition!r}")
    rng = np.random.default_rng(seed)
    # The other acquisitions' draws come from their own stream: the subject, its grid's orientation and its MACS group
    # stay the box cohort's.
    clinical_rng = np.random.default_rng([seed, 2])
    gap = float(clinical_rng.uniform(0.0, 0.3)) if acquisition == "clinical" else 0.0
    psf_voxels = float(clinical_rng.uniform(0.3, 0.6))
    isotropic_mm = float(clinical_rng.uniform(0.9, 1.2)) if acquisition == "3d" else None
    severity = int(rng.choice(4, p=[0.15, 0.35, 0.3, 0.2]))
    growth = rng.uniform(0.0, 1.5) + severity * rng.uniform(0.5, 1.5)
    ventricles = grow_ventricles(template, growth, rng)
    lesion, cyst = draw_lesions(template, ventricles, severity, rng)
    findings_rng = np.random.default_rng([seed, 3])  # their own stream: the subject stays the one without them
    wet, findings = draw_normal_findings(template, ventricles, lesion, findings_rng) if normal_findings else (None, [])
    signal = flair_signal(template, ventricles, lesion, cyst, rng, wet, findings_rng)
    transform = _subject_transform(template, rng)
    inverse_centre = template.image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in template.image.GetSize()])
    grid, axis, plane, orientation, thick, box_shape = acquisition_grid(rng, inverse_centre, gap, isotropic_mm)
    volumes = [signal, lesion, ventricles.astype(np.float32)]
    if acquisition in ("clinical", "3d"):
        # The point spread across the slices is the slice profile (FWHM the thickness; a 3D sequence's voxel), in plane
        # a Gaussian of psf_voxels; a 3D acquisition's is the same on every axis.
        image, pvl, vent = acquire_gaussian_profile(volumes, template, transform, grid, axis,
                                                     thick if acquisition == "clinical" else psf_voxels * 2.3548 * thick)
        in_plane_sigma = [psf_voxels] * 3
        in_plane_sigma[2 - axis] = 0.0
        image = ndimage.gaussian_filter(image, in_plane_sigma)
    else:
        image, pvl, vent = acquire_box_profile(volumes, template, transform, grid, axis)
    pvl, vent = pvl >= 0.5, vent >= 0.5
    image = image * polynomial_bias(image.shape, rng)
    sigma = rng.uniform(0.01, 0.04) * float(np.percentile(image, 99))
    if acquisition == "box":
        noise = rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape)
    else:  # the box grid's draws are made all the same, so that what the stream draws next (the MACS flip) is the box cohort's
        rng.normal(size=box_shape), rng.normal(size=box_shape)
        noise = clinical_rng.normal(0, sigma, image.shape), clinical_rng.normal(0, sigma, image.shape)
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
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
                   "motor_ml": round(motor_ml, 3), "macs_flipped": bool(flipped), "ventricle_growth_mm": round(float(growth), 2),
                   **({"acquisition": acquisition, "gap_mm": round(thick * gap, 2), "psf_sigma_voxels": round(psf_voxels, 2)}
                      if acquisition != "box" else {}),
                   **({"normal_findings": findings, "normal_findings_ml": round(float(wet.sum()) / 1000.0, 2)} if normal_findings else {})},
    }


def generate(out: Path, n: int = 24, seed: int = 0, log=print, acquisition: str = "box", normal_findings: bool = False) -> Manifest:
    """Write ``n`` cases (all in the "test" split) with a manifest `shmn evaluate` reads; ``acquisition``: see make_case
    (the same seed gives the same subjects either way)."""
    out = Path(out)
    if (out / "manifest.json").exists():
        raise SystemExit(f"{out}: already holds a cohort; choose another folder")
    template = load_template()
    cases, records = [], {}
    for i in range(n):
        case_id = f"ood{i:03d}"
        case = make_case(template, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), acquisition, normal_findings)
        for key, sub in (("image", "images"), ("pvl", "labels/pvl"), ("ventricles", "labels/ventricles")):
            write_volume(case[key], out / sub / f"{case_id}.nii.gz", overwrite=False)
        cases.append(Case(id=case_id, image=f"images/{case_id}.nii.gz", pvl=f"labels/pvl/{case_id}.nii.gz",
                          ventricles=f"labels/ventricles/{case_id}.nii.gz", macs=case["macs"], split="test"))
        records[case_id] = {**case["record"], "macs": case["macs"]}
        log(f"{case_id}: {json.dumps(records[case_id])}")
    grids = {"box": "clinical 2D grids", "clinical": "clinical 2D grids with a Gaussian slice profile, gaps and in-plane blur, labels at voxel centres",
             "3d": "3D FLAIR grids (isotropic 0.9-1.2 mm, Gaussian point spread), labels at voxel centres"}[acquisition]
    grids += ", normal FLAIR findings (caps, rim, terminal zones; not labelled)" if normal_findings else ""
    manifest = Manifest(root=out, cases=cases, name="ood", synthetic=True,
                        description=f"out-of-distribution phantoms: ICBM 2009a head anatomy, FLAIR signal equation, {grids} (benchmarks/ood_cohort)")
    manifest.save()
    (out / "cases.json").write_text(json.dumps(records, indent=1))
    return manifest
