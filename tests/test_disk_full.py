"""The run's record failing: the disk full under the ledger, an events file that cannot be written,
a ledger that is damaged, foreign or from a newer wvo-batch, and the mode of the files it creates."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from conftest import ROOT, wvo
from helpers import Fifo, reaped

pytestmark = pytest.mark.timeout(90)

EXIT_RECORD_FAILED = 74


def start(*args, umask: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )


def write_roadmap(tmp_path, tasks: list[dict]) -> str:
    lines = ["tasks:"]
    for t in tasks:
        lines.append(f"  - id: {t['id']}")
        lines.append(f"    command: {json.dumps(t['command'])}")
        if t.get("dependencies"):
            lines.append(f"    dependencies: {json.dumps(t['dependencies'])}")
    path = tmp_path / "roadmap.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def lines_of(path) -> list[str]:
    return open(path).read().split() if os.path.exists(path) else []


def ledger_rows(db_path, sql: str):
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def wait_for_attempts(db_path, n: int, timeout: float = 20.0) -> None:
    """Poll, with a deadline, until the ledger holds n attempts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ledger_rows(db_path, "SELECT COUNT(*) FROM attempts")[0][0] >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.02)  # polling a condition with a deadline
    raise AssertionError(f"the ledger never held {n} attempts")


def read_until(stream, needle: str) -> str:
    """Read a process's stderr line by line until a line holds needle (the test's timeout bounds it)."""
    seen = []
    for line in stream:
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} never came; stderr was:\n{''.join(seen)}")


def open_gate(path) -> None:
    with open(path, "w") as f:  # blocks until the task waiting on it opens it: no sleep involved
        f.write("go\n")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (tests run as root here and in CI); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("space_comes_back", [False, True])
def test_disk_full_mid_run_stops_handing_out_and_counts_the_truth(tmp_path, small_disk, space_comes_back):
    ran = tmp_path / "ran.txt"
    ready = Fifo(tmp_path / "ready")
    gate_fill, gate_slow = tmp_path / "gate-fill", tmp_path / "gate-slow"
    os.mkfifo(gate_fill)
    os.mkfifo(gate_slow)
    filler = small_disk / "filler"
    early = [{"id": f"early{i}", "command": f"echo early{i} >> {ran}"} for i in range(3)]
    tasks = early + [
        {"id": "slow", "command": f"echo slow > {ready.path}; read _ < {gate_slow}; echo slow-done >> {ran}"},
        {
            "id": "fill",
            "command": f"echo fill > {ready.path}; read _ < {gate_fill}; head -c 8M /dev/zero > {filler} 2>/dev/null;"
            f" echo fill >> {ran}; exit 0",
            "dependencies": [t["id"] for t in early],
        },
        {"id": "after0", "command": f"echo after0 >> {ran}", "dependencies": ["fill"]},
        {"id": "after1", "command": f"echo after1 >> {ran}", "dependencies": ["fill"]},
    ]
    rm = write_roadmap(tmp_path, tasks)
    state = small_disk / "s"
    db_path = state / "ledger.sqlite"
    proc = start(rm, "--agents", "2", "--state-dir", state)
    with closing(ready), reaped(proc):
        ready.wait_lines(2)  # slow runs, fill waits at its gate: the early three are done
        wait_for_attempts(db_path, 3)
        open_gate(gate_fill)  # the disk fills up; fill's outcome cannot be committed
        said = read_until(proc.stderr, "cannot write the ledger")
        if space_comes_back:
            filler.unlink()
        open_gate(gate_slow)  # the running task finishes: it is not killed
        out, err = proc.communicate(timeout=60)
    err = said + err
    assert proc.returncode == EXIT_RECORD_FAILED, err
    assert "Traceback" not in err
    assert "3 outcome(s) were recorded" in err, err  # the ledger held 3 when it failed: not 4
    assert "handing out no more tasks" in err
    done = lines_of(ran)
    assert "slow-done" in done and "fill" in done
    assert "after0" not in done and "after1" not in done, "dependents started after the ledger failed"
    held = ledger_rows(db_path, "SELECT task_id, outcome FROM attempts ORDER BY id")
    status = ledger_rows(db_path, "SELECT status, ended FROM runs")
    if space_comes_back:
        # the end of the run writes what was pending and closes it as failed
        assert sorted(held) == sorted([(f"early{i}", "succeeded") for i in range(3)] + [("fill", "succeeded"), ("slow", "succeeded")])
        assert status[0][0] == "failed" and status[0][1] is not None
        assert "5 outcome(s) of run 1 are recorded" in err
        hist = wvo(rm, "--state-dir", state, "--history")
        assert hist.returncode == 0 and "failed" in hist.stdout
        resumed = wvo(rm, "--state-dir", state, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert sorted(lines_of(ran)) == sorted(["early0", "early1", "early2", "slow-done", "fill", "after0", "after1"])
    else:
        assert len(held) == 3, "the count in the message is what the ledger holds"
        assert status[0][0] == "running"
        assert "could not be closed in the ledger" in err and "3 outcome(s) of it are recorded there, 2 lost" in err


@pytest.mark.timeout(60)
def test_events_file_that_cannot_be_written_stops_the_run_like_the_ledger(tmp_path):
    ran = tmp_path / "ran.txt"
    ready = Fifo(tmp_path / "ready")
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    rm = write_roadmap(
        tmp_path,
        [
            {"id": "a", "command": f"echo a > {ready.path}; read _ < {gate}; echo a-done >> {ran}"},
            {"id": "b", "command": f"echo b >> {ran}", "dependencies": ["a"]},
            {"id": "c", "command": f"echo c >> {ran}", "dependencies": ["b"]},
        ],
    )
    proc = start(rm, "--agents", "1", "--state-dir", tmp_path / "s", "--events", "/dev/full")
    with closing(ready), reaped(proc):
        ready.wait_lines(1)
        said = read_until(proc.stderr, "cannot write the events file")
        open_gate(gate)
        out, err = proc.communicate(timeout=60)
    err = said + err
    assert proc.returncode == EXIT_RECORD_FAILED, err
    assert "/dev/full" in err and "No space left on device" in err and "Traceback" not in err
    assert lines_of(ran) == ["a-done"], "the running task finishes; nothing new starts"
    held = ledger_rows(tmp_path / "s" / "ledger.sqlite", "SELECT task_id, outcome FROM attempts")
    assert held == [("a", "succeeded")]
    hist = wvo(rm, "--state-dir", tmp_path / "s", "--history")
    assert "failed" in hist.stdout and "running" not in hist.stdout


# -- a ledger that cannot be used: exit 2, nothing run ------------------------------------------------


def _refused(r, ran) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert not os.path.exists(ran) or "x" not in lines_of(ran), "a task ran against a bad ledger"


def _ledger_with_runs(tmp_path, n: int = 150):
    ran = tmp_path / "ran.txt"
    rm = write_roadmap(tmp_path, [{"id": f"t{i}", "command": "true"} for i in range(n)] + [
        {"id": "x", "command": f"echo x >> {ran}"}
    ])
    r = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s", "-q")
    assert r.returncode == 0, r.stderr
    os.unlink(ran)
    return rm, ran, tmp_path / "s" / "ledger.sqlite"


@pytest.mark.parametrize("table", ["runs", "attempts"])
def test_a_corrupted_page_is_refused_with_how_to_recover(tmp_path, table):
    rm, ran, db_path = _ledger_with_runs(tmp_path)
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,))
        page = rows.fetchone()[0]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table")
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(db_path, "r+b") as f:  # the page's header and first cells: garbage
        f.seek((page - 1) * size)
        f.write(b"\xff" * 64)
    for extra in ([], ["--resume"], ["--history"]):
        r = wvo(rm, "--state-dir", tmp_path / "s", *extra)
        _refused(r, ran)
        assert "damaged" in r.stderr and "move it aside" in r.stderr and str(db_path) in r.stderr, r.stderr


