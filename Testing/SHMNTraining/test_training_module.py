"""SHMNTraining as Slicer loads it: module class, thin module file, CMake lists, UI, and its self-test.

Runs against the real MRML of the slicer-core wheel through Testing/slicer_harness.py (which stands
in only for slicer.app's Qt parts and the ScriptedLoadableModule base classes).
"""

from __future__ import annotations

import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SHMNTraining"
for folder in (REPO / "Testing", REPO / "SHMNCore", REPO / "SHMNSegmenter", MODULE_DIR):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from slicer_harness import install_harness  # noqa: E402


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return install_harness(tmp_path_factory.mktemp("slicer-temp"))


@pytest.fixture()
def module(harness):
    import SHMNTraining

    harness.clear_scene()
    return SHMNTraining


def test_module_describes_itself(module):
    parent = types.SimpleNamespace(path=str(MODULE_DIR / "SHMNTraining.py"))
    instance = module.SHMNTraining(parent)
    assert parent.title == "SHMN Training"
    assert "Segmentation" in parent.categories
    assert "Segment Editor" in parent.helpText or "Segment Editor".lower() in parent.helpText.lower()
    assert Path(instance.resourcePath("UI/SHMNTraining.ui")).is_file()
    assert Path(instance.resourcePath("Icons/SHMNTraining.png")).is_file()


def test_self_test_passes_under_pytest(module):
    parent = types.SimpleNamespace(path=str(MODULE_DIR / "SHMNTraining.py"))
    module.SHMNTraining(parent).runTest(msec=0)  # the same call Slicer's "Reload and Test" makes


def test_module_file_is_thin():
    source = (MODULE_DIR / "SHMNTraining.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) < 100
    classes = re.findall(r"^class (\w+)\(", source, flags=re.M)
    assert classes == ["SHMNTraining", "SHMNTrainingWidget", "SHMNTrainingTest"]
    assert "SHMNTrainingLogic" in source  # Slicer finds the logic class in the module's namespace


def test_cmake_lists_every_lib_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(re.findall(r"\$\{MODULE_NAME\}(Lib/\w+\.py)", cmake))
    present = {f"Lib/{p.name}" for p in (MODULE_DIR / "SHMNTrainingLib").glob("*.py")}
    assert listed == present
    for resource in re.findall(r"(Resources/\S+)", cmake):
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "SHMNTraining")).is_file(), resource
    assert "slicerMacroBuildScriptedModule" in cmake
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "add_subdirectory(SHMNTraining)" in top


def test_ui_has_every_widget_the_panel_uses():
    tree = ET.parse(MODULE_DIR / "Resources" / "UI" / "SHMNTraining.ui")
    names = {w.get("name") for w in tree.iter("widget")}
    panel = (MODULE_DIR / "SHMNTrainingLib" / "widget.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", panel))
    assert used <= names, f"widgets used but not in the .ui: {sorted(used - names)}"
    # Every parameter-node-synced widget names a real field.
    from SHMNTrainingLib.parameters import SHMNTrainingState
    from dataclasses import fields

    known = {f.name for f in fields(SHMNTrainingState)}
    synced = {p.findtext("string") for p in tree.iter("property") if p.get("name") == "SlicerParameterName"}
    assert synced and synced <= known
