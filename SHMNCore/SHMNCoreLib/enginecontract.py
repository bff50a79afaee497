"""The engine's shared names (``shmn.contract``) and its structured output lines, as the Slicer side reads them.

File names, devices, card keys and line prefixes are the engine's: the module imports them from
the engine it runs instead of copying them. The engine is looked up on first use, not at import:
Slicer loads the module even where the engine is missing. ``shmn.contract`` is standard library
only, so importing it into Slicer's own process costs nothing and never pulls in torch.
"""

from __future__ import annotations

from functools import lru_cache

from .engine import findEngine, importEngineModule
from .process import Progress


@lru_cache(maxsize=None)
def engineModule(name: str):
    """``shmn.<name>`` (a light, torch-free engine module) from the engine this module runs."""
    return importEngineModule(findEngine(), f"shmn.{name}")


def engineContract():
    """The ``shmn.contract`` module of the engine this module runs."""
    return engineModule("contract")


def parseProgress(line: str) -> Progress | None:
    """The progress of an ``SHMN-PROGRESS {json}`` line, or None for an ordinary log line."""
    record = engineContract().read_progress_line(line)
    if record is None:
        return None
    percent = record.get("percent")
    return Progress(stage=record["stage"], percent=None if percent is None else float(percent))
