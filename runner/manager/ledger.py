"""The run ledger: an embedded SQLite database (WAL) in the state dir.

Every attempt's outcome is committed here before it is reported anywhere. synchronous=NORMAL in WAL
mode survives a crash or SIGKILL of wvo-batch itself; a power cut may lose the last commits.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass

from runner.roadmap.hashing import sha256
from runner.errors import StateError
from runner.model import Roadmap, Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    roadmap_key TEXT NOT NULL,     -- which roadmap(s): the absolute paths, JSON
    content_hash TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,          -- running | succeeded | failed | interrupted (a crashed run stays running)
    pid INTEGER,
    agents INTEGER,
    resumed_from INTEGER,
    folder TEXT,
    summary TEXT                   -- JSON, set when the run ends
);
CREATE TABLE IF NOT EXISTS run_tasks (
    run_id INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    def_hash TEXT NOT NULL,
    carried INTEGER NOT NULL DEFAULT 0,   -- 1: succeeded in the resumed run, not run again
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    agent TEXT,
    start REAL,
    end REAL,
    exit_code INTEGER,
    outcome TEXT NOT NULL,
    log_path TEXT,
    error TEXT,
    value TEXT
);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id, task_id);
CREATE INDEX IF NOT EXISTS runs_key ON runs (roadmap_key, id);
"""

_DEF_FIELDS = ("command", "call", "args", "kwargs", "env", "cwd", "timeout", "dependencies", "title", "description")


def _hash_encoder():
    """json.dumps(data, sort_keys=True, default=str), byte for byte, without building an encoder a call."""
    from json.encoder import c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:
        return lambda data: json.dumps(data, sort_keys=True, default=str)
    encoder = c_make_encoder({}, str, encode_basestring_ascii, None, ": ", ", ", True, False, True)
    return lambda data: "".join(encoder(data, 0))


_hash_json = _hash_encoder()


def task_hash(task: Task) -> str:
    """A hash of what the task does; a change means --resume runs it again."""
    data = {f: getattr(task, f) for f in _DEF_FIELDS}
    return sha256(_hash_json(data).encode()).hexdigest()[:16]


def roadmap_key(files: list[str]) -> str:
    return json.dumps([os.path.abspath(f) for f in files])


@dataclass(frozen=True)
class Attempt:
    task_id: str
    attempt: int
    agent: str | None
    start: float | None
    end: float | None
    exit_code: int | None
    outcome: str
    log_path: str | None
    error: str | None = None
    value: object = None


@dataclass(frozen=True)
class RunRow:
    id: int
    started: float
    ended: float | None
    status: str
    pid: int | None
    agents: int | None
    resumed_from: int | None
    summary: dict | None


class Ledger:
    def __init__(self, path: str):
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the ledger: {exc}") from None
        self._in_tx = False

    def close(self) -> None:
        self.db.close()

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        """Make everything written since the last commit durable; raises sqlite3.Error (disk full...)."""
        if self._in_tx:
            self._in_tx = False
            self.db.execute("COMMIT")

    def start_run(self, roadmap: Roadmap, agents: int, folder: str, resumed_from: int | None, carried: set[str]) -> int:
        try:
            self._begin()
            cur = self.db.execute(
                "INSERT INTO runs (roadmap_key, content_hash, started, status, pid, agents, resumed_from, folder)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (roadmap_key(roadmap.files), roadmap.content_hash, time.time(), os.getpid(), agents, resumed_from, folder),
            )
            run_id = cur.lastrowid
            self.db.executemany(
                "INSERT INTO run_tasks (run_id, task_id, def_hash, carried) VALUES (?, ?, ?, ?)",
                ((run_id, t.id, task_hash(t), int(t.id in carried)) for t in roadmap.tasks),
            )
            self.commit()
            return run_id
        except sqlite3.Error as exc:
            self._rollback()
            raise StateError(f"{self.path}: cannot write the ledger: {exc}") from None

    def _rollback(self) -> None:
        if self._in_tx:
            self._in_tx = False
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def record(self, run_id: int, a: Attempt) -> None:
        """Add an attempt to the open transaction; commit() makes it durable."""
        self._begin()
        value = None if a.value is None else json.dumps(a.value)
        self.db.execute(
            "INSERT INTO attempts (run_id, task_id, attempt, agent, start, end, exit_code, outcome, log_path, error, value)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, a.task_id, a.attempt, a.agent, a.start, a.end, a.exit_code, a.outcome, a.log_path, a.error, value),
        )

    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        self._begin()
        self.db.execute(
            "UPDATE runs SET ended = ?, status = ?, summary = ? WHERE id = ?",
            (time.time(), status, json.dumps(summary), run_id),
        )
        self.commit()

    # -- reading -------------------------------------------------------------------------------------

    def runs(self, files: list[str], limit: int = 20) -> list[RunRow]:
        rows = self.db.execute(
            "SELECT id, started, ended, status, pid, agents, resumed_from, summary FROM runs"
            " WHERE roadmap_key = ? ORDER BY id DESC LIMIT ?",
            (roadmap_key(files), limit),
        ).fetchall()
        return [RunRow(*r[:7], json.loads(r[7]) if r[7] else None) for r in rows]

    def latest_unfinished(self, files: list[str]) -> RunRow | None:
        """The latest run of these roadmap files, if it did not succeed entirely."""
        runs = self.runs(files, limit=1)
        if runs and runs[0].status != "succeeded":
            return runs[0]
        return None

    def succeeded_tasks(self, run_id: int) -> dict[str, str]:
        """Task id -> definition hash, for every task that succeeded in the run (or was carried into it)."""
        rows = self.db.execute(
            "SELECT t.task_id, t.def_hash FROM run_tasks t WHERE t.run_id = ? AND (t.carried = 1 OR EXISTS ("
            " SELECT 1 FROM attempts a WHERE a.run_id = t.run_id AND a.task_id = t.task_id AND a.outcome = 'succeeded'))",
            (run_id,),
        ).fetchall()
        return dict(rows)

    def attempts(self, run_id: int) -> list[Attempt]:
        rows = self.db.execute(
            "SELECT task_id, attempt, agent, start, end, exit_code, outcome, log_path, error, value"
            " FROM attempts WHERE run_id = ? ORDER BY id",
            (run_id,),
        ).fetchall()
        return [Attempt(*r[:9], json.loads(r[9]) if r[9] else None) for r in rows]


def attempt_dict(a: Attempt) -> dict:
    return asdict(a)
