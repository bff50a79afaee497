"""A Slicer ``parameterNodeWrapper`` class built from a plain dataclass (both modules' parameter nodes).

The modules describe their choices as ordinary dataclasses, so their logic and tests need neither
Qt nor the wrapper. In the application ``wrapperClass`` turns the same fields into a wrapper class:
the choices live in the scene (saved with it) and widgets whose ``SlicerParameterName`` property
names a field stay in sync with it. A field's ``metadata`` may give ``minimum``/``maximum``: they
become the wrapper's ``Minimum``/``Maximum`` annotations, without which the wrapper resets a bound
spin box's range to the whole int range. ``connectWidgets`` binds a panel's widgets and returns a
tag that ``disconnectGui`` accepts (``connectGui`` returns nothing: Slicer issue #7547).
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Annotated

PARAMETER_NAME_PROPERTY = "SlicerParameterName"


def fieldAnnotations(stateClass, nodeFields: dict, slicerModule, validators) -> tuple[dict, dict]:
    """(annotations, defaults) for the wrapper: node classes for node fields, bounds as annotations."""
    annotations, defaults = {}, {}
    for item in fields(stateClass):
        if item.name in nodeFields:
            annotations[item.name] = getattr(slicerModule, nodeFields[item.name])
            continue
        kind = type(item.default)
        bounds = []
        if "minimum" in item.metadata:
            bounds.append(validators.Minimum(item.metadata["minimum"]))
        if "maximum" in item.metadata:
            bounds.append(validators.Maximum(item.metadata["maximum"]))
        annotations[item.name] = Annotated[(kind, *bounds)] if bounds else kind
        if item.default is not MISSING:
            defaults[item.name] = item.default
    return annotations, defaults


def wrapperClass(stateClass, className: str, nodeFields: dict | None = None):
    """The parameterNodeWrapper class with ``stateClass``'s fields (Slicer application only)."""
    import slicer
    import slicer.parameterNodeWrapper as wrapper

    annotations, defaults = fieldAnnotations(stateClass, nodeFields or {}, slicer, wrapper)
    namespace = {"__annotations__": annotations, "__doc__": stateClass.__doc__, **defaults}
    return wrapper.parameterNodeWrapper(type(className, (), namespace))


def boundWidgets(ui) -> dict:
    """Parameter name -> widget, for the widgets of ``ui`` (childWidgetVariables) that name a parameter."""
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_NAME_PROPERTY) if hasattr(widget, "property") else None
        if name:
            mapping[str(name)] = widget
    return mapping


def connectWidgets(wrappedNode, ui):
    """Bind ``ui``'s parameter widgets to ``wrappedNode``; the tag to pass to ``disconnectGui``.

    ``connectGui`` would do the same binding but returns None (Slicer 5.8 and, so far, later: issue #7547), so its
    ``disconnectGui`` did nothing and every module entry added one more set of live connections.
    """
    return wrappedNode.connectParametersToGui(boundWidgets(ui))
