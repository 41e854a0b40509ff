"""Run one attempt of a task: a command in its own session, or a callable in this process.

Output streams straight to the task's log file, so a task that prints a gigabyte costs memory nowhere.
An attempt whose output is read (an agent CLI's parser, a critic's verdict: `reader` given) prints into
a pipe instead: this process copies every byte to the log as it arrives and hands the same bytes to the
reader, so what is read is what the command printed, never what another process wrote into its log.

    command ──stdout+stderr──▶ pipe ──▶ _Pipe.drain ──▶ log file (byte for byte; `tail -f` works)
                                                    └──▶ reader(bytes)  (parser / answer)
A timeout TERMs the task's whole process tree and KILLs what is left after the grace period
(runner.agents.kill).
"""

from __future__ import annotations

import errno
import importlib
import json
import math
import os
import re
import signal
import stat
import sys
import time

from runner.agents.channel import wait_readable as wait
from runner.agents.kill import ATTEMPT_MARK, kill_tree
from runner.agents.messages import Cancel, Started, TaskMessage, TaskResult
from runner.model import Outcome

_RETRY_AFTER = re.compile(rb"retry[- _]after\D{0,5}(\d+(?:\.\d+)?)", re.IGNORECASE)
_TAIL = 64 * 1024  # bytes of a failed attempt's log searched for a rate-limit line
_NAME_LOG_AFTER_S = 0.2  # a running command's log takes its name this soon, so that it can be followed
_READ = 1 << 20  # bytes read from a command's output pipe at a time


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def new_private_file(path: str, access: int = os.O_WRONLY) -> int:
    """A descriptor (write, or `access`) on a new, empty file at path (0600): whatever was there is replaced,
    never followed: a task can reach the run folder and plant a symlink where its retry's log will be."""
    flags = access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, flags, 0o600)


