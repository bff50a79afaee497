"""The model registry: which trained SHMN models exist, where their weights are, what they are for.

Two registry files, same format (``{"models": [entry, ...]}``):

- the shipped one, ``Resources/models.json`` (the demo model, trained on synthetic phantoms);
- the user's one, ``$SHMN_MODEL_REGISTRY`` if set, else ``<cache>/models.json`` (cache =
  ``$SHMN_CACHE_DIR`` or ``~/.cache/shmn``): where SHMNTraining registers models trained locally.

Both are read and merged. An entry's ``file`` is relative to the folder of the registry file that
lists it (an absolute path is allowed in the user registry). When the same ``name@version`` is in both,
the shipped entry wins (its sha256 is what was released). The default model is the user registry's
``"default": true`` entry if any, else the shipped one: an annotator's fine-tuned model can become
the radiologist's default without touching the extension.

Entry fields: name, version (semver), file, sha256, preset, grid {spacing_mm, size [x,y,z]}, tasks,
training_data, metrics, intended_use, default (bool).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shmn.contract import CARD_FIELDS, WEIGHTS_SUFFIX  # noqa: F401 - CARD_FIELDS: what a registry entry copies from a card
from shmn.io.atomic import ensure_writable_dir, write_json
from shmn.io.claim import exclusive
from shmn.io.digest import sha256_of  # noqa: F401 - part of this module's API
from shmn.errors import ShmnError

RESOURCES_ENV = "SHMN_RESOURCES"
USER_REGISTRY_ENV = "SHMN_MODEL_REGISTRY"
REGISTRY_FILE = "models.json"
REGISTRY_LOCK_WAIT_S = 30.0
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class RegisteredModel:
    """One registry entry with the registry file it came from (to resolve its relative ``file``)."""

    entry: dict
    registry: Path

    @property
    def name(self) -> str:
        return self.entry["name"]

    @property
    def version(self) -> str:
        return self.entry["version"]

    @property
    def path(self) -> Path:
        file = Path(self.entry["file"]).expanduser()
        return file if file.is_absolute() else self.registry.parent / file


def resources_dir() -> Path:
    """The extension's Resources/ folder: the repository layout first, then $SHMN_RESOURCES.

    The repository's folder counts only with its models.json in it: an installed extension may have
    an unrelated Resources/ (module icons) beside the installed ``shmn`` package.
    """
    repo_resources = Path(__file__).resolve().parents[2] / "Resources"  # <folder holding shmn>/Resources
    if (repo_resources / REGISTRY_FILE).is_file():
        return repo_resources
    if os.environ.get(RESOURCES_ENV):
        return Path(os.environ[RESOURCES_ENV]).expanduser()
    raise ShmnError(
        f"cannot find the Resources folder (looked in {repo_resources}); set {RESOURCES_ENV} to the extension's Resources folder"
    )


def shipped_registry_path() -> Path:
    return resources_dir() / REGISTRY_FILE


def user_registry_path() -> Path:
    if os.environ.get(USER_REGISTRY_ENV):
        return Path(os.environ[USER_REGISTRY_ENV]).expanduser()
    from shmn.io.anatomy import cache_dir  # where every per-user SHMN file lives

    return cache_dir() / REGISTRY_FILE


def default_registry_paths() -> list[Path]:
    """Shipped first, user second (the order that decides ties, see the module docstring)."""
    return [shipped_registry_path(), user_registry_path()]


def semver_key(version: str) -> tuple:
    match = SEMVER.match(version)
    if not match:
        raise ShmnError(f"model version {version!r}: not a semantic version; expected MAJOR.MINOR.PATCH, e.g. 1.0.0")
    major, minor, patch, pre = match.groups()
    # A pre-release sorts before its release (1.0.0-rc1 < 1.0.0).
    return (int(major), int(minor), int(patch), pre is None, pre or "")


def read_registry(path: str | os.PathLike) -> list[dict]:
    """Entries of one registry file; a missing file is an empty registry."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        models = data["models"]
        if not isinstance(models, list):
            raise TypeError("'models' is not a list")
        for entry in models:
            for key in ("name", "version", "file", "sha256"):
                if key not in entry:
                    raise KeyError(f"an entry has no {key!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShmnError(f"{path}: model registry is damaged ({exc}); expected {{\"models\": [...]}}") from None
    return models


def load_models(registries: list[Path] | None = None) -> list[RegisteredModel]:
    """All entries of all registries, duplicates (same name@version) kept from the earlier registry."""
    seen: set[tuple[str, str]] = set()
    models = []
    for registry in registries if registries is not None else default_registry_paths():
        for entry in read_registry(registry):
            key = (entry["name"], entry["version"])
            if key not in seen:
                seen.add(key)
                models.append(RegisteredModel(entry, Path(registry)))
    return models


def default_model(registries: list[Path] | None = None) -> RegisteredModel:
    models = load_models(registries)
    defaults = [m for m in models if m.entry.get("default")]
    if not defaults:
        raise ShmnError(
            "no default model is registered (Resources/models.json lists none); "
            "give --model with a registered name or a .safetensors file, or train and register one"
        )
    return defaults[-1]  # the user registry's default comes last and wins


def _unknown(name: str, models: list[RegisteredModel]) -> ShmnError:
    names = ", ".join(sorted({f"{m.name}" for m in models})) or "none"
    return ShmnError(
        f"unknown model '{name}'; registered: {names} (see Resources/models.json) or give a path to a .safetensors file"
    )


def find_model(name: str, registries: list[Path] | None = None) -> RegisteredModel:
    """A registered model by ``name`` (its highest version) or ``name@version``."""
    models = load_models(registries)
    base, _, version = name.partition("@")
    matches = [m for m in models if m.name == base and (not version or m.version == version)]
    if not matches:
        raise _unknown(name, models)
    return max(matches, key=lambda m: semver_key(m.version))


def resolve_model(name_or_path: str | os.PathLike | None = None, registries: list[Path] | None = None) -> tuple[Path, dict | None]:
    """(weights path, registry entry or None) for a registry name, ``name@version``, a path, or None (the default).

    A path that is the file of a registered entry returns that entry, so its sha256 is still checked.
    """
    if name_or_path is None or str(name_or_path) in ("", "default"):
        model = default_model(registries)
    else:
        text = str(name_or_path)
        looks_like_path = text.endswith(WEIGHTS_SUFFIX) or os.sep in text or Path(text).exists()
        if not looks_like_path:
            model = find_model(text, registries)
        else:
            path = Path(text).expanduser()
            if not path.exists():
                raise ShmnError(
                    f"{path}: no such model file or run folder; expected a run folder, a {WEIGHTS_SUFFIX} file or a registered model name"
                )
            if not path.name.endswith(WEIGHTS_SUFFIX):
                raise ShmnError(f"{path}: model weights must be a {WEIGHTS_SUFFIX} file (pickled checkpoints are never loaded)")
            if not path.is_file():
                raise ShmnError(f"{path}: no such model file")
            for model in load_models(registries):
                if model.path.exists() and model.path.resolve() == path.resolve():
                    return path, model.entry
            return path, None
    if not model.path.is_file():
        raise ShmnError(
            f"model '{model.name}@{model.version}' is registered in {model.registry} but its weights {model.path} are missing; "
            "reinstall the extension or register the model again"
        )
    return model.path, model.entry


def registered_entry_for_card(card: dict, registries: list[Path] | None = None) -> dict | None:
    """The registry entry whose name@version a model card claims, or None when it claims none."""
    name, version = card.get("name"), card.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    for model in load_models(registries):
        if model.name == name and model.version == version:
            return model.entry
    return None


def _relative_file(weights: Path, registry: Path) -> str:
    try:
        return weights.resolve().relative_to(registry.parent.resolve()).as_posix()
    except ValueError:
        return str(weights.resolve())  # outside the registry's folder: only sensible in a user registry


def register_model(
    safetensors_path: str | os.PathLike,
    registry_path: str | os.PathLike,
    *,
    name: str,
    version: str,
    default: bool = False,
    **card_fields,
) -> dict:
    """Add (or replace: same name@version) an entry in ``registry_path``, written atomically; returns the entry.

    ``card_fields``: preset, grid, tasks, training_data, metrics, intended_use (anything else is kept too).
    With ``default=True`` every other entry of this registry loses its default flag.
    """
    weights = Path(safetensors_path)
    registry = Path(registry_path)
    if not weights.name.endswith(WEIGHTS_SUFFIX) or not weights.is_file():
        raise ShmnError(f"{weights}: expected an existing {WEIGHTS_SUFFIX} file to register")
    semver_key(version)
    if not name or "@" in name or "/" in name:
        raise ShmnError(f"model name {name!r}: expected a short name without '@' or '/'")
    entry = {"name": name, "version": version, "file": _relative_file(weights, registry), "sha256": sha256_of(weights)}
    entry.update(card_fields)
    entry["default"] = bool(default)
    ensure_writable_dir(registry.parent)
    # Read, change and write under a lock: two registrations at once (two annotators, two runs) would
    # otherwise each write the registry they read, and the first one's entry would be lost.
    busy = ShmnError(f"{registry}: another process is updating this model registry; try again in a moment")
    with exclusive(registry.parent / f".{registry.name}.lock", busy, wait_s=REGISTRY_LOCK_WAIT_S):
        models = [m for m in read_registry(registry) if (m["name"], m["version"]) != (name, version)]
        if default:
            models = [{**m, "default": False} for m in models]
        models.append(entry)
        models.sort(key=lambda m: (m["name"], semver_key(m["version"])))
        write_json(registry, {"models": models})
    return entry
