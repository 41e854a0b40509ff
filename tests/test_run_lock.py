"""The run lock is per roadmap file (issue 21): a run of `a.yaml b.yaml` and a run of `b.yaml` with one state dir
never run b's tasks at once. Two real wvo-batch processes; the first holds its task on a FIFO."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wvo
from runner.errors import EXIT_LOCKED
from runner.manager import statedir


def _start(tmp_path, *roadmaps):
    return subprocess.Popen([sys.executable, "-m", "runner", *map(str, roadmaps), "--state-dir", str(tmp_path / "state"), "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(path, proc, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run never started its task"
        time.sleep(0.02)


@pytest.fixture
def roadmaps(tmp_path):
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("tasks:\n  - id: a1\n    command: 'true'\n")
    b.write_text(f"tasks:\n  - id: b1\n    command: 'echo {tmp_path}/b1 >> {tmp_path}/runs; touch {tmp_path}/started; cat {fifo}'\n")
    return a, b, fifo


@pytest.mark.timeout(90)
@pytest.mark.parametrize("first, second", [(("a", "b"), ("b",)), (("b",), ("b", "a")), (("b", "a"), ("a", "b"))])
def test_a_roadmap_file_in_two_runs_is_locked_whatever_the_other_files(tmp_path, roadmaps, first, second):
    files = dict(zip("ab", roadmaps[:2]))
    fifo = roadmaps[2]
    proc = _start(tmp_path, *(files[n] for n in first))
    try:
        _wait_for(tmp_path / "started", proc)
        other = wvo(*(files[n] for n in second), "--state-dir", tmp_path / "state", "-q", timeout=60)
        assert other.returncode == EXIT_LOCKED, other.stderr
        named = [n for n in set(first) & set(second) if f"run of {files[n]} is in progress (PID {proc.pid} holds" in other.stderr]
        assert len(named) == 1, other.stderr  # a file both runs name, and the first run's PID
        assert len(other.stderr.strip().splitlines()) == 1 and "Traceback" not in other.stderr
    finally:
        with open(fifo, "w") as f:
            f.write("go\n")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (tmp_path / "runs").read_text().split() == [f"{tmp_path}/b1"]  # b's task ran once
    again = wvo(files["a"], "--state-dir", tmp_path / "state", "-q", timeout=60)  # the locks were all released
    assert again.returncode == 0, again.stderr


def test_a_refused_run_holds_none_of_the_locks(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("tasks: []\n")
    b.write_text("tasks: []\n")
    state = str(tmp_path)
    held = statedir.RunLock.of_roadmaps(state, [str(b)])
    held.acquire()
    try:
        both = statedir.RunLock.of_roadmaps(state, [str(a), str(b)])
        with pytest.raises(statedir.LockHeld, match=f"run of {b} is in progress \\(PID {os.getpid()} holds"):
            both.acquire()
        alone = statedir.RunLock.of_roadmaps(state, [str(a)])
        alone.acquire()  # a's lock was let go when b's could not be taken
        alone.release()
        assert both.holder() == os.getpid()
    finally:
        held.release()
    assert both.holder() is None


def test_two_runs_making_the_same_new_state_dir_both_start(tmp_path, monkeypatch):
    """Two runs (two roadmaps) on one new state dir: the other one creates the ledger file between our look
    and our create. The suite saw it once as `wvo-batch: File exists (…/ledger.sqlite)`, exit 2."""
    state = tmp_path / "s"
    ledger = str(state / "ledger.sqlite")
    real_lstat = os.lstat
    raced = []

    def lstat(path, *args, **kwargs):
        if os.fspath(path) == ledger and not raced:  # the other run makes it just after our look
            raced.append(path)
            os.close(os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(statedir.os, "lstat", lstat)
    assert statedir.prepare(str(state)) == str(state)
    assert raced, "the race was not played"
    assert os.stat(ledger).st_mode & 0o777 == 0o600  # checked as found: made private
