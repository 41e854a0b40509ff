"""Attacks on the task rows a child writes behind the run (Ledger.write_tasks_behind): the manager killed
while its writer is mid-transaction, then --resume; readers while it writes; the ledger's integrity after."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wvo
from helpers import reaped, stop
from runner.manager.ledger import BEHIND_TASKS

pytestmark = pytest.mark.timeout(180)

# wvo-batch, with the writer child caught after its inserts and before its COMMIT: it says so by creating
# the file named in WVO_TEST_STALLED, then waits for a signal that never comes (it dies with the run).
_STALLED_WRITER = """
import os, runpy, signal, sys
from runner.manager import ledger as ledger_mod
manager, insert = os.getpid(), ledger_mod._insert_tasks
def stalled(db, *args):
    insert(db, *args)
    if os.getpid() != manager:
        open(os.environ["WVO_TEST_STALLED"], "w").close()
        while True:
            signal.pause()
ledger_mod._insert_tasks = stalled
sys.argv = ["wvo-batch", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__")
"""


def _wait_for(path, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the writer never reached its commit"
        time.sleep(0.01)  # polling a file with a deadline


def _integrity(db_path) -> str:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def test_the_manager_killed_while_its_writer_is_mid_transaction_then_resume_carries_all(tmp_path):
    n = BEHIND_TASKS + 10
    rm = tmp_path / "big.yaml"
    marker, state = tmp_path / "ok", tmp_path / "s"
    lines = ["tasks:\n"] + [f"  - id: c{i}\n    command: [\"true\"]\n" for i in range(n)]
    lines.append(f"  - id: last\n    command: \"test -e {marker}\"\n")
    rm.write_text("".join(lines))
    first = wvo(rm, "--agents", "2", "--quiet", "--state-dir", state, timeout=120)
    assert first.returncode == 1, first.stderr

    stalled = tmp_path / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_WRITER, str(rm), "--agents", "2", "--quiet", "--resume",
                             "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "WVO_TEST_STALLED": str(stalled)})  # fmt: skip
    with reaped(proc):
        _wait_for(stalled, proc)
        history = wvo(rm, "--history", "--state-dir", state, timeout=60)  # a reader while the writer holds its transaction
        assert history.returncode == 0, history.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    db_path = state / "ledger.sqlite"
    assert _integrity(db_path) == "ok"

    marker.touch()
    again = wvo(rm, "--agents", "2", "--quiet", "--resume", "--state-dir", state, timeout=120)
    assert again.returncode == 0, again.stderr
    db = sqlite3.connect(db_path)
    try:
        last = db.execute("SELECT MAX(id) FROM runs").fetchone()[0]
        ran = db.execute("SELECT COUNT(*) FROM attempts WHERE run_id = ?", (last,)).fetchone()[0]
    finally:
        db.close()
    assert _integrity(db_path) == "ok"
    assert ran == 1, f"the run killed before its task rows made --resume run {ran} tasks again, not 1"


# wvo-batch, with the writer child failing as on a full disk; the manager's own writes go through.
_FAILING_WRITER = """
import os, runpy, sqlite3, sys
from runner.manager import ledger as ledger_mod
manager, insert = os.getpid(), ledger_mod._insert_tasks
def failing(db, *args):
    if os.getpid() != manager:
        raise sqlite3.OperationalError("database or disk is full")
    insert(db, *args)
ledger_mod._insert_tasks = failing
sys.argv = ["wvo-batch", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__")
"""


def _orphans(db_path) -> int:
    """Attempts committed without their run's task row: what --resume cannot carry."""
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM run_tasks t"
                          " WHERE t.run_id = a.run_id AND t.task_id = a.task_id)").fetchone()[0]
    finally:
        db.close()


def test_a_writer_that_fails_leaves_no_attempt_without_its_task_rows(tmp_path):
    n = BEHIND_TASKS + 10
    rm = tmp_path / "big.yaml"
    rm.write_text("tasks:\n" + "".join(f"  - id: c{i}\n    command: [\"true\"]\n" for i in range(n)))
    state = tmp_path / "s"
    args = [sys.executable, "-c", _FAILING_WRITER, str(rm), "--agents", "2", "--quiet", "--state-dir", str(state)]
    run = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    db_path = state / "ledger.sqlite"
    assert _integrity(db_path) == "ok"
    assert _orphans(db_path) == 0, f"attempts committed without their task rows (exit {run.returncode}: {run.stderr[-300:]})"
    assert run.returncode == 0, run.stderr  # the manager wrote the rows the child could not


def _stuck_ledger(tmp_path, monkeypatch, child_fails: bool):
    from runner.manager import ledger as ledger_mod
    from runner.model import Roadmap, Task

    manager, insert = os.getpid(), ledger_mod._insert_tasks

    def insert_tasks(db, *args):
        if os.getpid() != manager and child_fails:
            raise sqlite3.OperationalError("database or disk is full")
        insert(db, *args)

    monkeypatch.setattr(ledger_mod, "_insert_tasks", insert_tasks)
    rm = Roadmap(files=["x.yaml"], tasks=[Task(id=f"t{i}", call="m:f") for i in range(BEHIND_TASKS)], content_hash="h")
    ledger = ledger_mod.Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(rm, 2, "", None, set())
    ledger.write_tasks_behind()
    assert ledger._writer is not None
    ledger.record(run_id, ("t3", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    return ledger, run_id


def test_a_commit_retried_after_the_writer_failed_still_writes_the_task_rows_first(tmp_path, monkeypatch):
    """The run retries its commit after a failure (Outcomes._ledger_failed, close_ledger): the retry must not
    commit the attempt without the rows the child could not write."""
    ledger, run_id = _stuck_ledger(tmp_path, monkeypatch, child_fails=True)
    try:
        ledger.commit()
    except sqlite3.Error:
        pass  # either way: the retry below must not leave the attempt without its task rows
    ledger.commit()
    assert ledger.count_attempts(run_id) == 1
    assert _orphans(tmp_path / "l.sqlite") == 0
    assert len(ledger.succeeded_tasks(run_id)) == 1
    ledger.close()


def test_a_commit_interrupted_while_it_waits_for_the_writer_waits_again(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the wait for the writer: the next commit still waits for it, and reaps it."""
    from runner.manager import ledger as ledger_mod

    ledger, run_id = _stuck_ledger(tmp_path, monkeypatch, child_fails=False)
    pid = ledger._writer
    real_waitpid, calls = os.waitpid, []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_waitpid(*args)

    monkeypatch.setattr(ledger_mod.os, "waitpid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ledger.commit()
    ledger.commit()
    assert len(calls) == 2, "the writer was never waited for again (a zombie, its outcome unknown)"
    assert ledger.count_attempts(run_id) == 1 and _orphans(tmp_path / "l.sqlite") == 0
    with pytest.raises(ChildProcessError):
        real_waitpid(pid, os.WNOHANG)
    ledger.close()


def test_a_writer_that_dies_after_its_commit_leaves_the_rows_written_once(tmp_path, monkeypatch):
    from runner.manager import ledger as ledger_mod

    manager, connect = os.getpid(), sqlite3.connect

    class DiesOnClose:  # the child's connection: it commits, then the child dies (killed, out of memory)
        def __init__(self, *args, **kwargs):
            self.db = connect(*args, **kwargs)

        def execute(self, *args):
            return self.db.execute(*args)

        def executemany(self, *args):
            return self.db.executemany(*args)

        def close(self):
            os._exit(9)

    def connects(*args, **kwargs):
        return (DiesOnClose if os.getpid() != manager else connect)(*args, **kwargs)

    monkeypatch.setattr(ledger_mod.sqlite3, "connect", connects)
    ledger, run_id = _stuck_ledger(tmp_path, monkeypatch, child_fails=False)
    ledger.commit()
    assert ledger.count_attempts(run_id) == 1 and _orphans(tmp_path / "l.sqlite") == 0
    assert len(ledger.succeeded_tasks(run_id)) == 1
    ledger.close()


def test_two_large_runs_on_one_state_dir_both_write_their_rows(tmp_path):
    """Two roadmaps, one ledger: each run's writer child and the other run's commits contend for the lock."""
    n = BEHIND_TASKS + 200
    state, procs = tmp_path / "s", []
    for name in ("a", "b"):
        rm = tmp_path / f"{name}.yaml"
        rm.write_text("tasks:\n" + "".join(f"  - id: {name}{i}\n    command: [\"true\"]\n" for i in range(n)))
        args = [sys.executable, "-m", "runner", str(rm), "--agents", "2", "--quiet", "--state-dir", str(state)]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=150)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            stop(proc)
    db_path = state / "ledger.sqlite"
    assert _integrity(db_path) == "ok" and _orphans(db_path) == 0
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT run_id, COUNT(*) FROM run_tasks GROUP BY run_id ORDER BY run_id").fetchall() == [(1, n), (2, n)]
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 2 * n
    finally:
        db.close()


def test_a_writer_reaped_by_someone_else_is_no_failure(tmp_path, monkeypatch):
    """A program embedding the run may reap all its children (waitpid(-1)): the writer's status is lost then,
    and the rows are written by the manager unless the writer had."""
    ledger, run_id = _stuck_ledger(tmp_path, monkeypatch, child_fails=False)
    os.waitpid(ledger._writer, 0)
    ledger.commit()
    assert ledger.count_attempts(run_id) == 1 and _orphans(tmp_path / "l.sqlite") == 0
    assert len(ledger.succeeded_tasks(run_id)) == 1
    ledger.close()


def test_the_writers_close_leaves_the_managers_wal_in_place(tmp_path, monkeypatch):
    """The child's connection is the last one it closes; were it taken for the ledger's last connection, it
    would checkpoint and delete the WAL the manager still writes to (what it commits after would be lost)."""
    ledger, run_id = _stuck_ledger(tmp_path, monkeypatch, child_fails=False)
    wal = tmp_path / "l.sqlite-wal"
    before = os.stat(wal).st_ino
    ledger.commit()
    assert os.stat(wal).st_ino == before
    ledger.record(run_id, ("t4", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    ledger.commit()
    db = sqlite3.connect(tmp_path / "l.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM run_tasks").fetchone()[0] == BEHIND_TASKS
    finally:
        db.close()
    ledger.close()
    assert _integrity(tmp_path / "l.sqlite") == "ok"


_KILLED_BEFORE_ITS_FIRST_COMMIT = """
import os, sys
from runner.manager.ledger import BEHIND_TASKS, Ledger
from runner.model import Roadmap, Task
ledger = Ledger(sys.argv[1])
rm = Roadmap(files=["x.yaml"], tasks=[Task(id=f"t{i}", call="m:f") for i in range(BEHIND_TASKS)], content_hash="h")
ledger.start_run(rm, 2, "", int(sys.argv[2]), {"t1"})  # its rows kept (no writer: a Ray run's case)
os.kill(os.getpid(), 9)
"""


def test_a_run_killed_with_its_rows_kept_is_passed_over_by_resume(tmp_path):
    from runner.manager.ledger import Ledger
    from runner.model import Roadmap, Task

    path = str(tmp_path / "l.sqlite")
    ledger = Ledger(path)
    rm = Roadmap(files=["x.yaml"], tasks=[Task(id=f"t{i}", call="m:f") for i in range(BEHIND_TASKS)], content_hash="h")
    first = ledger.start_run(rm, 2, "", None, set())
    ledger.record(first, ("t1", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    ledger.finish_run(first, "failed", {})
    ledger.close()
    killed = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_ITS_FIRST_COMMIT, path, str(first)], timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ledger = Ledger(path)
    try:
        assert [r.id for r in ledger.runs(["x.yaml"])] == [first + 1, first]
        assert ledger.latest_unfinished(["x.yaml"]).id == first
        assert list(ledger.succeeded_tasks(first)) == ["t1"]
    finally:
        ledger.close()
