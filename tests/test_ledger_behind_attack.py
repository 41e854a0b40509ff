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
    try:
        _wait_for(stalled, proc)
        history = wvo(rm, "--history", "--state-dir", state, timeout=60)  # a reader while the writer holds its transaction
        assert history.returncode == 0, history.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
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
