"""Running the engine in its own process: output read live, Cancel kills the whole tree.

The runner never blocks the caller: a reader thread collects the child's output lines, and the
caller polls (``readLines()``, ``exitCode()``) from its own thread, which in Slicer is a QTimer on the
GUI thread, so the GUI stays responsive and MRML is only touched from that thread. ``wait()``
is the synchronous mode for tests and scripts.

The child starts in a new process group (POSIX) or process group/job (Windows), so ``kill()``
reaches the engine and anything it started (data loaders, torch workers), not just the interpreter.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Protocol

TERMINATE_GRACE_S = 3.0  # time the tree gets to exit on SIGTERM before SIGKILL


class ProcessRunner(Protocol):
    """What the logic needs from a process; tests and Slicer both use SubprocessRunner."""

    def start(self, command: list[str], env: dict | None = None, cwd: str | None = None) -> None: ...

    def readLines(self) -> list[str]: ...

    def exitCode(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def splitOutput(buffer: str) -> tuple[list[str], str]:
    """Complete lines in ``buffer`` and the unfinished rest; tqdm ends its updates with ``\\r``, not ``\\n``."""
    parts = re.split(r"\r\n|\r|\n", buffer)
    return [p for p in parts[:-1] if p.strip()], parts[-1]


class SubprocessRunner:
    """A child process with merged stdout/stderr, read by a thread, killable as a process tree."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, command: list[str], env: dict | None = None, cwd: str | None = None) -> None:
        if self._process is not None:
            raise RuntimeError("this runner already started a process; use a new runner per run")
        kwargs = {}
        if os.name == "nt":
            # Own process group (for the tree kill) and no console window flashing up.
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # own session = own process group
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, name="shmn-engine-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self._process.stdout
        pending = ""
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            lines, pending = splitOutput(pending + chunk.decode("utf-8", errors="replace"))
            for line in lines:
                self._lines.put(line)
        if pending.strip():
            self._lines.put(pending)
        stream.close()

    def readLines(self) -> list[str]:
        """Lines that arrived since the last call (never blocks)."""
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    def exitCode(self) -> int | None:
        """None while running; once the child has exited AND all its output has been read, its exit code."""
        if self._process is None or self._process.poll() is None:
            return None
        if self._reader is not None and self._reader.is_alive():
            self._reader.join(timeout=0.05)
            if self._reader.is_alive():
                return None
        return self._process.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        return self._process.returncode

    def kill(self) -> None:
        """Terminate the child and everything it started; escalate to a hard kill if it lingers."""
        if self._process is None or self._process.poll() is not None:
            self._killGroupLeftovers()
            return
        if os.name == "nt":
            # taskkill /T walks the child tree; /F does not wait for the processes to agree.
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True)
        else:
            self._signalGroup(signal.SIGTERM)
            try:
                self._process.wait(timeout=TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self._signalGroup(signal.SIGKILL)
        self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=TERMINATE_GRACE_S)

    def _killGroupLeftovers(self) -> None:
        # The leader may be gone while children it started still run in its group.
        if self._process is not None and os.name != "nt":
            self._signalGroup(signal.SIGKILL)

    def _signalGroup(self, sig: int) -> None:
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass(frozen=True)
class Progress:
    """One progress report of the engine: what it is doing and how far (0-100, None when unknown).

    The engine sends it as an ``SHMN-PROGRESS {json}`` line (enginecontract.parseProgress reads it).
    """

    stage: str
    percent: float | None

