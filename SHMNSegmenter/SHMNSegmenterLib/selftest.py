"""A phantom case for the module's self-test, made by the engine itself (``shmn phantom``).

Slicer's self-test must not depend on files outside the extension, so it asks the engine for a
small synthetic cohort and takes its first PVL-labelled case.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from SHMNCoreLib.engine import Engine, engineEnvironment
from SHMNCoreLib.process import SubprocessRunner

PHANTOM_OPTIONS = ["--size", "small", "--n-pvl", "1", "--n-macs", "1", "--n-ventricle-labels", "0", "--seed", "1", "--workers", "1"]


def phantomCommand(engine: Engine, folder: Path) -> list[str]:
    return [str(engine.python), "-m", "shmn", "-q", "phantom", "-o", str(folder), *PHANTOM_OPTIONS]


def makePhantomCase(engine: Engine, parentFolder: str | Path, timeout_s: float = 600) -> Path:
    """Generate the cohort in a fresh folder under ``parentFolder``; the FLAIR of its first PVL case."""
    folder = Path(tempfile.mkdtemp(prefix="shmn-phantom-", dir=parentFolder)) / "cohort"
    runner = SubprocessRunner()
    runner.start(phantomCommand(engine, folder), env=engineEnvironment(engine))
    exitCode = runner.wait(timeout_s)
    if exitCode != 0:
        raise RuntimeError(f"`shmn phantom` failed ({exitCode}):\n" + "\n".join(runner.readLines()[-10:]))
    manifest = json.loads((folder / "pvl" / "manifest.json").read_text(encoding="utf-8"))
    case = next(c for c in manifest["cases"] if c.get("pvl"))
    return folder / "pvl" / case["image"]
