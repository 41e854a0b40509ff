"""The one check runner: a task's checks after its attempt, and the landing's re-check on the merged result.

    run_checks(commands, cwd, env, grace, log_path, cancel=None, deadline=None, label="check")
      each command in turn: /bin/sh -c, in a session of its own, stdin /dev/null, output to a file
      │  past the deadline, or `cancel` set: TERM its whole tree (group, descendants, attempt mark),
      │  KILL after grace (runner.agents.kill)
      ▼  appended to log_path under a header; the first that does not pass ends the run
    ChecksResult(passed, ran, failed, outcome, exit_code, tail, error)

Both callers build the environment with checks_env(), so a check reads the same variables in the
worktree and on the merged result: WVO_TASK_ID, WVO_ATTEMPT, WVO_BRANCH, WVO_WORKTREE (the folder it
runs in), WVO_BASE_COMMIT. The tail (TAIL_LINES of the failing check's output) is what a retry is told.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time

from runner.agents.execute import new_private_file, append_to_log, waiter
from runner.agents.kill import ATTEMPT_MARK, kill_tree, new_mark
from runner.model import record

TAIL_LINES = 40  # lines of a failing check's output kept for the feedback
_READ_LIMIT = 1 << 20  # bytes of a check's output read back for the log and the tail
_CANCEL_POLL_S = 0.05  # how soon a set `cancel` is seen while a check runs

SUCCEEDED, FAILED, TIMED_OUT, INTERRUPTED = "succeeded", "failed", "timed_out", "interrupted"  # model.Outcome values


@record(frozen=True)
class ChecksResult:
    """How a list of checks went; `failed` is None when every one passed."""

    passed: bool
    ran: tuple[tuple[str, int | None], ...]  # (command, exit code: -N when killed by signal N) of each that ran
    failed: str | None = None  # the command that did not pass
    outcome: str = SUCCEEDED  # failed | timed_out | interrupted when one did not pass
    exit_code: int | None = None  # the failing check's
    tail: str = ""  # the last TAIL_LINES lines of the failing check's output
    error: str | None = None  # "check failed: <command> (exit 2)", in a line


def checks_env(base: dict, task_id: str, attempt: int, worktree: str | None = None, branch: str | None = None,
               base_commit: str | None = None, extra: dict | None = None) -> dict[str, str]:
    """The environment a check runs in: base, the task's own variables (extra), then where it runs."""
    env = {**base, **(extra or {}), "WVO_TASK_ID": task_id, "WVO_ATTEMPT": str(attempt)}
    for name, value in (("WVO_WORKTREE", worktree), ("WVO_BRANCH", branch), ("WVO_BASE_COMMIT", base_commit)):
        if value is not None:
            env[name] = value
    return env


def run_checks(commands, cwd: str | None, env: dict, grace: float = 2.0, log_path: str | None = None,
               cancel: threading.Event | None = None, deadline: float | None = None,
               label: str = "check") -> ChecksResult:
    """Run each command in turn until one does not pass; deadline is on time.monotonic()'s clock.

    A command is shell text (/bin/sh -c) or an argv tuple (run as it is, never through a shell).

    The output of each goes to log_path under a "===== wvo-batch <label> i/n: <command> =====" header.
    Every process a check starts is killed when it ends (a leftover must not change the next check's
    files, nor outlive the run): it runs with an ATTEMPT_MARK of its own unless env carries one.
    """
    commands = list(commands)
    ran: list[tuple[str, int | None]] = []
    for i, command in enumerate(commands, 1):
        if cancel is not None and cancel.is_set():
            return ChecksResult(False, tuple(ran), command, INTERRUPTED, None, "", f"interrupted before check {command!r}")
        if deadline is not None and time.monotonic() >= deadline:
            return ChecksResult(False, tuple(ran), command, TIMED_OUT, None, "", f"timed out before check {command!r}")
        out_path = f"{log_path}.{label}{i}" if log_path else None
        code, outcome, output = _run_one(command, cwd, env, grace, out_path, cancel, deadline)
        if log_path:
            shown = command if isinstance(command, str) else shlex.join(command)
            append_to_log(log_path, f"\n===== wvo-batch {label} {i}/{len(commands)}: {shown} =====\n{output}"
                              f"===== exit {code} ({outcome}) =====\n")
        ran.append((command, code))
        if outcome != SUCCEEDED:
            tail = "\n".join(output.splitlines()[-TAIL_LINES:])
            why = f"exit {code}" if outcome == FAILED else outcome
            return ChecksResult(False, tuple(ran), command, outcome, code, tail, f"check failed: {command} ({why})")
    return ChecksResult(True, tuple(ran))


