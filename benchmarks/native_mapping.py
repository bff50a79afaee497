"""How a model-grid probability is carried onto a case's native grid: sampled at each native voxel's centre
(linear interpolation, what `shmn predict` does) or averaged over each native voxel's footprint (a box
profile; differs only where native voxels are larger than the 2 mm model grid, as with thick 2D slices).

    .venv/bin/python benchmarks/native_mapping.py --work WORK --model MODEL [--cohorts in-distribution ood] [--json FILE]

Run after benchmarks/ood_compare.py (it reuses WORK/id, WORK/ood and the preprocessing cache WORK/cache).
The labels of both cohorts are the share of each native voxel a structure covers, >= 0.5, so the footprint
mean is the matching estimate. For each case and both mappings it reports the Dice of
- the reference carried onto the model grid (share of each 2 mm voxel) and back: a perfect 2 mm model;
- the model's own probability (thresholded at predict's 0.5 for lesions and the card's ventricle threshold).

Measured for v2.1 (benchmarks/results/native-mapping-v2.1.json; README "Lesion specks and the native grid"):
the footprint mean lowers the perfect model's ceiling (it blurs a map that is already a 2 mm share) and
leaves the model's in-distribution Dice where it is, so `shmn predict` keeps centre sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def to_native_footprint(array: np.ndarray, case, native: sitk.Image) -> sitk.Image:
    """A model-grid map (a probability) onto the native grid as its mean over each native voxel's extent
    (a box profile), not its value at the voxel's centre: where a native voxel is larger than the model
    grid's (thick 2D slices), a structure covering part of the slab then gets that share, as labels drawn
    on such a grid mean it. Along axes no coarser than the model grid this is plain linear interpolation."""
    model_mm = float(case.reference.GetSpacing()[0])
    spacing = np.array(native.GetSpacing(), dtype=float)
    # sub-samples per native voxel along x, y, z: about one per half model voxel along coarse axes
    steps = np.where(spacing > model_mm, np.ceil(2.0 * spacing / model_mm), 1).astype(int)
    if (steps == 1).all():
        from shmn.preprocessing.preprocess import to_native

        return to_native(array, case, native, interpolation="linear")
    fine = sitk.Image([int(n * k) for n, k in zip(native.GetSize(), steps)], sitk.sitkFloat32)
    fine.SetSpacing(tuple(spacing / steps))
    fine.SetDirection(native.GetDirection())
    # the first sub-sample's centre lies half a native voxel minus half a sub-sample before the voxel's centre
    direction = np.array(native.GetDirection(), dtype=float).reshape(3, 3)
    fine.SetOrigin(tuple(np.array(native.GetOrigin()) + direction @ ((spacing / steps - spacing) / 2.0)))
    grid_image = sitk.GetImageFromArray(np.asarray(array).astype(np.float32))
    grid_image.CopyInformation(case.reference)
    sampled = sitk.GetArrayFromImage(sitk.Resample(grid_image, fine, case.transform.GetInverse(), sitk.sitkLinear, 0, sitk.sitkFloat32))
    nx, ny, nz = native.GetSize()
    kx, ky, kz = (int(k) for k in steps)
    averaged = sampled.reshape(nz, kz, ny, ky, nx, kx).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    out = sitk.GetImageFromArray(averaged)
    out.CopyInformation(native)
    return out


def to_native_mapped(array: np.ndarray, case, native: sitk.Image, mapping: str) -> np.ndarray:
    from shmn.preprocessing.preprocess import to_native

    if mapping == "centre":
        return sitk.GetArrayFromImage(to_native(array.astype(np.float32), case, native, interpolation="linear"))
    return sitk.GetArrayFromImage(to_native_footprint(array.astype(np.float32), case, native))


def main() -> None:
    from ood_compare import cohorts, preprocessed_cases

    from shmn.inference.engine import InferenceOptions, run_inference
    from shmn.inference.predict import load_predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="benchmarks/ood_compare.py's work folder")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cohorts", nargs="+", default=["in-distribution", "ood"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    predictor = load_predictor(args.model)
    ventricle_threshold = predictor.ventricle_threshold
    manifests = cohorts(args.work, 24)
    out: dict = {"model": f"{predictor.info.name} {predictor.info.version}", "ventricle_threshold": ventricle_threshold, "cohorts": {}}
    for cohort in args.cohorts:
        rows = []
        for item in preprocessed_cases(manifests[cohort], args.work / "cache"):
            case, native = item["case"], item["native"]
            result = run_inference(predictor.network, case.image, InferenceOptions(device="cpu"))
            maps = {"pvl": np.where(case.brain, result.pvl_probability, 0.0), "ventricles": np.where(case.brain, result.ventricle_probability, 0.0)}
            thresholds = {"pvl": 0.5, "ventricles": ventricle_threshold}
            row = {"id": item["id"], "spacing_mm": [round(s, 2) for s in native.GetSpacing()]}
            for key in ("pvl", "ventricles"):
                truth = item[key]
                if truth is None:
                    continue
                truth = np.asarray(truth) > 0
                truth_image = sitk.GetImageFromArray(truth.astype(np.float32))
                truth_image.CopyInformation(native)
                share = sitk.GetArrayFromImage(sitk.Resample(truth_image, case.reference, case.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
                for mapping in ("centre", "footprint"):
                    if truth.any() or key == "ventricles":
                        row[f"{key}_ceiling_{mapping}"] = round(dice(truth, to_native_mapped(share, case, native, mapping) >= 0.5), 4)
                    row[f"{key}_model_{mapping}"] = round(dice(truth, to_native_mapped(maps[key], case, native, mapping) >= thresholds[key]), 4)
            print(cohort, json.dumps(row), flush=True)
            rows.append(row)
        summary = {k: round(float(np.mean([r[k] for r in rows if k in r])), 4) for k in sorted({k for r in rows for k in r if k.startswith(("pvl_", "ventricles_"))})}
        thick = [r for r in rows if max(r["spacing_mm"]) > 2.0]
        summary["n"], summary["n_thick"] = len(rows), len(thick)
        summary["thick_slices"] = {k: round(float(np.mean([r[k] for r in thick if k in r])), 4) for k in sorted({k for r in thick for k in r if k.startswith(("pvl_", "ventricles_"))})}
        out["cohorts"][cohort] = {"summary": summary, "cases": rows}
        print(cohort, json.dumps(summary, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
