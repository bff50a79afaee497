"""Making Slicer know SHMN's segment terminology (the private PVL lesion code) before results arrive.

The engine writes each segment's ``TerminologyEntry`` into the seg.nrrd; the lateral ventricles use
Slicer's own General Anatomy context, the PVL lesion a context of its own described in
``Resources/SHMN.term.json``. Loading that file into the Terminologies module lets the Segment
Editor show and offer the PVL lesion entry like any built-in one.
"""

from __future__ import annotations

import json
from pathlib import Path

from SHMNCoreLib.engine import MODULE_DIR

TERMINOLOGY_FILE = "SHMN.term.json"


def findTerminologyFile(moduleDir: Path = MODULE_DIR) -> Path:
    """The extension's SHMN.term.json: beside the module (installed) or in the repository's Resources."""
    for candidate in (moduleDir / "Resources" / TERMINOLOGY_FILE, moduleDir.parent / "Resources" / TERMINOLOGY_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{TERMINOLOGY_FILE} not found in {moduleDir}/Resources nor {moduleDir.parent}/Resources")


def contextName(path: Path) -> str:
    return json.loads(Path(path).read_text(encoding="utf-8"))["SegmentationCategoryTypeContextName"]


def loadedContexts(terminologiesLogic) -> list[str]:
    import vtk

    names = vtk.vtkStringArray()
    terminologiesLogic.GetLoadedTerminologyNames(names)  # in Slicer 5.8 as in 5.10+
    return [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def loadTerminology(terminologiesLogic, path: Path | None = None) -> str:
    """Load the SHMN context once (later calls only return its name)."""
    path = Path(path) if path else findTerminologyFile()
    name = contextName(path)
    if name in loadedContexts(terminologiesLogic):
        return name
    loaded = terminologiesLogic.LoadTerminologyFromFile(str(path))
    if loaded != name:
        raise RuntimeError(f"{path}: Slicer's Terminologies module could not load it (got {loaded!r}, expected {name!r})")
    return name
