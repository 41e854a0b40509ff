"""One attempt of an agent CLI (codex, claude, ...): its output read as it arrives, its failure classified.

    TaskMessage(output=codex-json | claude-json | text)
        │  run_attempt (execute.py): the CLI in its own session, stdout+stderr to the task's log
        │  a watcher thread follows the log, feeds the parser (runner.coding.output) and, with no
        ▼  structured event for stall_timeout seconds, kills the CLI's tree (the stall watchdog)
    exit ──▶ parser.finish() ──▶ failures.classify ──▶ TaskResult(outcome, cli={session, usage, cost, ...})

The outcome follows the class: rate_limited, usage_limited, auth_failed, setup_failed, failed. Only the
CLI's own words are classified where a parser exists (never the agent's text); `output: text` reads the
log tail (with the prompt taken out: CLIs echo it) and the executor's `rate_limit` regex.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from runner.agents.execute import append_to_log as _append, run_attempt
from runner.agents.kill import ATTEMPT_MARK, kill_tree
from runner.agents.messages import TaskMessage, TaskResult
from runner.coding.failures import FailureClass, classify
from runner.coding.output import parser_for
from runner.model import Outcome

_TAIL = 64 * 1024  # bytes of the log a text-format attempt is classified by
_POLL_S = 0.25  # how often the watcher reads what the CLI has printed
_CHUNK = 1 << 20

OUTCOME_OF = {
    FailureClass.RATE_LIMITED: Outcome.RATE_LIMITED,
    FailureClass.USAGE_LIMITED: Outcome.USAGE_LIMITED,
    FailureClass.AUTH_FAILED: Outcome.AUTH_FAILED,
    FailureClass.SETUP_FAILED: Outcome.SETUP_FAILED,
    FailureClass.FAILED: Outcome.FAILED,
}


class _Follow:
    """Reads the task's log as the CLI writes it, into the parser; kills the CLI when it stalls."""

    def __init__(self, msg: TaskMessage, parser, clock=time.monotonic):
        self.msg, self.parser, self.clock = msg, parser, clock
        self.pid: int | None = None
        self.stalled = False
        self._fd: int | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()  # the parser is fed by one thread at a time
        self._thread: threading.Thread | None = None
        self._began = clock()

    def start(self, pid: int) -> None:
        self.pid = pid
        self._began = self.clock()
        self._thread = threading.Thread(target=self._run, name="cli-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)

    def read(self) -> None:
        """Feed the parser what the log holds beyond what was read."""
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = os.open(self.msg.log_path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:  # not named yet (runner.agents.execute.LogFiles), or never: it wrote nothing
                    return
            while True:
                data = os.read(self._fd, _CHUNK)
                if not data:
                    return
                self.parser.feed(data, self.clock())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        limit = self.msg.stall_timeout
        while not self._done.wait(_POLL_S):
            try:
                self.read()
            except OSError:
                return
            if limit is None or self.pid is None:
                continue
            last = self.parser.last_event_at or self._began
            if self.clock() - last >= limit:
                self.stalled = True
                kill_tree(self.pid, self.msg.grace, mark=self.msg.env.get(ATTEMPT_MARK))
                return


def run_cli_attempt(msg: TaskMessage, conn, base_env: dict, logs=None, announce_after: float = 0.0,
                    note_pid=None) -> TaskResult:
    """Run an agent-CLI attempt (msg.output names the parser) and classify how it ended."""
    parser = parser_for(msg.output or "text")
    follow = _Follow(msg, parser)

    def noting(pid: int) -> None:
        if note_pid is not None:
            note_pid(pid)
        if pid and follow.pid is None:
            follow.start(pid)

    try:
        result = run_attempt(replace(msg, rate_limit_pattern=None), conn, base_env, logs, announce_after, noting)
    finally:
        follow.stop()
    try:
        follow.read()
    except OSError:
        pass
    follow.close()
    cli = parser.finish(time.monotonic())
    for why in cli.refused:  # a negative or NaN cost or token count: unknown, never subtracted
        _append(msg.log_path, f"\nwvo-batch: warning: {why}\n")
    now = time.time()
    fields = cli_fields(cli)
    outcome, error, retry_after = result.outcome, result.error, result.retry_after
    if follow.stalled:
        limit = msg.stall_timeout or 0
        outcome, error = Outcome.TIMED_OUT.value, f"stalled: no output event for {limit:g}s; killed"
        fields.update(failure="stalled", reason=error)
        _append(msg.log_path, f"\nwvo-batch: {error}\n")
    elif outcome in (Outcome.SUCCEEDED.value, Outcome.FAILED.value):
        tail = _tail(msg) if cli.format == "text" or not cli.events_seen else b""
        failure = classify(cli, result.exit_code, tail, msg.rate_limit_pattern, now)
        if failure is not None:
            outcome = OUTCOME_OF[failure.cls].value
            error = f"{failure.cls.value}: {failure.reason}" if failure.cls is not FailureClass.FAILED else failure.reason
            if failure.reset_at is not None and failure.reset_at > now:
                retry_after = failure.reset_at - now
            fields.update(failure=failure.cls.value, reason=failure.reason, reset_at=failure.reset_at,
                          drop_session=failure.drop_session)
    return replace(result, outcome=outcome, error=error, retry_after=retry_after, cli=fields)


def cli_fields(cli) -> dict:
    """What the manager keeps of a CliResult (plain values: it crosses a pipe and goes to the ledger)."""
    return {
        "format": cli.format,
        "session_id": cli.session_id,
        "usage": cli.usage.as_dict(),
        "usage_cumulative": cli.usage_cumulative,
        "cost_usd": cli.cost_usd,
        "cost_cumulative": cli.cost_cumulative,
        "model": cli.model,
        "num_turns": cli.num_turns,
        "permission_denials": list(cli.permission_denials),
        "events": cli.events_seen,
        "failure": None,
        "reason": None,
        "reset_at": None,
        "drop_session": False,
    }


def _tail(msg: TaskMessage) -> bytes:
    try:
        with open(msg.log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
            tail = f.read()
    except OSError:
        return b""
    # A CLI may echo its prompt: a task whose title says "rate limit" must not read as one.
    if not isinstance(msg.command, str):
        for part in msg.command or ():
            if len(part) >= 20:
                tail = tail.replace(part.encode(errors="replace"), b"")
    return tail
