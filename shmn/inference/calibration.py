"""Applying a model card's MACS calibration at inference, and what report.json says about it.

`shmn calibrate` (shmn.training.calibration) fits the calibration on a model's validation cases and
stores it in the card under ``"calibration"``:
``{"method": "temperature"|"platt", "parameters": {...}, "n_cases", "split", "ece_before", "ece_after", ...}``.
Both methods map the MACS logit z to ``sigmoid(a * z + b)``: temperature scaling has a = 1/T, b = 0
(it changes confidence, never the ranking or the 0.5 decision); Platt scaling fits a and b.
Standard library only: the torch-free side of the engine (and a card reader in Slicer) can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from shmn.errors import ShmnError

CARD_KEY = "calibration"
# The burden MACS estimate's own calibration (`shmn calibrate --macs-burden`): Platt scaling of its score, fitted on
# a site's labelled cases, for a cohort whose children reach MACS III-V at other burdens than our phantoms.
BURDEN_CARD_KEY = "burden_calibration"
METHODS = ("temperature", "platt")
METHOD_NAMES = {"temperature": "temperature scaling", "platt": "Platt scaling"}
# A probability is turned back into a logit with this margin (a float32 sigmoid saturates at 1.0).
PROBABILITY_EPS = 1e-7
NO_CALIBRATION_NOTE = ("this model carries no calibration: the probability is the network's raw output; "
                       "fit one on validation cases with `shmn calibrate`")


@dataclass(frozen=True)
class Calibration:
    """p = sigmoid(slope * logit + intercept), with the fit's record from the card."""

    method: str
    slope: float
    intercept: float
    record: dict  # the card's calibration entry as stored

    def probability(self, logit: float) -> float:
        return sigmoid(self.slope * float(logit) + self.intercept)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def logit(probability: float) -> float:
    p = min(max(float(probability), PROBABILITY_EPS), 1.0 - PROBABILITY_EPS)
    return math.log(p) - math.log1p(-p)


def _number(value: object, what: str, source: str, key: str = CARD_KEY) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ShmnError(f"{source}: model card '{key}.parameters.{what}' is {value!r}; expected a finite number")
    return float(value)


def calibration_from_card(card: dict, source: str, key: str = CARD_KEY) -> Optional[Calibration]:
    """The card's calibration under ``key`` (the network's MACS probability; BURDEN_CARD_KEY: the burden estimate's),
    None when it has none; one clear error when it is damaged."""
    entry = card.get(key)
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("method") not in METHODS or not isinstance(entry.get("parameters"), dict):
        raise ShmnError(f"{source}: model card '{key}' is {entry!r:.120}; expected {{method: {' or '.join(METHODS)}, parameters}}")
    parameters = entry["parameters"]
    if entry["method"] == "temperature":
        temperature = _number(parameters.get("temperature"), "temperature", source, key)
        if temperature <= 0:
            raise ShmnError(f"{source}: model card '{key}.parameters.temperature' is {temperature}; expected > 0")
        return Calibration("temperature", 1.0 / temperature, 0.0, entry)
    return Calibration("platt", _number(parameters.get("a"), "a", source, key), _number(parameters.get("b"), "b", source, key), entry)


def check_calibrations(card: dict, source: str) -> None:
    """Both calibration entries of a card read, or one clear error (at model load, before any case)."""
    for key in (CARD_KEY, BURDEN_CARD_KEY):
        calibration_from_card(card, source, key)


def calibrate_macs(raw_probability: Optional[float], raw_logit: Optional[float], calibration: Optional[Calibration]) -> tuple[Optional[float], dict]:
    """(the probability to report, the keys report.json's ``macs`` entry gains: calibrated, calibration).

    Without a calibration the raw probability is reported and the entry says so; with one, the
    calibrated probability is reported and the raw one is kept beside it.
    """
    if raw_probability is None:
        return None, {"calibrated": False, "calibration": None}
    if calibration is None:
        return raw_probability, {"calibrated": False, "calibration": {"note": NO_CALIBRATION_NOTE}}
    z = raw_logit if raw_logit is not None and math.isfinite(raw_logit) else logit(raw_probability)
    record = calibration.record
    entry = {
        "method": METHOD_NAMES[calibration.method],
        "parameters": dict(record.get("parameters") or {}),
        "fitted_on": {key: record.get(key) for key in ("split", "n_cases") if key in record},
        "ece_before": record.get("ece_before"),
        "ece_after": record.get("ece_after"),
        "uncalibrated_probability_severe": round(float(raw_probability), 4),
    }
    return calibration.probability(z), {"calibrated": True, "calibration": entry}
