"""Faults survived: the manager or an agent SIGKILLed, signals, the lock, resume, write-back, the ledger."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys

import psutil
import pytest

from conftest import ROOT, wvo
from helpers import Fifo, roadmap_file, wait_dead
from runner.manager.events import TASK_STARTED

pytestmark = pytest.mark.timeout(120)


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def run_counts(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if os.path.exists(path):
        for line in open(path).read().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def wait_for_recorded(db_path, n: int, timeout: float = 20.0) -> None:
    """Block until the ledger holds n succeeded attempts (the manager commits within milliseconds)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            count = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'succeeded'").fetchone()[0]
            db.close()
            if count >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.02)  # polling a condition with a deadline, not sleeping in place of synchronisation
    raise AssertionError(f"the ledger never held {n} succeeded attempts")


def tagged_processes(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("WVO_FAULT_TAG") == tag:
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_manager_sigkill_leaves_nothing_and_resume_finishes(tmp_path):
    fifo = Fifo(tmp_path / "ready")
    ran = tmp_path / "ran.txt"
    tasks = [(f"quick{i}", f"echo quick{i} >> {ran}") for i in range(3)]
    resumed = tmp_path / "resumed"
    tasks += [
        (f"slow{i}", f"echo slow{i} >> {ran}; test -e {resumed} && exit 0; echo go > {fifo.path}; sleep 60")
        for i in range(2)
    ]
    rm = roadmap_file(tmp_path, tasks)
    tag = f"kill-{os.getpid()}"
    proc = start(rm, "--agents", "5", "--state-dir", tmp_path / "s", env={"WVO_FAULT_TAG": tag})
    fifo.wait_lines(2)
    wait_for_recorded(tmp_path / "s" / "ledger.sqlite", 3)  # the quick ones are durable; the slow are in flight
    victims = tagged_processes(tag)
    assert len(victims) >= 5  # the manager, agents, tasks
    proc.kill()
    proc.communicate()
    alive = wait_dead(victims, timeout=5)
    assert not alive, f"survived the manager's SIGKILL: {[p.pid for p in alive]}"
    assert all(run_counts(ran)[f"quick{i}"] == 1 for i in range(3))

    resumed.write_text("")
    r = wvo(rm, "--agents", "5", "--state-dir", tmp_path / "s", "--resume", "--json", env={"WVO_FAULT_TAG": tag})
    assert r.returncode == 0, r.stderr
    counts = run_counts(ran)
    assert all(counts[f"quick{i}"] == 1 for i in range(3)), "succeeded tasks ran again after --resume"
    assert all(counts[f"slow{i}"] == 2 for i in range(2)), "only the tasks in flight at the crash run twice"
    assert json.loads(r.stdout)["succeeded"] == 5
    fifo.close()


def test_resume_runs_only_what_did_not_succeed(tmp_path):
    ran = tmp_path / "ran.txt"
    flag = tmp_path / "fixed"
    tasks = [("a", f"echo a >> {ran}"), ("b", f"echo b >> {ran}; test -e {flag}"), ("c", f"echo c >> {ran}")]
    rm = roadmap_file(tmp_path, tasks)
    r1 = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s")
    assert r1.returncode == 1
    flag.write_text("")
    # c's definition changes between the runs: it runs again, and the output says so
    text = open(rm).read().replace("echo c >>", "echo c  >>")
    open(rm, "w").write(text)
    r2 = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--resume")
    assert r2.returncode == 0, r2.stderr
    assert run_counts(ran) == {"a": 1, "b": 2, "c": 2}
    assert "task c changed" in r2.stderr and "continuing run 1" in r2.stderr
    hist = wvo(rm, "--state-dir", tmp_path / "s", "--history")
    assert hist.returncode == 0
    lines = hist.stdout.strip().splitlines()
    assert len(lines) == 3 and "failed" in lines[2] and "succeeded" in lines[1] and "resumed run 1" in lines[1]


def test_resume_with_no_unfinished_run_starts_fresh(tmp_path):
    ran = tmp_path / "ran.txt"
    rm = roadmap_file(tmp_path, [("a", f"echo a >> {ran}")])
    assert wvo(rm, "--state-dir", tmp_path / "s").returncode == 0
    r = wvo(rm, "--state-dir", tmp_path / "s", "--resume")
    assert r.returncode == 0
    assert run_counts(ran) == {"a": 2}
    assert "no unfinished run" in r.stderr


def test_second_run_exits_75_naming_the_pid(tmp_path):
    fifo = Fifo(tmp_path / "ready")
    rm = roadmap_file(tmp_path, [("hold", f"echo go > {fifo.path}; sleep 60")])
    first = start(rm, "--agents", "1", "--state-dir", tmp_path / "s", "--grace", "1")
    try:
        fifo.wait_lines(1)
        second = wvo(rm, "--agents", "1", "--state-dir", tmp_path / "s")
        assert second.returncode == 75
        assert f"PID {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
        fifo.close()
    assert first.returncode == 130


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_tasks_records_them_interrupted(tmp_path, sig, code):
    fifo = Fifo(tmp_path / "ready")
    ran = tmp_path / "ran.txt"
    tasks = [(f"t{i}", f"echo t{i} >> {ran}; echo go > {fifo.path}; sleep 60") for i in range(2)]
    tasks += [("later", f"echo later >> {ran}")]
    rm = roadmap_file(tmp_path, tasks)
    tag = f"sig-{sig}-{os.getpid()}"
    proc = start(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--grace", "2", "--json",
                 env={"WVO_FAULT_TAG": tag})
    fifo.wait_lines(2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    fifo.close()
    assert proc.returncode == code, err
    doc = json.loads(out)
    assert doc["interrupted"] == 3 and doc["succeeded"] == 0
    assert "later" not in run_counts(ran)
    assert not [p for p in tagged_processes(tag) if p.is_running()]
    db = sqlite3.connect(next((tmp_path / "s").glob("ledger.sqlite")))
    outcomes = [r[0] for r in db.execute("SELECT outcome FROM attempts")]
    assert outcomes == ["interrupted", "interrupted"]


def test_stale_lock_is_taken_over_with_a_warning(tmp_path):
    rm = roadmap_file(tmp_path, [("a", "true")])
    assert wvo(rm, "--state-dir", tmp_path / "s").returncode == 0
    lock = next((tmp_path / "s").glob("run-*.lock"))
    lock.write_text("999999\n")  # a holder that died without releasing
    r = wvo(rm, "--state-dir", tmp_path / "s")
    assert r.returncode == 0
    assert "stale lock" in r.stderr and "999999" in r.stderr


def test_max_failures_stops_handing_out(tmp_path):
    tasks = [(f"f{i}", "exit 1") for i in range(3)] + [(f"ok{i}", "true") for i in range(5)]
    rm = roadmap_file(tmp_path, tasks)
    r = wvo(rm, "--agents", "1", "--state-dir", tmp_path / "s", "--max-failures", "2", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["failed"] == 2 and doc["succeeded"] == 0 and doc["skipped"] == 6


def test_unwritable_state_dir_exits_2_before_running(tmp_path):
    ran = tmp_path / "ran.txt"
    rm = roadmap_file(tmp_path, [("a", f"echo a >> {ran}")])
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = wvo(rm, "--state-dir", blocker / "sub")
    assert r.returncode == 2 and "state dir" in r.stderr and "Traceback" not in r.stderr
    assert not ran.exists()


def test_write_back_sets_status_and_keeps_comments(tmp_path):
    path = tmp_path / "wb.yaml"
    path.write_text(
        "# my roadmap\ntasks:\n  - id: a   # keep me\n    command: 'true'\n    status: pending\n"
        "  - id: b\n    command: exit 3\n"
    )
    r = wvo(path, "--state-dir", tmp_path / "s", "--write-back")
    assert r.returncode == 1
    text = path.read_text()
    assert "# my roadmap" in text and "# keep me" in text
    import yaml

    doc = yaml.safe_load(text)
    by = {t["id"]: t for t in doc["tasks"]}
    assert by["a"]["status"] == "done"
    assert by["b"]["status"] == "blocked" and "exit code 3" in by["b"]["last_error"]
    r2 = wvo(path, "--state-dir", tmp_path / "s", "--json")
    assert json.loads(r2.stdout)["skipped"] == 2


def test_status_attaches_to_a_live_run_and_refuses_a_wrong_key(tmp_path):
    from multiprocessing import AuthenticationError

    from runner.manager.pool import read_board

    fifo = Fifo(tmp_path / "ready")
    rm = roadmap_file(tmp_path, [("hold", f"echo go > {fifo.path}; sleep 60"), ("idle", "true")])
    proc = start(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--grace", "1")
    try:
        fifo.wait_lines(1)
        r = wvo(rm, "--state-dir", tmp_path / "s", "--status")
        assert r.returncode == 0, r.stderr
        assert "hold" in r.stdout and "queue:" in r.stdout
        folder = os.path.realpath(tmp_path / "s" / "latest")
        assert oct(os.stat(tmp_path / "s").st_mode & 0o777) == "0o700"
        assert oct(os.stat(os.path.join(folder, "board.key")).st_mode & 0o777) == "0o600"
        with pytest.raises(AuthenticationError):
            read_board(folder, key=b"not the key")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        fifo.close()
    r = wvo(rm, "--state-dir", tmp_path / "s", "--status")
    assert r.returncode == 3


def test_ledger_failing_mid_run_stops_cleanly_and_says_what_was_recorded(tmp_path, monkeypatch):
    from helpers import Recorder, roadmap, task
    from runner.manager.ledger import Ledger
    from runner.manager.run import Run, RunOptions

    real_record = Ledger.record
    calls = {"n": 0}

    def record(self, run_id, attempt):
        calls["n"] += 1
        if calls["n"] > 3:
            raise sqlite3.OperationalError("database or disk is full")
        return real_record(self, run_id, attempt)

    monkeypatch.setattr(Ledger, "record", record)
    rec = Recorder()
    rm = roadmap([task(f"t{i}", "true") for i in range(20)])
    result = Run(rm, RunOptions(state_dir=str(tmp_path / "s"), agents=1), rec).execute()
    assert result.exit_code == 74
    assert result.summary.get("ledger_error", "").endswith("database or disk is full")
    said = " ".join(rec.messages)
    assert "cannot write the ledger" in said and "3 outcome(s) were recorded" in said
    started = [e for e in rec.seen if e["event"] == TASK_STARTED]
    assert len(started) < 20, "no new task is handed out once the ledger fails"
    db = sqlite3.connect(tmp_path / "s" / "ledger.sqlite")
    assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 3


def test_the_board_key_is_never_seen_half_written(tmp_path, monkeypatch):
    # serve_board created board.key, then wrote it: a --status that came as the run started read it empty and
    # stopped with "corrupted" (exit 2) instead of waiting for the board (seen on CI). After every file call
    # serve_board makes, board.key is either absent or a whole key.
    from runner.manager import pool as pool_module

    key_file = tmp_path / "board.key"
    seen = []

    def look():
        if key_file.exists():
            text = key_file.read_text()
            seen.append(text)
            assert re.fullmatch(r"[0-9a-f]{64}", text), f"board.key read as {text!r}"

    def watched(call):
        def wrapper(*args, **kwargs):
            result = call(*args, **kwargs)
            look()
            return result

        return wrapper

    for name in ("open", "rename", "write", "close"):
        monkeypatch.setattr(pool_module.os, name, watched(getattr(os, name)))
    server = pool_module.serve_board(pool_module.Pool(), str(tmp_path))
    monkeypatch.undo()
    try:
        assert seen and re.fullmatch(r"[0-9a-f]{64}", key_file.read_text())
        assert not (tmp_path / "board.key.new").exists()
    finally:
        server.close()
