"""tests/helpers.py's stop() and reaped(): the one clean-up of a process a test started."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from helpers import reaped, stop, wait_dead

pytestmark = pytest.mark.timeout(60)


def _still_running(script: str = "echo up; exec sleep 60", *, new_session: bool = False) -> subprocess.Popen:
    """A shell that prints a line once it runs, then lasts, every pipe its own."""
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session)  # fmt: skip


def test_a_process_still_running_is_killed_reaped_and_its_pipes_closed_and_the_blocks_error_is_the_one_raised():
    proc = _still_running()
    assert proc.stdout.readline() == "up\n"
    with pytest.raises(RuntimeError, match="the test's own failure"):
        with reaped(proc, timeout=10):
            raise RuntimeError("the test's own failure")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdin.closed and proc.stdout.closed and proc.stderr.closed


def test_group_kills_the_whole_process_group():
    proc = _still_running("sleep 60 & echo $!; wait", new_session=True)  # a manager and its agent, in small
    child = int(proc.stdout.readline())
    with pytest.raises(RuntimeError):
        with reaped(proc, group=True, timeout=10):
            raise RuntimeError("the test's own failure")
    assert proc.returncode == -signal.SIGKILL
    assert not wait_dead([child], timeout=10), "the process group's other member outlived the clean-up"


def test_a_process_that_ended_by_itself_is_not_signalled():
    proc = subprocess.Popen([sys.executable, "-c", "print('done')"], stdout=subprocess.PIPE, text=True)
    with reaped(proc):
        assert proc.stdout.readline() == "done\n"
        proc.wait(30)
    assert proc.returncode == 0 and proc.stdout.closed
    stop(proc)  # a second stop of the same process does nothing


def test_a_process_not_reaped_in_time_does_not_replace_the_blocks_error(monkeypatch):
    proc = _still_running(new_session=True)
    proc.stdout.readline()
    wait = proc.wait

    def late(timeout=None):
        raise subprocess.TimeoutExpired(proc.args, timeout)

    monkeypatch.setattr(proc, "wait", late)
    with pytest.raises(RuntimeError, match="the test's own failure"):
        with reaped(proc, group=True, timeout=0.1):
            raise RuntimeError("the test's own failure")
    assert wait(30) == -signal.SIGKILL  # killed all the same
