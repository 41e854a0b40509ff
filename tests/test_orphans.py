"""No process outlives the run: also when the manager and its agents are killed at once, and for a
callable's own children (timeout, SIGTERM of the run, manager SIGKILLed while the callable is stuck)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from helpers import reaped, roadmap, run, task

TESTS = Path(__file__).resolve().parent


# -- callables the tasks run (imported by the agents as test_orphans:...) --------------------------


def child_and_wait(started: str) -> int:
    """Start a shell that starts a sleep, note it, and wait for it (a callable's subprocess)."""
    proc = subprocess.Popen("sleep 40", shell=True)
    Path(started).write_text(str(proc.pid))
    return proc.wait()


def child_and_stuck(started: str) -> None:
    """Start a child, then be deaf to SIGTERM, as a callable blocked in C code is."""
    subprocess.Popen(["sleep", "40"])
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    Path(started).write_text("up")
    time.sleep(60)


# -- helpers ----------------------------------------------------------------------------------------


def marked(mark: str) -> dict[int, str]:
    """Live processes anywhere whose environment carries ORPHAN_MARK=mark."""
    want = f"ORPHAN_MARK={mark}".encode()
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rpartition(b")")[2].split()[0] == b"Z":
                    continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                out[int(name)] = f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
        except (OSError, IndexError):
            pass
    return out


def gone_within(mark: str, seconds: float) -> dict[int, str]:
    """Poll until no marked process is left; returns those still alive at the deadline (killed then)."""
    deadline = time.monotonic() + seconds
    left = marked(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked(mark)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def start_run(tmp_path: Path, tasks: list[dict], mark: str, *args: str) -> subprocess.Popen:
    """wvo-batch in a process group (and session) of its own, everything it starts marked by mark."""
    lines = ["tasks:"]
    for t in tasks:
        lines.append("  - " + json.dumps(t))
    path = tmp_path / "roadmap.yaml"
    path.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "ORPHAN_MARK": mark, "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}"}
    argv = [sys.executable, "-m", "runner", str(path), "--state-dir", str(tmp_path / "state"), "--quiet", *args]
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def lines(path: Path) -> int:
    try:
        return len(path.read_text().split())
    except OSError:
        return 0


# -- the whole process group killed at once -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigkill_to_the_runs_whole_process_group_leaves_nothing_behind_within_5s(tmp_path):
    mark = uuid.uuid4().hex
    up = tmp_path / "up"
    tasks = [
        {"id": "plain", "command": f"echo $$ >> {up}; sleep 40"},
        {"id": "daemon", "command": f"(setsid sleep 41 &) ; echo $$ >> {up}; sleep 42"},
        {"id": "callable", "call": "test_orphans:child_and_wait", "args": [str(tmp_path / "c")]},
    ]
    proc = start_run(tmp_path, tasks, mark, "--agents", "3")
    with reaped(proc, group=True):
        wait_for(lambda: lines(up) == 2 and (tmp_path / "c").exists(), 30, "the three tasks to start")
        os.killpg(proc.pid, signal.SIGKILL)  # `timeout -s KILL`, a cancelled CI job: manager and agents at once
        proc.wait(10)
        left = gone_within(mark, 5.0)
    assert not left, f"processes of the run outlived it by 5s: {left}"


# -- a callable's children are the task's tree too ------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_callables_subprocess_dies_with_the_callable_on_timeout(tmp_path):
    mark = uuid.uuid4().hex
    started = tmp_path / "c"
    t = task("c", call="test_orphans:child_and_wait", args=[str(started)], timeout=0.5, env={"ORPHAN_MARK": mark})
    result = run(roadmap([t]), tmp_path / "state", agents=1)
    assert started.exists() and result.tasks[0]["status"] == "timed_out"
    left = gone_within(mark, 1.0)
    assert not left, f"the callable's child outlived its timeout and the run: {left}"


@pytest.mark.timeout(60)
def test_a_callables_subprocess_dies_when_the_run_is_terminated(tmp_path):
    mark = uuid.uuid4().hex
    started = tmp_path / "c"
    tasks = [{"id": "c", "call": "test_orphans:child_and_wait", "args": [str(started)]}]
    proc = start_run(tmp_path, tasks, mark, "--agents", "1", "--grace", "0.5")
    with reaped(proc, group=True):
        wait_for(started.exists, 30, "the callable to start its child")
        proc.send_signal(signal.SIGTERM)  # the manager alone, as `kill PID` would
        assert proc.wait(30) != 0
        left = gone_within(mark, 1.0)
    assert not left, f"the callable's child outlived the run: {left}"


@pytest.mark.timeout(60)
def test_a_stuck_callable_its_agent_and_its_child_die_when_the_manager_is_sigkilled(tmp_path):
    mark = uuid.uuid4().hex
    started = tmp_path / "c"
    tasks = [{"id": "c", "call": "test_orphans:child_and_stuck", "args": [str(started)]}]
    proc = start_run(tmp_path, tasks, mark, "--agents", "1")
    with reaped(proc, group=True):
        wait_for(started.exists, 30, "the callable to be stuck")
        os.kill(proc.pid, signal.SIGKILL)  # the manager only: its agent cannot run a SIGTERM handler now
        proc.wait(10)
        left = gone_within(mark, 5.0)
    assert not left, f"the agent or the callable's child outlived the manager: {left}"


# -- agents exit quietly --------------------------------------------------------------------------------

# The first import (an agent's, on its timeout path) hangs; any later one loads the real psutil.
_KILL_IMPORTS = """
import subprocess, sys
from runner.agents.kill import kill_tree
proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"], start_new_session=True)
before = set(sys.modules)
kill_tree(proc.pid, 0.5, lambda t: proc.wait(t), mark="no-such-mark")
proc.wait()
print(sorted(set(sys.modules) - before))
"""


@pytest.mark.timeout(60)
def test_the_tree_kill_imports_nothing_so_a_term_mid_kill_cannot_break_an_import(tmp_path):
    # An agent TERMed while its timeout path imported psutil lazily once died with a traceback
    # ("partially initialized module"); the kill (runner.agents.kill) now reads /proc and imports nothing.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _KILL_IMPORTS], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# -- descendants: walked through the children lists, or from every process's stat -----------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["children lists", "every stat"])
def test_descendants_finds_a_whole_tree_also_what_left_its_group(tmp_path, monkeypatch, how):
    """A task's grandchildren in a session of their own are its descendants still, found both ways."""
    from runner.agents import kill

    if how == "every stat":
        def no_lists(pid):
            raise kill._NoChildrenLists

        monkeypatch.setattr(kill, "_walk_children", no_lists)
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    script = f"setsid sh -c 'sleep 30 & sleep 30 & echo > {ready}; wait' & sleep 30 & wait"
    task = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        with open(ready) as f:  # the grandchildren are up when the innermost shell has written
            f.read()
        found = set(kill.descendants(task.pid))
        want = set()
        todo = [task.pid]
        while todo:  # the tree from `ps`, for comparison: not from /proc, as the code reads it
            parent = todo.pop()
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout.split()
            want.update(map(int, out))
            todo += map(int, out)
        assert len(want) >= 4, want  # the setsid shell, its two sleeps, and the outer sleep
        assert found == want
        assert task.pid not in found
    finally:
        for pid in [task.pid, *kill.descendants(task.pid)]:
            kill._kill(pid, signal.SIGKILL)
        task.wait(timeout=10)


@pytest.mark.timeout(30)
def test_the_tree_kill_sends_its_term_once_to_what_the_group_signal_reached(tmp_path, monkeypatch):
    """A check or task that traps TERM to clean up runs its trap once: the group's TERM reaches the leader
    and its group, and no second TERM follows by pid. The gap between the two (a preempted thread, seen once
    in CI) is made certain here: the group signal returns only once the trap has begun."""
    import runner.agents.kill as kill

    out = tmp_path / "trapped"
    script = f"trap 'echo got TERM >> {out}; sleep 0.3; exit 3' TERM; sleep 60 & wait"
    proc = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not kill.descendants(proc.pid):  # the trap is set before `sleep 60` starts
        assert time.monotonic() < deadline, "the script never started its sleep"
        time.sleep(0.01)  # polling with a deadline
    signal_group = kill._signal_group

    def group_then_wait_for_the_trap(pgid, sig):
        signal_group(pgid, sig)
        while sig == signal.SIGTERM and not out.exists():
            assert time.monotonic() < deadline, "the trap never ran"
            time.sleep(0.01)  # polling with a deadline

    monkeypatch.setattr(kill, "_signal_group", group_then_wait_for_the_trap)
    kill.kill_tree(proc.pid, 5.0, lambda t: proc.wait(t))
    assert proc.wait(timeout=5) == 3
    assert out.read_text() == "got TERM\n"
