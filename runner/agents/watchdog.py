"""The run's watchdog: when the manager dies, however it died, nothing the run started is left.

    manager ──fork──▶ watchdog (setsid: outside the run's process group and session)
       │                 poll([pidfd of the manager, stop pipe])  — asleep: no cost per task, none idle
       │ stop(): "q"     manager gone ─▶ TERM (+CONT), then KILL after a grace, every marked process
       ▼
    agents (PR_SET_PDEATHSIG = SIGKILL: they die with the manager, even blocked in C or stopped)
       └─ os.environ[MARK] += token ─▶ tasks, a callable's subprocesses, and all they start inherit it

Why this design, of the three that were on the table:
- A parent-death signal on every task process reaches only the task's first process (not what
  `sh -c 'a; b &'` or a daemon starts, which re-parent to PID 1), fires on the death of the forking
  *thread*, and needs code between fork and exec — posix_spawn, which makes the no-op path a third
  cheaper, cannot run any; a re-exec shim would cost ~1 ms per task.
- A cgroup holds a tree exactly, but needs a delegated cgroup v2 subtree, which shells, cron and
  most CI jobs do not have.
- A watchdog outside the group survives `kill -KILL -<pgid>` (timeout -s KILL, a cancelled CI job),
  costs one fork per run (~1 ms), and finds the tasks by a mark in their environment: WVO_RUN_MARKS,
  a list of run tokens that a nested run extends, so an outer watchdog sees an inner run's tasks too.
  A process that cleared its environment is still found when it stays in the session of a marked
  task (each task leads a session of its own). Only a process that both clears its environment and
  leaves its task's session escapes, and only when the manager itself is killed.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

MARK = "WVO_RUN_MARKS"  # a colon-separated list of run tokens, in the environment of everything a run starts
_GRACE_S = 1.0  # between the TERM and the KILL, when the manager is gone
_POLL_S = 0.5  # without a pidfd (kernels before 5.3): how often the watchdog looks for its parent


def new_token() -> str:
    return os.urandom(8).hex()  # not uuid: it imports platform (~2 ms of every start-up)


def add_mark(token: str) -> None:
    """Mark this process's environment (an agent's), for everything it starts from now on."""
    old = os.environ.get(MARK)
    os.environ[MARK] = f"{old}:{token}" if old else token


class Watchdog:
    """The manager's handle on its watchdog process (local agents only)."""

    def __init__(self, token: str):
        self.token = token
        self.pid: int | None = None
        self._stop_w: int | None = None
        self._start()

    def _start(self) -> None:
        _reap_exited()
        if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
            return
        manager = os.getpid()
        try:
            pidfd = os.pidfd_open(manager)
        except (AttributeError, OSError):
            pidfd = -1
        stop_r, stop_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the watchdog
            try:
                _become_watchdog(manager, pidfd, stop_r, self.token)
            finally:
                os._exit(0)
        os.close(stop_r)
        if pidfd >= 0:
            os.close(pidfd)
        self.pid, self._stop_w = pid, stop_w

    def stop(self) -> None:
        """The run is over and its processes are gone: the watchdog exits without looking."""
        if self._stop_w is None:
            return
        try:
            os.write(self._stop_w, b"q")
        except OSError:
            pass
        os.close(self._stop_w)
        self._stop_w = None
        _exited.append(self.pid)  # it exits at once on the byte; reaped without waiting for it
        _reap_exited()


_exited: list[int] = []  # watchdogs told to exit, not reaped yet (in a program that runs many runs)


def _reap_exited() -> None:
    for pid in list(_exited):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _exited.remove(pid)


def _become_watchdog(manager: int, pidfd: int, stop_r: int, token: str) -> None:
    os.setsid()
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)  # a group's TERM (a nested run's outer watchdog) must not stop the sweep
    except ValueError:  # forked from a thread Python does not take for the main one: watch all the same
        pass
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # a caller reading our output to its end must not wait for the watchdog
        os.dup2(null, fd)
    keep = {0, 1, 2, pidfd, stop_r}
    for name in os.listdir("/proc/self/fd"):  # the manager's other files (ledger, lock, sockets) are not ours
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
    poller = select.poll()
    poller.register(stop_r, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll(None if pidfd >= 0 else _POLL_S * 1000)}
        if pidfd in ready or os.getppid() != manager:
            break
        if stop_r in ready:
            if os.read(stop_r, 1) == b"q":
                return  # the manager ended the run itself, and swept
            break  # EOF without the byte: the manager (and the agents, which inherited the pipe) died
    sweep(token)


def sweep(token: str, grace: float = _GRACE_S) -> list[int]:
    """TERM every process of the run marked by token, KILL what is left after grace; returns those found."""
    from runner.agents.kill import kill_tree

    found = marked(token)
    kill_tree(None, grace, also=found)
    for _ in range(20):  # new processes may be forked while we kill: until a look finds none
        left = marked(token)
        if not left:
            break
        for pid in left:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return found


def marked(token: str) -> list[int]:
    """Live processes whose environment carries token, and those in sessions such a process leads."""
    me = os.getpid()
    want = token.encode()
    sessions: dict[int, int] = {}  # pid -> its session id
    hits: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            if fields[0] == b"Z":
                continue
            sessions[pid] = int(fields[3])
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if _has_token(env, want):
            hits.add(pid)
    leaders = {pid for pid in hits if sessions.get(pid) == pid}
    hits.update(pid for pid, sid in sessions.items() if sid in leaders and pid != me)
    return sorted(hits)


def carries(pid: int, token: str) -> bool:
    """True when process pid's environment carries the run's token."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return _has_token(f.read(), token.encode())
    except OSError:
        return False


def _has_token(environ: bytes, token: bytes) -> bool:
    prefix = MARK.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return token in entry[len(prefix):].split(b":")
    return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
