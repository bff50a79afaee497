"""Fit the burden MACS score (shmn.measures.burden_macs) on a phantom cohort's lesion masks.

    .venv/bin/python benchmarks/fit_burden_macs.py --work /tmp/burden-fit [--n 40] [--seed 0] [--masks truth|predicted]
        [--model shmn4-fast-phantom] [--data MANIFEST]

``--data MANIFEST``: a dataset of one's own instead of a phantom cohort (every case with a ``macs`` label, any
split; `shmn dataset` makes one): the score refitted on a site's labelled children, on MODEL's lesions
(``--masks predicted``) or on the manifest's ``pvl`` masks (``--masks truth``). Its noise-free column is then
the observed one (a site has only the labels it has).

1. `shmn phantom -o WORK/cohort --size paper --seed SEED --n-pvl 1 --n-macs N --n-ventricle-labels 0`:
   dataset 2 (MACS) only, N cases (seed 0: the training cohort's generator and seed).
2. Each MACS case preprocessed as `shmn predict` does with MODEL's card (brain extraction, registration to
   MNI152, its model grid). ``--masks truth``: the ground-truth lesion mask brought onto the model grid through
   the same registration (linear, then >= 0.5, inside the brain: a perfect model's template-space lesion mask).
   ``--masks predicted``: MODEL's own template-space lesion mask, exactly the one `shmn predict` measures the
   burden on (its 2 mm probability at the card's threshold, inside the brain). On a cohort the model never
   trained on (a validation cohort), the fit is then also the score's calibration: its probabilities are
   fitted to the labels on the masks the report will measure, the model's misses and false positives included.
3. Motor burden per region (shmn.measures.motor_regions); logistic fit of the OBSERVED MACS group (the
   label training sees, 10 % flipped) on lesion mL per region, weights >= 0, L2 0.1.
Prints the constants to paste into shmn/measures/burden_macs.py, the in-sample and leave-one-out AUC, and
writes WORK/burden-fit.json with every case's burden.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def phantom(work: Path, n: int, seed: int) -> Path:
    cohort = work / "cohort"
    if not (cohort / "cohort.json").exists():
        subprocess.run([sys.executable, "-m", "shmn", "phantom", "-o", str(cohort), "--size", "paper", "--seed", str(seed),
                        "--n-pvl", "1", "--n-macs", str(n), "--n-ventricle-labels", "0", "-q"], check=True)
    return cohort


def phantom_records(cohort: Path) -> list[dict]:
    """The cohort's MACS cases with their image, ground-truth lesion mask and groups (observed, noise-free)."""
    records = [r for r in json.loads((cohort / "cohort.json").read_text())["cases"] if r["dataset"] == "macs"]
    return [{**r, "image": cohort / "macs" / "images" / f"{r['id']}.nii.gz",
             "truth": cohort / "macs" / "groundtruth" / "pvl" / f"{r['id']}.nii.gz"} for r in records]


def manifest_records(path: Path) -> list[dict]:
    """A dataset's cases that carry a MACS label (every split): the label is both the observed and the true group."""
    from shmn.errors import ShmnError
    from shmn.io.manifest import load_manifest

    manifest = load_manifest(path)
    records = [{"id": c.id, "image": manifest.resolve(c.image), "truth": manifest.resolve(c.pvl),
                "macs_group": c.macs, "macs_group_true": c.macs} for c in manifest.cases if c.macs is not None]
    if len({r["macs_group"] for r in records}) < 2:
        raise ShmnError(f"{path}: the fit needs cases of both MACS groups (mild and severe); it has "
                        f"{len(records)} labelled case(s) of {sorted({r['macs_group'] for r in records}) or 'neither'}")
    return records