def landing_checks(commands, base_env: dict, task_id: str, attempt: int, branch: str, grace: float,
                   log_path: str | None, timeout: float | None = None, cancel: threading.Event | None = None,
                   extra: dict | None = None, base_commit: str | None = None):
    """checks(worktree) -> (ok, detail) for runner.coding.landing.Lander: run_checks on the merged result.

    The environment is the worktree attempt's (checks_env) with the landing worktree as WVO_WORKTREE and
    `branch` (the branch being landed, as in the worktree: a check can diff it against WVO_BASE_COMMIT in
    both places) as WVO_BRANCH; extra: the task's own variables. detail is "<command> (<why>)" and the tail.
    """

    def run(path: str) -> tuple[bool, str]:
        env = checks_env(base_env, task_id, attempt, worktree=path, branch=branch, base_commit=base_commit, extra=extra)
        deadline = None if timeout is None else time.monotonic() + timeout
        r = run_checks(commands, path, env, grace, log_path, cancel=cancel, deadline=deadline, label="landing check")
        if r.passed:
            return True, ""
        why = r.error.rpartition(" (")[2].rstrip(")") if r.error else r.outcome
        return False, f"{r.failed} ({why})\n{r.tail}" if r.tail else f"{r.failed} ({why})"

    return run


def _run_one(command: str, cwd, env: dict, grace: float, out_path: str | None, cancel, deadline) -> tuple[int | None, str, str]:
    """(exit code, negative when killed by a signal; outcome; output) of one check."""
    mark = env.get(ATTEMPT_MARK)
    if not mark:
        mark = new_mark()
        env = {**env, ATTEMPT_MARK: mark}
    if out_path:
        out = os.fdopen(new_private_file(out_path, os.O_RDWR), "w+b")  # not through what the task put at its place
    else:
        import tempfile

        out = tempfile.TemporaryFile()
    try:
        try:
            argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return 127, FAILED, f"wvo-batch: cannot start the check: {exc}\n"
        outcome = _supervise(proc, grace, mark, cancel, deadline)
        # whatever the check left running (in its group or not) ends with it
        kill_tree(proc.pid, 0.0, mark=mark)
        code = proc.returncode
        if outcome == SUCCEEDED and code != 0:
            outcome = FAILED
        out.seek(max(0, os.fstat(out.fileno()).st_size - _READ_LIMIT))
        output = out.read().decode("utf-8", "replace")
        return code, outcome, output
    finally:
        out.close()
        if out_path:
            try:
                os.unlink(out_path)
            except OSError:
                pass


def _supervise(proc, grace: float, mark: str, cancel, deadline) -> str:
    """Wait for the check to exit; TERM → grace → KILL its tree at the deadline or on cancel."""
    while True:
        step = None if cancel is None else _CANCEL_POLL_S
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            step = left if step is None else min(step, left)
        try:
            proc.wait(step)
            return SUCCEEDED
        except subprocess.TimeoutExpired:
            pass
        timed_out = deadline is not None and time.monotonic() >= deadline
        if timed_out or (cancel is not None and cancel.is_set()):
            kill_tree(proc.pid, grace, waiter(proc), mark=mark)
            proc.wait()
            return TIMED_OUT if timed_out else INTERRUPTED
