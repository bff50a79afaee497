"""Synthetic cases for the modules' self-tests, made by the engine itself (``shmn phantom``).

A self-test in Slicer must not depend on files outside the extension, so it asks the engine for a
small synthetic cohort (two datasets with manifests: ``pvl/`` and ``macs/``) in a fresh folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .engine import Engine, engineEnvironment
from .process import SubprocessRunner

SMALL_COHORT = ("--size", "small", "--seed", "1", "--workers", "1")


def phantomCommand(engine: Engine, folder: Path, counts: dict) -> list:
    options = [f"--{name.replace('_', '-')}={value}" for name, value in counts.items()]
    return [str(engine.python), "-m", "shmn", "-q", "phantom", "-o", str(folder), *SMALL_COHORT, *options]


def makePhantomCohort(engine: Engine, parentFolder, counts: dict, timeout_s: float = 600) -> Path:
    """``<fresh folder>/cohort`` with ``counts`` cases (n_pvl, n_macs, n_ventricle_labels)."""
    folder = Path(tempfile.mkdtemp(prefix="shmn-phantom-", dir=str(parentFolder))) / "cohort"
    runner = SubprocessRunner()
    runner.start(phantomCommand(engine, folder, counts), env=engineEnvironment(engine))
    exitCode = runner.wait(timeout_s)
    if exitCode != 0:
        raise RuntimeError(f"`shmn phantom` failed ({exitCode}):\n" + "\n".join(runner.readLines()[-10:]))
    return folder
