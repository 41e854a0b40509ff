"""Run one attempt of a task: a command in its own session, or a callable in this process.

Output streams straight to the task's log file, so a task that prints a gigabyte costs memory nowhere.
A timeout TERMs the task's whole process tree and KILLs what is left after the grace period.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import wait

from runner.messages import Cancel, Started, TaskMessage, TaskResult
from runner.model import Outcome

_RETRY_AFTER = re.compile(rb"retry[- _]after\D{0,5}(\d+(?:\.\d+)?)", re.IGNORECASE)
_TAIL = 64 * 1024  # bytes of a failed attempt's log searched for a rate-limit line


def kill_tree(pid: int, grace: float, wait_root=None) -> None:
    """TERM the process group led by pid and every descendant, KILL whatever outlives grace.

    `wait_root(timeout)` waits for pid itself when it is our child (psutil must not reap it, or
    its exit code is lost); without it, only the descendants are waited for.
    """
    procs = _descendants(pid)
    _signal_group(pid, signal.SIGTERM)
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    if wait_root is not None:
        wait_root(grace)
    for p in procs:
        _wait_gone(p, deadline)
    _signal_group(pid, signal.SIGKILL)
    for p in procs:
        _signal(p, signal.SIGKILL)


def _descendants(pid: int) -> list:
    """Every descendant of pid (not pid itself), also those that left its process group."""
    import psutil  # lazily: only the timeout and death paths need it

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal(proc, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except Exception:  # already gone, or a zombie we may not signal
        pass


def _wait_gone(proc, deadline: float) -> None:
    """Wait until proc has exited (a zombie counts: its parent may never reap it) or the deadline."""
    import psutil

    delay = 0.002
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        time.sleep(delay)  # bounded back-off on the kill path only; there is no event for a non-child's exit
        delay = min(delay * 2, 0.05)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LogFiles:
    """Creates the next attempt's log file ahead of time, while the agent waits for work.

    Creating a file costs 20 µs to ~1 ms on a busy disk; renaming the spare into place costs ~10 µs.
    """

    def __init__(self, tag: str):
        self._tag = tag
        self._spare: tuple[str, int] | None = None  # (path, fd) of an empty file made in advance

    def open(self, path: str) -> int:
        """A write descriptor for a new, empty log file at path."""
        if self._spare is not None and os.path.dirname(self._spare[0]) == os.path.dirname(path):
            spare_path, fd = self._spare
            self._spare = None
            try:
                os.rename(spare_path, path)
                return fd
            except OSError:
                os.close(fd)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def prepare(self, folder: str) -> None:
        """Make the spare for the next attempt in folder; harmless if it cannot."""
        if self._spare is None:
            path = os.path.join(folder, f".spare-{self._tag}")
            try:
                self._spare = (path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            except OSError:
                pass

    def close(self) -> None:
        if self._spare is not None:
            path, fd = self._spare
            self._spare = None
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass


def run_attempt(msg: TaskMessage, conn, base_env: dict[str, str], logs: LogFiles | None = None) -> TaskResult:
    """Run one attempt; reports Started on conn; a Cancel arriving on conn stops it."""
    logs = logs or LogFiles(str(os.getpid()))
    if msg.call:
        return _run_callable(msg, conn, base_env, logs)
    return _run_command(msg, conn, base_env, logs)


def _run_command(msg: TaskMessage, conn, base_env: dict[str, str], logs: LogFiles) -> TaskResult:
    env = {**base_env, **msg.env}
    start = time.time()
    try:
        log = logs.open(msg.log_path)
        try:
            proc = subprocess.Popen(
                msg.command if isinstance(msg.command, str) else list(msg.command),
                shell=isinstance(msg.command, str),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=msg.cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(log)
    except OSError as exc:
        _append(msg.log_path, f"wvo-batch: cannot start {msg.command!r}: {exc}\n")
        return TaskResult(msg.task_id, msg.attempt, Outcome.FAILED.value, 127, start, time.time(), error=str(exc))
    conn.send(Started(msg.task_id, msg.attempt, proc.pid, start))
    outcome, error = _supervise(proc, msg, conn)
    code = proc.returncode
    _signal_group(proc.pid, signal.SIGKILL)  # nothing the task left behind outlives it
    end = time.time()
    retry_after = None
    if outcome is None:
        if code == 0:
            outcome = Outcome.SUCCEEDED
        else:
            outcome, retry_after = _classify_failure(msg, code)
            error = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
    return TaskResult(msg.task_id, msg.attempt, outcome.value, code, start, end, error=error, retry_after=retry_after)


def _supervise(proc: subprocess.Popen, msg: TaskMessage, conn) -> tuple[Outcome | None, str | None]:
    """Wait for the process, its deadline, or a Cancel; returns (outcome, error) when it was stopped."""
    deadline = None if msg.timeout is None else time.monotonic() + msg.timeout
    pidfd = _pidfd(proc.pid)
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if pidfd is None:
            remaining = 0.05 if remaining is None else min(remaining, 0.05)
        ready = wait([conn] if pidfd is None else [pidfd, conn], remaining)
        if proc.poll() is not None:
            break
        if conn in ready:
            try:
                order = conn.recv()
            except EOFError:  # the manager is gone: stop the task and let the agent exit
                kill_tree(proc.pid, 0.5, _waiter(proc))
                proc.wait()
                raise
            if isinstance(order, Cancel):
                kill_tree(proc.pid, order.grace, _waiter(proc))
                proc.wait()
                _close(pidfd)
                return Outcome.INTERRUPTED, "interrupted"
        elif deadline is not None and time.monotonic() >= deadline:
            kill_tree(proc.pid, msg.grace, _waiter(proc))
            proc.wait()
            _close(pidfd)
            _append(msg.log_path, f"\nwvo-batch: timed out after {msg.timeout:g}s; process tree killed\n")
            return Outcome.TIMED_OUT, f"timed out after {msg.timeout:g}s"
    _close(pidfd)
    return None, None


def _waiter(proc: subprocess.Popen):
    def wait_root(timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    return wait_root


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _classify_failure(msg: TaskMessage, code: int) -> tuple[Outcome, float | None]:
    if not msg.rate_limit_pattern:
        return Outcome.FAILED, None
    try:
        with open(msg.log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
            tail = f.read()
    except OSError:
        return Outcome.FAILED, None
    # An agent CLI may echo its prompt: a task whose title says "rate limit" must not read as one.
    if not isinstance(msg.command, str):
        for part in msg.command or ():
            if len(part) >= 20:
                tail = tail.replace(part.encode(errors="replace"), b"")
    if not re.search(msg.rate_limit_pattern.encode(), tail, re.IGNORECASE):
        return Outcome.FAILED, None
    m = _RETRY_AFTER.search(tail)
    return Outcome.RATE_LIMITED, float(m.group(1)) if m else None


def _append(path: str, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def _run_callable(msg: TaskMessage, conn, base_env: dict[str, str], logs: LogFiles) -> TaskResult:
    """Call module:function in this process, its stdout/stderr sent to the task's log."""
    start = time.time()  # no Started message: there is no process to report, the result carries the start
    saved_env = {k: os.environ.get(k) for k in msg.env}
    os.environ.update(msg.env)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = logs.open(msg.log_path)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    value, error, outcome = None, None, Outcome.SUCCEEDED
    try:
        module_name, _, func_name = msg.call.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(*msg.args, **msg.kwargs)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
    except (Exception, SystemExit) as exc:  # a task's exception is its outcome
        os.write(2, traceback.format_exc().encode(errors="replace"))  # fd 2 is the task's log
        outcome, error = Outcome.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    code = 0 if outcome is Outcome.SUCCEEDED else 1
    return TaskResult(msg.task_id, msg.attempt, outcome.value, code, start, time.time(), value=value, error=error)
