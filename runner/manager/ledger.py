"""The run ledger: an embedded SQLite database (WAL) in the state dir.

Every attempt's outcome is committed here before it is reported anywhere. synchronous=NORMAL in WAL
mode survives a crash or SIGKILL of wvo-batch itself; a power cut may lose the last commits.
"""

from __future__ import annotations

import errno
import json
import os
try:  # the C module that `sqlite3` wraps: the wrapper registers datetime adapters (importing datetime costs a run
    import _sqlite3 as sqlite3  # ~1.5 ms of start-up), and the ledger binds no dates; same connect and errors
except ImportError:  # an interpreter without it
    import sqlite3
import stat
import sys
import time
from dataclasses import asdict

from runner.roadmap.hashing import sha256
from runner.errors import StateError
from runner.model import record, Roadmap, Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    roadmap_key TEXT NOT NULL,     -- which roadmap(s): their paths (statedir.roadmap_path), JSON
    content_hash TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,          -- running | succeeded | failed | interrupted (a crashed run stays running)
    pid INTEGER,
    agents INTEGER,
    resumed_from INTEGER,
    folder TEXT,
    summary TEXT,                  -- JSON, set when the run ends
    spent_before REAL              -- USD counted against --budget before it started: the loop's earlier batches,
                                   --   the run it resumed (NULL: a ledger older than version 4; read as 0)
);
CREATE TABLE IF NOT EXISTS run_tasks (
    run_id INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    def_hash TEXT NOT NULL,
    carried INTEGER NOT NULL DEFAULT 0,   -- 1: succeeded in the resumed run, not run again (or not in this
                                          --    run's roadmap: kept for the next --resume, should it come back)
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;  -- one b-tree, not a table and its key's index: a row costs ~25% less to insert
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
    value TEXT,
    session_id TEXT,               -- an agent CLI's session (codex thread / claude session); NULL otherwise
    model TEXT,
    usage TEXT,                    -- JSON {input, cached, output, reasoning}: this attempt's tokens
    cost_usd REAL,
    cost_estimated INTEGER,        -- 1: priced from the executor's prices table, not reported by the CLI
    failure TEXT,                  -- failure class: rate_limited, usage_limited, auth_failed, ...
    num_turns INTEGER,
    executor TEXT                  -- the executor's name in its run (runner.coding.executors.Fleet); NULL: none
);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id, task_id);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    resource TEXT NOT NULL,        -- the pool (`resources:`), e.g. port
    value TEXT NOT NULL,           -- the slot, e.g. 8100
    taken REAL NOT NULL,
    released REAL,                 -- NULL: still held (or its run died holding it: --resume sets it)
    released_by TEXT               -- outcome | returned | resume (the run that held it died)
);
CREATE INDEX IF NOT EXISTS leases_run ON leases (run_id, released);
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


_EMPTY_TYPES = (list, tuple, dict, type(None))


def _plain_key(task: Task) -> tuple | None:
    """What task_hash reads of a plain task, as a key two tasks share only when their hashes are equal.

    Plain: no args, kwargs, env or dependencies (each empty, of a built-in container type, or None),
    a command that is None, a string or a list of strings, and a call, cwd, title and description
    that are each None or a string. The key keeps every type JSON tells apart (a list and a string,
    an int and a float, True and 1, 0.0 and -0.0); None for any other task.
    """
    args, kwargs, env, deps, command, timeout = task.args, task.kwargs, task.env, task.dependencies, task.command, task.timeout
    if args or kwargs or env or deps:
        return None
    ta, tk, te, td = type(args), type(kwargs), type(env), type(deps)
    if ta not in _EMPTY_TYPES or tk not in _EMPTY_TYPES or te not in _EMPTY_TYPES or td not in _EMPTY_TYPES:
        return None
    tc = type(command)
    if tc is list:
        for part in command:
            if type(part) is not str:
                return None
        command = tuple(command)  # never equal to a string command
    elif command is not None and tc is not str:
        return None
    call, cwd, title, description = task.call, task.cwd, task.title, task.description
    for value in (call, cwd, title, description):
        if value is not None and type(value) is not str:
            return None
    if timeout is not None:
        tt = type(timeout)
        if tt is not int and tt is not float:
            return None
        timeout = (tt, repr(timeout))
    return (command, call, ta, tk, te, td, cwd, timeout, title, description)


