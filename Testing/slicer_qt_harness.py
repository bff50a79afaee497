"""Real Qt for the modules' panels under pytest: PySide6, offscreen, behind Slicer's names.

``slicer_harness.py`` gives the modules Slicer's real MRML; this file adds the Qt half, so the
panels (``*Lib/widget.py``) and their ``.ui`` files run as they do in Slicer:

- ``qt``: PySide6's QtCore, QtGui, QtWidgets and QtUiTools under one name, as PythonQt's ``qt`` is,
  with PythonQt's way of reaching Qt properties (``button.enabled = False``, ``combo.currentText``,
  ``widget.name``): each Q_PROPERTY becomes a Python attribute, as PythonQt makes it. The widgets,
  their signals, layouts and the QUiLoader that builds them from the ``.ui`` files are Qt's own.
- Stand-ins for exactly the MRML-aware and CTK widgets, which only Slicer's build has: qMRMLWidget,
  qMRMLNodeComboBox, ctkCollapsibleButton, ctkPathLineEdit (in the ``.ui`` files) and
  qMRMLSegmentEditorWidget, qMRMLPlotWidget, qMRMLTableView (made by the Training panel). Small
  QWidget subclasses with the members the panels use, over the real MRML scene.
- ``slicer.parameterNodeWrapper``: the Qt-dependent part of Slicer that slicer-core does not ship. It
  follows Slicer's Base/Python/slicer/parameterNodeWrapper (read from its sources, written anew):
  fields stored in a vtkMRMLScriptedModuleNode, ``connectGui`` binding every widget whose
  ``SlicerParameterName`` names a field and returning nothing, ``connectParametersToGui`` returning
  the tag ``disconnectGui`` takes, a spin box's range set from ``Minimum``/``Maximum`` and otherwise
  reset to the whole int range, an enum's combo box refilled with its labels, and every bound
  widget rewritten whenever the node is modified.
- ``ScriptedLoadableModuleWidget`` with its Qt parent and layout, calling ``setup()`` itself when it
  is given no parent, as Slicer's does.

QSettings write to a temporary folder, never to the user's own settings.
"""

from __future__ import annotations

import enum
import inspect
import logging
import os
import sys
import types
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shiboken6  # noqa: E402
from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: E402

import slicer  # noqa: E402
import vtk  # noqa: E402

PARAMETER_NAME_PROPERTY = "SlicerParameterName"


# ------------------------------------------------------------------ PythonQt-style property access
def _metaProperty(obj, name: str):
    meta = QtCore.QObject.metaObject(obj)
    return meta.property(meta.indexOfProperty(name))


def _pythonQtProperty(cls, name: str) -> property:
    """``obj.<name>`` reads and writes the Q_PROPERTY through its C++ getter and setter, as in PythonQt."""
    capitalised = name[:1].upper() + name[1:]
    getter = None
    for candidate in (name, "is" + capitalised, "has" + capitalised):
        value = vars(cls).get(candidate) if candidate == name else getattr(cls, candidate, None)
        if callable(value) and not isinstance(value, property):
            getter = value
            break
    setter = getattr(cls, "set" + capitalised, None)
    read = (lambda self: getter(self)) if getter else (lambda self: _metaProperty(self, name).read(self))
    write = (lambda self, value: setter(self, value)) if callable(setter) else (lambda self, value: _metaProperty(self, name).write(self, value))
    return property(read, write, doc=f"Qt property '{name}' (PythonQt style)")


def _exposeQtProperties(cls) -> None:
    meta = cls.staticMetaObject
    for index in range(meta.propertyCount()):
        name = meta.property(index).name()
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name in ("property", "setProperty"):
            continue
        if name in vars(cls) or not hasattr(cls, name):
            setattr(cls, name, _pythonQtProperty(cls, name))


_pythonQtStyle = False


def usePythonQtStyle() -> None:
    """Once per process: Q_PROPERTYs as attributes, ``name`` and ``className()`` on every QObject."""
    global _pythonQtStyle
    if _pythonQtStyle:
        return
    for module in (QtCore, QtGui, QtWidgets):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, QtCore.QObject) and hasattr(cls, "staticMetaObject"):
                _exposeQtProperties(cls)
    QtCore.QObject.name = vars(QtCore.QObject)["objectName"]  # PythonQt's alias of objectName
    QtCore.QObject.className = lambda self: QtCore.QObject.metaObject(self).className()
    _pythonQtStyle = True


