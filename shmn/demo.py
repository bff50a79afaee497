"""`make demo`: the radiologist's main job end to end on synthetic data.

Builds a small phantom cohort (real MNI152 anatomy, synthetic PVL lesions, clinical acquisition
grids), runs `shmn predict` with the default (shipped) model on two of its cases, and prints where
the outputs are with each case's MACS group and PVL lesion volume next to the phantom's own truth.

    python -m shmn.demo --out demo-output [--model NAME|PATH] [--device auto|cpu|cuda|cuda:N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shmn import contract
from shmn.errors import ShmnError

DEMO_SEED = 2021


def build_cohort(root: Path, size: str, seed: int) -> Path:
    """The phantom cohort under ``root`` (reused when a previous demo already built it)."""
    from shmn.synthesis import CohortConfig, generate_cohort

    if (root / "pvl" / "manifest.json").exists() and (root / "macs" / "manifest.json").exists():
        print(f"reusing the phantom cohort in {root}")
        return root
    print(f"building a small phantom cohort in {root} (seed {seed}, size {size}) ...", flush=True)
    generate_cohort(root, CohortConfig(seed=seed, n_pvl=2, n_macs=2, n_ventricle_labels=1, size=size), progress=True)
    return root


def pick_cases(root: Path) -> list[tuple[Path, dict]]:
    """Two cases with different truths when possible: the most lesioned PVL case and a MACS case."""
    import numpy as np
    import SimpleITK as sitk

    from shmn.io.manifest import load_manifest

    pvl, macs = load_manifest(root / "pvl"), load_manifest(root / "macs")

    def lesion_ml(case) -> float:
        if not case.pvl:
            return 0.0
        mask = sitk.ReadImage(str(pvl.resolve(case.pvl)))
        return float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(mask.GetSpacing())) / 1000.0

    first = max(pvl.cases, key=lesion_ml)
    groups = {case.macs for case in macs.cases}
    second = next((c for c in macs.cases if c.macs != first.macs), macs.cases[0]) if len(groups) > 1 else macs.cases[0]
    return [
        (pvl.resolve(first.image), {"macs": first.macs, "pvl_ml": lesion_ml(first)}),
        (macs.resolve(second.image), {"macs": second.macs, "pvl_ml": None}),
    ]


def main(argv: list[str] | None = None) -> int:
    from shmn.contract import DEVICES

    parser = argparse.ArgumentParser(prog="python -m shmn.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="folder for the cohort and the predictions")
    parser.add_argument("--model", default=None, help="registered model name or .safetensors file (default: the shipped default model)")
    parser.add_argument("--device", default="auto", metavar="|".join(DEVICES) + "|cuda:N")
    parser.add_argument("--size", default="paper", help="phantom size: paper (clinical-like 1-5 mm acquisitions, what the shipped model was trained on) or small")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ShmnError as exc:
        print(f"shmn demo: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from shmn import DISCLAIMER
    from shmn.inference.batch import predict_many
    from shmn.inference.predict import PredictOptions, load_predictor

    from shmn.io.registry import default_model

    out = Path(args.out)
    if args.model is None:
        try:
            default_model()
        except ShmnError:
            print(
                "shmn demo: no shipped model yet: Resources/models.json registers no default model, so there is nothing "
                "to predict with.\nTrain one (shmn train shmn4 --data COHORT/pvl/manifest.json COHORT/macs/manifest.json "
                "-o RUN), register it, or run the demo with --model PATH.safetensors.",
                file=sys.stderr,
            )
            return 1
    predictor = load_predictor(args.model)
    print(f"model: {predictor.info.name} {predictor.info.version} ({predictor.info.training_statement})")
    cohort = build_cohort(out / "cohort", args.size, args.seed)
    cases = pick_cases(cohort)
    predictions = out / "predictions"
    options = PredictOptions(device=args.device, overwrite=True)
    outcomes = predict_many([path for path, _ in cases], predictions, predictor, options, progress=True)
    print(f"\noutputs in {predictions.resolve()} (summary: {predictions.resolve() / contract.SUMMARY_CSV_FILE}, "
          f"{predictions.resolve() / contract.SUMMARY_HTML_FILE})")
    for outcome, (_, truth) in zip(outcomes, cases):
        if outcome.status != "ok":
            print(f"  {outcome.case}: FAILED: {outcome.error}")
            continue
        report = outcome.report
        pvl = report["pvl"]
        true_pvl = f"; phantom truth {truth['pvl_ml']:.2f} mL" if truth["pvl_ml"] is not None else ""
        # The primary MACS estimate (report.json's macs_primary): the motor-burden one, or the network's.
        primary = report.get("macs_from_burden") if report.get("macs_primary") == "burden" else None
        macs, source = (primary, "motor burden") if primary else (report["macs"], "network")
        print(
            f"  {outcome.case}: MACS {macs['group']} (p(severe) {macs['probability_severe']:.2f} from the {source}; "
            f"phantom truth {truth['macs'] or 'not labelled'}), PVL {pvl['volume_ml']:.2f} mL in {pvl['lesion_count']} "
            f"lesion(s){true_pvl} -> {outcome.folder}"
        )
        for name in (contract.REPORT_HTML_FILE, contract.SEGMENTATION_FILE, contract.OVERVIEW_FILE, contract.REPORT_FILE):
            print(f"      {outcome.folder / name}")
    print(f"\n{DISCLAIMER}")
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
