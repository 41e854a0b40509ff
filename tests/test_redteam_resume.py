"""Nothing lost, nothing run twice: SIGKILLs at chosen points, `--resume`, and two runs at once (cron overlap).

Real `wvo-batch` processes. Every task appends `ID ATTEMPT` to one file (O_APPEND: one write a line), so
what really ran is known whatever the manager recorded. A kill is synchronised on a FIFO a task writes,
or on the ledger (polled with a deadline), never on a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, wvo
from helpers import Fifo
from runner.errors import EXIT_LOCKED

pytestmark = pytest.mark.timeout(180)


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **(env or {})})  # fmt: skip


def lines(path: Path) -> list[tuple[str, str]]:
    """(task, attempt) of every line the tasks appended."""
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def wait_until(what, timeout: float = 30.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting: {why}"
        time.sleep(0.02)  # polling a condition with a deadline


def ledger_rows(state: Path, sql: str, params=()) -> list[tuple]:
    try:
        db = sqlite3.connect(f"file:{state / 'ledger.sqlite'}?mode=ro", uri=True)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def kill_run(proc: subprocess.Popen, tag: str) -> None:
    """SIGKILL the manager; its agents and tasks go with it (they watch it): waited for, with a deadline."""
    victims = tagged(tag)
    proc.kill()
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs(victims, timeout=10)
    assert not alive, f"survived the manager's SIGKILL: {alive}"


def tagged(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("WVO_REDTEAM_TAG") == tag:
                out.append(p)
        except psutil.Error:
            pass
    return out


# -- cron overlap -------------------------------------------------------------------------------------------


def test_cron_overlap_with_write_back_runs_once(tmp_path):
    """The README's cron line (`--resume --write-back`): a run that has written a status back into its roadmap
    (a new file put in place of the old) still holds that roadmap's lock: the next cron run exits 75, and
    its task does not run a second time."""
    ran = tmp_path / "ran"
    fifo = Fifo(tmp_path / "ready")
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    later = tmp_path / "later"  # once it exists, `slow` no longer waits: a second run of it would go through
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        "tasks:\n"
        f"  - id: first\n    command: 'echo first $WVO_ATTEMPT >> {ran}'\n"
        f"  - id: slow\n    dependencies: [first]\n"
        f"    command: 'echo slow $WVO_ATTEMPT >> {ran}; test -e {later} || {{ echo go > {fifo.path}; cat {hold}; }}'\n"
    )
    inode = rm.stat().st_ino
    proc = start(rm, "--state-dir", tmp_path / "s", "--agents", "2", "--resume", "--write-back", "-q")
    try:
        fifo.wait_lines(1)
        wait_until(lambda: "in_progress" in rm.read_text(), why="the run never wrote slow's status back")
        assert rm.stat().st_ino != inode  # the roadmap file was replaced (written back atomically)
        later.write_text("")
        other = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "2", "--resume", "--write-back", "-q", timeout=60)
        assert other.returncode == EXIT_LOCKED, other.stderr
        assert f"PID {proc.pid}" in other.stderr
    finally:
        with open(hold, "w") as f:
            f.write("go\n")
        out, err = proc.communicate(timeout=60)
        fifo.close()
    assert proc.returncode == 0, err
    assert lines(ran) == [("first", "1"), ("slow", "1")]
