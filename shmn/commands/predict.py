"""`shmn predict INPUT... -o OUT`: PVL and ventricle masks, lesion centres and MACS group per input."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from shmn.errors import ShmnError
from shmn.commands.options import add_boundary_option, add_device_option, add_tta_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="segment PVL lesions and ventricles and predict the MACS group of T2 FLAIR volumes",
        description=(
            "For each INPUT (NIfTI, NRRD, MHA/MHD file, DICOM series folder, or a folder of image files) write "
            "OUT/<case>/ with pvl.nii.gz, ventricles.nii.gz (on the input's own voxel grid), segmentation.seg.nrrd, "
            "report.json, overview.png, report.html and report.pdf, and OUT/summary.csv and OUT/summary.html. Research software: the shipped model is trained on "
            "synthetic data only and is not for clinical use."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, DICOM series folder, or folder of image files")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if needed)")
    parser.add_argument("--model", default=None, metavar="NAME|PATH", help="registered model name (name@version) or a .safetensors file; default: the registry's default model")
    add_device_option(parser, help="where to run the network (auto: CUDA if available; cuda:N: GPU N; falls back to the CPU when the GPU runs out of memory)")
    parser.add_argument("--no-register", action="store_true", help="the inputs are already in MNI152 space: skip the registration")
    parser.add_argument("--overwrite", action="store_true", help="replace existing OUT/<case> folders (otherwise such a case fails)")
    add_tta_option(parser, "also run the left-right mirrored volume and average the two passes; lesions they disagree "
                           "on are flagged in report.json")
    parser.add_argument("--probabilities", action="store_true", help="also write pvl_probability.nii.gz and ventricles_probability.nii.gz (float32, 0-1, on the input's grid)")
    parser.add_argument("--anonymise", action="store_true", help="report.html and report.pdf without the patient's name, ID, study date or file name")
    parser.add_argument("--sliding-window", action="store_true", help="force sliding-window inference (less memory, slower)")
    parser.add_argument("--lesion-grid", choices=("auto", "1mm", "2mm"), default="auto",
                        help="lesions at 1 mm (the model's lesion refiner inside the periventricular box) or at the model's 2 mm grid; "
                             "auto: 1 mm when the model links a refiner")
    parser.add_argument("--min-lesion-ml", type=_non_negative_ml, default=None, metavar="ML",
                        help="drop lesion components smaller than this (mL); default: one voxel of the lesion grid "
                             "(0.008 mL at 2 mm, 0.001 mL at 1 mm); 0 keeps every component")
    parser.add_argument("--keep-lesions-not-shown", action="store_true",
                        help="keep in the lesion mask the components that do not stand out from the tissue around them "
                             "(by default they are left out of the mask, volume and motor burden and listed in report.json "
                             "pvl.not_shown)")
    add_boundary_option(parser)
    return parser


def _non_negative_ml(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a volume in mL, 0 or more (e.g. 0.008)")
    return value


def run(args: argparse.Namespace) -> int:
    from shmn.devices import resolve_device
    from shmn.inference.batch import expand_inputs, predict_many
    from shmn.inference.predict import PredictOptions, load_predictor
    from shmn.reporting.report import findings

    quiet = bool(getattr(args, "quiet", False))
    out_dir = Path(args.output)
    resolve_device(args.device)  # a wrong or absent device fails before the model is even read
    inputs = expand_inputs(args.inputs)
    # The model is resolved and verified (sha256) before anything is written.
    predictor = load_predictor(args.model)
    if getattr(args, "lesion_grid", "auto") == "1mm" and predictor.refiner is None:
        raise ShmnError(f"--lesion-grid 1mm: model {predictor.info.name} links no lesion refiner (registry entry 'lesion_refiner')")
    options = PredictOptions(
        device=args.device, register=not args.no_register, overwrite=args.overwrite, sliding_window=args.sliding_window,
        probabilities=args.probabilities, anonymise=args.anonymise, tta=args.tta,
        lesion_1mm={"auto": None, "1mm": True, "2mm": False}[getattr(args, "lesion_grid", "auto")],
        min_lesion_ml=getattr(args, "min_lesion_ml", None),
        native_boundary=getattr(args, "boundary", "native") == "native",
        lesions_shown_only=not getattr(args, "keep_lesions_not_shown", False),
    )
    created = not out_dir.exists()
    try:
        with _cleanup_on_sigterm():
            outcomes = predict_many(inputs, out_dir, predictor, options, progress=not quiet, on_failure=None if len(inputs) == 1 else _print_failure)
    except ShmnError:
        _remove_if_empty(out_dir, created)
        raise
    failed = [o for o in outcomes if o.status == "failed"]
    if len(outcomes) == 1 and failed:
        # One input: its error is the command's error (one line, exit 2), and nothing is left behind.
        _remove_if_empty(out_dir, created)
        raise ShmnError(failed[0].error)
    for outcome in outcomes:
        for warning in (outcome.report or {}).get("warnings", []):
            print(f"shmn: warning: {outcome.case}: {warning}", file=sys.stderr)
    if not quiet:
        for outcome in outcomes:
            if outcome.status == "ok":
                print(f"{outcome.case}: {', '.join(findings(outcome.report))} -> {outcome.folder}")
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} case(s) done; summary: {out_dir / 'summary.csv'}, {out_dir / 'summary.html'}")
    return 1 if failed else 0


@contextlib.contextmanager
def _cleanup_on_sigterm():
    """SIGTERM (what Slicer's Cancel sends) raises SystemExit in the main thread, so that the case
    being written removes its temporary folder and releases its claim instead of leaving them behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_failure(outcome) -> None:
    from tqdm import tqdm

    tqdm.write(f"shmn: case failed: {outcome.error}", file=sys.stderr)


def _remove_if_empty(folder: Path, created: bool) -> None:
    if created and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
