"""The case report (``report.html``, written by the engine beside report.json) opened for the user.

The logic decides WHAT to open and checks it exists; HOW is an opener function handed in by the
caller: the panel passes Qt's QDesktopServices (widget.openWithSystem, the system's browser), tests
pass a recorder, so the logic runs and is tested without Qt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from SHMNCoreLib.enginecontract import engineContract  # the engine's file names (shmn.contract)


class ReportMissing(RuntimeError):
    """There is no case report to open."""


def reportPath(caseDir) -> Path:
    return Path(caseDir) / engineContract().REPORT_HTML_FILE


def openCaseReport(path, opener: Callable[[Path], Optional[bool]]) -> Path:
    """Open ``path`` (a report.html) with ``opener``; a missing file or a refusal raises ReportMissing."""
    path = Path(path)
    if not path.is_file():
        raise ReportMissing(f"{path}: no case report; run SHMN again with an engine that writes report.html")
    if opener(path) is False:
        raise ReportMissing(f"{path}: the system could not open the report; open it in a web browser")
    return path
