"""One attempt of an agent CLI (codex, claude, ...): its output read as it arrives, its failure classified.

    TaskMessage(output=codex-json | claude-json | text)
        │  run_attempt (execute.py): the CLI in its own session, its stdout+stderr into a pipe that the
        │  agent reads: every byte is copied to the task's log and fed to the parser (runner.coding.output)
        ▼  a watchdog thread kills the CLI's tree after stall_timeout seconds with no structured event
    exit ──▶ parser.finish() ──▶ failures.classify ──▶ TaskResult(outcome, cli={session, usage, cost, ...})
                                                       a review attempt: answer=the critic's final answer

The outcome follows the class: rate_limited, usage_limited, auth_failed, setup_failed, failed. Only the
CLI's own words are classified where a parser exists (never the agent's text); `output: text` reads the
tail of the output (with the prompt taken out: CLIs echo it) and the executor's `rate_limit` regex.

Nothing here reads the log file: a process that writes into it (a worker's leftover, appending a verdict
to its critic's log) is never parsed. A critic without a parser (`run_plain_review`) is read the same way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from runner.agents.execute import append_to_log as _append, run_attempt
from runner.agents.kill import ATTEMPT_MARK, kill_tree
from runner.agents.messages import TaskMessage, TaskResult
from runner.coding.failures import FailureClass, classify
from runner.coding.output import STRUCTURED, parser_for
from runner.model import Outcome

_TAIL = 64 * 1024  # bytes of the output a text-format attempt is classified by
_POLL_S = 0.25  # how often the watchdog looks at the time of the last event

OUTCOME_OF = {
    FailureClass.RATE_LIMITED: Outcome.RATE_LIMITED,
    FailureClass.USAGE_LIMITED: Outcome.USAGE_LIMITED,
    FailureClass.AUTH_FAILED: Outcome.AUTH_FAILED,
    FailureClass.SETUP_FAILED: Outcome.SETUP_FAILED,
    FailureClass.FAILED: Outcome.FAILED,
}


class _Reader:
    """What the CLI prints, as the agent reads it from the pipe: fed to the parser, its tail kept for the
    classifier, and (a review attempt of a format without a final text) to the critic's answer."""

    def __init__(self, parser, answer=None, clock=time.monotonic):
        self.parser, self.answer, self.clock = parser, answer, clock
        self._tail = bytearray()  # the last _TAIL bytes (up to 2 * _TAIL between trims)

    def __call__(self, data: bytes) -> None:
        self.parser.feed(data, self.clock())
        self._tail += data
        if len(self._tail) > 2 * _TAIL:
            del self._tail[:-_TAIL]
        if self.answer is not None:
            self.answer.feed(data)

    def tail(self) -> bytes:
        return bytes(self._tail[-_TAIL:])


class _Watchdog:
    """Kills the CLI when no structured event has come for stall_timeout seconds (the parser's clock)."""

    def __init__(self, msg: TaskMessage, parser, clock=time.monotonic):
        self.msg, self.parser, self.clock = msg, parser, clock
        self.pid: int | None = None
        self.stalled = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._began = clock()

    def start(self, pid: int) -> None:
        self.pid = pid
        self._began = self.clock()
        if self.msg.stall_timeout is not None:
            self._thread = threading.Thread(target=self._run, name="cli-stall", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        limit = self.msg.stall_timeout
        while not self._done.wait(_POLL_S):
            last = self.parser.last_event_at or self._began  # set by the agent's thread as it feeds the parser
            if self.clock() - last >= limit:
                self.stalled = True
                kill_tree(self.pid, self.msg.grace, mark=self.msg.env.get(ATTEMPT_MARK))
                return


def run_cli_attempt(msg: TaskMessage, conn, base_env: dict, logs=None, announce_after: float = 0.0,
                    note_pid=None) -> TaskResult:
    """Run an agent-CLI attempt (msg.output names the parser) and classify how it ended."""
    parser = parser_for(msg.output or "text")
    review = bool(msg.env.get("WVO_REVIEW"))
    plain_answer = _answer_reader(msg) if review and parser.format.value not in STRUCTURED else None
    reader = _Reader(parser, plain_answer)
    watchdog = _Watchdog(msg, parser)

    def noting(pid: int) -> None:
        if note_pid is not None:
            note_pid(pid)
        if pid and watchdog.pid is None:
            watchdog.start(pid)

    try:
        result = run_attempt(replace(msg, rate_limit_pattern=None), conn, base_env, logs, announce_after, noting, reader)
    finally:
        watchdog.stop()
    cli = parser.finish(time.monotonic())
    for why in cli.refused:  # a negative or NaN cost or token count: unknown, never subtracted
        _append(msg.log_path, f"\nwvo-batch: warning: {why}\n")
    now = time.time()
    fields = cli_fields(cli)
    outcome, error, retry_after = result.outcome, result.error, result.retry_after
    if watchdog.stalled:
        limit = msg.stall_timeout or 0
        outcome, error = Outcome.TIMED_OUT.value, f"stalled: no output event for {limit:g}s; killed"
        fields.update(failure="stalled", reason=error)
        _append(msg.log_path, f"\nwvo-batch: {error}\n")
    elif outcome in (Outcome.SUCCEEDED.value, Outcome.FAILED.value):
        tail = _without_prompt(msg, reader.tail()) if cli.format == "text" or not cli.events_seen else b""
        failure = classify(cli, result.exit_code, tail, msg.rate_limit_pattern, now)
        if failure is not None:
            outcome = OUTCOME_OF[failure.cls].value
            error = f"{failure.cls.value}: {failure.reason}" if failure.cls is not FailureClass.FAILED else failure.reason
            if failure.reset_at is not None and failure.reset_at > now:
                retry_after = failure.reset_at - now
            fields.update(failure=failure.cls.value, reason=failure.reason, reset_at=failure.reset_at,
                          drop_session=failure.drop_session)
    answer = None
    if review:
        answer = plain_answer.text() if plain_answer is not None else _bounded("\n".join(cli.answers))
    return replace(result, outcome=outcome, error=error, retry_after=retry_after, cli=fields, answer=answer)


def run_plain_review(msg: TaskMessage, conn, base_env: dict, logs=None, announce_after: float = 0.0,
                     note_pid=None) -> TaskResult:
    """A critic's attempt with no output parser: the command as any other, its answer read from its pipe."""
    answer = _answer_reader(msg)
    result = run_attempt(msg, conn, base_env, logs, announce_after, note_pid, answer.feed)
    return replace(result, answer=answer.text())


def _answer_reader(msg: TaskMessage):
    """The critic's answer as it prints it, less its echoed prompt (runner.coding.review.AnswerReader)."""
    from runner.coding.review import AnswerReader

    return AnswerReader(() if isinstance(msg.command, str) else tuple(msg.command or ()))


def _bounded(text: str) -> str:
    from runner.coding.review import bounded_answer

    return bounded_answer(text)


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


def _without_prompt(msg: TaskMessage, tail: bytes) -> bytes:
    """A CLI may echo its prompt: a task whose title says "rate limit" must not read as one."""
    if not isinstance(msg.command, str):
        for part in msg.command or ():
            if len(part) >= 20:
                tail = tail.replace(part.encode(errors="replace"), b"")
    return tail
