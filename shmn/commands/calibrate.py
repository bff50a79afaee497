"""`shmn calibrate MODEL --data MANIFEST... [--split val] [--method temperature|platt] [--macs-burden] -o OUT.safetensors`."""

from __future__ import annotations

import argparse

from shmn.io.manifest import SPLITS
from shmn.commands.options import add_data_option, add_device_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit the MACS probability's calibration on validation cases and write a calibrated copy of a model",
        description=(
            "Run MODEL (a run folder's best model, a .safetensors file or a registered model name) on the MACS-labelled "
            "cases of a split (default val: not trained on), fit temperature scaling (default) or Platt scaling of the "
            "MACS logit by negative log-likelihood, and write OUT.safetensors: the same weights, its card holding the "
            "calibration (method, parameters, cases, ECE before/after over 10 equal-width bins), and "
            "OUT.reliability.png beside it. `shmn predict` with OUT reports the calibrated probability. "
            "An existing OUT is never replaced without --overwrite."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="run folder, model file or registered model name")
    add_data_option(parser)
    parser.add_argument("--split", default="val", choices=SPLITS, help="cases to fit on (default: val)")
    parser.add_argument("--method", default="temperature", choices=("temperature", "platt"), help="default: temperature")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="the calibrated model file to write")
    parser.add_argument("--macs-burden", action="store_true",
                        help="also recalibrate the burden MACS estimate (Platt scaling of its score) on the same cases: "
                             "for a cohort whose children reach MACS III-V at other lesion burdens than the phantoms it was fitted on")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT (otherwise an error)")
    add_device_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from shmn.training.calibration import CalibrationConfig, calibrate_model, reliability_path

    entry = calibrate_model(args.model, args.data, args.output, CalibrationConfig(method=args.method, split=args.split, macs_burden=args.macs_burden),
                            device=args.device, overwrite=args.overwrite, progress=not args.quiet)
    parameters = ", ".join(f"{k} = {v:.4g}" for k, v in entry["parameters"].items())
    print(f"{entry['method']} scaling ({parameters}) fitted on {entry['n_cases']} {entry['split']} cases: "
          f"ECE {entry['ece_before']:.3f} -> {entry['ece_after']:.3f} ({entry['ece_bins']}), NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f}")
    if entry["ece_after"] > entry["ece_before"]:
        # The fit minimises NLL; binned ECE on a few dozen cases is noisy and can rise while NLL falls.
        print(f"note: ECE rose on the fitting cases; with {entry['n_cases']} cases judge it on another split (`shmn evaluate`)")
    thresholds = entry.get("operating_thresholds")
    if thresholds:
        print(f"ventricle operating threshold {thresholds['ventricles']:g} (best mean Dice {thresholds['mean_dice'][format(thresholds['ventricles'], 'g')]:.3f} "
              f"on {len(thresholds['cases'])} {thresholds['split']} cases with a ventricle mask; 0.5 gave {thresholds['mean_dice']['0.5']:.3f})")
    burden = entry.get("burden_calibration")
    if burden:
        print(f"burden MACS estimate: Platt scaling (a = {burden['parameters']['a']:.4g}, b = {burden['parameters']['b']:.4g}) of its score: "
              f"ECE {burden['ece_before']:.3f} -> {burden['ece_after']:.3f}, NLL {burden['nll_before']:.4f} -> {burden['nll_after']:.4f}")
    print(f"model:       {args.output} sha256 {entry['sha256']}")
    print(f"reliability: {reliability_path(args.output)}")
    return 0
