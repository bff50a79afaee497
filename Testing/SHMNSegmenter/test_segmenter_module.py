"""The SHMNSegmenter module as Slicer sees it: module file, self-test, .ui file, CMake lists, extension.

The module's own self-test (SHMNSegmenterTest) runs here under the harness with the real engine.
The .ui file is also checked statically here (every widget the panel uses exists with the right
class, parameter names match the parameters); the panel itself runs under real Qt in
test_segmenter_panel.py.
"""

from __future__ import annotations

import ast
import re
import types
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import pytest

pytest_plugins = ["slicer_fixtures"]
pytestmark = pytest.mark.xdist_group("slicer-segmenter")  # one worker: one harness, one phantom

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SHMNSegmenter"
MODULE_FILE = MODULE_DIR / "SHMNSegmenter.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SHMNSegmenter.ui"
WIDGET_FILE = MODULE_DIR / "SHMNSegmenterLib" / "widget.py"


@pytest.fixture
def module(slicer_app):
    import importlib

    return importlib.import_module("SHMNSegmenter")


def parent_stand_in():
    """What qSlicerScriptedLoadableModule hands to the module's constructor: a settable object with a path."""
    return types.SimpleNamespace(path=str(MODULE_FILE))


# ---------------------------------------------------------------- module file


def test_module_file_is_thin_and_has_the_four_slicer_classes():
    source = MODULE_FILE.read_text()
    assert len(source.splitlines()) < 100
    classes = {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    assert classes == {"SHMNSegmenter", "SHMNSegmenterWidget", "SHMNSegmenterTest"}  # the logic is re-exported
    assert "SHMNSegmenterLogic" in source


def test_module_describes_itself_to_slicer(module):
    import slicer

    parent = parent_stand_in()
    instance = module.SHMNSegmenter(parent)
    assert parent.title == "SHMN Segmenter" and parent.categories == ["Segmentation"]
    assert "not be used for clinical decisions" in parent.helpText
    assert "MICCAI 2021" in parent.acknowledgementText
    assert instance.resourcePath("UI/SHMNSegmenter.ui") == str(UI_FILE)
    assert "SHMNSegmenter" in slicer.selfTests
    assert module.SHMNSegmenterLogic.__name__ == "SHMNSegmenterLogic"


def test_logic_is_a_scripted_loadable_module_logic_usable_without_qt(module):
    import slicer

    logic = module.SHMNSegmenterLogic()
    assert isinstance(logic, slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic)
    assert logic.moduleName == "SHMNSegmenter"  # the parameter node's singleton tag in the scene
    assert logic.engine.origin == "developer"


def test_module_self_test_runs_on_a_phantom_case(module, phantom_case, tiny_model, scene):
    """SHMNSegmenterTest, exactly as Slicer's Reload-and-Test would run it, with the real engine."""
    test_class = module.SHMNSegmenterTest
    defaults = test_class.model, test_class.phantomImage
    test_class.model, test_class.phantomImage = str(tiny_model), phantom_case["negative"]
    try:
        module.SHMNSegmenter(parent_stand_in()).runTest(msec=0)
    finally:
        test_class.model, test_class.phantomImage = defaults
    assert scene.GetFirstNodeByClass("vtkMRMLSegmentationNode") is not None


def test_self_test_phantom_is_made_by_the_engine_in_slicer(slicer_app, tmp_path):
    """In Slicer the self-test has no fixtures: it asks `shmn phantom` for one small PVL case."""
    from shmn.io.volume_io import read_volume

    from SHMNCoreLib.engine import findEngine
    from SHMNSegmenterLib.selftest import makePhantomCase

    image = makePhantomCase(findEngine(), tmp_path)
    assert image.name.endswith(".nii.gz") and image.is_relative_to(tmp_path)
    assert read_volume(image).GetDimension() == 3


# ---------------------------------------------------------------- the .ui file and the panel that uses it


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def test_ui_file_is_a_qt_designer_form_for_a_mrml_widget():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.findtext("class") == "SHMNSegmenter"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("qMRML", "ctk"))} <= custom
    # The node selector gets the scene from the top-level widget (mrmlSceneChanged -> setMRMLScene).
    connections = {(c.findtext("sender"), c.findtext("receiver"), c.findtext("slot")) for c in root.iter("connection")}
    assert ("SHMNSegmenter", "inputVolumeSelector", "setMRMLScene(vtkMRMLScene*)") in connections


def test_ui_widgets_match_what_the_panel_uses():
    widgets = ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", WIDGET_FILE.read_text()))
    missing = used - set(widgets)
    assert not missing, f"widget.py uses widgets the .ui lacks: {missing}"
    expected = {
        "inputVolumeSelector": "qMRMLNodeComboBox",
        "modelComboBox": "QComboBox",
        "deviceComboBox": "QComboBox",
        "registerCheckBox": "QCheckBox",
        "flipTestCheckBox": "QCheckBox",
        "nativeBoundaryCheckBox": "QCheckBox",
        "applyButton": "QPushButton",
        "progressBar": "QProgressBar",
        "logTextEdit": "QPlainTextEdit",
        "resultLabel": "QLabel",
    }
    assert {name: widgets[name].get("class") for name in expected} == expected


def test_ui_parameter_names_are_the_parameters_fields():
    from SHMNSegmenterLib.parameters import SegmenterParameters

    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    field_names = {f.name for f in fields(SegmenterParameters)}
    assert set(bound.values()) <= field_names
    # modelName is synchronised by hand (its choices come from the engine's registry at run time).
    assert field_names - set(bound.values()) == {"modelName"}
    node_types = ui_widgets()["inputVolumeSelector"].find("property[@name='nodeTypes']/stringlist/string").text
    assert node_types == "vtkMRMLScalarVolumeNode"


def test_lib_files_compile_and_only_the_panel_imports_qt():
    for path in (MODULE_DIR / "SHMNSegmenterLib").glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        if path.name != "widget.py":
            assert not imported & {"qt", "ctk"}, path.name


# ---------------------------------------------------------------- CMake and extension metadata


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    return match.group(1).split() if match else []


def test_module_cmake_lists_every_lib_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = [s.replace("${MODULE_NAME}", "SHMNSegmenter") for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    actual = ["SHMNSegmenter.py"] + sorted(f"SHMNSegmenterLib/{p.name}" for p in (MODULE_DIR / "SHMNSegmenterLib").glob("*.py"))
    assert sorted(scripts) == sorted(actual)
    resources = [s.replace("${MODULE_NAME}", "SHMNSegmenter") for s in cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    assert resources and all((MODULE_DIR / r).is_file() for r in resources)
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    # The engine and the code both modules share are SHMN Core's to install (Testing/SHMNCore).
    assert "shmn/*.py" not in text
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    assert "slicer_add_python_unittest" in testing and "add_subdirectory(Testing/Python)" in text


def test_extension_cmake_has_the_template_fields():
    text = (REPO / "CMakeLists.txt").read_text()
    for field in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                  "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({field} \"[^\"]+\"\)", text), field
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', text)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert "add_subdirectory(SHMNCore)" in text and text.index("add_subdirectory(SHMNCore)") < text.index("add_subdirectory(SHMNSegmenter)")
    assert "add_subdirectory(SHMNSegmenter)" in text
    assert "add_subdirectory(SHMNTraining)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


def test_icons_are_png_images():
    import matplotlib.image

    for path in (REPO / "Resources" / "SHMN.png", MODULE_DIR / "Resources" / "Icons" / "SHMNSegmenter.png"):
        image = matplotlib.image.imread(str(path))
        assert image.shape[0] == image.shape[1] >= 64, path
