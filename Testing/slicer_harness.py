"""A stand-in for the Qt half of 3D Slicer, so module code runs under pytest against the real MRML.

The slicer-core wheel gives ``import slicer`` with Slicer's own MRML scene, node classes, storage
nodes, module logics and ``slicer/util.py`` (docs/DESIGN.md section 6). What it lacks is everything Slicer
builds with Qt. This file stands in for exactly that, and for nothing else:

- ``slicer.app`` (qSlicerCoreApplication): ``coreIOManager()`` (reading and writing files through
  the module logics and storage nodes, as Slicer's reader/writer plugins do), ``applicationLogic()``,
  ``mrmlScene()``, ``temporaryPath``, ``testingEnabled()``, ``commandOptions()``, ``processEvents()``;
- ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` (the loadable modules' registrations);
- the subject hierarchy plugin logic's automatic bookkeeping: a data node gets an item when it is
  added to the scene and loses it when it is removed;
- ``slicer.ScriptedLoadableModule`` (module, logic and test base classes, same behaviour, no widgets)
  and ``slicer.i18n`` (translation is the identity).

Nodes, storage nodes, segmentations, markups, tables and the subject hierarchy are never faked: a
test that passes here exercises the same MRML code the Slicer application runs. Qt is not needed
here: ``ScriptedLoadableModuleWidget`` raises if instantiated, until ``slicer_qt_harness.install_qt``
(the ``slicer_qt`` fixture) adds real Qt (PySide6) and the panels' widget base class.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import types
import unittest
from dataclasses import dataclass, field
from pathlib import Path

import slicer
import vtk

# Slicer module name -> logic class, in the order Slicer sets them up (colours before volumes).
MODULE_LOGICS = {
    "Colors": "vtkSlicerColorLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Tables": "vtkSlicerTablesLogic",
    "Markups": "vtkSlicerMarkupsLogic",
    "Terminologies": "vtkSlicerTerminologiesModuleLogic",
}

# File types as qSlicerCoreIOManager names them, with the suffixes its reader plugins claim.
FILE_TYPES = {
    "SegmentationFile": (".seg.nrrd", ".seg.nhdr", ".seg.vtm"),
    "MarkupsFile": (".mrk.json", ".fcsv"),
    "TableFile": (".tsv", ".csv"),
    "VolumeFile": (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr"),
}

# vtkSlicerVolumesLogic::AddArchetypeVolume loading-option bits.
LABELMAP, CENTERED, SINGLE_FILE, AUTO_WINDOW_LEVEL, DISCARD_ORIENTATION = 1, 2, 4, 8, 16


def _file_name_without_suffix(path: str) -> str:
    name = Path(path).name
    for suffixes in FILE_TYPES.values():
        for suffix in suffixes:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
    return Path(name).stem


class IOManagerStandIn:
    """qSlicerCoreIOManager's load/save entry points, done the way Slicer's IO plugins do them."""

    def __init__(self, harness: "SlicerHarness"):
        self._harness = harness

    def fileType(self, path) -> str:
        name = str(path).lower()
        for file_type, suffixes in FILE_TYPES.items():
            if name.endswith(suffixes):
                return file_type
        return "NoFile"

    def loadNodes(self, fileType, properties, loadedNodes=None, userMessages=None) -> bool:
        path = str(properties["fileName"])
        name = properties.get("name") or _file_name_without_suffix(path)
        node = self._load(fileType, path, name, properties)
        if node is None:
            if userMessages is not None:
                userMessages.AddMessage(vtk.vtkCommand.ErrorEvent, f"Failed to read {path} as {fileType}")
            return False
        if loadedNodes is not None:
            loadedNodes.AddItem(node)
        return True

    def _load(self, file_type: str, path: str, name: str, properties: dict):
        logics = self._harness.logics
        if file_type == "VolumeFile":
            options = SINGLE_FILE if properties.get("singleFile", True) else 0
            options |= LABELMAP if properties.get("labelmap") else 0
            options |= CENTERED if properties.get("center") else 0
            options |= DISCARD_ORIENTATION if properties.get("discardOrientation") else 0
            options |= AUTO_WINDOW_LEVEL if properties.get("autoWindowLevel", True) else 0
            return logics["Volumes"].AddArchetypeVolume(path, name, options, vtk.vtkStringArray())
        if file_type == "SegmentationFile":
            return logics["Segmentations"].LoadSegmentationFromFile(path, bool(properties.get("autoOpacities", True)), name)
        if file_type == "MarkupsFile":
            node_id = logics["Markups"].LoadMarkups(path, name)
            return self._harness.scene.GetNodeByID(node_id) if node_id else None
        if file_type == "TableFile":
            return logics["Tables"].AddTable(path, name)
        return None

    def fileWriterFileType(self, node) -> str:
        return node.GetClassName() if node is not None else "NoFile"

    def saveNodes(self, fileType, properties, userMessages=None) -> bool:
        node = self._harness.scene.GetNodeByID(properties["nodeID"])
        if node is None or not node.IsA("vtkMRMLStorableNode"):
            return False
        storage = node.GetStorageNode()
        if storage is None:
            node.AddDefaultStorageNode(str(properties["fileName"]))
            storage = node.GetStorageNode()
        storage.SetFileName(str(properties["fileName"]))
        ok = bool(storage.WriteData(node))
        if not ok and userMessages is not None:
            userMessages.AddMessage(vtk.vtkCommand.ErrorEvent, f"Failed to write {properties['fileName']}")
        return ok


class ApplicationStandIn:
    """The slice of qSlicerCoreApplication that module code and slicer.util reach for."""

    majorVersion, minorVersion = 5, 10

    def __init__(self, harness: "SlicerHarness"):
        self._harness = harness
        self._io = IOManagerStandIn(harness)
        self.temporaryPath = harness.temporary_path
        self.testingEnabledFlag = True

    def coreIOManager(self):
        return self._io

    def applicationLogic(self):
        return self._harness.application_logic

    def mrmlScene(self):
        return self._harness.scene

    def testingEnabled(self) -> bool:
        return self.testingEnabledFlag

    def commandOptions(self):
        return types.SimpleNamespace(testingEnabled=self.testingEnabledFlag, noMainWindow=True)

    def processEvents(self, *args) -> None:
        """No event loop to run: there is no GUI."""

    def layoutManager(self):
        return None  # no views: code must cope, as it must in Slicer's --no-main-window mode


class ModuleStandIn:
    """slicer.modules.<name>: a loadable module whose logic is the real one."""

    def __init__(self, name: str, logic):
        self.name = name
        self._logic = logic

    def logic(self):
        return self._logic


def _make_i18n_module() -> types.ModuleType:
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


def _make_scripted_loadable_module() -> types.ModuleType:
    """slicer.ScriptedLoadableModule without Qt: the same contracts as Slicer's base classes."""
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = type(self).__name__
            parent.title, parent.categories, parent.dependencies = "", [], []
            parent.contributors, parent.helpText, parent.acknowledgementText = [], "", ""
            if not hasattr(slicer, "selfTests"):
                slicer.selfTests = {}
            slicer.selfTests[self.moduleName] = self.runTest

        def resourcePath(self, filename: str) -> str:
            return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

        def runTest(self, msec=100, **kwargs):
            test_class = getattr(sys.modules[type(self).__module__], self.moduleName + "Test", None)
            if test_class is None:
                raise AssertionError(f"Test case class not found: {type(self).__module__}.{self.moduleName}Test")
            test = test_class()
            test.messageDelay = msec
            test.runTest(**kwargs)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            raise NotImplementedError("module widgets need Qt (PythonQt); the test harness has none")

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            name = type(self).__name__
            self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else name
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            scene = slicer.mrmlScene
            if self.isSingletonParameterNode:
                node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if node:
                    node.SetAttribute("ModuleName", self.moduleName)
                    return node
            else:
                for node in self.getAllParameterNodes():
                    return node
            return scene.AddNode(self.createParameterNode())

        def getAllParameterNodes(self):
            nodes = slicer.util.getNodesByClass("vtkMRMLScriptedModuleNode")
            return [n for n in nodes if n.GetAttribute("ModuleName") == self.moduleName]

        def createParameterNode(self):
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            if self.isSingletonParameterNode:
                node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.enableScreenshots = False
            self.screenshotScaleFactor = 1.0
            self.moduleTestNames = [m for m in dir(self) if m.startswith("test") and callable(getattr(self, m))]

        def delayDisplay(self, message, requestedDelay=None, msec=None):
            logging.info(message)

        def takeScreenshot(self, name, description, type=-1):
            self.delayDisplay(description)

        def runTest(self):
            self.setUpClass()
            for name in self.moduleTestNames:
                self.setUp()
                getattr(self, name)()
                self.tearDown()
            self.tearDownClass()

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    module.__all__ = [
        "ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"
    ]
    return module