class LogFiles:
    """An attempt's log file, made ahead of time and named only when there is something to keep.

    Creating a file costs 0.1-1 ms on a busy disk, more than a no-op task itself; renaming one costs
    ~10 µs. So an attempt writes into a spare file made in advance; the spare takes the attempt's name
    when the attempt has run for a while (its log can then be followed), or when it ends having
    written something. A quick attempt that wrote nothing leaves no file, and its spare serves the next.
    """

    def __init__(self, tag: str, lazy: bool = True):
        self._tag = tag
        self._lazy = lazy  # False: every attempt gets its log file at once, empty or not
        self._spare: tuple[str, int] | None = None  # (path, fd) of an empty file made in advance
        self._spare_folder: str | None = None  # the folder the spare is in
        self.folder: str | None = None  # the folder of the last attempt's log (where the next spare goes)
        self._unnamed: tuple[str, str] | None = None  # (spare path, log path) while the attempt's log has no name
        self._named: str | None = None  # the log path the attempt's file was given, checked by done()
        self._fd: int | None = None  # the attempt's log, open for writing (and reading: done() may copy it)

    def open(self, path: str) -> int:
        """A write descriptor for the attempt's log at path; owned by this object until done()."""
        spare = self._spare
        self._spare = None
        folder = self.folder
        if folder is None or path.rpartition("/")[0] != folder:  # the last log's folder (dirname, without its cost)
            folder = self.folder = os.path.dirname(path)
        if spare is not None and self._spare_folder != folder:
            self._discard(spare)
            spare = None
        if spare is None and self._lazy:
            self.prepare(folder)
            spare, self._spare = self._spare, None
        if spare is None:
            self._fd = new_private_file(path, os.O_RDWR)
            self._named = path
            return self._fd
        self._fd = spare[1]
        self._unnamed = (spare[0], path)
        if not self._lazy:
            self.name()
        return self._fd

    def name(self) -> None:
        """Give the running attempt's log its name now."""
        if self._unnamed is not None:
            spare_path, path = self._unnamed
            self._unnamed = None
            try:
                os.rename(spare_path, path)
            except OSError:
                pass
            self._named = path

    def done(self, leftovers=None) -> bool:
        """The attempt is over: True when its log file exists; False when it wrote nothing and left none.

        `leftovers()` says whether a descendant of the task may still hold the file open: then the log
        is kept even empty, so that nothing a straggler writes lands in another attempt's log.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return False
        if self._unnamed is not None and self._lazy:
            try:
                empty = os.fstat(fd).st_size == 0
            except OSError:
                empty = False
            if empty and not (leftovers and leftovers()):
                self._spare = (self._unnamed[0], fd)
                self._unnamed = None
                return False
        self.name()
        named, self._named = self._named, None
        if named is not None:
            _keep_at(fd, named)
        os.close(fd)
        return True

    def prepare(self, folder: str) -> None:
        """Make the spare for the next attempt in folder; harmless if it cannot."""
        if self._spare is None:
            path = os.path.join(folder, f".spare-{self._tag}")
            try:
                self._spare = (path, new_private_file(path, os.O_RDWR))
                self._spare_folder = folder
            except OSError:
                pass

    def close(self) -> None:
        if self._spare is not None:
            self._discard(self._spare)
            self._spare = None

    @staticmethod
    def _discard(spare: tuple[str, int]) -> None:
        os.close(spare[1])
        try:
            os.unlink(spare[0])
        except OSError:
            pass


def _keep_at(fd: int, path: str) -> None:
    """The attempt's log (fd) must be the file at path when it ends. A task can reach the run folder: had it put a
    symlink (or anything) in place of the log, or of the spare before it took the log's name, the output would
    be in a file nobody can find. Then a fresh private file takes the name, with the output copied and a note."""
    try:
        ours, there = os.fstat(fd), os.lstat(path)
        if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino):
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    try:
        out = new_private_file(path)
    except OSError:
        return
    try:
        offset = 0
        while chunk := os.pread(fd, _READ, offset):
            os.write(out, chunk)
            offset += len(chunk)
        os.write(out, f"\n[wvo-batch: this log was replaced by something else while the attempt ran; its output, "
                      f"{offset} bytes, is kept here]\n".encode())
    except OSError:
        pass
    finally:
        os.close(out)


def run_attempt(
    msg: TaskMessage,
    conn,
    base_env: dict[str, str],
    logs: LogFiles | None = None,
    announce_after: float = 0.0,
    note_pid=None,
    reader=None,
) -> TaskResult:
    """Run one attempt; a Cancel arriving on conn stops it.

    A command's Started goes to conn once it has run for announce_after seconds (0: at once); one
    that ends sooner is reported by its TaskResult alone. note_pid(pid) is called as soon as the
    command is up, and note_pid(0) when it is gone, for whoever must kill it if this process dies.
    reader(bytes), for a command only: its output comes through a pipe, each chunk copied to the log
    and then given to reader, in order, in this thread.
    """
    logs = logs or LogFiles(str(os.getpid()), lazy=False)
    if msg.call:
        return _run_callable(msg, conn, base_env, logs)
    return _run_command(msg, conn, base_env, logs, announce_after, note_pid, reader)


def _run_command(msg: TaskMessage, conn, base_env: dict[str, str], logs: LogFiles, announce_after: float = 0.0, note_pid=None,
                 reader=None) -> TaskResult:
    env = {**base_env, **msg.env}
    start = time.time()
    pipe = None
    try:
        log = logs.open(msg.log_path)
        try:
            pipe = _Pipe(log, reader) if reader is not None else None
            proc = _start(msg, env, log if pipe is None else pipe.write_end)
        except OSError:
            if pipe is not None:
                pipe.close()
            logs.done()
            raise
    except OSError as exc:
        append_to_log(msg.log_path, f"wvo-batch: cannot start {msg.command!r}: {exc}\n")
        return TaskResult(msg.task_id, msg.attempt, Outcome.FAILED.value, 127, start, time.time(), error=str(exc))
    if pipe is not None:
        pipe.started()
    if note_pid is not None:
        note_pid(proc.pid)
    started = Started(msg.task_id, msg.attempt, proc.pid, start)
    if announce_after <= 0:
        conn.send(started)
        started = None
    try:
        outcome, error = _supervise(proc, msg, conn, logs, started, announce_after, pipe)
    except BaseException:  # the manager is gone: _supervise has killed the command
        if pipe is not None:
            pipe.close()
        raise
    code = proc.returncode
    _signal_group(proc.pid, signal.SIGKILL)  # nothing the task left behind outlives it
    if pipe is not None:
        # What the command printed before it ended is in the pipe; a straggler that still holds the
        # pipe open (outside the group: the attempt's end kills it) is not waited for.
        pipe.drain()
        pipe.close()
    if note_pid is not None:
        note_pid(0)
    logged = logs.done(leftovers=reap_children)
    end = time.time()
    retry_after = None
    if outcome is None:
        if code == 0:
            outcome = Outcome.SUCCEEDED
        else:
            outcome, retry_after = _classify_failure(msg, code, None if pipe is None else pipe.tail())
            error = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
    return TaskResult(
        msg.task_id, msg.attempt, outcome.value, code, start, end, error=error, retry_after=retry_after, log=logged, pid=proc.pid
    )


def _start(msg: TaskMessage, env: dict[str, str], log: int):
    """The task's process, in a session of its own, stdin from /dev/null, stdout and stderr to log.

    posix_spawn (vfork + exec in glibc) costs about a third less than subprocess.Popen, which builds
    the child in Python; Popen remains for a working directory, which posix_spawn cannot set here.
    """
    argv = ["/bin/sh", "-c", msg.command] if isinstance(msg.command, str) else list(msg.command)
    if msg.cwd is not None or not hasattr(os, "posix_spawnp"):
        import subprocess  # lazily: ~3 ms of start-up, for tasks with a working directory only

        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=msg.cwd, env=env, start_new_session=True
        )
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)]
    return _Spawned(
        os.posix_spawn(_executable(argv[0], env), argv, env, file_actions=actions, setsid=True, setsigdef=_DEFAULT_SIGNALS)
    )


# Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec, so a task's
# `yes | head -1` would never end. Popen restores them (restore_signals); posix_spawn is told to.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


_found: dict[tuple[str, str | None], str] = {}  # (name, the task's PATH) -> executable, found once per agent


def _executable(name: str, env: dict[str, str]) -> str:
    """Find name on the task's own PATH, as Popen does (posix_spawnp would search the agent's)."""
    if "/" in name:
        return name
    key = (name, env.get("PATH"))
    found = _found.get(key)
    if found is None:
        for folder in os.get_exec_path(env):
            path = os.path.join(folder, name)
            if os.access(path, os.X_OK) and os.path.isfile(path):
                found = _found[key] = path
                break
        else:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
    return found


class _Pipe:
    """A command's stdout and stderr as this process reads them: copied to the log, then to the reader.

    Only the command's own output reaches the reader. The log file is a copy for people (`tail -f`);
    whatever else writes into it is never read back.
    """

    def __init__(self, log: int, reader):
        self._log = log  # the attempt's log, open for writing (owned by LogFiles)
        self._reader = reader
        self.read_end, self.write_end = os.pipe()  # both close-on-exec; the child gets write_end as 1 and 2
        import fcntl  # lazily: plain commands never need it

        # appending: wvo-batch's own lines (append_to_log) are never overwritten by a later copy
        fcntl.fcntl(log, fcntl.F_SETFL, fcntl.fcntl(log, fcntl.F_GETFL) | os.O_APPEND)
        self._tail = bytearray()  # the last of the output, up to 2 * _TAIL (classify a failure by it)
        self._open = True  # False at EOF: no process holds the write end any more

    def started(self) -> None:
        """The command is up with its copy of the write end: ours goes, so that EOF can come."""
        os.close(self.write_end)
        self.write_end = -1
        os.set_blocking(self.read_end, False)

    def drain(self) -> None:
        """Read what the pipe holds now, without waiting for more."""
        while self._open:
            try:
                data = os.read(self.read_end, _READ)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not data:
                self._open = False
                return
            _write_all(self._log, data)
            self._tail += data
            if len(self._tail) > 2 * _TAIL:
                del self._tail[:-_TAIL]
            self._reader(data)

    def waitable(self) -> list[int]:
        return [self.read_end] if self._open else []

    def tail(self) -> bytes:
        return bytes(self._tail[-_TAIL:])

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            if fd >= 0:
                os.close(fd)
        self.read_end = self.write_end = -1
        self._open = False


def _write_all(fd: int, data: bytes) -> None:
    """Copy to the log; a log that cannot be written (disk full) does not stop the reading."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            return