# ------------------------------------------------------------------ MRML-aware and CTK widget stand-ins
class qMRMLWidget(QtWidgets.QWidget):
    """A widget that hands the scene to its children through mrmlSceneChanged (connected in the .ui)."""

    mrmlSceneChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(QtWidgets.QWidget):
    """Picks a node of the scene by class (``nodeTypes``), like Slicer's: current node, change signal."""

    currentNodeChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._node = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        if self._node is not None and (scene is None or self._node.GetScene() is not scene):
            self.setCurrentNode(None)

    def mrmlScene(self):
        return self._scene

    def nodeTypes(self) -> list:
        return list(self.property("nodeTypes") or [])

    def nodes(self) -> list:
        if self._scene is None:
            return []
        found = []
        for nodeType in self.nodeTypes():
            found += [n for n in slicer.util.getNodesByClass(nodeType, self._scene) if n not in found]
        return found

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not None and node not in self.nodes():
            raise ValueError(f"{node.GetID()} is not a {self.nodeTypes()} node of this selector's scene")
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)


class ctkCollapsibleButton(QtWidgets.QPushButton):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def _getCollapsed(self) -> bool:
        return self._collapsed

    def _setCollapsed(self, value: bool) -> None:
        self._collapsed = bool(value)

    collapsed = QtCore.Property(bool, _getCollapsed, _setCollapsed)


class ctkPathLineEdit(QtWidgets.QWidget):
    """A path field: ``currentPath`` and ``currentPathChanged``, edited through its QLineEdit."""

    currentPathChanged = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.lineEdit = QtWidgets.QLineEdit(self)
        layout.addWidget(self.lineEdit)
        self.lineEdit.textChanged.connect(self.currentPathChanged)

    def _getCurrentPath(self) -> str:
        return self.lineEdit.text  # PythonQt style: the Q_PROPERTY, not the getter

    def _setCurrentPath(self, path: str) -> None:
        self.lineEdit.setText(str(path))

    currentPath = QtCore.Property(str, _getCurrentPath, _setCurrentPath)
    filters = QtCore.Property(int, lambda self: 0, lambda self, value: None)  # the .ui sets it; nothing browses here


