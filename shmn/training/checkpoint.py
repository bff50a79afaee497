"""The run folder: where each file lives, the resumable training state, and the metrics log.

RUN_DIR/
  config.json            the resolved TrainConfig (a resumed run must match it)
  run.json               manifests, splits, device, precision, cache statistics
  checkpoint.pt          training state after the last completed epoch (the commit point of an epoch)
  model-last.safetensors model after the last completed epoch (shmn.network.model_file, with its card)
  model-best.safetensors model of the best validation epoch
  metrics.jsonl          one JSON object per completed epoch
  curves.png             training curves
  cache/                 preprocessed cases (unless --cache names another folder)

checkpoint.pt holds only tensors, numbers, strings, lists and dicts: it is read with
``torch.load(weights_only=True)`` (no pickle). It is written atomically after the epoch's model
files and before the metrics log, so a kill at any moment leaves a consistent last epoch: resume
starts after the epoch it records and rewrites the log from its own history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from shmn import contract
from shmn.io.atomic import atomic_path, write_text
from shmn.errors import ShmnError

STATE_FORMAT = "shmn-train-state/1"


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / contract.CONFIG_FILE

    @property
    def run(self) -> Path:
        return self.root / contract.RUN_FILE

    @property
    def state(self) -> Path:
        return self.root / contract.CHECKPOINT_FILE

    @property
    def last_model(self) -> Path:
        return self.root / contract.LAST_MODEL_FILE

    @property
    def best_model(self) -> Path:
        return self.root / contract.BEST_MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.root / contract.METRICS_FILE

    @property
    def curves(self) -> Path:
        return self.root / contract.CURVES_FILE

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def has_run(self) -> bool:
        return any(p.exists() for p in (self.config, self.state, self.metrics))


def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise ShmnError(f"{path}: cannot read the training checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ShmnError(f"{path}: not an SHMN training checkpoint (format {STATE_FORMAT} expected)")
    return state


def read_json_file(path: Path, what: str) -> dict:
    """A run folder's JSON file (config.json, run.json) as a dict, or one line saying it is damaged."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShmnError(f"{path}: the run's {what} is damaged ({type(exc).__name__}: {exc}); restore it or start a new run") from None
    if not isinstance(data, dict):
        raise ShmnError(f"{path}: the run's {what} is {type(data).__name__}; expected a JSON object")
    return data


def write_metrics_log(path: Path, history: list[dict]) -> None:
    """The whole log, rewritten atomically (readers that tail it see whole lines only)."""
    write_text(path, "".join(json.dumps(record, allow_nan=True) + "\n" for record in history))


def read_metrics_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise ShmnError(f"{path}: line {number} is damaged ({exc}); the metrics log is rewritten on --resume") from None
    return records
