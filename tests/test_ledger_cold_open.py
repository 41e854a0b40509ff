"""Runs that open one new ledger at the same moment (two roadmaps, one --state-dir, started together by cron).

Setting WAL mode needs the file to itself, and SQLite does not wait for that lock with the busy handler: one
of two openers got "database is locked" at once, and its run stopped with exit 2. runner.manager.ledger._to_wal
waits for it as for any other lock.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from runner.manager import ledger as ledger_module
from runner.manager.ledger import Ledger

OPENERS = 8
TRIALS = 120


def _open_at_once(path: str, go_r: int, report_w: int) -> None:
    """A child: wait for the go byte, open the ledger, report ok or the error, exit."""
    code = 1
    try:
        os.read(go_r, 1)
        try:
            Ledger(path).close()
            os.write(report_w, b"ok\n")
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            os.write(report_w, f"error: {str(exc)[-80:]}\n".encode())
        code = 0
    finally:
        os._exit(code)


@pytest.mark.timeout(120)
def test_openers_of_one_new_ledger_at_the_same_moment_all_open_it(tmp_path):
    failures = []
    for trial in range(TRIALS):
        folder = tmp_path / str(trial)
        folder.mkdir(mode=0o700)
        path = str(folder / "ledger.sqlite")
        go_r, go_w = os.pipe()
        report_r, report_w = os.pipe()
        pids = []
        for _ in range(OPENERS):
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                os.close(report_r)
                _open_at_once(path, go_r, report_w)
            pids.append(pid)
        os.close(go_r)
        os.close(report_w)
        os.write(go_w, b"g" * OPENERS)  # all at once: each child reads its byte and opens
        os.close(go_w)
        with os.fdopen(report_r) as reports:
            lines = reports.read().splitlines()  # EOF once every child has exited
        for pid in pids:
            os.waitpid(pid, 0)
        assert len(lines) == OPENERS, lines
        failures += [f"trial {trial}: {line}" for line in lines if line != "ok"]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not failures, failures


class _Locked:
    """A connection on which setting WAL fails `fails` times with SQLite's lock error, then succeeds."""

    def __init__(self, fails: int):
        self.fails, self.mode, self.tries = fails, "delete", 0

    def execute(self, sql: str):
        if sql == "PRAGMA journal_mode=WAL":
            self.tries += 1
            if self.tries <= self.fails:
                raise sqlite3.OperationalError("database is locked")
            self.mode = "wal"
        return self

    def fetchone(self):
        return (self.mode,)


def test_setting_wal_is_retried_while_another_opener_holds_the_file():
    db = _Locked(fails=3)
    ledger_module._to_wal(db)
    assert (db.mode, db.tries) == ("wal", 4)


def test_setting_wal_gives_up_with_the_lock_error_after_the_busy_timeout(monkeypatch):
    monkeypatch.setattr(ledger_module, "_WAL_WAIT_S", 0.05)
    db = _Locked(fails=10**9)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ledger_module._to_wal(db)
    assert db.mode == "delete"


def test_a_ledger_already_in_wal_mode_is_not_set_again():
    db = _Locked(fails=10**9)
    db.mode = "wal"
    ledger_module._to_wal(db)
    assert db.tries == 0
