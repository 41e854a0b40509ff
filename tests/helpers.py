"""Building blocks for tests: roadmaps in memory, runs with a recording reporter, event checks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from runner.manager.events import TASK_FINISHED, TASK_RESERVED, TASK_RETURNED
from runner.model import Priority, Roadmap, Task
from runner.manager.run import Reporter, Run, RunOptions, RunResult


def task(tid: str, command=None, order: int = 0, **kw) -> Task:
    if "priority" in kw and isinstance(kw["priority"], str):
        kw["priority"] = Priority(kw["priority"])
    return Task(id=tid, command=command, order=order, **kw)


def roadmap_file(tmp_path: Path, tasks: list[tuple[str, str]], name: str = "roadmap.yaml") -> Path:
    """A roadmap file in tmp_path of (id, shell command) tasks, in order; ids and commands quoted as JSON."""
    lines = ["tasks:"]
    for tid, cmd in tasks:
        lines += [f"  - id: {json.dumps(tid)}", f"    command: {json.dumps(cmd)}"]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def roadmap(tasks: list[Task], **kw) -> Roadmap:
    for i, t in enumerate(tasks):
        t.order = i
    return Roadmap(files=[kw.pop("file", "mem.yaml")], tasks=tasks, **kw)


class Recorder(Reporter):
    """Keeps every event and message; can run a callback on each event batch (fault injection)."""

    def __init__(self, on_events=None):
        self.seen: list[dict] = []
        self.messages: list[str] = []
        self.on_events = on_events
        self.info: dict = {}

    def started(self, info):
        self.info = info

    def events(self, events):
        self.seen.extend(events)
        if self.on_events:
            self.on_events(events)

    def message(self, text):
        self.messages.append(text)


def run(rm: Roadmap, state_dir: Path, reporter: Reporter | None = None, **opts) -> RunResult:
    opts.setdefault("grace", 1.0)
    opts.setdefault("backoff_base", 0.01)
    return Run(rm, RunOptions(state_dir=str(state_dir), **opts), reporter or Recorder()).execute()


def read_events(result: RunResult) -> list[dict]:
    path = Path(result.folder) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_dead(procs, timeout: float) -> list:
    """Wait until every process (a psutil.Process or a pid) has died, polling with a deadline; returns those
    still alive. A zombie is dead: it waits for its parent to reap it, and an orphan's new parent (PID 1 of
    some containers) may take a second or more to do so."""
    import time

    import psutil

    def alive(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    pending = []
    for p in procs:
        try:
            pending.append(p if isinstance(p, psutil.Process) else psutil.Process(p))
        except psutil.Error:
            pass
    deadline = time.monotonic() + timeout
    while (pending := [p for p in pending if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pending


def stop(proc: subprocess.Popen, *, group: bool = False, timeout: float = 30.0) -> None:
    """SIGKILL a process the test started if it still runs (its whole process group if `group`: it was started
    in a session of its own), reap it within `timeout` and close its pipes.

    Never raises for a process that outlives the timeout, so a failing test's own error stays the one
    reported: the leftover-process check (conftest.py) fails the test on it instead.
    """
    try:
        if proc.poll() is None:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a stdin whose reader died cannot flush
                    pipe.close()


@contextlib.contextmanager
def reaped(proc: subprocess.Popen, *, group: bool = False, timeout: float = 30.0):
    """`stop(proc, ...)` when the block ends, however it ends."""
    try:
        yield proc
    finally:
        stop(proc, group=group, timeout=timeout)


def check_pool_invariants(events: list[dict]) -> None:
    """No agent runs two tasks at once; no task is on two agents; every reservation is released."""
    holding: dict[str, str] = {}  # agent -> task
    where: dict[str, str] = {}  # task -> agent
    for ev in events:
        name = ev["event"]
        if name == TASK_RESERVED:
            assert ev["agent"] not in holding, f"{ev['agent']} reserved for {ev['task']} while holding {holding.get(ev['agent'])}"
            assert ev["task"] not in where, f"{ev['task']} reserved on {ev['agent']} while on {where.get(ev['task'])}"
            holding[ev["agent"]] = ev["task"]
            where[ev["task"]] = ev["agent"]
        elif name in (TASK_FINISHED, TASK_RETURNED):  # returned: a chunk's task given back unrun
            assert holding.get(ev["agent"]) == ev["task"], f"{ev['agent']} ended {ev['task']} it did not hold"
            del holding[ev["agent"]]
            del where[ev["task"]]
    assert not holding, f"reservations never released: {holding}"


class Fifo:
    """A named pipe tasks write a line to when they reach a point: tests wait on it, never sleep."""

    def __init__(self, path: Path):
        import os

        self.path = path
        os.mkfifo(path)
        # O_RDWR keeps the pipe open for writers even while no task has it open (no EOF between tasks).
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.buf = b""

    def wait_lines(self, n: int, timeout: float = 30.0) -> list[str]:
        """Block until n lines have arrived in total; fails the test after timeout."""
        import os
        import select
        import time

        deadline = time.monotonic() + timeout
        while self.buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            if left <= 0:
                got = self.buf.count(b"\n")
                raise AssertionError(f"only {got} of {n} lines arrived on {self.path}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.buf += os.read(self.fd, 65536)
                except BlockingIOError:
                    pass
        return self.buf.decode().splitlines()[:n]

    def close(self) -> None:
        import os

        os.close(self.fd)


class RunLog:
    """What really ran, written by the tasks themselves, independent of the manager's bookkeeping.

    Each wrapped command appends `start ID PID TIME` before it runs and `end ID PID TIME` after, to one
    file opened with O_APPEND (`>>`): each line is one write(2), so the file's order is the order in
    which the tasks really started and ended, whatever any clock or event log says.
    """

    def __init__(self, path: Path):
        self.path = path
        path.touch()

    def wrap(self, command: str) -> str:
        stamp = '"$WVO_TASK_ID $$ $(date +%s.%N)"'
        return f"echo start {stamp} >> {self.path}; {command}; rc=$?; echo end {stamp} >> {self.path}; exit $rc"

    def lines(self) -> list[tuple[str, str, str]]:
        return [tuple(line.split()[:3]) for line in self.path.read_text().splitlines()]

    def started(self) -> dict[str, int]:
        """task id -> how many times it really started."""
        out: dict[str, int] = {}
        for kind, tid, _ in self.lines():
            if kind == "start":
                out[tid] = out.get(tid, 0) + 1
        return out

    def check(self, agents: int) -> int:
        """No task runs twice at once, never more tasks at once than agents, every run ended; returns the peak."""
        return check_run_log(self.lines(), agents)


def check_run_log(lines: list[tuple[str, str, str]], agents: int) -> int:
    running: dict[str, str] = {}  # task id -> pid of the run in progress
    peak = 0
    for n, (kind, tid, pid) in enumerate(lines, 1):
        if kind == "start":
            assert tid not in running, f"line {n}: {tid} started (pid {pid}) while its run by pid {running[tid]} was going"
            running[tid] = pid
            peak = max(peak, len(running))
            assert len(running) <= agents, f"line {n}: {len(running)} tasks at once on {agents} agents: {sorted(running)}"
        else:
            assert running.get(tid) == pid, f"line {n}: {tid} (pid {pid}) ended without having started"
            del running[tid]
    assert not running, f"runs that never ended: {running}"
    return peak


def barrier(folder: Path, n: int, deadline_s: int = 30) -> str:
    """Shell text: this task checks in at `folder`, then waits until n tasks have (exit 1 after the deadline).

    n tasks that pass it were running at the same time, whatever the clock says.
    """
    return (
        f"mkdir -p {folder}; touch {folder}/$WVO_TASK_ID; i=0; "
        f'while [ "$(ls {folder} | wc -l)" -lt {n} ]; do i=$((i+1)); '
        f'[ $i -gt {deadline_s * 100} ] && {{ echo "barrier: not {n} at once" >&2; exit 1; }}; sleep 0.01; done'
    )


def wait_for_file(path: Path, deadline_s: int = 30) -> str:
    """Shell text: wait until `path` exists, polling (exit 1 after the deadline)."""
    return (
        f'i=0; while [ ! -e {path} ]; do i=$((i+1)); '
        f'[ $i -gt {deadline_s * 100} ] && {{ echo "never saw {path}" >&2; exit 1; }}; sleep 0.01; done'
    )


def real_cli_executor(mock, tmp_path: Path, cli: str) -> tuple[list[str], str, dict]:
    """The real codex or claude from npm, pointed at tests/mockapi.py: (argv, output parser, environment)."""
    from test_agent_clis import BIN, _env
    from test_cli_conformance import codex_args

    env = _env(mock, tmp_path)
    if cli == "codex":
        argv = [str(BIN / "codex"), "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write",
                *codex_args(mock, retries=0), "{prompt}"]  # fmt: skip
        return argv, "codex-json", env
    argv = [str(BIN / "claude"), "-p", "{prompt}", "--output-format", "stream-json", "--verbose",
            "--permission-mode", "acceptEdits"]  # fmt: skip
    return argv, "claude-json", env


def ledger_rows(state: Path, table: str) -> list[dict]:
    """Every row of one ledger table (attempts, leases, ...) in the order written, read-only."""
    import sqlite3

    db = sqlite3.connect(f"file:{state / 'ledger.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        db.close()
