"""A phantom case for the module's self-test, made by the engine itself (``shmn phantom``).

Slicer's self-test must not depend on files outside the extension, so it asks the engine for a
small synthetic cohort and takes its first PVL-labelled case.
"""

from __future__ import annotations

import json
from pathlib import Path

from SHMNCoreLib.engine import Engine
from SHMNCoreLib.phantom import makePhantomCohort

PHANTOM_COUNTS = {"n_pvl": 1, "n_macs": 1, "n_ventricle_labels": 0}


def makePhantomCase(engine: Engine, parentFolder, timeout_s: float = 600) -> Path:
    """Generate the cohort in a fresh folder under ``parentFolder``; the FLAIR of its first PVL case."""
    folder = makePhantomCohort(engine, parentFolder, PHANTOM_COUNTS, timeout_s)
    manifest = json.loads((folder / "pvl" / "manifest.json").read_text(encoding="utf-8"))
    case = next(c for c in manifest["cases"] if c.get("pvl"))
    return folder / "pvl" / case["image"]
