"""The light half of the ``shmn`` engine, imported into Slicer's own process.

Manifests, atomic writes, the model registry and the segment terminology are small pure-Python
modules: the module reads and writes them directly (the same code the engine's commands use), so
a manifest saved here is exactly what ``shmn train`` reads. Anything heavy (torch, registration,
training, prediction) runs in the engine's own process (SHMNCoreLib.process).

The engine is found the way SHMNSegmenter finds it (developer tree, installed extension or Python
environment), and only when first needed: Slicer loads the module even where the engine is missing.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from SHMNCoreLib.engine import Engine, findEngine, importEngineModule


@lru_cache(maxsize=1)
def defaultEngine() -> Engine:
    return findEngine()


def shmn(name: str, engine: Engine | None = None):
    """``shmn.<name>`` (e.g. ``shmn("io.manifest")``) from the engine this module runs."""
    engine = engine or defaultEngine()
    importEngineModule(engine, "shmn")  # puts the engine's folder on sys.path once
    return importlib.import_module(f"shmn.{name}")
