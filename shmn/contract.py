"""The names the engine and the two Slicer modules share: one place, no torch, nothing but the standard library.

SHMN Segmenter and SHMN Training read the engine's output folders and run folders, start its
commands with its device, preset and resolution names, read its model cards and follow its
progress. They import these names from here (in Slicer's own process, so this file must stay
light: standard library only) instead of copying the values, so a renamed file breaks a test,
not a radiologist's run.

Machine-readable lines (``<PREFIX> {json}``, one per line on stdout) carry progress across the
process line: ``SHMN-EPOCH`` (one per completed epoch: the metrics.jsonl record) and
``SHMN-PROGRESS`` (what the engine is doing and how far). ``SHMN-PROGRESS`` lines replace the
progress bars when the engine's environment has ``SHMN_PROGRESS=lines`` (as the Slicer modules
start it); on a terminal the engine draws tqdm bars instead.
"""

from __future__ import annotations

import json
import os

# --- one case's output folder (`shmn predict -o OUT` writes OUT/<case>/...) --------------------------
PVL_FILE = "pvl.nii.gz"
VENTRICLES_FILE = "ventricles.nii.gz"
BRAIN_FILE = "brain.nii.gz"
SEGMENTATION_FILE = "segmentation.seg.nrrd"
REPORT_FILE = "report.json"
OVERVIEW_FILE = "overview.png"
REPORT_HTML_FILE = "report.html"
REPORT_PDF_FILE = "report.pdf"
MASK_FILES = {"pvl": PVL_FILE, "ventricles": VENTRICLES_FILE}
# Written with `shmn predict --probabilities`: what the masks were thresholded from (pseudo-label confidence).
PROBABILITY_FILES = {"pvl": "pvl_probability.nii.gz", "ventricles": "ventricles_probability.nii.gz"}
# ... and per batch, in OUT itself
SUMMARY_CSV_FILE = "summary.csv"
SUMMARY_HTML_FILE = "summary.html"

# --- a training run's folder (`shmn train -o RUN_DIR`) --------------------------------------------
CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "model-best.safetensors"
LAST_MODEL_FILE = "model-last.safetensors"
MODEL_FILES = (BEST_MODEL_FILE, LAST_MODEL_FILE)  # best first: the one a run is judged and registered by
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
EVALUATION_SPLIT = "test"  # the held-out split `shmn evaluate` reports by default


def evaluation_file_name(split: str = EVALUATION_SPLIT) -> str:
    """Where SHMN Training keeps `shmn evaluate`'s result inside a run folder."""
    return f"evaluation-{split}.json"


# --- choices on the command line ---------------------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda")  # `--device`; training also takes "cuda:N"
TASK_PRESETS = ("shmn4", "shmn4-star", "shmn3", "shmn2", "single-pvl", "single-macs")  # paper Table 1
# The branches each task preset builds, in network order (shmn.training.config.TASK_PRESETS takes them from
# here): SHMN Training tells from a registry entry, without torch, whether a run can start from that model.
PRESET_TASKS = {
    "shmn4": ("pvl", "ventricles", "localization", "macs"),
    "shmn4-star": ("pvl", "ventricles", "localization", "macs"),
    "shmn3": ("pvl", "localization", "macs"),
    "shmn2": ("pvl", "macs"),
    "single-pvl": ("pvl",),
    "single-macs": ("macs",),
}
RESOLUTIONS = ("fast", "paper", "tiny")  # each expands to one model grid and network width
MACS_GROUPS = ("mild", "severe")  # MACS I-II, MACS III-V
LABEL_KINDS = ("pvl", "ventricles")  # mask labels of a dataset case; "macs" is a group in the manifest itself

# --- model files: safetensors weights + a JSON card in the header's metadata -------------------------
WEIGHTS_SUFFIX = ".safetensors"
CARD_KEY = "shmn"  # the metadata key that holds the card
MODEL_FORMAT = "shmn-model/1"
# Card fields worth copying into a registry entry (what a model selector shows without loading weights).
CARD_FIELDS = ("preset", "grid", "tasks", "training_data", "metrics", "intended_use")

# --- machine-readable lines on stdout ------------------------------------------------------------------
EPOCH_PREFIX = "SHMN-EPOCH"
PROGRESS_PREFIX = "SHMN-PROGRESS"
ERROR_PREFIX = "shmn: error:"  # how the command line reports an error the user can fix (then exit 2)
PROGRESS_ENV = "SHMN_PROGRESS"  # "lines": SHMN-PROGRESS lines on stdout instead of progress bars
PROGRESS_LINES = "lines"


def structured_line(prefix: str, record: dict) -> str:
    """``<prefix> {json}`` on one line (NaN allowed: a loss can be NaN and must still arrive)."""
    return f"{prefix} {json.dumps(record, allow_nan=True)}"


def read_structured_line(line: str, prefix: str) -> dict | None:
    """The record of a ``<prefix> {json}`` line, else None (an ordinary log line, or a damaged one)."""
    text = line.strip()
    if not text.startswith(prefix + " "):
        return None
    try:
        record = json.loads(text[len(prefix) + 1:])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def progress_record(stage: str, done: int, total: int | None, percent: float | None = None, **extra) -> dict:
    """An ``SHMN-PROGRESS`` record: the stage, steps done of total, and the percent of the whole job.

    ``percent`` defaults to done/total; a stage that is one part of a longer job (epoch 3 of 10)
    gives the job's share itself, so a GUI shows one bar that never goes backwards.
    """
    if percent is None and total:
        percent = 100.0 * done / total
    record = {"stage": stage, "done": done, "total": total, "percent": None if percent is None else round(float(percent), 2)}
    record.update(extra)
    return record


def read_progress_line(line: str) -> dict | None:
    """The record of an ``SHMN-PROGRESS`` line (with a "stage" string), else None."""
    record = read_structured_line(line, PROGRESS_PREFIX)
    if record is None or not isinstance(record.get("stage"), str):
        return None
    percent = record.get("percent")
    if percent is not None and not isinstance(percent, (int, float)):
        return None
    return record


def read_epoch_line(line: str) -> dict | None:
    """The epoch record of an ``SHMN-EPOCH`` line (with an "epoch"), else None."""
    record = read_structured_line(line, EPOCH_PREFIX)
    return record if record is not None and "epoch" in record else None


def progress_lines_wanted(environ: dict | None = None) -> bool:
    """True when the engine runs under a GUI that asked for SHMN-PROGRESS lines."""
    return (os.environ if environ is None else environ).get(PROGRESS_ENV, "") == PROGRESS_LINES