def task_hashes(tasks) -> list[str]:
    """task_hash of each task, in order; plain tasks that do the same thing are hashed once.

    20,000 tasks with the same `call:` and no title share one hash: ~1 µs a task instead of ~7.
    """
    memo: dict[tuple, str] = {}
    out = []
    for task in tasks:
        key = _plain_key(task)
        if key is None:
            out.append(task_hash(task))
            continue
        h = memo.get(key)
        if h is None:
            h = memo[key] = task_hash(task)
        out.append(h)
    return out


def roadmap_key(files: list[str]) -> str:
    from runner.manager.statedir import roadmap_path

    return json.dumps([roadmap_path(f) for f in files])


def _run_keys(files: list[str]) -> tuple[str, str]:
    """The roadmap's key, and the key a ledger written before keys were resolved gave it (absolute paths)."""
    return roadmap_key(files), json.dumps([os.path.abspath(f) for f in files])


@record(frozen=True)
class Attempt:
    """One attempt of one task, as the ledger keeps it."""

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
    session_id: str | None = None
    model: str | None = None
    usage: dict | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False
    failure: str | None = None
    num_turns: int | None = None
    executor: str | None = None


@record(frozen=True)
class RunRow:
    """One run, as the ledger keeps it."""

    id: int
    started: float
    ended: float | None
    status: str
    pid: int | None
    agents: int | None
    resumed_from: int | None
    summary: dict | None


# The schema's version, in PRAGMA user_version: a ledger from a newer wvo-batch is refused, not misread.
SCHEMA_VERSION = 4
# Columns added since version 1 to attempts, and to runs, added to an older ledger when it is opened (its rows
# read NULL there). Version 3 also adds the leases table (made by _SCHEMA's CREATE TABLE IF NOT EXISTS).
_ADDED = {2: ("session_id TEXT", "model TEXT", "usage TEXT", "cost_usd REAL", "cost_estimated INTEGER",
              "failure TEXT", "num_turns INTEGER"), 3: ("executor TEXT",)}
_ADDED_TO_RUNS = {4: ("spent_before REAL",)}
_COLUMNS = ("task_id, attempt, agent, start, end, exit_code, outcome, log_path, error, value, session_id, model, usage,"
            " cost_usd, cost_estimated, failure, num_turns, executor")
# A ledger up to this size gets a full PRAGMA quick_check when a run opens it (~1 ms at this size;
# ~15 ms at 10,000 attempts); a larger one gets its runs table checked, and the full check on
# --history and --resume, which read the rest.
QUICK_CHECK_BYTES = 256 * 1024


# A roadmap of this many tasks and more has its task rows (a definition hash each, for --resume) written by a
# child process while the run sets up and starts (Ledger.write_tasks_behind): ~40 ms at 20,000 tasks, on
# the core the agents have not taken yet. Every commit of an attempt waits for them first.
BEHIND_TASKS = 2000

