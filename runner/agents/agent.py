"""The agent process: receives one task at a time from the manager, runs it, reports the result.

An agent never outlives its manager: the kernel kills it when the manager dies (PR_SET_PDEATHSIG;
SIGKILL when the run has a watchdog, which then kills the tasks: runner.agents.watchdog), and its
pipe to the manager reads EOF, upon which it kills its task's process tree and exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys
import time

from runner.agents.execute import LogFiles, call_outcome, reap_children, run_attempt
from runner.agents.kill import descendants, kill_tree, wait_gone
from runner.agents.pipeline import run_attempt_pipeline
from runner.agents.outbox import Outbox
from runner.agents.watchdog import MARK, add_mark
from runner.agents.messages import (BatchResult, Cancel, ChunkReturn, Started, TaskBatch, TaskMessage, TaskResult, batch_messages,
                                    plain_row, task_result)
from runner.model import Outcome

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_prctl = None  # libc's prctl, looked up once (prctl below)

# The pid of the task's process group while one runs ("pid") and the attempt's mark ("mark"), for the
# signal handler. Owned by this process.
_running: dict[str, object] = {}

# A command's Started is sent once it has run this long: most no-op tasks end sooner, and their
# TaskResult alone says it all, one message and one wake-up of the manager fewer. Meanwhile the pid
# is in the manager's pid slot for this agent, so that the manager can kill the task if we die.
ANNOUNCE_AFTER_S = 0.05

# An agent's slot in the manager's shared map: the pid of the command it runs (0: none), and its
# position in the chunk it runs (-1: none). The agent writes the fields, the manager reads them.
PID_SLOT = struct.Struct("qq")
_FIELD = struct.Struct("q")


def agent_main(
    agent_id: str, role: str, conn, manager_pid: int, pid_slot=None, mark: str | None = None, outbox=None,
    environ: dict | None = None,
) -> None:
    """Entry point of an agent process; returns when told to stop or when the manager is gone.

    pid_slot: (shared mmap, offset) where the running command's pid is kept for the manager, or None
    (then every Started is sent at once). mark: the run's token (runner.agents.watchdog), put in our
    environment for all we start; with it, a watchdog kills our tasks should the manager die, and we
    die with the manager by SIGKILL (nothing of ours must run then, not even a blocked callable).
    outbox: shared memory where a chunk's results are kept until reported (runner.agents.outbox).
    environ: the tasks' environment, built by the manager before the fork (runner.coding.gitenv), so
    that twenty agents do not each import and build it; None: built here.
    """
    _watch_parent(manager_pid, signal.SIGKILL if mark else signal.SIGTERM)
    if mark:
        add_mark(mark)
    # Ctrl-C is the manager's to handle, and a hang-up (cron, nohup) is not the agent's business. Caught
    # by a no-op handler, not ignored: an ignored signal would stay ignored in every task exec'd from here.
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGHUP, _ignore)
    signal.signal(signal.SIGTERM, _on_term)
    from runner.coding.gitenv import environment, points_at_repository  # (invariant 7; imported before the fork)

    if environ is None:
        environ = environment(os.environ)
    for name in [k for k in os.environ if points_at_repository(k)]:  # a `call:` runs in this process, with its environ
        del os.environ[name]
    base_env = dict(environ, WVO_AGENT_ID=agent_id, WVO_AGENT_ROLE=role)
    if mark:  # built before the fork, without the mark add_mark just put in ours
        base_env[MARK] = os.environ[MARK]
    logs = LogFiles(agent_id)
    try:
        _serve(conn, base_env, logs, pid_slot, None if outbox is None else Outbox(outbox))
    finally:
        logs.close()
        _kill_orphans()


def _serve(conn, base_env: dict, logs: LogFiles, pid_slot=None, outbox: Outbox | None = None) -> None:
    announce_after = ANNOUNCE_AFTER_S if pid_slot is not None else 0.0

    def note_pid(pid: int) -> None:
        if pid:
            _running["pid"] = pid
        else:
            _running.pop("pid", None)
        if pid_slot is not None:
            _FIELD.pack_into(pid_slot[0], pid_slot[1], pid)

    def note_mark(mark: str) -> None:
        _running["mark"] = mark

    def note_position(position: int) -> None:
        if pid_slot is not None:
            _FIELD.pack_into(pid_slot[0], pid_slot[1] + _FIELD.size, position)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if isinstance(msg, Cancel):  # raced with the end of the task it meant
            continue
        if isinstance(msg, TaskBatch):
            try:
                result, stop = _run_batch(msg, conn, base_env, logs, note_pid, note_position, outbox)
            except (EOFError, OSError):
                return
            finally:
                _running.clear()
                reap_orphans()
            try:
                conn.send(result)
            except (OSError, ValueError):
                return
            note_position(-1)  # reported: the outbox's results are the manager's now
            if stop:  # told to stop mid-chunk: it has heard what ran; go
                return
            if logs.folder is not None:
                logs.prepare(logs.folder)  # while we wait for the next task
            continue
        if isinstance(msg, TaskMessage):
            try:
                result = run_attempt_pipeline(msg, conn, base_env, logs, announce_after, note_pid, note_mark)
            except (EOFError, OSError):
                return
            finally:
                _running.clear()
                reap_orphans()
            last = msg
        else:
            continue
        try:
            conn.send(result)
        except (OSError, ValueError):
            return
        logs.prepare(os.path.dirname(last.log_path))  # while we wait for the next task


# An agent gives back the unstarted rest of its chunk once a task of it has run this long, or once
# the chunk has taken this long in all: a task misjudged as quick holds the others up no longer.
GIVE_BACK_AFTER_S = 0.05


def _run_batch(
    batch: TaskBatch, conn, base_env: dict, logs: LogFiles, note_pid=None, note_position=None, outbox=None
) -> tuple[BatchResult, bool]:
    """Run a chunk of quick tasks in order; returns its result and whether the manager said to stop.

    A Cancel (or a stop order) gives the unstarted rest back, as does a task that turns out slow.

    note_position(i) tells the manager which task it is on, should this agent die: only that one
    counts as lost to the death; those before it are recorded from the outbox, where each result
    goes as its task ends (a result that does not fit ends the chunk: the rest is given back); the
    others go back to the queue.
    """
    results = []  # each a TaskResult, or a plain one's row (BatchResult)
    rest = batch_messages(batch)
    began = time.monotonic()
    channel = _ChunkChannel(conn, rest)
    calls = _ChunkCalls(logs)
    if outbox is not None:
        outbox.clear()
    try:
        while rest:
            msg = rest.pop(0)
            if note_position is not None:
                note_position(len(results))
            if msg.call:
                result, stray = calls.run(msg)
            else:
                calls.end()  # a command's output goes to its own log by its own descriptors
                result = plain_row(run_attempt(msg, channel, base_env, logs, GIVE_BACK_AFTER_S, note_pid))
                stray = reap_children()
            # A chunk's tasks carry no attempt mark (it costs a quick callable ~20 µs); what one left running
            # is below us all the same (we are a subreaper), and nothing else is.
            if stray:
                kill_tree(None, msg.grace, also=descendants(os.getpid()))
            results.append(result)
            if outbox is not None and not outbox.add(result):
                channel.give_back()  # the rest would run with nothing to show for them if we died
            now = time.monotonic()
            if type(result) is not tuple and result.outcome == "interrupted":
                channel.stopped = True
            elif conn.poll():
                order = conn.recv()
                channel.stopped = order is None or isinstance(order, Cancel)
                channel.exit = order is None
            if rest and (channel.stopped or now - began > GIVE_BACK_AFTER_S):
                channel.give_back()  # stopped: the manager ends them as not started; slow: others run them
    finally:
        calls.end()
    return BatchResult(tuple(results)), channel.exit


class _ChunkCalls:
    """A chunk's callables, run one after another with stdout and stderr sent to each one's log.

    The descriptors are saved once per chunk, not once per call, and fd 1 and 2 move only when the
    log file changes: a call that writes nothing leaves its spare file empty, and the next call
    writes into the same spare (runner.agents.execute.LogFiles). The environment a call is given
    (WVO_TASK_ID, ...) is set per call and put back as it was when the chunk ends.
    """

    def __init__(self, logs: LogFiles):
        self._logs = logs
        self._saved: tuple[int, int] | None = None  # our own stdout and stderr while fd 1 and 2 are a log's
        self._on: int | None = None  # the log descriptor fd 1 and 2 are copies of
        self._env: dict[str, str | None] = {}  # variable -> its value before the chunk set it
        self._set: set[str] = set()  # variables the last call was given
        self._given: dict[str, str] = {}  # variable -> the value the last call was given

    def run(self, msg) -> tuple[TaskResult | tuple, bool]:
        """One call; returns its result (a success as its row: runner.agents.messages.BatchResult) and
        whether it left a child process running."""
        start = time.time()
        environ = os.environ
        env = msg.env
        if env.keys() != self._set:  # a chunk's calls are usually given the same variables (WVO_TASK_ID, ...)
            for k in self._set.difference(env):
                self._restore(k)
            self._set = set(env)
        given = self._given
        for k, v in env.items():
            if k not in self._env:
                self._env[k] = environ.get(k)
            # A value other than the last call's is set (WVO_TASK_ID), without a read; the same one (WVO_ATTEMPT)
            # only when the last call changed it: a read is cheaper than putenv.
            if given.get(k) != v or environ.get(k) != v:
                environ[k] = given[k] = v
        if self._saved is None:
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = os.dup(1), os.dup(2)
        fd = self._logs.open(msg.log_path)
        if fd != self._on:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            self._on = fd
        value, error, outcome = call_outcome(msg)  # fd 2 is the task's log: a traceback lands there
        sys.stdout.flush()
        sys.stderr.flush()
        stray = reap_children()
        if self._logs.done(leftovers=lambda: stray):
            self._on = None  # closed: its number may be the next spare's, and fd 1 and 2 still write to it
        if outcome is Outcome.SUCCEEDED:
            return (msg.task_id, msg.attempt, start, time.time(), 0, self._on is None, None, value), stray
        return task_result({
            "task_id": msg.task_id, "attempt": msg.attempt, "outcome": outcome.value, "exit_code": 1, "start": start,
            "end": time.time(), "value": value, "error": error, "retry_after": None, "log": self._on is None, "pid": None,
            "workspace": None, "checks": (), "check_tail": None, "cli": None, "answer": None}), stray  # fmt: skip

    def end(self) -> None:
        """Our own stdout, stderr and environment back."""
        if self._saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, saved in zip((1, 2), self._saved):
                os.dup2(saved, fd)
                os.close(saved)
            self._saved = self._on = None
        for k in list(self._env):
            self._restore(k)
        self._env.clear()
        self._set = set()

    def _restore(self, k: str) -> None:
        v = self._env.get(k)
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class _ChunkChannel:
    """The pipe as a chunk's task sees it: its Started (it runs long) gives the chunk's rest back instead."""

    def __init__(self, conn, rest: list):
        self._conn = conn
        self._rest = rest  # the chunk's tasks not started yet; shared with _run_batch
        self.stopped = False  # a Cancel or a stop order came: start no more of the chunk
        self.exit = False  # the order was to stop the agent: exit once the result is sent

    def give_back(self) -> None:
        if self._rest:
            self._conn.send(ChunkReturn(tuple(m.task_id for m in self._rest)))
            self._rest.clear()

    def send(self, obj) -> None:
        if isinstance(obj, Started):
            self.give_back()
            return
        self._conn.send(obj)

    def recv(self):
        return self._conn.recv()

    def fileno(self) -> int:
        return self._conn.fileno()

    def poll(self, timeout=0.0):
        return self._conn.poll(timeout)


def _ignore(signum, frame) -> None:
    pass


def _on_term(signum, frame) -> None:
    """Kill what we run, and exit quietly whatever happens meanwhile.

    The signal may come in the middle of anything: whatever fails inside the handler, no traceback
    reaches the terminal. The task's tree and every process carrying its attempt's mark are killed.
    """
    try:
        pid, mark = _running.get("pid"), _running.get("mark")
        if pid or mark:
            kill_tree(pid, 0.5, mark=mark)
        _kill_orphans()
    except BaseException:  # noqa: BLE001
        pass
    finally:
        os._exit(128 + signum)


def reap_orphans() -> None:
    """Collect orphans of earlier tasks that were re-parented to us (we are their subreaper)."""
    reap_children()


def _kill_orphans() -> None:
    """On the way out: whatever a task left behind, even outside its process group, dies with us.

    We are a subreaper, so every orphaned descendant is below us: kill them all, and reap.
    """
    for _ in range(100):
        left = [p for p in descendants(os.getpid()) if p]
        if not left:
            return
        kill_tree(None, 0.0, also=left)
        wait_gone(left, time.monotonic() + 1.0)
        reap_orphans()


def prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux (PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER); False where it failed or does not exist.

    The function is looked up once, by the first caller. The manager calls it before it forks its
    agents (to become their subreaper), so that each agent only calls it: looking it up again cost
    each agent ~20 of the ~460 copy-on-write page faults it takes before its first task (~0.1 ms).
    """
    global _prctl
    if _prctl is None:
        if not sys.platform.startswith("linux"):
            return False
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return False
    return _prctl(option, value, 0, 0, 0) == 0


def _watch_parent(manager_pid: int, sig: int) -> None:
    """Ask the kernel for sig when the manager dies; exit now if it already has.

    Also become a subreaper, so that a task's daemonised grandchildren stay our descendants.
    """
    prctl(PR_SET_PDEATHSIG, sig)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != manager_pid:
        os._exit(1)
