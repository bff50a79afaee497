"""A Cancel (SIGTERM) that lands while an atomic writer creates its temporary leaves nothing behind: the
signal is held until the temporary's name is kept, then handled inside the writer's clean-up."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

from shmn.io.atomic import atomic_dir, atomic_path

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")


@pytest.fixture
def sigterm_exits():
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("writer, creator", [(atomic_dir, "mkdtemp"), (atomic_path, "mkstemp")])
def test_sigterm_right_after_the_temporary_is_made_leaves_nothing(writer, creator, sigterm_exits, tmp_path, monkeypatch):
    real = getattr(tempfile, creator)

    def create_then_cancel(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # Slicer's Cancel, between creation and the writer's try
        return made

    monkeypatch.setattr(tempfile, creator, create_then_cancel)
    with pytest.raises(SystemExit):
        with writer(tmp_path / "case.nii.gz") as target:
            target.touch()
            pytest.fail("the cancelled writer went on")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