def case_burden(image: Path, truth: Path | None, predictor, masks: str = "truth") -> dict:
    import SimpleITK as sitk

    from shmn.inference.engine import InferenceOptions, run_inference
    from shmn.inference.motor import template_lesion_mask
    from shmn.inference.predict import MASK_THRESHOLD, PredictOptions
    from shmn.io.volume_io import read_volume
    from shmn.measures.motor_regions import motor_burden
    from shmn.preprocessing.preprocess import preprocess

    native = read_volume(image)
    prep = preprocess(native, predictor.preprocess, source=str(image))
    if masks == "predicted":
        probability = run_inference(predictor.network, prep.image, InferenceOptions(device="cpu")).pvl_probability
        lesions = template_lesion_mask(probability, prep, predictor.thresholds(PredictOptions()).pvl_threshold)
    else:
        if truth is None:
            from shmn.errors import ShmnError

            raise ShmnError(f"{image}: --masks truth needs the case's pvl mask; the manifest has none (use --masks predicted)")
        mask = sitk.Cast(sitk.ReadImage(str(truth)) > 0, sitk.sitkFloat32)
        on_grid = sitk.GetArrayFromImage(sitk.Resample(mask, prep.reference, prep.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        lesions = (on_grid >= MASK_THRESHOLD) & prep.brain
    return {"burden": motor_burden(lesions, prep.reference), "registration_ok": bool(prep.quality.get("ok", True))}


def leave_one_out(features: np.ndarray, labels: np.ndarray) -> list[float]:
    from shmn.measures.burden_macs import fit_burden_model

    out = []
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        out.append(float(fit_burden_model(features[keep], labels[keep]).probabilities(features[i:i + 1])[0]))
    return out


def main() -> None:
    from shmn.inference.predict import load_predictor
    from shmn.measures.burden_macs import FEATURES, feature_ml, fit_burden_model
    from shmn.measures.metrics import macs_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--n", type=int, default=40, help="MACS cases of the phantom cohort (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="the phantom cohort's seed (default 0, the training cohort's)")
    parser.add_argument("--masks", choices=("truth", "predicted"), default="truth",
                        help="ground-truth lesion masks, or MODEL's own (default truth)")
    parser.add_argument("--model", default=None, help="whose preprocessing and grid, and with --masks predicted whose lesions "
                        "(default: the registry's default model)")
    parser.add_argument("--data", type=Path, default=None, help="a dataset manifest of one's own (cases with a macs label) "
                        "instead of the phantom cohort")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    records = manifest_records(args.data) if args.data else phantom_records(phantom(args.work, args.n, args.seed))
    predictor = load_predictor(args.model)
    # Each case's burden is kept as it is measured, so a stopped run goes on and a refit costs no prediction.
    source = f"manifest-{hashlib.sha256(str(args.data.resolve()).encode()).hexdigest()[:8]}" if args.data else f"seed{args.seed}"
    measured_file = args.work / f"cases-{source}-{args.masks}-{predictor.info.name}-{predictor.info.version}.json"
    done = json.loads(measured_file.read_text()) if measured_file.exists() else {}
    rows = []
    for r in records:
        if r["id"] not in done:
            measured = case_burden(r["image"], r["truth"], predictor, args.masks)
            burden = measured["burden"]
            done[r["id"]] = {"id": r["id"], "macs_observed": r["macs_group"], "macs_true": r["macs_group_true"],
                             "phantom_motor_burden_ml": r.get("motor_burden_ml"), "lesion_volume_ml": r.get("lesion_volume_ml"),
                             "registration_ok": measured["registration_ok"],
                             "lesion_ml": {f: round(feature_ml(burden, f), 4) for f in FEATURES}, "motor_burden": burden.to_json()}
            measured_file.write_text(json.dumps(done, indent=1))
        rows.append(done[r["id"]])
        print(f"{r['id']}: {r['macs_group']:6s} " + " ".join(f"{k}={v:.3f}" for k, v in rows[-1]["lesion_ml"].items()), flush=True)
    features = np.array([[row["lesion_ml"][f] for f in FEATURES] for row in rows])
    observed = np.array([row["macs_observed"] == "severe" for row in rows], dtype=float)
    true = np.array([row["macs_true"] == "severe" for row in rows], dtype=float)
    model = fit_burden_model(features, observed)
    fitted = model.probabilities(features)
    loo = leave_one_out(features, observed)
    result = {
        "n": len(rows), "grid": predictor.info.grid, "data": str(args.data) if args.data else f"phantom seed {args.seed}", "masks": args.masks,
        "model": f"{predictor.info.name} {predictor.info.version}", "features": list(FEATURES), "intercept": round(model.intercept, 3),
        "weights_per_ml": {r: round(w, 3) for r, w in model.weights_per_ml.items()},
        "in_sample": {"observed": macs_metrics(fitted, observed), "true": macs_metrics(fitted, true)},
        "leave_one_out": {"observed": macs_metrics(loo, observed), "true": macs_metrics(loo, true)},
        "cases": rows,
    }
    (args.work / "burden-fit.json").write_text(json.dumps(result, indent=1))
    print(f"\nBURDEN_MACS_INTERCEPT = {result['intercept']}\nBURDEN_MACS_WEIGHTS_PER_ML = {json.dumps(result['weights_per_ml'])}")
    for name in ("in_sample", "leave_one_out"):
        for labels in ("observed", "true"):
            m = result[name][labels]
            print(f"{name:13s} vs {labels:8s} groups: AUC {m['auc']:.3f}  accuracy {m['accuracy']:.3f}  ECE {m['ece']:.3f}  (n {m['n']})")


if __name__ == "__main__":
    from shmn.errors import ShmnError

    try:
        main()
    except ShmnError as error:  # bad input: one line that names it, no traceback
        sys.exit(f"fit_burden_macs: {error}")