class qMRMLSegmentEditorWidget(QtWidgets.QWidget):
    """What the Training panel asks of the Segment Editor: which nodes it edits, shortcuts, observations."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.state = {"segmentationNode": None, "sourceVolumeNode": None, "segmentEditorNode": None, "scene": None,
                      "shortcuts": False, "viewObservations": False, "activeEffect": None, "undoStates": None}

    def setMaximumNumberOfUndoStates(self, count) -> None:
        self.state["undoStates"] = count

    def setMRMLSegmentEditorNode(self, node) -> None:
        self.state["segmentEditorNode"] = node

    def setMRMLScene(self, scene) -> None:
        self.state["scene"] = scene

    def setSegmentationNodeSelectorVisible(self, visible) -> None:
        pass

    def setSourceVolumeNodeSelectorVisible(self, visible) -> None:
        pass

    def setSegmentationNode(self, node) -> None:
        self.state["segmentationNode"] = node

    def segmentationNode(self):
        return self.state["segmentationNode"]

    def setSourceVolumeNode(self, node) -> None:
        self.state["sourceVolumeNode"] = node

    def sourceVolumeNode(self):
        return self.state["sourceVolumeNode"]

    def installKeyboardShortcuts(self) -> None:
        self.state["shortcuts"] = True

    def uninstallKeyboardShortcuts(self) -> None:
        self.state["shortcuts"] = False

    def setupViewObservations(self) -> None:
        self.state["viewObservations"] = True

    def removeViewObservations(self) -> None:
        self.state["viewObservations"] = False

    def setActiveEffect(self, effect) -> None:
        self.state["activeEffect"] = effect


class qMRMLPlotWidget(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.scene, self.plotViewNode = None, None

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def setMRMLPlotViewNode(self, node) -> None:
        self.plotViewNode = node


class qMRMLTableView(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.scene, self.tableNode = None, None

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def setMRMLTableNode(self, node) -> None:
        self.tableNode = node

    def mrmlTableNode(self):
        return self.tableNode


MRML_STAND_INS = (qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentEditorWidget, qMRMLPlotWidget, qMRMLTableView)
CTK_STAND_INS = (ctkCollapsibleButton, ctkPathLineEdit)


class QUiLoader(QtUiTools.QUiLoader):
    """Qt's loader, knowing the stand-ins; it also makes the .ui's signal/slot connections whose
    signatures name MRML types (``mrmlSceneChanged(vtkMRMLScene*)``), which Qt cannot match for
    Python-defined signals, by name as uic-generated code would."""

    def __init__(self, parent=None):
        super().__init__(parent)
        for cls in MRML_STAND_INS + CTK_STAND_INS:
            self.registerCustomWidget(cls)

    def load(self, device, parentWidget=None):
        path = device.fileName() if isinstance(device, QtCore.QFile) else str(device)
        widget = super().load(device, parentWidget) if parentWidget is not None else super().load(device)
        if widget is not None and path:
            self._connectByName(widget, Path(path))
        return widget

    @staticmethod
    def _connectByName(top, path: Path) -> None:
        root = ET.parse(path).getroot()
        byName = {w.name: w for w in top.findChildren(QtCore.QObject)}
        byName[top.name] = top
        for connection in root.iter("connection"):
            sender, receiver = byName.get(connection.findtext("sender")), byName.get(connection.findtext("receiver"))
            signal = (connection.findtext("signal") or "").split("(")[0]
            slot = (connection.findtext("slot") or "").split("(")[0]
            if sender is None or receiver is None or not isinstance(sender, MRML_STAND_INS + CTK_STAND_INS):
                continue  # Qt's own widgets: QUiLoader made the connection already
            getattr(sender, signal).connect(getattr(receiver, slot))


# ------------------------------------------------------------------ slicer.parameterNodeWrapper
class Minimum:
    def __init__(self, minimum):
        self.minimum = minimum


class Maximum:
    def __init__(self, maximum):
        self.maximum = maximum


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _split(datatype):
    if typing.get_origin(datatype) is typing.Annotated:
        return datatype.__origin__, list(datatype.__metadata__)
    return datatype, []


def _first(annotations, kind):
    return next((a for a in annotations if isinstance(a, kind)), None)


def _isNodeType(datatype) -> bool:
    return inspect.isclass(datatype) and issubclass(datatype, slicer.vtkMRMLNode)


class _Serializer:
    """A field's value in the scripted-module node: a string parameter, or a node reference."""

    def __init__(self, datatype):
        self.datatype = datatype

    def write(self, node, name: str, value) -> None:
        if _isNodeType(self.datatype):
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif issubclass(self.datatype, enum.Enum):
            node.SetParameter(name, value.name)
        elif self.datatype is bool:
            node.SetParameter(name, "True" if value else "False")
        else:
            node.SetParameter(name, str(value))

    def read(self, node, name: str):
        if _isNodeType(self.datatype):
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        if issubclass(self.datatype, enum.Enum):
            return self.datatype[text]
        if self.datatype is bool:
            return text == "True"
        return self.datatype(text)

    def isIn(self, node, name: str) -> bool:
        return node.GetNodeReferenceID(name) is not None if _isNodeType(self.datatype) else node.HasParameter(name)


class _Connector:
    """One widget bound to one field: read, write and the widget's change signal."""

    def __init__(self, widget, signal, read, write):
        self.widget, self._signal, self.read, self.write = widget, signal, read, write
        self._callback = None

    def onChanged(self, callback) -> None:
        if self._callback is not None:
            self._signal.disconnect(self._changed)
        self._callback = callback
        if callback is not None:
            self._signal.connect(self._changed)

    def _changed(self, *args) -> None:
        if self._callback is not None:
            self._callback()


