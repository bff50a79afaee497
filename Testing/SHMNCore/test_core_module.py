"""SHMN Core, the hidden module with the Slicer-side code both SHMN modules share (issue 10, item 4).

Neither module imports the other's library; both declare SHMN Core as a dependency, so Slicer loads
it (and puts its folder on sys.path) first; its CMake list installs its library and the engine.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "SHMNCore"
MODULES = {"SHMNSegmenter": "SHMNSegmenterLib", "SHMNTraining": "SHMNTrainingLib"}


def imported_top_level(path: Path, at_import_only: bool = False) -> set:
    """Top-level package names ``path`` imports (anywhere, or only at module level: at import time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    nodes = tree.body if at_import_only else list(ast.walk(tree))
    names = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    return names


def test_neither_module_imports_the_other_ones_library():
    for module, library in MODULES.items():
        others = {lib for name, lib in MODULES.items() if name != module}
        for path in (REPO / module).rglob("*.py"):
            assert not imported_top_level(path) & others, f"{path.relative_to(REPO)} imports {others}"


def test_both_modules_depend_on_core_and_reload_their_libraries():
    for module, library in MODULES.items():
        source = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
        assert len(source.splitlines()) < 100, module
        assert re.search(r'dependencies = \["SHMNCore"', source), module
        assert f'reloadPackages("{library}")' in source and "def onReload(self)" in source, module


def test_core_is_a_hidden_module_whose_library_needs_neither_qt_nor_torch():
    source = (CORE / "SHMNCore.py").read_text(encoding="utf-8")
    assert "self.parent.hidden = True" in source
    for path in (CORE / "SHMNCoreLib").glob("*.py"):
        if path.name != "settings.py":  # QSettings: imported by the panels only
            assert not imported_top_level(path, at_import_only=True) & {"qt", "ctk", "torch", "monai", "slicer"}, path.name
    names = sorted(p.stem for p in (CORE / "SHMNCoreLib").glob("*.py") if p.stem not in ("__init__", "settings"))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib\n"
            f"for name in {names!r}: importlib.import_module('SHMNCoreLib.' + name)\n"
            "heavy = sorted(m for m in ('torch', 'monai', 'qt', 'slicer') if m in sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code, str(CORE)], check=True, timeout=120)


def cmake_list(text: str, variable: str) -> list:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    return [s.replace("${MODULE_NAME}", "SHMNCore") for s in match.group(1).split()] if match else []


def test_core_cmake_lists_its_library_and_installs_the_engine_beside_the_modules():
    text = (CORE / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    assert sorted(scripts) == sorted(["SHMNCore.py"] + [f"SHMNCoreLib/{p.name}" for p in (CORE / "SHMNCoreLib").glob("*.py")])
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert resources and all((CORE / r).is_file() for r in resources)
    assert "slicerMacroBuildScriptedModule" in text
    assert "shmn/*.py" in text and "NO_INSTALL_SUBDIR" in text  # the engine, beside every module
    for resource in ("Resources/models.json", "Resources/SHMN.term.json"):
        assert resource in text and (REPO / resource).is_file()
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert top.index("add_subdirectory(SHMNCore)") < top.index("add_subdirectory(SHMNSegmenter)")


def test_engine_is_found_from_the_core_folder():
    sys.path.insert(0, str(CORE))
    try:
        from SHMNCoreLib.engine import MODULE_DIR, findEngineRoot
    finally:
        sys.path.remove(str(CORE))
    assert MODULE_DIR == CORE
    assert findEngineRoot() == (REPO, "developer")


def test_parameter_node_annotations_carry_the_field_bounds():
    from dataclasses import dataclass, field
    from typing import get_args

    sys.path.insert(0, str(CORE))
    try:
        from SHMNCoreLib.parameternode import fieldAnnotations
    finally:
        sys.path.remove(str(CORE))

    class Minimum:
        def __init__(self, value):
            self.value = value

    Maximum = Minimum

    @dataclass
    class State:
        volume: object = None
        epochs: int = field(default=30, metadata={"minimum": 1, "maximum": 10000})
        name: str = ""

    validators = types.SimpleNamespace(Minimum=Minimum, Maximum=Maximum)
    annotations, defaults = fieldAnnotations(State, {"volume": "vtkMRMLScalarVolumeNode"}, types.SimpleNamespace(vtkMRMLScalarVolumeNode=int), validators)
    assert annotations["volume"] is int and annotations["name"] is str
    kind, low, high = get_args(annotations["epochs"])
    assert (kind, low.value, high.value) == (int, 1, 10000)
    assert defaults == {"epochs": 30, "name": ""}