_INSERT = f"INSERT INTO attempts (run_id, {_COLUMNS}) VALUES ({', '.join('?' * 19)})"
# An attempt with none of the fields after `value` (a command's, a callable's): binding 11 values
# instead of 19 halves the INSERT's cost (~2.5 µs a row).
_INSERT_SHORT = ("INSERT INTO attempts (run_id, task_id, attempt, agent, start, end, exit_code, outcome, log_path, error, value)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SHORT = 11
# An attempt that has no log, no error and no value either (a silent call that returned None): 8 values,
# ~1 µs a row less than the 11.
_INSERT_BARE = "INSERT INTO attempts (run_id, task_id, attempt, agent, start, end, exit_code, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_STATEMENTS = {8: _INSERT_BARE, _SHORT: _INSERT_SHORT, 19: _INSERT}  # values in a row -> its INSERT


class Ledger:
    def __init__(self, path: str, full_check: bool = False):
        """Open (or create, mode 0600) the ledger; StateError when it is damaged, foreign or unreadable."""
        self.path = path
        self._pending: list[tuple] = []  # attempts recorded, not yet committed: written by commit()
        self._lease_ops: list[tuple] = []  # ("take", row) / ("release", ...) not yet committed, in order
        self.committed = 0  # attempts this connection has committed
        self._tasks_kept: tuple | None = None  # (run id, tasks, carried, absent): task rows not yet written (write_tasks_behind)
        self._writer: int | None = None  # the pid of the child writing them
        self.db = None
        try:
            size = _create_private(path)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path}: the ledger is from a newer wvo-batch (schema version {version}; this one knows "
                    f"{SCHEMA_VERSION}): use that version, or move the file aside to start a new ledger"
                )
            self.db.execute("PRAGMA busy_timeout=5000")
            _to_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")
            if size:
                check = "quick_check" if full_check or size <= QUICK_CHECK_BYTES else "quick_check(runs)"
                problems = [r[0] for r in self.db.execute(f"PRAGMA {check}").fetchmany(3)]
                if problems != ["ok"]:
                    raise StateError(damaged(path, "; ".join(problems)))
            if version < SCHEMA_VERSION:
                self._migrate(version)
        except BaseException as exc:
            if self.db is not None:
                self.db.close()
            if isinstance(exc, sqlite3.Error) and _is_damage(exc):
                raise StateError(damaged(path, exc)) from None
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StateError(
                    f"{path}: cannot open the ledger: {_reason(exc)}; move it aside (or give another --state-dir)"
                ) from None
            raise

    def _migrate(self, version: int) -> None:
        """Bring an older ledger (or a new file) to SCHEMA_VERSION, in one transaction."""
        has_attempts = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'attempts'").fetchone()
        script = "BEGIN IMMEDIATE;\n"
        if has_attempts:
            for table, added in (("attempts", _ADDED), ("runs", _ADDED_TO_RUNS)):
                present = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                    for column in added.get(v, ()):
                        if column.split()[0] not in present:
                            script += f"ALTER TABLE {table} ADD COLUMN {column};\n"
        self.db.executescript(script + _SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")

    def close(self) -> None:
        try:
            self._settle()
        except sqlite3.Error:
            pass  # the run has said what it could not record; the ledger closes all the same
        self.db.close()

    def _begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Write the attempts recorded since the last commit, in one transaction.

        Raises sqlite3.Error or OSError (disk full...); what was recorded stays pending then, so a
        later commit may still write it.
        """
        if not self._pending and not self._lease_ops:
            return
        self._settle()  # an attempt is never committed before its run's task rows
        try:
            self._begin()
            self._insert_pending()
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.committed += len(self._pending)
        self._pending.clear()
        self._lease_ops.clear()

    @property
    def pending(self) -> int:
        """Attempts recorded and not yet committed."""
        return len(self._pending)

    def _insert_pending(self) -> None:
        pending, at = self._pending, 0
        shapes = set(map(len, pending))
        if len(shapes) == 1:  # the usual case: rows of one shape (a chunk's calls), in one executemany
            self.db.executemany(_STATEMENTS[shapes.pop()], pending)
            at = len(pending)
        while at < len(pending):  # in order, each run of rows of one shape in one executemany
            shape = len(pending[at])
            end = at + 1
            while end < len(pending) and len(pending[end]) == shape:
                end += 1
            self.db.executemany(_STATEMENTS[shape], pending[at:end] if at or end < len(pending) else pending)
            at = end
        for op, args in self._lease_ops:  # in order: a slot released and taken again in one commit stays right
            if op == "take":
                self.db.execute("INSERT INTO leases (run_id, task_id, attempt, resource, value, taken)"
                                " VALUES (?, ?, ?, ?, ?, ?)", args)
            else:
                self.db.execute("UPDATE leases SET released = ?, released_by = ? WHERE run_id = ? AND task_id = ?"
                                " AND released IS NULL", args)

    # -- leases (runner.manager.leasing): written with the next commit, so a release goes with its outcome --

    def take_lease(self, run_id: int, task_id: str, attempt: int, resource: str, value: str) -> None:
        self._lease_ops.append(("take", (run_id, task_id, attempt, resource, value, time.time())))

    def release_leases(self, run_id: int, task_id: str, why: str = "outcome") -> None:
        """Every slot the task holds in the run is released (with the outcome in the same commit)."""
        self._lease_ops.append(("release", (time.time(), why, run_id, task_id)))

    def unreleased_leases(self, run_id: int) -> list[tuple[str, int, str, str]]:
        """(task, attempt, resource, value) of every lease the run took and never released."""
        return [tuple(r) for r in self._read("SELECT task_id, attempt, resource, value FROM leases WHERE run_id = ?"
                                             " AND released IS NULL ORDER BY id", (run_id,))]

    def free_dead_leases(self, run_id: int) -> None:
        """The run died holding leases (SIGKILL): record them released, now. Raises StateError."""
        try:
            self.db.execute("UPDATE leases SET released = ?, released_by = 'resume' WHERE run_id = ? AND released IS NULL",
                            (time.time(), run_id))
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{self.path}: cannot write the ledger: {_reason(exc)}") from None

    def leases(self, run_id: int) -> list[dict]:
        """Every lease of the run, in the order taken (for --history and tests)."""
        rows = self._read("SELECT task_id, attempt, resource, value, taken, released, released_by FROM leases"
                          " WHERE run_id = ? ORDER BY id", (run_id,))
        keys = ("task", "attempt", "resource", "value", "taken", "released", "released_by")
        return [dict(zip(keys, r)) for r in rows]

    def start_run(self, roadmap: Roadmap, agents: int, folder: str, resumed_from: int | None, carried: set[str],
                  absent: dict[str, str] | None = None, spent_before: float = 0.0) -> int:
        """absent: task id -> definition hash of the tasks that succeeded in the resumed run and are not in this
        roadmap: recorded as carried, so that a --resume of this run does not run one again that comes back.
        spent_before: USD the run counts against its budget before its first attempt (Ledger.spent of it)."""
        try:
            self._begin()
            cur = self.db.execute(
                "INSERT INTO runs (roadmap_key, content_hash, started, status, pid, agents, resumed_from, folder, spent_before)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (roadmap_key(roadmap.files), roadmap.content_hash, time.time(), os.getpid(), agents, resumed_from, folder,
                 spent_before),
            )
            run_id = cur.lastrowid
            if len(roadmap.tasks) >= BEHIND_TASKS:
                self._tasks_kept = (run_id, roadmap.tasks, frozenset(carried), absent)  # written behind, or at the next commit
            else:
                _insert_tasks(self.db, run_id, roadmap.tasks, carried, absent)
            self.db.execute("COMMIT")
            return run_id
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            raise StateError(f"{self.path}: cannot write the ledger: {_reason(exc)}") from None

    def write_tasks_behind(self) -> None:
        """The task rows start_run kept are written by a child process, in a transaction of its own, while
        this one goes on; commit() waits for them (_settle). Call it once the run's set-up writes are done."""
        if self._tasks_kept is None or self._writer is not None:
            return
        run_id, tasks, carried, absent = self._tasks_kept
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            return  # _settle writes them
        if pid == 0:  # the child: write them, and exit without running anything of the parent's
            code = 1
            try:
                _child_of_the_run(parent)
                db = sqlite3.connect(self.path, isolation_level=None)
                db.execute("PRAGMA busy_timeout=5000")
                db.execute("BEGIN IMMEDIATE")
                _insert_tasks(db, run_id, tasks, carried, absent)
                db.execute("COMMIT")
                code = 0
                db.close()
            except BaseException:  # noqa: BLE001 - the parent writes them itself (_settle), or says why it cannot
                pass
            finally:
                os._exit(code)
        self._writer = pid  # the rows stay kept until it has written them (_settle)

    def _settle(self) -> None:
        """The run's task rows are in the ledger: their writer waited for, and written now if kept (no child
        wrote them, or it failed). Raises sqlite3.Error (or OSError) when they could not be written; they stay
        kept then, so no later commit writes an attempt before them."""
        written = False
        if self._writer is not None:
            try:
                _, status = os.waitpid(self._writer, 0)  # (interrupted: the writer stays, waited for by the next call)
            except ChildProcessError:  # reaped elsewhere (a program embedding the run): how it ended is lost
                status = -1
            self._writer = None
            written = status == 0
        if written:
            self._tasks_kept = None
        elif self._tasks_kept is not None:
            run_id, tasks, carried, absent = self._tasks_kept
            self._begin()
            try:  # (a writer that failed after its COMMIT left them: not written twice)
                if not self.db.execute("SELECT 1 FROM run_tasks WHERE run_id = ? LIMIT 1", (run_id,)).fetchone():
                    _insert_tasks(self.db, run_id, tasks, carried, absent)
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._tasks_kept = None

    def set_folder(self, run_id: int, folder: str) -> None:
        try:
            self.db.execute("UPDATE runs SET folder = ? WHERE id = ?", (folder, run_id))
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{self.path}: cannot write the ledger: {_reason(exc)}") from None

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def record(self, run_id: int, a: Attempt | tuple) -> None:
        """Add an attempt to what the next commit() writes: an Attempt, or a tuple of an Attempt's first
        ten fields (task_id ... value) for an attempt with none of the later ones (a callable's)."""
        if type(a) is tuple:  # written with the short INSERT: its later columns are NULL
            value = a[9]
            if value is None and a[7] is None and a[8] is None:
                self._pending.append((run_id, *a[:7]))  # and with the bare one: no log, error or value either
            else:
                self._pending.append((run_id, *a[:9], None if value is None else json.dumps(value)))
            return
        value = None if a.value is None else json.dumps(a.value)
        usage = None if a.usage is None else json.dumps(a.usage)
        self._pending.append(
            (run_id, a.task_id, a.attempt, a.agent, a.start, a.end, a.exit_code, a.outcome, a.log_path, a.error, value,
             a.session_id, a.model, usage, a.cost_usd, None if a.usage is None else int(a.cost_estimated), a.failure,
             a.num_turns, a.executor)
        )

    def record_many(self, run_id: int, rows: list) -> None:
        """record() each attempt, in order (a chunk's)."""
        record = self.record
        for a in rows:
            record(run_id, a)

    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        """Write the pending attempts and close the run, in one transaction; raises like commit()."""
        self._settle()
        try:
            self._begin()
            self._insert_pending()
            self.db.execute(
                "UPDATE runs SET ended = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), status, json.dumps(summary), run_id),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.committed += len(self._pending)
        self._pending.clear()
        self._lease_ops.clear()

    def count_attempts(self, run_id: int) -> int | None:
        """How many attempts of the run the ledger holds (committed ones only); None when it cannot be read."""
        try:
            self._rollback()
            return self.db.execute("SELECT COUNT(*) FROM attempts WHERE run_id = ?", (run_id,)).fetchone()[0]
        except sqlite3.Error:
            return None

    # -- reading -------------------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if _is_damage(exc):
                raise StateError(damaged(self.path, exc)) from None
            raise StateError(f"{self.path}: cannot read the ledger: {exc}") from None

    def runs(self, files: list[str], limit: int = 20) -> list[RunRow]:
        rows = self._read(
            "SELECT id, started, ended, status, pid, agents, resumed_from, summary FROM runs"
            " WHERE roadmap_key IN (?, ?) ORDER BY id DESC LIMIT ?",
            (*_run_keys(files), limit),
        )
        return [RunRow(*r[:7], json.loads(r[7]) if r[7] else None) for r in rows]

    def latest_unfinished(self, files: list[str]) -> RunRow | None:
        """The latest run of these roadmap files, if it did not succeed entirely. A run without task rows is
        passed over: killed before they were written (write_tasks_behind), it committed no attempt either."""
        rows = self._read(_LATEST_UNFINISHED, _run_keys(files))
        if rows and rows[0][3] != "succeeded":
            return RunRow(*rows[0][:7], json.loads(rows[0][7]) if rows[0][7] else None)
        return None

    def succeeded_tasks(self, run_id: int) -> dict[str, str]:
        """Task id -> definition hash, for every task that succeeded in the run (or was carried into it)."""
        return dict(self._read(_SUCCEEDED, (run_id,)))

    def spent(self, run_id: int) -> float:
        """USD the run counted against --budget: what it started with (the loop's earlier batches, the run it
        resumed, and so on back) and every attempt it recorded."""
        rows = self._read("SELECT COALESCE(spent_before, 0) + (SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE"
                          " run_id = runs.id) FROM runs WHERE id = ?", (run_id,))
        return float(rows[0][0]) if rows else 0.0

    def attempts(self, run_id: int) -> list[Attempt]:
        rows = self._read(f"SELECT {_COLUMNS} FROM attempts WHERE run_id = ? ORDER BY id", (run_id,))
        return [
            Attempt(*r[:9], json.loads(r[9]) if r[9] else None, r[10], r[11], json.loads(r[12]) if r[12] else None,
                    r[13], bool(r[14]), r[15], r[16], r[17])
            for r in rows
        ]

    def sessions(self, run_id: int) -> dict[str, str]:
        """Task id -> the session id of its last attempt that had one (for --resume to continue them); a
        critic's rejection is the critic's session, not the task's, and is passed over."""
        rows = self._read("SELECT task_id, session_id FROM attempts WHERE run_id = ? AND session_id IS NOT NULL"
                          " AND outcome != 'rejected' ORDER BY id", (run_id,))
        return dict(rows)

    def last_attempts(self, run_id: int) -> dict[str, tuple]:
        """Task id -> (outcome, failure, error, session id, executor) of its last attempt in the run."""
        rows = self._read("SELECT task_id, outcome, failure, error, session_id, executor FROM attempts WHERE run_id = ?"
                          " ORDER BY id", (run_id,))
        return {r[0]: tuple(r[1:]) for r in rows}


_LATEST_UNFINISHED = (
    "SELECT id, started, ended, status, pid, agents, resumed_from, summary FROM runs r WHERE roadmap_key IN (?, ?)"
    " AND EXISTS (SELECT 1 FROM run_tasks t WHERE t.run_id = r.id) ORDER BY id DESC LIMIT 1"
)
_SUCCEEDED = (
    "SELECT t.task_id, t.def_hash FROM run_tasks t WHERE t.run_id = ? AND (t.carried = 1 OR EXISTS ("
    " SELECT 1 FROM attempts a WHERE a.run_id = t.run_id AND a.task_id = t.task_id AND a.outcome = 'succeeded'))"
)


def resumable_successes(path: str, files: list[str], tasks: list[Task]) -> set[str]:
    """The tasks a --resume of these roadmap files would carry over (succeeded in the run it continues, their
    definition unchanged), read-only and before the run takes its lock: for the autopilot loop's first selection
    (--max-tasks, --only), so that it does not pick a task the run will not run. Empty when there is no such run
    or the ledger cannot be read (the run itself then says why)."""
    from urllib.parse import quote

    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return set()
    try:
        run = db.execute(_LATEST_UNFINISHED, _run_keys(files)).fetchone()
        if run is None or run[3] == "succeeded":
            return set()
        succeeded = dict(db.execute(_SUCCEEDED, (run[0],)).fetchall())
    except sqlite3.Error:
        return set()
    finally:
        db.close()
    found = [t for t in tasks if t.id in succeeded]
    return {t.id for t, new in zip(found, task_hashes(found)) if new == succeeded[t.id]}


def held_run_folder(path: str, files: list[str], pid: int) -> str | None:
    """The folder of the run of these roadmap files that process `pid` runs (it holds their lock), read-only,
    for --status: None when the ledger names none (yet) or cannot be read. Not `latest`: that is the latest run
    of any roadmap sharing the state dir."""
    from urllib.parse import quote  # (urllib.request's pathname2url imports http.client, email...: ~15 ms)

    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT folder FROM runs WHERE roadmap_key IN (?, ?) AND pid = ? AND status = 'running'"
                         " ORDER BY id DESC LIMIT 1", (*_run_keys(files), pid)).fetchone()  # fmt: skip
        return row[0] if row else None
    except sqlite3.Error:
        return None
    finally:
        db.close()


def _insert_tasks(db, run_id: int, tasks, carried, absent: dict[str, str] | None = None) -> None:
    """A run's task rows: each task's definition hash, and whether it was carried over from the resumed run;
    with those of `absent` (succeeded there, not in this roadmap), carried."""
    if absent:
        db.executemany(f"INSERT INTO run_tasks (run_id, task_id, def_hash, carried) VALUES ({int(run_id)}, ?, ?, 1)",
                       list(absent.items()))  # fmt: skip
    rows = zip([t.id for t in tasks], task_hashes(tasks))
    if carried:
        rows = list(rows)
        db.executemany(f"INSERT INTO run_tasks (run_id, task_id, def_hash, carried) VALUES ({int(run_id)}, ?, ?, 1)",
                       [r for r in rows if r[0] in carried])  # fmt: skip
        rows = [r for r in rows if r[0] not in carried]
    db.executemany(f"INSERT INTO run_tasks (run_id, task_id, def_hash, carried) VALUES ({int(run_id)}, ?, ?, 0)", rows)


def _child_of_the_run(parent: int) -> None:
    """A child the run forks for a moment: it dies with the run (SIGKILL), and leaves signals to the run."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def attempt_dict(a: Attempt) -> dict:
    return asdict(a)


def damaged(path: str, exc: BaseException | str) -> str:
    """The message for a ledger SQLite cannot read: what, and how to get going again."""
    return (
        f"{path}: the ledger is damaged or not a wvo-batch ledger ({_reason(exc)}); move it aside"
        f" (mv {path} {path}.bad) and run again to start a new one; runs recorded in it cannot be resumed"
    )


_WAL_WAIT_S = 5.0  # as long as any other statement waits for a lock (busy_timeout)


def _to_wal(db) -> None:
    """Put the ledger in WAL mode, waiting for the lock as every other statement does.

    WAL is a property of the file: once set, this reads it and takes no lock. Setting it needs the file to
    itself, and SQLite does not run the busy handler for that, so two runs that open one new ledger at the
    same moment (two roadmaps, one --state-dir, started together by cron) would see "database is locked" at
    once in one of them: it is retried here, with a short backoff, until the other has set it.
    """
    deadline = time.monotonic() + _WAL_WAIT_S
    pause = 0.001
    while db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError("database is locked")
        time.sleep(pause)  # a lock held by another process: nothing to wait on but time
        pause = min(pause * 2, 0.05)


def _is_damage(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or type(exc) is sqlite3.DatabaseError


def _reason(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _create_private(path: str) -> int:
    """Create the ledger file 0600 whatever the umask (SQLite gives its -wal and -shm the same mode).

    Returns the size of an existing ledger (0: new). Raises OSError for what cannot be a ledger.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL, "not a regular file", path)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(path, 0o600)
        return st.st_size
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return 0
