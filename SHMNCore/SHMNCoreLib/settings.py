"""Choices remembered across Slicer sessions (QSettings, as SlicerNNUnet keeps its own).

The parameter node keeps a scene's choices; QSettings keeps the user's last ones, so a new scene
starts from the model, device and run folder used last time rather than from the defaults. A scene
that already carries choices (one saved with them, or a node the module has seen) keeps its own:
the node is marked once filled from the settings.
"""

from __future__ import annotations

import enum

import qt

FILLED_ATTRIBUTE = "SHMN.FilledFromSettings"


def settingsKey(module: str, name: str) -> str:
    return f"SHMN/{module}/{name}"


def remember(module: str, name: str, value) -> None:
    """Keep ``value`` (a string, a bool, or an enum by its value) as this user's last choice."""
    if isinstance(value, enum.Enum):
        value = value.value
    elif isinstance(value, bool):
        value = "true" if value else "false"  # one spelling on every platform's QSettings backend
    qt.QSettings().setValue(settingsKey(module, name), str(value))


def remembered(module: str, name: str, default: str = "") -> str:
    value = qt.QSettings().value(settingsKey(module, name), default)
    return default if value is None else str(value)


def fillFromSettings(wrappedNode, module: str, names) -> list[str]:
    """Give a parameter node that has never been filled this user's last choices; the names filled.

    Enum fields take the remembered value only if it is still one of the enum's values; bool fields
    only "true" or "false".
    """
    raw = wrappedNode.parameterNode
    if raw.GetAttribute(FILLED_ATTRIBUTE):
        return []
    filled = []
    for name in names:
        text = remembered(module, name)
        if not text:
            continue
        current = getattr(wrappedNode, name)
        if isinstance(current, enum.Enum):
            try:
                value = type(current)(text)
            except ValueError:
                continue  # an option this version no longer has
        elif isinstance(current, bool):
            if text.lower() not in ("true", "false"):
                continue  # not a choice this module wrote
            value = text.lower() == "true"
        else:
            value = text
        setattr(wrappedNode, name, value)
        filled.append(name)
    raw.SetAttribute(FILLED_ATTRIBUTE, "1")
    return filled
