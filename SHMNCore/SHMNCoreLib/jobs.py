"""One job of the engine: its commands run one after another in a child process, then the results imported.

Shared by both modules (SHMN Segmenter's Apply, SHMN Training's pre-fill, training and evaluation
runs). A job is polled (``poll()``) by whoever started it: a panel's QTimer in Slicer, ``wait()`` in
tests and scripts. The importer (the only part that touches MRML) runs inside ``poll()``, i.e. on
the caller's thread.
"""

from __future__ import annotations

import enum
import shutil
import time
from pathlib import Path
from typing import Callable

from .enginecontract import engineContract, parseProgress
from .process import Progress, ProcessRunner, SubprocessRunner

LOG_TAIL_LINES = 8


class JobState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def failureMessage(lines: list[str], exitCode: int) -> str:
    """The engine's own one-line error if it gave one, else the end of its output."""
    prefix = engineContract().ERROR_PREFIX  # how the engine's command line reports an error the user can fix
    errors = [line for line in lines if line.startswith(prefix)]
    if errors:
        return errors[-1][len(prefix):].strip()
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return f"the engine stopped with exit code {exitCode}" + (f":\n{tail}" if tail else "")


class EngineJob:
    """Engine commands run in sequence in a child process, then the results imported (see module docstring)."""

    def __init__(
        self,
        steps: list[tuple[str, list[str]]],
        env: dict,
        runDir: Path,
        importer: Callable[[], object],
        runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner,
        onLog: Callable[[str], None] | None = None,
        onProgress: Callable[[Progress], None] | None = None,
    ):
        self._steps = list(steps)
        self._env = env
        self._importer = importer
        self._runnerFactory = runnerFactory
        self._onLog = onLog or (lambda line: None)
        self._onProgress = onProgress or (lambda progress: None)
        self.runDir = runDir
        self.state = JobState.RUNNING
        self.result = None  # what the importer returned
        self.error: str | None = None
        self.lines: list[str] = []  # everything the engine printed (progress lines excluded)
        self.runner: ProcessRunner | None = None
        self._stepIndex = -1
        self._startNextStep()

    @property
    def finished(self) -> bool:
        return self.state is not JobState.RUNNING

    def _startNextStep(self) -> None:
        self._stepIndex += 1
        label, command = self._steps[self._stepIndex]
        self._log(f"[{label}] {' '.join(command)}")
        self._onProgress(Progress(stage=label, percent=None))
        self.runner = self._runnerFactory()
        self.runner.start(command, env=self._env, cwd=str(self.runDir))

    def _log(self, line: str) -> None:
        self.lines.append(line)
        self._onLog(line)

    def poll(self) -> bool:
        """Forward new output, advance to the next step or import the results; True once finished."""
        if self.finished:
            return True
        for line in self.runner.readLines():
            progress = parseProgress(line)
            if progress is not None:
                self._onProgress(progress)
            else:
                self._log(line)
        exitCode = self.runner.exitCode()
        if exitCode is None:
            return False
        if exitCode != 0:
            self._finish(JobState.FAILED, failureMessage(self.lines, exitCode))
        elif self._stepIndex + 1 < len(self._steps):
            self._startNextStep()
        else:
            self._importResults()
        return self.finished

    def _importResults(self) -> None:
        try:
            self.result = self._importer()
        except Exception as exc:  # noqa: BLE001 - any import failure ends the job with its message
            self._finish(JobState.FAILED, f"importing the results failed: {exc}")
            return
        self._finish(JobState.SUCCEEDED)

    def _finish(self, state: JobState, error: str | None = None) -> None:
        self.state, self.error = state, error
        if error:
            self._log(f"Error: {error}")
        if state is JobState.SUCCEEDED:
            shutil.rmtree(self.runDir / "input", ignore_errors=True)  # the outputs stay for the user
        else:
            shutil.rmtree(self.runDir, ignore_errors=True)  # nothing half-written is left behind

    def cancel(self) -> None:
        """Kill the engine's whole process tree; nothing is imported."""
        if self.finished:
            return
        self.runner.kill()
        self._finish(JobState.CANCELLED)
        self._log("Cancelled.")

    def wait(self, timeout_s: float | None = None, pollInterval_s: float = 0.1) -> object:
        """Synchronous mode: poll until finished; the results, or RuntimeError with the failure."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"SHMN engine still running after {timeout_s} s; cancelled")
            time.sleep(pollInterval_s)
        if self.state is not JobState.SUCCEEDED:
            raise RuntimeError(self.error or f"segmentation {self.state.value}")
        return self.result