class _Spawned:
    """What _supervise needs of a Popen, for a child started with posix_spawn."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (an orphan sweep): the exit code is lost
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.poll() is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:
                    self.poll()
            return self.returncode
        deadline = time.monotonic() + timeout
        fd = _pidfd(self.pid)
        try:
            while self.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    import subprocess

                    raise subprocess.TimeoutExpired(str(self.pid), timeout)
                if fd is None:
                    time.sleep(min(left, 0.01))  # no pidfd (old kernel): a short bounded poll
                else:
                    wait([fd], left)
        finally:
            _close(fd)
        return self.returncode


def reap_children() -> bool:
    """Reap what has exited among our children; True when some still run (a task's stragglers)."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return True
    except ChildProcessError:
        return False


def child_pids() -> list[int] | None:
    """Our children, from /proc (every thread's); None on a kernel that does not list them."""
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.extend(int(p) for p in f.read().split())
    except OSError:
        return None
    return pids


def _supervise(proc, msg: TaskMessage, conn, logs: LogFiles, started: Started | None = None, announce_after: float = 0.0,
               pipe: _Pipe | None = None) -> tuple[Outcome | None, str | None]:
    """Wait for the process, its deadline, or a Cancel, reading its output pipe when it has one; returns
    (outcome, error) when it was stopped.

    `started`, when given, is sent once the process has run for announce_after seconds.
    """
    now = time.monotonic()
    deadline = None if msg.timeout is None else now + msg.timeout
    name_at = now + _NAME_LOG_AFTER_S  # from then on the log can be followed under its own name
    announce_at = now + announce_after if started is not None else math.inf
    pidfd = _pidfd(proc.pid)
    while True:
        until = min(name_at, announce_at, math.inf if deadline is None else deadline)
        remaining = None if until == math.inf else max(0.0, until - time.monotonic())
        if pidfd is None:
            remaining = 0.05 if remaining is None else min(remaining, 0.05)
        ready = wait(([conn] if pidfd is None else [pidfd, conn]) + (pipe.waitable() if pipe is not None else []), remaining)
        if pipe is not None:
            pipe.drain()
        if proc.poll() is not None:
            break
        now = time.monotonic()
        if now >= announce_at:
            conn.send(started)
            announce_at = math.inf
        if now >= name_at:
            logs.name()
            name_at = math.inf
        if conn in ready:
            try:
                order = conn.recv()
            except EOFError:  # the manager is gone: stop the task and let the agent exit
                kill_tree(proc.pid, 0.5, waiter(proc), mark=msg.env.get(ATTEMPT_MARK))
                proc.wait()
                logs.name()
                raise
            if isinstance(order, Cancel):
                kill_tree(proc.pid, order.grace, waiter(proc), mark=msg.env.get(ATTEMPT_MARK))
                proc.wait()
                _close(pidfd)
                return Outcome.INTERRUPTED, "interrupted"
        elif deadline is not None and time.monotonic() >= deadline:
            kill_tree(proc.pid, msg.grace, waiter(proc), mark=msg.env.get(ATTEMPT_MARK))
            proc.wait()
            _close(pidfd)
            logs.name()
            if pipe is not None:
                pipe.drain()  # what it printed goes before the line that says why it ended
            append_to_log(msg.log_path, f"\nwvo-batch: timed out after {msg.timeout:g}s; process tree killed\n")
            return Outcome.TIMED_OUT, f"timed out after {msg.timeout:g}s"
    _close(pidfd)
    return None, None


def waiter(proc):
    """wait_root(timeout) for kill_tree: the root reaped as soon as it exits (the check runner uses it too)."""
    def wait_root(timeout: float) -> None:
        import subprocess

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


def _classify_failure(msg: TaskMessage, code: int, tail: bytes | None = None) -> tuple[Outcome, float | None]:
    """Rate limited or failed, by the tail of the output: the one read through its pipe, else the log's."""
    if not msg.rate_limit_pattern:
        return Outcome.FAILED, None
    if tail is None:
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


def append_to_log(path: str, text: str) -> None:
    """Add wvo-batch's own line to an attempt's log; a log that cannot be written is no reason to fail."""
    try:  # never through a symlink, nor blocking on a FIFO: the task may have put either at its log's place
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            data = memoryview(text.encode("utf-8", "surrogateescape"))
            while data:
                data = data[os.write(fd, data):]
    except OSError:
        pass
    finally:
        os.close(fd)


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
    here = None
    try:
        try:
            if msg.cwd is not None:  # the task's folder, as a command's; this process's comes back after
                here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                os.chdir(msg.cwd)
        except OSError as exc:
            value, error, outcome = None, f"cannot start {msg.call}: {exc}", Outcome.FAILED
        else:
            value, error, outcome = call_outcome(msg)
    finally:
        if here is not None:
            os.fchdir(here)
            os.close(here)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    logged = logs.done(leftovers=reap_children)
    code = 0 if outcome is Outcome.SUCCEEDED else 1
    return TaskResult(msg.task_id, msg.attempt, outcome.value, code, start, time.time(), value=value, error=error, log=logged)


def call_outcome(msg: TaskMessage) -> tuple[object, str | None, Outcome]:
    """(value, error, outcome) of calling the attempt's function; its traceback goes to fd 2 (the task's log)."""
    try:
        return call_value(msg), None, Outcome.SUCCEEDED
    except (Exception, SystemExit) as exc:  # a task's exception is its outcome
        import traceback  # not at start-up: a run whose calls succeed never needs it

        os.write(2, traceback.format_exc().encode(errors="replace"))
        return None, f"{type(exc).__name__}: {exc}", Outcome.FAILED


def call_value(msg: TaskMessage):
    """Call the attempt's function; its return value as JSON can hold it (repr otherwise). Raises what it raises."""
    value = _function(msg.call)(*msg.args, **msg.kwargs)
    if value is not None and not isinstance(value, (bool, int, float, str)):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
    return value


_functions: dict[str, object] = {}  # "module:function" -> the function, resolved once per agent


def _function(call: str):
    func = _functions.get(call)
    if func is None:
        module_name, _, func_name = call.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        _functions[call] = func
    return func
