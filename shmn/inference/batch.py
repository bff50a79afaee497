"""`shmn predict` over many inputs: expand folders, one case after another, a failed case does not
stop the others, OUT/summary.csv, and progress (a bar over cases, or over one case's stages).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import SimpleITK as sitk

from shmn.io.atomic import ensure_writable_dir, write_text
from shmn.io.claim import remove_stale_temp_files
from shmn.errors import ShmnError
from shmn.progress import progress_bar
from shmn.contract import SUMMARY_CSV_FILE
from shmn.devices import resolve_device
from shmn.inference.predict import CASE_STAGES, PredictOptions, Predictor, load_predictor, predict_case
from shmn.reporting.summary_report import write_summary_html
from shmn.reporting.report import SUMMARY_COLUMNS, failure_row, summary_row
from shmn.io.volume_io import IMAGE_SUFFIXES, case_name, quiet_itk


@dataclass
class CaseOutcome:
    input: Path
    case: str
    status: str  # ok | failed
    seconds: float
    error: str = ""
    report: dict | None = None
    folder: Path | None = None


def _dicom_series_in(folder: Path) -> bool:
    with quiet_itk():  # "No Series were found" would print before any result or error line
        try:
            return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except RuntimeError:
            return False


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and any(name.endswith(s) for s in IMAGE_SUFFIXES) and not name.endswith(".seg.nrrd")


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files stay; a DICOM series folder stays; any other folder becomes the image files inside it (sorted)."""
    expanded: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not _dicom_series_in(path):
            images = sorted(p for p in path.iterdir() if _is_image_file(p))
            # A folder with neither images nor DICOM stays as it is: reading it gives the clear error.
            expanded.extend(images or [path])
        else:
            expanded.append(path)
    return expanded


class _StageBar:
    """A bar (or SHMN-PROGRESS lines, shmn.progress) over CASE_STAGES that appears after the first stage (reading) succeeded."""

    def __init__(self, case: str):
        self.case, self.bar = case, None

    def __call__(self, stage: str) -> None:
        if self.bar is None:
            self.bar = progress_bar(total=len(CASE_STAGES), desc=self.case, unit="step")
        self.bar.set_postfix_str(stage)
        self.bar.update(1)

    def __enter__(self) -> "_StageBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def write_summary(path: Path, outcomes: list[CaseOutcome]) -> Path:
    """OUT/summary.csv: one row per case folder in OUT (read from its report.json, whichever run
    wrote it), plus a "failed" row for each of ``outcomes`` that failed and has no folder.

    Built from the folder, not from the current run alone: adding one case to an output folder
    holding ten keeps eleven rows, and a re-run whose cases already exist still lists their results.
    """
    import csv
    import io

    rows = summary_rows_in(path.parent)
    for outcome in outcomes:
        if outcome.status != "ok" and outcome.case not in rows:
            rows[outcome.case] = failure_row(outcome.case, outcome.error, outcome.seconds)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in sorted(rows):
        writer.writerow(rows[case])
    remove_stale_temp_files(path.parent, path.name)
    return write_text(path, buffer.getvalue())


def summary_rows_in(out_dir: Path) -> dict[str, dict]:
    """case -> summary row of every finished case folder in ``out_dir`` (hidden temporary folders skipped)."""
    import json

    rows: dict[str, dict] = {}
    for folder in sorted(Path(out_dir).iterdir()):
        report_file = folder / "report.json"
        if folder.name.startswith(".") or not folder.is_dir() or not report_file.is_file():
            continue
        try:
            report = json.loads(report_file.read_text(encoding="utf-8"))
            rows[folder.name] = summary_row(report, float(report.get("timings_s", {}).get("total", 0.0)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            rows[folder.name] = failure_row(folder.name, f"{report_file}: unreadable report ({exc})", 0.0)
    return rows


def predict_many(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: Predictor | str | os.PathLike | None = None,
    options: PredictOptions = PredictOptions(),
    progress: bool = True,
    on_failure: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """Predict every input; a failed case is recorded (and reported through ``on_failure``), the others go on.

    Writes OUT/summary.csv (one row per input) when there is more than one input or a case succeeded.
    """
    paths = expand_inputs(inputs)
    if not paths:
        raise ShmnError("no input images given")
    resolve_device(options.device)  # an impossible --device fails before any work, not once per case
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    out_dir = Path(out_dir)
    ensure_writable_dir(out_dir)
    outcomes: list[CaseOutcome] = []
    seen: dict[str, Path] = {}
    for path in progress_bar(paths, desc="shmn predict", unit="case", enabled=progress and len(paths) > 1):
        start = time.perf_counter()
        case = path.name
        try:
            case = case_name(path)
            if case in seen:
                raise ShmnError(f"{path}: gives the same case name '{case}' as {seen[case]}; rename one of them")
            seen[case] = path
            if progress and len(paths) == 1:
                # One case (as Slicer runs it): a bar over its stages so a GUI can show real progress.
                # It opens once the input has been read, so a bad file gives its error line alone.
                with _StageBar(case) as on_stage:
                    report = predict_case(path, out_dir, predictor, options, on_stage=on_stage)
            else:
                report = predict_case(path, out_dir, predictor, options)
            outcomes.append(CaseOutcome(path, case, "ok", time.perf_counter() - start, report=report, folder=out_dir / case))
        except ShmnError as exc:
            outcomes.append(CaseOutcome(path, case, "failed", time.perf_counter() - start, error=str(exc)))
        except (Exception, MemoryError) as exc:  # noqa: BLE001 - one broken case must not stop a batch
            error = f"{path}: unexpected {type(exc).__name__}: {exc}".splitlines()[0]
            outcomes.append(CaseOutcome(path, case, "failed", time.perf_counter() - start, error=error))
        if outcomes[-1].status == "failed" and on_failure is not None:
            on_failure(outcomes[-1])
        # After every case, so that a killed batch still leaves a summary of what it finished.
        if len(paths) > 1 or any(o.status == "ok" for o in outcomes):
            write_summary(out_dir / SUMMARY_CSV_FILE, outcomes)
            write_summary_html(out_dir)  # summary.html from that summary.csv (shmn.reporting.summary_report)
    return outcomes
