"""A large roadmap's task rows (a definition hash each, read by --resume) are written by a child process
while the run sets up and starts; no attempt is committed before them, and the child dies with the run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ROOT, wvo
from helpers import reaped
from runner.manager import ledger as ledger_mod
from runner.manager.ledger import BEHIND_TASKS, Ledger, task_hashes
from runner.model import Roadmap, Task

pytestmark = pytest.mark.timeout(120)


def _roadmap(n: int) -> Roadmap:
    tasks = [Task(id=f"t{i}", call="m:f", args=[i % 3]) for i in range(n)]
    return Roadmap(files=["x.yaml"], tasks=tasks, content_hash="h")


def _rows(path) -> dict[str, tuple[str, int]]:
    db = sqlite3.connect(path)
    try:
        return {t: (h, c) for t, h, c in db.execute("SELECT task_id, def_hash, carried FROM run_tasks")}
    finally:
        db.close()


@pytest.mark.parametrize("n", [BEHIND_TASKS - 1, BEHIND_TASKS + 500])
def test_a_runs_task_rows_are_in_the_ledger_before_its_first_attempt(tmp_path, n):
    rm = _roadmap(n)
    carried = {"t1", "t7"}
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(rm, 2, "", None, carried)
    ledger.set_folder(run_id, "runs/1")
    ledger.write_tasks_behind()
    if n >= BEHIND_TASKS:
        assert ledger._writer is not None, "written by a child"
    ledger.record(run_id, ("t3", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    ledger.commit()
    want = {t.id: (h, int(t.id in carried)) for t, h in zip(rm.tasks, task_hashes(rm.tasks))}
    assert _rows(tmp_path / "l.sqlite") == want
    assert ledger.succeeded_tasks(run_id) == {t: want[t][0] for t in ("t1", "t3", "t7")}
    ledger.close()


def test_kept_task_rows_no_child_wrote_are_written_with_the_first_commit(tmp_path):
    rm = _roadmap(BEHIND_TASKS)
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(rm, 2, "", None, set())
    assert _rows(tmp_path / "l.sqlite") == {}
    ledger.record(run_id, ("t3", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    ledger.commit()
    assert len(_rows(tmp_path / "l.sqlite")) == BEHIND_TASKS
    ledger.close()


def test_no_attempt_is_committed_when_the_task_rows_could_not_be_written(tmp_path, monkeypatch):
    def fails(*args):
        raise sqlite3.OperationalError("database or disk is full")

    rm = _roadmap(BEHIND_TASKS)
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(rm, 2, "", None, set())
    monkeypatch.setattr(ledger_mod, "_insert_tasks", fails)  # in the child it forks
    ledger.write_tasks_behind()
    ledger.record(run_id, ("t3", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        ledger.commit()
    assert ledger.count_attempts(run_id) == 0 and _rows(tmp_path / "l.sqlite") == {}
    ledger.close()


_STUCK_WRITER = """
import os, sys, time
from runner.manager import ledger as ledger_mod
from runner.model import Roadmap, Task
def stuck(*args):  # the child is caught in the middle of its writes
    os.write(1, b"writing\\n")  # one write each: print() writes the line and its newline apart, and the two
                                # processes share the pipe (a loaded run once read "writing<pid>", then "")
    time.sleep(60)
ledger_mod._insert_tasks = stuck
ledger = ledger_mod.Ledger(sys.argv[1])
rm = Roadmap(files=["x.yaml"], tasks=[Task(id=f"t{i}", call="m:f") for i in range(ledger_mod.BEHIND_TASKS)], content_hash="h")
ledger.start_run(rm, 2, "", None, set())
ledger.write_tasks_behind()
os.write(1, f"{ledger._writer}\\n".encode())
time.sleep(60)
"""


def test_the_writer_dies_with_the_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_WRITER, str(tmp_path / "l.sqlite")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    with reaped(proc):
        said = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}  # its pid, and the child's word
        assert "writing" in said
        child = int((said - {"writing"}).pop())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)  # polling the process table with a deadline
        else:
            pytest.fail("the writer outlived the run")


def test_resume_after_a_large_run_runs_only_what_failed(tmp_path):
    n = BEHIND_TASKS + 100
    rm = tmp_path / "big.yaml"
    marker = tmp_path / "ok"
    lines = ["tasks:\n"] + [f"  - id: c{i}\n    command: [\"true\"]\n" for i in range(n)]
    lines.append(f"  - id: last\n    command: \"test -e {marker}\"\n")
    rm.write_text("".join(lines))
    first = wvo(rm, "--agents", "2", "--quiet", "--state-dir", tmp_path / "s", timeout=120)
    assert first.returncode == 1, first.stderr
    marker.touch()
    again = wvo(rm, "--agents", "2", "--quiet", "--resume", "--state-dir", tmp_path / "s", timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{n} task(s) already succeeded are not run again" in again.stderr + again.stdout
    db = sqlite3.connect(tmp_path / "s" / "ledger.sqlite")
    assert db.execute("SELECT COUNT(*) FROM attempts WHERE run_id = 2").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*), SUM(carried) FROM run_tasks WHERE run_id = 2").fetchone() == (n + 1, n)