@dataclass
class SlicerHarness:
    """One scene, one application logic and the module logics, wired in the order Slicer uses."""

    temporary_path: str
    scene: object = None
    application_logic: object = None
    logics: dict = field(default_factory=dict)

    def __post_init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.application_logic = slicer.vtkSlicerApplicationLogic()
        self.application_logic.SetMRMLScene(self.scene)
        # Colours and terminologies look for Slicer's share directory, which the wheel does not
        # have; their complaints at set-up are noise here (tests bring their own .term.json).
        previous = vtk.vtkObject.GetGlobalWarningDisplay()
        vtk.vtkObject.GlobalWarningDisplayOff()
        try:
            for name, class_name in MODULE_LOGICS.items():
                logic = getattr(slicer, class_name)()
                # Order matters (docs/DESIGN.md section 6): application logic first, then the scene.
                logic.SetMRMLApplicationLogic(self.application_logic)
                logic.SetMRMLScene(self.scene)
                self.application_logic.SetModuleLogic(name, logic)
                self.logics[name] = logic
        finally:
            vtk.vtkObject.SetGlobalWarningDisplay(previous)
        self._observe_data_nodes()

    def _observe_data_nodes(self) -> None:
        """What qSlicerSubjectHierarchyPluginLogic does on its own: data nodes get an item when they
        are added to the scene (onNodeAdded) and lose it when they are removed (onNodeAboutToBeRemoved)."""

        def hierarchy(scene):
            return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def on_node_added(scene, event, node):
            if scene.IsImporting() or node is None or node.GetHideFromEditors():
                return
            if not (node.IsA("vtkMRMLStorableNode") or node.IsA("vtkMRMLTransformNode")):
                return
            tree = hierarchy(scene)
            if tree and not tree.GetItemByDataNode(node):
                tree.CreateItem(tree.GetSceneItemID(), node)

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def on_node_about_to_be_removed(scene, event, node):
            if scene.IsClosing() or node is None or node.IsA("vtkMRMLSubjectHierarchyNode"):
                return
            tree = hierarchy(scene)
            item = tree.GetItemByDataNode(node) if tree else 0
            if item:
                tree.RemoveItem(item, False, False)

        # Keep the callbacks alive as long as the harness.
        self._callbacks = (on_node_added, on_node_about_to_be_removed)
        self.scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, on_node_added)
        self.scene.AddObserver(slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent, on_node_about_to_be_removed)

    def install(self) -> "SlicerHarness":
        """Make ``slicer.app``, ``slicer.mrmlScene``, ``slicer.modules`` and the base classes visible."""
        slicer.app = ApplicationStandIn(self)
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            **{name.lower(): ModuleStandIn(name, logic) for name, logic in self.logics.items()}
        )
        slicer.moduleNames = types.SimpleNamespace(**{name: name for name in self.logics})
        sys.modules["slicer.i18n"] = slicer.i18n = _make_i18n_module()
        scripted = _make_scripted_loadable_module()
        sys.modules["slicer.ScriptedLoadableModule"] = slicer.ScriptedLoadableModule = scripted
        return self

    def clear_scene(self) -> None:
        """Like File > Close Scene: data nodes go, singletons such as the subject hierarchy stay."""
        self.scene.Clear(0)


_installed: SlicerHarness | None = None


def install_harness(temporary_path: str | os.PathLike | None = None) -> SlicerHarness:
    """Install the stand-in once per process and return it (later calls return the same one)."""
    global _installed
    if _installed is None:
        path = str(temporary_path or tempfile.mkdtemp(prefix="slicer-harness-"))
        os.makedirs(path, exist_ok=True)
        _installed = SlicerHarness(temporary_path=path).install()
    return _installed
