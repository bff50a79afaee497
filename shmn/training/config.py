"""Training configuration: typed dataclasses, the paper's task presets and the resolution presets.

A configuration is built in layers, each able to override the one before:

1. defaults of ``TrainConfig``;
2. a task preset (paper section 3, Table 1): which branches exist and how ventricle labels are used;
3. a resolution preset: the model grid and the network's width;
4. a JSON file (any field, nested), e.g. ``{"preset": "shmn4", "resolution": "fast", "epochs": 30,
   "loss": {"macs_epsilon": 0.5}}``;
5. command-line options (``--epochs``, ``--device``, ``--resolution``, ``--seed`` ...).

Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from shmn.contract import DEVICES, PRESET_TASKS  # noqa: F401 - DEVICES re-exported: the config's device names are the contract's
from shmn.errors import ShmnError
from shmn.network.losses import LossConfig
from shmn.network.model import NetworkConfig
from shmn.preprocessing.preprocess import GRIDS, GridSpec, PreprocessConfig
from shmn.training.fieldtypes import field_types

# Task presets (paper Table 1). ventricle_label_limit: None = every ventricle mask of the train and
# val splits; 10 = SHMN-4*, only the first 10 in manifest order, the rest get pseudo-labels.
TASK_PRESETS: dict[str, dict] = {
    "single-pvl": {"tasks": PRESET_TASKS["single-pvl"], "ventricle_label_limit": None, "pseudo_labels": False},
    "single-macs": {"tasks": PRESET_TASKS["single-macs"], "ventricle_label_limit": None, "pseudo_labels": False},
    "shmn2": {"tasks": PRESET_TASKS["shmn2"], "ventricle_label_limit": None, "pseudo_labels": False},
    "shmn3": {"tasks": PRESET_TASKS["shmn3"], "ventricle_label_limit": None, "pseudo_labels": False},
    "shmn4": {"tasks": PRESET_TASKS["shmn4"], "ventricle_label_limit": None, "pseudo_labels": False},
    "shmn4-star": {"tasks": PRESET_TASKS["shmn4-star"], "ventricle_label_limit": 10, "pseudo_labels": True},
}

# Resolution presets: model grid (shmn.preprocessing.preprocess.GRIDS) and network width/depth. "fast" is what a
# CPU can train (docs/DESIGN.md section 7); "paper" is the paper's 1 mm grid (GPU); "tiny" is for tests.
RESOLUTION_PRESETS: dict[str, dict] = {
    # tiny: brain-only test cohorts of ~4 mm voxels, so no brain extraction (deepbet costs seconds per case).
    "tiny": {"grid": "tiny", "base_filters": 4, "levels": 4, "macs_hidden": 16, "brain_extraction": "none"},
    "fast": {"grid": "fast", "base_filters": 8, "levels": 5, "macs_hidden": 32},
    "paper": {"grid": "paper", "base_filters": 32, "levels": 5, "macs_hidden": 64},
}

SYNTHESIS_MODES = ("off", "on-the-fly", "mixed")
SYNTHESIS_ANATOMIES = ("mni152", "icbm2009")  # shmn.synthesis.randomised.anatomies.SOURCES (torch-free here)
AMP_MODES = ("auto", "off", "bf16", "fp16")
# Fields that may change when a run is resumed: they do not change what is computed (precision
# and device only change rounding; a resumed run reproduces the original only when they are kept).
RESUMABLE_CHANGES = ("epochs", "device", "num_workers", "name", "version", "amp", "cpu_bf16", "dist_timeout_min")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "shmn4"
    resolution: str = "fast"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Model grid name (shmn.preprocessing.preprocess.GRIDS): always the resolution preset's grid (a config
    # that sets another is refused; kept so that config.json says it). Preprocessing options besides the
    # grid live in `preprocess`, whose own `grid` field is always replaced by this one (see preprocess_config()).
    grid: str = "fast"
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(grid=GRIDS["fast"]))
    epochs: int = 30
    batch_size: int = 2
    lr: float = 3e-4
    weight_decay: float = 0.0
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    seed: int = 0
    augment: bool = True
    num_workers: int = 0
    device: str = "auto"
    # "auto": bf16 autocast on a CUDA GPU with bf16 (else fp16 + GradScaler); on the CPU only with
    # cpu_bf16 (a 2-3x speed-up on CPUs with bf16 instructions, docs/DESIGN.md section 7; off by default so
    # that tests compare exact fp32 numbers). "off", "bf16" or "fp16" force a mode.
    amp: str = "auto"
    cpu_bf16: bool = False
    val_every: int = 1
    # Ventricle labels: keep only the first N labelled train/val cases (manifest order); None = all.
    ventricle_label_limit: int | None = None
    # Share of the ventricle-labelled train/val cases whose mask is held out for validation (9:1).
    ventricle_val_fraction: float = 0.1
    density_sigma_mm: float = 4.0
    name: str = ""
    version: str = "0.1.0"
    # Minutes a rank waits at a barrier (rank 0 preprocesses every case while the others wait).
    dist_timeout_min: float = 180.0
    # Training images synthesised on the fly from label maps (shmn.synthesis.randomised, issue 12):
    # "off" (the manifests' train cases), "on-the-fly" (only synthesised samples train; the manifests'
    # val cases still validate) or "mixed" (both). synthesis_samples: synthesised samples per epoch
    # (0 = as many as train cases, at least 8); synthesis_anatomies: the label-map sources drawn from.
    synthesis: str = "off"
    synthesis_samples: int = 0
    synthesis_anatomies: tuple[str, ...] = ("mni152", "icbm2009")
    # Poorly nulled CSF in synthesised FLAIR-ordered images: (share of them, lowest and highest CSF mean as a
    # fraction of white matter's); shmn.synthesis.randomised.intensities.IntensityConfig.
    synthesis_csf_unsuppressed: tuple[float, float, float] = (0.3, 0.45, 0.95)
    # Slit-like lateral ventricles in synthesised subjects without or with mild PVL: (share of them, lowest and
    # highest share of the ventricle wall moved one voxel inward); shmn.synthesis.randomised.pathology.
    # PathologyConfig. Share 0: never.
    synthesis_ventricle_narrowing: tuple[float, float, float] = (0.0, 0.3, 0.8)
    # A model (registry name, name@version or .safetensors) whose weights start the run instead of a
    # random initialisation: fine-tuning on one's own cohort, or a second stage with other losses.
    # Its network must match this config's. "" = random initialisation from `seed`.
    init_model: str = ""
    # MACS class balance (issue 13): eq. 1's epsilon becomes the training cases' severe/mild ratio, and
    # synthesised samples alternate between a mild-leaning and a severe-leaning severity draw (their
    # labels still follow the drawn motor burden).
    macs_balance: bool = False

    def __post_init__(self) -> None:
        validate(self)

    @property
    def grid_spec(self) -> GridSpec:
        return GRIDS[self.grid]

    def preprocess_config(self) -> PreprocessConfig:
        return replace(self.preprocess, grid=self.grid_spec)

    @property
    def model_name(self) -> str:
        preset = self.preset if self.preset.startswith("shmn") else f"shmn-{self.preset}"
        return self.name or f"{preset}-{self.resolution}"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["preprocess"].pop("grid", None)  # the `grid` name says it; see preprocess_config()
        return data


def validate(cfg: TrainConfig) -> None:
    def bad(key: str, what: str) -> ShmnError:
        return ShmnError(f"config: {key} {what}")

    if cfg.preset not in TASK_PRESETS:
        raise bad("preset", f"{cfg.preset!r} is unknown; expected one of {', '.join(TASK_PRESETS)}")
    if cfg.resolution not in RESOLUTION_PRESETS:
        raise bad("resolution", f"{cfg.resolution!r} is unknown; expected one of {', '.join(RESOLUTION_PRESETS)}")
    if cfg.grid not in GRIDS:
        raise bad("grid", f"{cfg.grid!r} is unknown; expected one of {', '.join(GRIDS)}")
    # One source of truth: the resolution names the grid (and the model: "shmn4-fast"); a config
    # asking for another grid would make a model called "fast" on the 1 mm grid.
    resolution_grid = RESOLUTION_PRESETS[cfg.resolution]["grid"]
    if cfg.grid != resolution_grid:
        raise bad("grid", f"{cfg.grid!r} contradicts resolution {cfg.resolution!r} (whose grid is {resolution_grid!r}); "
                          "set 'resolution' alone: the grid follows from it")
    divisor = cfg.network.divisor
    size = GRIDS[cfg.grid].size
    if any(s % divisor for s in size):
        raise bad("network.levels", f"{cfg.network.levels} needs grid sizes divisible by {divisor}; grid {cfg.grid!r} is {size}")
    if cfg.epochs < 0 or cfg.batch_size < 1 or cfg.val_every < 1 or cfg.num_workers < 0:
        raise bad("epochs/batch_size/val_every/num_workers", "must be >= 0, >= 1, >= 1 and >= 0")
    numbers = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "plateau_factor": cfg.plateau_factor, "min_lr": cfg.min_lr,
               "ventricle_val_fraction": cfg.ventricle_val_fraction, "density_sigma_mm": cfg.density_sigma_mm,
               "dist_timeout_min": cfg.dist_timeout_min}
    for key, value in numbers.items():
        if not math.isfinite(value):
            raise bad(key, f"is {value}; expected a finite number")
    if cfg.lr <= 0 or not 0 < cfg.plateau_factor < 1 or cfg.plateau_patience < 0:
        raise bad("lr/plateau_factor/plateau_patience", "must be > 0, in (0, 1) and >= 0")
    from shmn.devices import parse_device  # here, not at the top: shmn.devices reads DEVICES from this module

    parse_device(cfg.device, option="config: device")
    if cfg.amp not in AMP_MODES:
        raise bad("amp", f"{cfg.amp!r} is unknown; expected one of {', '.join(AMP_MODES)}")
    if cfg.ventricle_label_limit is not None and cfg.ventricle_label_limit < 0:
        raise bad("ventricle_label_limit", "must be >= 0 or null")
    if not 0 <= cfg.ventricle_val_fraction < 1:
        raise bad("ventricle_val_fraction", "must be in [0, 1)")
    if cfg.density_sigma_mm <= 0:
        raise bad("density_sigma_mm", "must be > 0")
    if cfg.synthesis not in SYNTHESIS_MODES:
        raise bad("synthesis", f"{cfg.synthesis!r} is unknown; expected one of {', '.join(SYNTHESIS_MODES)}")
    if cfg.synthesis_samples < 0:
        raise bad("synthesis_samples", "must be >= 0 (0 = as many as train cases)")
    unknown = [a for a in cfg.synthesis_anatomies if a not in SYNTHESIS_ANATOMIES]
    if unknown or not cfg.synthesis_anatomies:
        raise bad("synthesis_anatomies", f"{list(cfg.synthesis_anatomies)!r}: expected one or more of {', '.join(SYNTHESIS_ANATOMIES)}")
    share, low, high = cfg.synthesis_csf_unsuppressed
    if not (0 <= share <= 1 and 0 <= low < high):
        raise bad("synthesis_csf_unsuppressed", f"{list(cfg.synthesis_csf_unsuppressed)!r}: expected [share 0-1, low, high] with 0 <= low < high")
    share, low, high = cfg.synthesis_ventricle_narrowing
    if not (0 <= share <= 1 and 0 < low < high <= 1):
        raise bad("synthesis_ventricle_narrowing",
                  f"{list(cfg.synthesis_ventricle_narrowing)!r}: expected [share 0-1, low, high] with 0 < low < high <= 1")


def preset_config(preset: str = "shmn4", resolution: str = "fast") -> TrainConfig:
    """The configuration of a task preset at a resolution, before any override."""
    if preset not in TASK_PRESETS:
        raise ShmnError(f"preset {preset!r}: unknown; expected one of {', '.join(TASK_PRESETS)} (optionally ':fast', ':paper', ':tiny') or a JSON file")
    if resolution not in RESOLUTION_PRESETS:
        raise ShmnError(f"resolution {resolution!r}: unknown; expected one of {', '.join(RESOLUTION_PRESETS)}")
    task, res = TASK_PRESETS[preset], RESOLUTION_PRESETS[resolution]
    network = NetworkConfig(
        base_filters=res["base_filters"], levels=res["levels"], tasks=task["tasks"], macs_hidden=res["macs_hidden"]
    )
    return TrainConfig(
        preset=preset,
        resolution=resolution,
        network=network,
        loss=LossConfig(pseudo_labels=task["pseudo_labels"]),
        grid=res["grid"],
        preprocess=PreprocessConfig(grid=GRIDS[res["grid"]], brain_extraction=res.get("brain_extraction", "deepbet+template")),
        ventricle_label_limit=task["ventricle_label_limit"],
    )


def load_config(spec: str, overrides: dict | None = None) -> TrainConfig:
    """A config from ``spec`` ("shmn4", "shmn4:fast" or a JSON file) plus command-line ``overrides``.

    ``overrides`` may hold "preset"/"resolution" (they win over the spec) and any other field.
    """
    overrides = dict(overrides or {})
    file_overrides: dict = {}
    where = "config"
    if spec.lower().endswith(".json") or os.path.sep in spec or Path(spec).is_file():
        where = spec
        file_overrides = read_config_file(Path(spec))
        preset = file_overrides.pop("preset", "shmn4")
        resolution = file_overrides.pop("resolution", "fast")
    else:
        preset, _, resolution = spec.partition(":")
        resolution = resolution or "fast"
    preset = overrides.pop("preset", None) or preset
    resolution = overrides.pop("resolution", None) or resolution
    if not isinstance(preset, str) or not isinstance(resolution, str):
        raise ShmnError(f"{where}: 'preset' and 'resolution' must be strings")
    cfg = preset_config(preset, resolution)
    cfg = apply_overrides(cfg, file_overrides, where)
    return apply_overrides(cfg, overrides, "option")


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    """Rebuild a config saved with ``TrainConfig.to_dict`` (run folders keep one in config.json)."""
    data = dict(data)
    base = preset_config(data.pop("preset", "shmn4"), data.pop("resolution", "fast"))
    return apply_overrides(base, data, where)


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ShmnError(f"{path}: no such config file; give a preset ({', '.join(TASK_PRESETS)}) or a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShmnError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ShmnError(f"{path}: expected a JSON object of config fields")
    return data


def apply_overrides(obj, overrides: dict, where: str, prefix: str = ""):
    """Return a copy of the dataclass ``obj`` with ``overrides`` applied (nested dicts recurse)."""
    if not overrides:
        return obj
    hints = field_types(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in names or (prefix == "preprocess." and key == "grid"):
            known = ", ".join(n for n in names if not (prefix == "preprocess." and n == "grid"))
            raise ShmnError(f"{where}: unknown key {dotted!r}; known keys here: {known}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ShmnError(f"{where}: {dotted!r} must be an object of fields, got {value!r}")
            changes[key] = apply_overrides(current, value, where, prefix=f"{dotted}.")
        else:
            changes[key] = _coerce(value, hints[key], dotted, where)
    try:
        return replace(obj, **changes)
    except ValueError as exc:  # the teammates' configs validate themselves with ValueError
        raise ShmnError(f"{where}: {exc}") from None


def _coerce(value, hint, key: str, where: str):
    """Check ``value`` (from JSON or the command line) against the field's type hint."""
    is_union = isinstance(hint, getattr(types, "UnionType", ())) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if is_union else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                # JSON lets NaN and Infinity through; a NaN learning rate trains nothing without a word.
                raise ShmnError(f"{where}: {key!r} is {value!r}; expected a finite number")
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(option)
            element_hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
            if args and len(element_hints) != len(value):
                raise ShmnError(f"{where}: {key!r} is {value!r}; expected {len(element_hints)} values")
            return tuple(_coerce(v, h, f"{key}[{i}]", where) for i, (v, h) in enumerate(zip(value, element_hints))) if args else tuple(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ShmnError(f"{where}: {key!r} is {value!r}; expected {expected}")


def differences(a: TrainConfig, b: TrainConfig, ignore: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """Dotted names of the fields that differ between two configs (for resume checks)."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    return sorted(k for k in flat_a.keys() | flat_b.keys() if k.split(".")[0] not in ignore and flat_a.get(k) != flat_b.get(k))


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat
