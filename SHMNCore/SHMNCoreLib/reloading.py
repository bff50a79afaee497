"""Reload and Test for modules whose code lives in library packages (what SlicerNNUnet's onReload does).

Slicer's Reload re-reads the module file only; the module's ``...Lib`` package and SHMNCoreLib stay
as first imported, so an edited library file would not take effect. ``reloadPackages`` forgets every
loaded module of SHMNCoreLib and of the given packages, then imports them again: each one's imports
are then resolved against the fresh modules (reloading one by one would leave a module holding the
classes of a not-yet-reloaded sibling).
"""

from __future__ import annotations

import importlib
import sys

CORE_PACKAGE = "SHMNCoreLib"


def loadedModules(package: str) -> list[str]:
    """``package`` and its submodules that are imported now, package first."""
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    return sorted(names, key=lambda name: (name != package, name))


def reloadPackages(*packages: str) -> list[str]:
    """Re-import the core library and ``packages`` (e.g. "SHMNSegmenterLib"); the names re-imported, in order."""
    order = [CORE_PACKAGE] + [p for p in packages if p != CORE_PACKAGE]
    names = [name for package in order for name in loadedModules(package)]
    for name in names:
        del sys.modules[name]
    for name in names:
        if name not in sys.modules:  # an earlier import may have brought it back already: keep that one
            importlib.import_module(name)
    return names