def createGuiConnector(widget, datatype) -> _Connector:
    kind, annotations = _split(datatype)
    widgetType = type(widget)
    if widgetType is QtWidgets.QCheckBox and kind is bool:
        return _Connector(widget, widget.stateChanged, lambda: widget.checked, lambda value: widget.setChecked(bool(value)))
    if widgetType is QtWidgets.QSpinBox and kind is int:
        withinRange, minimum, maximum = _first(annotations, WithinRange), _first(annotations, Minimum), _first(annotations, Maximum)
        if withinRange is not None:
            widget.setRange(withinRange.minimum, withinRange.maximum)
        else:
            # As Slicer's connector does: an unbounded field opens the spin box to the whole int range.
            widget.setMinimum(minimum.minimum if minimum is not None else -2**31)
            widget.setMaximum(maximum.maximum if maximum is not None else 2**31 - 1)
        return _Connector(widget, widget.valueChanged, lambda: widget.value, lambda value: widget.setValue(int(value)))
    if widgetType is QtWidgets.QComboBox and inspect.isclass(kind) and issubclass(kind, enum.Enum):
        labelled = [(getattr(kind, "label", lambda e: e.name)(member), member) for member in kind]
        widget.clear()
        for label, _ in labelled:
            widget.addItem(label)
        return _Connector(widget, widget.currentIndexChanged, lambda: labelled[widget.currentIndex][1],
                          lambda value: widget.setCurrentIndex([m for _, m in labelled].index(value)))
    if widgetType is QtWidgets.QLineEdit and kind is str:
        return _Connector(widget, widget.textChanged, lambda: widget.text, widget.setText)
    if widgetType is ctkPathLineEdit and kind is str:
        return _Connector(widget, widget.currentPathChanged, lambda: widget._getCurrentPath(), widget._setCurrentPath)
    if widgetType is qMRMLNodeComboBox and _isNodeType(kind):
        return _Connector(widget, widget.currentNodeChanged, widget.currentNode, widget.setCurrentNode)
    raise RuntimeError(f"Unable to create GUI connector from datatype '{datatype}' to widget type '{widgetType}'")


def _processClass(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    parameters = {}
    for name, datatype in hints.items():
        kind, _ = _split(datatype)
        default = getattr(cls, name, None)
        parameters[name] = (_Serializer(kind), default, datatype)

    def makeProperty(name):
        return property(lambda self: self.getValue(name), lambda self, value: self.setValue(name, value))

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self._parameterGUIs = {}
        self._observers = {}
        self._nextTag = 0
        self._updatingGUI = False
        for name, (serializer, default, _) in parameters.items():
            if not serializer.isIn(parameterNode, name) and not (_isNodeType(serializer.datatype) and default is None):
                serializer.write(parameterNode, name, default)

    def getValue(self, name):
        serializer, default, _ = parameters[name]
        if not serializer.isIn(self.parameterNode, name):
            return default
        return serializer.read(self.parameterNode, name)

    def setValue(self, name, value):
        parameters[name][0].write(self.parameterNode, name, value)

    def updateGUI(self):
        if self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for mapping in self._parameterGUIs.values():
                for name, connector in mapping.items():
                    if shiboken6.isValid(connector.widget):  # (PythonQt raises on a deleted widget; C++ here would crash)
                        connector.write(self.getValue(name))
        finally:
            self._updatingGUI = False

    def connectParametersToGui(self, mapping):
        unknown = set(mapping) - set(parameters)
        if unknown:
            raise ValueError(f"Cannot find a param with the given name: {sorted(unknown)}")
        connectors = {name: createGuiConnector(widget, parameters[name][2]) for name, widget in mapping.items()}
        tag = self._nextTag
        self._nextTag += 1
        self._parameterGUIs[tag] = connectors
        for name, connector in connectors.items():
            connector.write(self.getValue(name))

            def guiChanged(name=name, connector=connector):
                if not self._updatingGUI:
                    self.setValue(name, connector.read())

            connector.onChanged(guiChanged)
        # One observer per connection, as in Slicer; removed on disconnect here (Slicer leaves it, harmlessly
        # with PythonQt; an observer outliving its widgets can crash PySide).
        self._observers[tag] = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: updateGUI(self))
        return tag

    def connectGui(self, gui):
        widgets = gui.findChildren(QtWidgets.QWidget) if isinstance(gui, QtWidgets.QWidget) else list(vars(gui).values())
        mapping = {str(w.property(PARAMETER_NAME_PROPERTY)): w for w in widgets if w.property(PARAMETER_NAME_PROPERTY)}
        self.connectParametersToGui(mapping)  # Slicer's connectGui returns nothing: there is no tag to give back

    def disconnectGui(self, tag):
        for connector in self._parameterGUIs.pop(tag, {}).values():
            connector.onChanged(None)
        if tag in self._observers:
            self.parameterNode.RemoveObserver(self._observers.pop(tag))

    for name in parameters:
        setattr(cls, name, makeProperty(name))
    members = {"__init__": __init__, "getValue": getValue, "setValue": setValue, "allParameters": parameters,
               "connectParametersToGui": connectParametersToGui, "connectGui": connectGui, "disconnectGui": disconnectGui,
               "StartModify": lambda self: self.parameterNode.StartModify(),
               "EndModify": lambda self, wasModifying: self.parameterNode.EndModify(wasModifying),
               "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority),
               "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
               "Modified": lambda self: self.parameterNode.Modified(),
               "dataType": staticmethod(lambda name: parameters[name][2])}
    for member, value in members.items():
        setattr(cls, member, value)
    return cls


