"""Progress for long work: tqdm bars on a terminal, ``SHMN-PROGRESS {json}`` lines for a GUI.

A GUI that runs the engine in a child process sets ``SHMN_PROGRESS=lines`` in its environment
(shmn.contract): then each update is one structured line on stdout, read without parsing a bar's
text. Both kinds take the same calls (iterate, ``update``, ``set_postfix_str``, ``close``), so the
engine's loops do not care which one they got.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from shmn.contract import PROGRESS_PREFIX, progress_lines_wanted, progress_record, structured_line


class ProgressLines:
    """tqdm's small API, printing one ``SHMN-PROGRESS`` line per update (first one at 0)."""

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 share: Callable[[int, int | None], float | None] | None = None, stream=None, **_tqdm_options):
        self.iterable, self.stage, self.n = iterable, desc, 0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self._share, self._step = total, share, None
        self._stream = stream if stream is not None else sys.stdout
        self._emit()

    def _emit(self) -> None:
        percent = self._share(self.n, self.total) if self._share else None
        extra = {"step": self._step} if self._step else {}
        print(structured_line(PROGRESS_PREFIX, progress_record(self.stage, self.n, self.total, percent, **extra)),
              file=self._stream, flush=True)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._emit()

    def set_postfix_str(self, text: str) -> None:
        self._step = text  # shown with the next update, as tqdm does

    def close(self) -> None:
        pass

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True,
                 share: Callable[[int, int | None], float | None] | None = None, **tqdm_options):
    """A tqdm bar (``tqdm_options`` as tqdm takes them), or SHMN-PROGRESS lines when a GUI asked for them.

    ``share(done, total)``: the whole job's percent when this bar is one part of it (lines only).
    Disabled (``--quiet``), it is a silent tqdm: the loop runs the same.
    """
    if enabled and progress_lines_wanted():
        return ProgressLines(iterable, share=share, **tqdm_options)
    from tqdm.auto import tqdm

    tqdm_options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **tqdm_options)
