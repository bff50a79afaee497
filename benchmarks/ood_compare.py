"""A model on the out-of-distribution cohort and on in-distribution held-out phantoms, side by side,
with a plain intensity-threshold baseline (issue 12).

    .venv/bin/python benchmarks/ood_compare.py --work /tmp/ood-compare [--model shmn4-fast-phantom] [--n 24]

1. OOD cohort: `benchmarks/ood_cohort/generate.py -o WORK/ood --n N --seed 0` (ICBM 2009 anatomy, its own
   lesion and contrast model, clinical 2D grids with heads; every case is in the test split).
2. In-distribution held-out: `shmn phantom -o WORK/id --size paper --seed 101 --n-pvl N/2 --n-macs N/2
   --n-ventricle-labels 0` (seed 101 never trained on), every case scored against its phantom ground truth.
3. `shmn evaluate MODEL --data ... --cache WORK/cache --boundary native|model --tta|--no-tta` on each (metrics JSON in WORK;
   every model with the same preprocessing, and the baseline, share the cached preprocessed images; --boundary:
   lesion and ventricle boundaries from each input's intensities, `shmn predict`'s default, or the model's 2 mm ones).
4. The threshold baseline: the same preprocessing; lesions = z-score above T inside the brain (minus its
   outer 4 mm), ventricles = z-score below T' within 12 mm of the template's ventricles, MACS score =
   lesion volume. T and T' are chosen on the in-distribution cohort (best mean Dice) and applied unchanged
   on the OOD cohort. Scored like `shmn evaluate` (native grid, same metrics).
5. "MACS from burden AUC": each model row also ranks its second MACS estimate, the motor-burden score on the
   model's own lesions (`macs_from_burden` per case of `shmn evaluate`; shmn.measures.burden_macs.rank_estimates).
   The better of the two AUCs on the OOD cohort decides burden_macs.MACS_PRIMARY; that estimate's accuracy and
   calibration error (ECE) are in the rows too.
Writes WORK/comparison-TAG.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LESION_THRESHOLDS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
VENTRICLE_THRESHOLDS = (-2.0, -1.5, -1.0, -0.5)


def shmn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "shmn", *args], check=True)


def cohorts(work: Path, n: int) -> dict[str, list[Path]]:
    from shipped_model import with_ground_truth

    ood = work / "ood"
    if not (ood / "manifest.json").exists():
        subprocess.run([sys.executable, str(HERE / "ood_cohort" / "generate.py"), "-o", str(ood), "--n", str(n), "--seed", "0", "-q"], check=True)
    ind = work / "id"
    if not (ind / "cohort.json").exists():
        shmn("phantom", "-o", str(ind), "--size", "paper", "--seed", "101", "--n-pvl", str(n // 2), "--n-macs", str(n - n // 2),
             "--n-ventricle-labels", "0", "-q")
    in_distribution = [with_ground_truth(ind / d, "manifest-full-truth.json", ("pvl", "ventricles"), all_test=True) for d in ("pvl", "macs")]
    return {"in-distribution": in_distribution, "ood": [ood / "manifest.json"]}


def preprocessed_cases(manifests: list[Path], cache_dir: Path) -> list[dict]:
    """Each test case preprocessed (fast grid; from the cache the models' evaluations filled), with its
    native image and reference masks."""
    from shmn.io.volume_io import read_volume
    from shmn.preprocessing.preprocess import GRIDS, PreprocessConfig
    from shmn.training.case_cache import CaseCache
    from shmn.training.data import load_manifests, split_samples
    from shmn.training.evaluate import DENSITY_SIGMA_UNUSED, _label_on

    cache = CaseCache(cache_dir, PreprocessConfig(grid=GRIDS["fast"]), DENSITY_SIGMA_UNUSED)
    cases = []
    for sample in split_samples(load_manifests(manifests), "test"):
        native = read_volume(sample.image)
        cases.append({"id": sample.id, "native": native, "case": cache.preprocessed(sample),
                      "pvl": _label_on(native, sample.pvl, sample.image, sample.id) if sample.pvl else None,
                      "ventricles": _label_on(native, sample.ventricles, sample.image, sample.id) if sample.ventricles else None,
                      "macs": sample.macs})
    return cases


def threshold_masks(item: dict, lesion_t: float | None, ventricle_t: float | None, near_ventricles: np.ndarray) -> tuple:
    import SimpleITK as sitk
    from scipy import ndimage

    from shmn.preprocessing.preprocess import to_native

    case = item["case"]
    inner = ndimage.binary_erosion(case.brain, iterations=2)  # 4 mm on the fast grid: no rim of skull or CSF
    masks = ((case.image > lesion_t) & inner if lesion_t is not None else None,
             (case.image < ventricle_t) & inner & near_ventricles if ventricle_t is not None else None)
    native = item["native"]
    return tuple(None if m is None else sitk.GetArrayFromImage(to_native(m.astype(np.uint8), case, native)) > 0 for m in masks)


def baseline(cases: list[dict], lesion_t: float, ventricle_t: float, near_ventricles: np.ndarray) -> dict:
    from shmn.training.evaluate import score_case, summarise

    rows = []
    for item in cases:
        lesion, ventricles = threshold_masks(item, lesion_t, ventricle_t, near_ventricles)
        spacing = item["native"].GetSpacing()[::-1]
        metrics = score_case(spacing, pvl=(lesion, item["pvl"]) if item["pvl"] is not None else None,
                             ventricles=(ventricles, item["ventricles"]) if item["ventricles"] is not None else None)
        rows.append({"id": item["id"], "metrics": metrics, "macs_true": item["macs"], "lesion_ml": metrics.get("pvl_volume_ml", 0.0)})
    volumes = np.array([r["lesion_ml"] for r in rows])
    scale = float(np.median(volumes)) or 1.0
    for r in rows:  # a monotone score of lesion volume: AUC reads its ranking, 0.5 falls at the median volume
        r["macs_probability"] = float(r["lesion_ml"] / (r["lesion_ml"] + scale))
    return summarise(rows)


def choose_thresholds(cases: list[dict], near_ventricles: np.ndarray) -> tuple[float, float]:
    """The lesion and ventricle thresholds of best mean Dice on ``cases`` (each chosen on its own: they do not interact)."""
    from shmn.measures.metrics import dice

    lesion_scores: dict[float, list[float]] = {t: [] for t in LESION_THRESHOLDS}
    ventricle_scores: dict[float, list[float]] = {t: [] for t in VENTRICLE_THRESHOLDS}
    for item in cases:
        for lt in LESION_THRESHOLDS:
            if item["pvl"] is not None:
                lesion_scores[lt].append(dice(threshold_masks(item, lt, None, near_ventricles)[0], item["pvl"]))
        for vt in VENTRICLE_THRESHOLDS:
            if item["ventricles"] is not None:
                ventricle_scores[vt].append(dice(threshold_masks(item, None, vt, near_ventricles)[1], item["ventricles"]))
    best_lesion = max(LESION_THRESHOLDS, key=lambda t: float(np.mean(lesion_scores[t])) if lesion_scores[t] else -1.0)
    best_ventricle = max(VENTRICLE_THRESHOLDS, key=lambda t: float(np.mean(ventricle_scores[t])) if ventricle_scores[t] else -1.0)
    return best_lesion, best_ventricle


def template_ventricles_nearby() -> np.ndarray:
    import SimpleITK as sitk
    from scipy import ndimage

    from shmn.io.anatomy import (
        INFERIOR_LATERAL_VENTRICLES,
        LATERAL_VENTRICLES,
        load_anatomy,
    )
    from shmn.preprocessing.preprocess import GRIDS, model_grid_reference

    anatomy = load_anatomy()
    reference = model_grid_reference(GRIDS["fast"], anatomy.template)
    labels = sitk.GetArrayFromImage(sitk.Resample(anatomy.labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    ventricles = np.isin(labels, LATERAL_VENTRICLES + INFERIOR_LATERAL_VENTRICLES)
    return ndimage.distance_transform_edt(~ventricles, sampling=2.0) <= 12.0


def macs_follows_motor_burden(cases: list[dict], records: Path | None) -> dict:
    """Whether the MACS probability rises with the motor-relevant lesion burden the OOD generator drew
    (its cases.json ``motor_ml``): Spearman's rank correlation over the cohort (issue 13, item 2)."""
    if records is None or not records.exists():
        return {}
    from scipy.stats import spearmanr

    motor = {case_id: record["motor_ml"] for case_id, record in json.loads(records.read_text(encoding="utf-8")).items()}
    pairs = [(motor[c["id"]], c["macs_probability"]) for c in cases if c["id"] in motor and c.get("macs_probability") is not None]
    if len(pairs) < 3:
        return {}
    rho = spearmanr(*zip(*pairs)).statistic
    return {"macs_vs_motor_burden_spearman": None if not np.isfinite(rho) else round(float(rho), 3)}


def row(summary: dict) -> dict:
    def mean(key):
        return round(summary[key]["mean"], 3) if key in summary and "mean" in summary[key] else None

    macs = summary.get("macs") or {}
    return {"pvl_dice": mean("pvl_dice"), "pvl_lesion_f1": mean("pvl_lesion_f1"), "ventricle_dice": mean("ventricle_dice"),
            "macs_auc": None if macs.get("auc") is None else round(macs["auc"], 3),
            "macs_accuracy": None if macs.get("accuracy") is None else round(macs["accuracy"], 3), "n": summary.get("pvl_dice", {}).get("n")}


def burden_scores(cases: list[dict]) -> dict:
    """Accuracy and calibration error of the primary MACS estimate (the motor-burden score; its AUC is
    rank_estimates')."""
    from shmn.measures.burden_macs import estimate_pairs
    from shmn.measures.metrics import macs_metrics

    probabilities, labels = estimate_pairs(cases, "burden")
    if not probabilities:
        return {"macs_burden_accuracy": None, "macs_burden_ece": None}
    scores = macs_metrics(probabilities, labels)
    return {"macs_burden_accuracy": round(scores["accuracy"], 3), "macs_burden_ece": round(scores["ece"], 3)}


def main() -> None:
    from shmn.measures.burden_macs import rank_estimates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--model", default="shmn4-fast-phantom")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--tag", default="", help="name of this model's rows and metrics files (default: the model argument's name)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--boundary", choices=("native", "model"), default="native",
                        help="shmn evaluate --boundary: lesion and ventricle boundaries from each input's intensities (native, "
                             "shmn predict's default) or the model's 2 mm ones")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="shmn evaluate --tta / --no-tta: the left-right mirrored pass averaged in (shmn predict's default) or not")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = cohorts(args.work, args.n)
    table: dict[str, dict] = {}
    tag = args.tag or Path(args.model).stem
    for name, manifests in data.items():
        out = args.work / (f"metrics-{name}.json" if tag == "shmn4-fast-phantom" else f"metrics-{tag}-{name}.json")
        if not out.exists():
            shmn("evaluate", args.model, "--data", *map(str, manifests), "--split", "test", "-o", str(out), "--device", "cpu", "-q",
                 "--cache", str(args.work / "cache"), "--boundary", args.boundary, "--tta" if args.tta else "--no-tta")
        metrics = json.loads(out.read_text())
        table[f"{tag} | {name}"] = dict(row(metrics["summary"]), macs_burden_auc=rank_estimates(metrics["cases"])["burden"],
                                        **burden_scores(metrics["cases"]),
                                        **macs_follows_motor_burden(metrics["cases"], args.work / "ood" / "cases.json" if name == "ood" else None))
    if not args.skip_baseline:
        near = template_ventricles_nearby()
        prepared = {name: preprocessed_cases(manifests, args.work / "cache") for name, manifests in data.items()}
        best = choose_thresholds(prepared["in-distribution"], near)
        for name, cases in prepared.items():
            table[f"threshold z>{best[0]}, z<{best[1]} | {name}"] = dict(row(baseline(cases, *best, near)), macs_burden_auc=None,
                                                                        macs_burden_accuracy=None, macs_burden_ece=None)
    (args.work / f"comparison-{tag}.json").write_text(json.dumps(table, indent=1))
    print("| model | cohort | lesion Dice | lesion-wise F1 | ventricle Dice | MACS AUC | MACS accuracy | MACS from burden AUC | "
          "burden accuracy | burden ECE | n |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for key, values in table.items():
        model, cohort = key.split(" | ")
        cells = " | ".join("—" if values[k] is None else f"{values[k]:.3f}"
                           for k in ("pvl_dice", "pvl_lesion_f1", "ventricle_dice", "macs_auc", "macs_accuracy", "macs_burden_auc",
                                     "macs_burden_accuracy", "macs_burden_ece"))
        print(f"| {model} | {cohort} | {cells} | {values['n']} |")


if __name__ == "__main__":
    main()