def parameterNodeWrapper(classtype=None):
    return _processClass if classtype is None else _processClass(classtype)


def _makeParameterNodeWrapperModule() -> types.ModuleType:
    module = types.ModuleType("slicer.parameterNodeWrapper")
    for name in ("parameterNodeWrapper", "Minimum", "Maximum", "WithinRange", "createGuiConnector"):
        setattr(module, name, globals()[name])
    module.SlicerParameterNamePropertyName = PARAMETER_NAME_PROPERTY
    return module


# ------------------------------------------------------------------ qt module and widget base class
def _makeQtModule() -> types.ModuleType:
    module = types.ModuleType("qt")
    for source in (QtCore, QtGui, QtWidgets, QtUiTools):
        for name in dir(source):
            if not name.startswith("_"):
                setattr(module, name, getattr(source, name))
    module.QUiLoader = QUiLoader
    return module


def _makeScriptedLoadableModuleWidget():
    class ScriptedLoadableModuleWidget:
        """Slicer's base class: a qMRMLWidget parent with a vertical layout; setup() called here when
        no parent is given (the module-panel case passes one and calls setup() itself)."""

        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[: -len("Widget")] if type(self).__name__.endswith("Widget") else type(self).__name__
            self.developerMode = False
            if not parent:
                self.parent = qMRMLWidget()
                self.parent.setLayout(QtWidgets.QVBoxLayout())
                self.parent.setMRMLScene(slicer.mrmlScene)
            else:
                self.parent = parent
            self.layout = self.parent.layout()
            if not parent:
                self.setup()
                self.parent.show()

        def resourcePath(self, filename: str) -> str:
            return os.path.join(os.path.dirname(sys.modules[type(self).__module__].__file__), "Resources", filename)

        def setup(self) -> None:
            pass

        def enter(self) -> None:
            pass

        def exit(self) -> None:
            pass

        def cleanup(self) -> None:
            pass

        def onReload(self) -> None:
            """slicer.util.reloadScriptedModule: the module file is executed again."""
            import importlib

            logging.info("Reloading %s", self.moduleName)
            importlib.reload(sys.modules[type(self).__module__])

    return ScriptedLoadableModuleWidget


_qt_installed = None

# What Qt says about the stand-ins that is expected here: the .ui's MRML-typed connection (made by
# name instead, see QUiLoader), ctkPathLineEdit's enum-set property, and the offscreen platform.
EXPECTED_QT_MESSAGES = ("mrmlSceneChanged(vtkMRMLScene*)", "QObject::connect:", "set-type property filters",
                        "propagateSizeHints")


def _qtMessage(mode, context, message) -> None:
    if not any(expected in message for expected in EXPECTED_QT_MESSAGES):
        logging.warning("Qt: %s", message)


def install_qt(harness, settings_folder: str | os.PathLike):
    """Add real Qt to an installed ``SlicerHarness`` (once per process); the QApplication."""
    global _qt_installed
    if _qt_installed is not None:
        return _qt_installed
    QtCore.qInstallMessageHandler(_qtMessage)
    application = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["pytest"])
    QtCore.QCoreApplication.setOrganizationName("SHMN-tests")
    QtCore.QCoreApplication.setApplicationName("SlicerHarness")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(settings_folder))
    usePythonQtStyle()
    sys.modules["qt"] = _makeQtModule()
    sys.modules["ctk"] = ctk = types.ModuleType("ctk")
    for cls in CTK_STAND_INS:
        setattr(ctk, cls.__name__, cls)
    for cls in MRML_STAND_INS:
        setattr(slicer, cls.__name__, cls)
    sys.modules["slicer.parameterNodeWrapper"] = slicer.parameterNodeWrapper = _makeParameterNodeWrapperModule()
    # The base class is completed in place: module files imported before Qt was installed subclass it already.
    qtWidgetClass = _makeScriptedLoadableModuleWidget()
    baseClass = sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleWidget
    for name, member in vars(qtWidgetClass).items():
        if callable(member) or name == "__doc__":
            setattr(baseClass, name, member)
    app = harness_app = slicer.app
    harness_app.applicationName = "Slicer"
    app.setOverrideCursor = QtWidgets.QApplication.setOverrideCursor
    app.restoreOverrideCursor = QtWidgets.QApplication.restoreOverrideCursor
    _qt_installed = application
    return application