def test_a_large_ledger_is_checked_in_full_on_resume_and_history(tmp_path, monkeypatch):
    from runner.manager import ledger as ledger_mod

    rm, ran, db_path = _ledger_with_runs(tmp_path, n=20)
    monkeypatch.setattr(ledger_mod, "QUICK_CHECK_BYTES", 0)  # as if it were large: a run checks only `runs`
    db = sqlite3.connect(db_path)
    try:
        page = db.execute("SELECT pageno FROM dbstat WHERE name = 'run_tasks' AND pagetype = 'leaf'").fetchone()[0]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table")
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(db_path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xff" * 64)
    from runner.errors import StateError

    ledger_mod.Ledger(str(db_path)).close()  # the cheap check at a run's start does not read run_tasks
    with pytest.raises(StateError, match="move it aside"):
        ledger_mod.Ledger(str(db_path), full_check=True)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    rm, ran, db_path = _ledger_with_runs(tmp_path, n=1)
    db_path.write_bytes(b"not a database at all\n" * 300)
    for extra in ([], ["--history"]):
        r = wvo(rm, "--state-dir", tmp_path / "s", *extra)
        _refused(r, ran)
        assert "not a wvo-batch ledger" in r.stderr and "move it aside" in r.stderr, r.stderr


def test_a_ledger_path_that_cannot_be_read_is_refused(tmp_path):
    rm, ran, db_path = _ledger_with_runs(tmp_path, n=1)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db_path}{suffix}"):
            os.unlink(f"{db_path}{suffix}")
    db_path.mkdir()  # root reads any file; a directory in its place cannot be opened by anyone
    for extra in ([], ["--history"]):
        r = wvo(rm, "--state-dir", tmp_path / "s", *extra)
        _refused(r, ran)
        said = "cannot open the ledger" in r.stderr or "not a regular file" in r.stderr  # the state-dir check may see it first
        assert said and str(db_path) in r.stderr and "move it aside" in r.stderr, r.stderr


def test_a_ledger_from_a_newer_schema_is_refused(tmp_path):
    rm, ran, db_path = _ledger_with_runs(tmp_path, n=1)
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    for extra in ([], ["--resume"], ["--history"]):
        r = wvo(rm, "--state-dir", tmp_path / "s", *extra)
        _refused(r, ran)
        assert "newer wvo-batch" in r.stderr and "schema version 99" in r.stderr, r.stderr


def test_ledger_and_events_files_are_0600_whatever_the_umask(tmp_path):
    rm = write_roadmap(tmp_path, [{"id": "a", "command": "true"}])
    events = tmp_path / "events.jsonl"
    proc = start(rm, "--state-dir", tmp_path / "s", "--events", events, umask=0)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    made = [tmp_path / "s" / "ledger.sqlite", events, *(tmp_path / "s" / "runs").glob("*/events.jsonl")]
    made += [p for p in (tmp_path / "s").glob("ledger.sqlite-*")]
    assert len(made) >= 3
    modes = {str(p.name): oct(os.stat(p).st_mode & 0o777) for p in made}
    assert set(modes.values()) == {"0o600"}, modes
