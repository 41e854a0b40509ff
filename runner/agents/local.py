"""Agents as local OS processes (fork), one duplex pipe each.

The interface every backend keeps: start(agent_id, role), send(agent_id, msg),
wait(timeout, extra) -> [(agent_id, message | AgentGone)], kill(agent_id), pid(agent_id), stop(timeout).
A dead agent is seen at once: wait() watches every agent's process sentinel beside its pipe.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import sys
import time

from runner.agents import outbox
from runner.agents.agent import PID_SLOT as _SLOT, PR_SET_CHILD_SUBREAPER, agent_main, prctl
from runner.agents.execute import child_pids
from runner.agents.kill import is_stopped, kill_tree
from runner.agents.backend import AgentGone
from runner.agents.channel import Channel, pair, wait_readable
from runner.agents.watchdog import MARK, Watchdog, carries, new_token

_SPARED = "-manager"  # a second token: started by the manager itself, not by a dead agent

_SLOTS = 4096  # agents alive at once with a pid slot; beyond that, an agent sends every Started at once


class _Agent:
    """A forked agent process: its pid, its exit status once reaped, and a descriptor for its death."""

    def __init__(self, pid: int, sentinel: int):
        self.pid = pid
        self.sentinel = sentinel  # a pidfd, or the read end of a pipe the agent holds open
        self.exitcode: int | None = None  # as multiprocessing reports it: -N when killed by signal N
        self._closed = False

    def join(self, timeout: float) -> None:
        """Reap the agent if it exits within timeout."""
        deadline = time.monotonic() + timeout
        while self.exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.exitcode = -signal.SIGKILL  # reaped by someone else: how it ended is lost
                break
            if pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait_readable([self.sentinel], left)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.sentinel)


def _fork_agent(agent_id: str, role: str, theirs: Channel, close_fds: list[int], pid_slot, mark: str, box, environ: dict) -> _Agent:
    manager_pid = os.getpid()
    death_r, death_w = os.pipe()  # the fallback sentinel, for kernels without pidfd_open
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the agent
        code = 1
        try:
            signal.set_wakeup_fd(-1)  # the manager's signal wake-up pipe is not ours to write to
            os.close(death_r)
            for fd in close_fds:  # the manager's ends and the other agents' pipes: EOF must reach them
                try:
                    os.close(fd)
                except OSError:
                    pass
            agent_main(agent_id, role, theirs, manager_pid, pid_slot, mark, box, environ)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - an agent's last words go to stderr, then it exits
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(death_w)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return _Agent(pid, death_r)
    os.close(death_r)
    return _Agent(pid, pidfd)


def _set_subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False when it cannot."""
    return prctl(PR_SET_CHILD_SUBREAPER, int(on))


def _reap(pid: int, timeout: float) -> None:
    """Reap a killed child, waiting at most timeout (a process stuck in the kernel must not hang us)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        if fd is not None:
            wait_readable([fd], timeout)
        os.waitpid(pid, os.WNOHANG if fd is not None else 0)
    except ChildProcessError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


class LocalBackend:
    name = "local"

    def __init__(self):
        self._procs: dict[str, _Agent] = {}  # agent id -> process
        self._conns: dict[str, Channel] = {}  # agent id -> manager's end of its channel
        self._by_fd: dict[int, tuple[str, str]] = {}  # fd of a conn / sentinel -> (agent id, "conn" | "sentinel")
        self._poll = select.poll()  # kept across calls: registering every fd on every wait costs more than the wait
        self._extra: set[int] = set()  # fds of the caller's that are registered too
        # Shared with every agent (inherited across fork): each agent's slot holds the pid of the
        # command it runs, before the manager hears of it through a Started.
        self._slots = mmap.mmap(-1, _SLOTS * _SLOT.size)
        self._free_slots = list(range(_SLOTS - 1, -1, -1))
        self._slot_of: dict[str, int] = {}  # agent id -> its slot
        self._outboxes: dict[str, mmap.mmap] = {}  # agent id -> shared memory its chunk's results go to
        # A subreaper: when an agent dies, its task (and whatever that left) becomes our child at that
        # very moment, so that the sweep below kills it even if its pid never reached us.
        self._reaper = _set_subreaper(True)
        # Everything the agents start carries the token; should this process die, the watchdog kills it.
        self._watchdog = Watchdog(new_token())

    def start(self, agent_id: str, role: str) -> int:
        """Start an agent process; returns its pid."""
        ours, theirs = pair()
        close = [fd for c in self._conns.values() for fd in c.fds()] + list(ours.fds())
        close += [p.sentinel for p in self._procs.values()]
        slot = self._free_slots.pop() if self._free_slots else None
        if slot is not None:
            self._slot_of[agent_id] = slot
            _SLOT.pack_into(self._slots, slot * _SLOT.size, 0, -1)
        slot_at = None if slot is None else (self._slots, slot * _SLOT.size)
        box = self._outboxes[agent_id] = mmap.mmap(-1, outbox.SIZE)  # pages are used only once written
        from runner.coding.gitenv import environment  # no GIT_* that points at the caller's repository (invariant 7)

        # Built here, once per agent, and inherited through the fork: each agent importing and building it
        # cost ~1 ms of its start-up, twenty agents on two cores a stagger of ~10 ms before the last one ran.
        environ = environment(os.environ)
        proc = _fork_agent(agent_id, role, theirs, close, slot_at, self._watchdog.token, box, environ)
        theirs.close()
        self._procs[agent_id] = proc
        self._conns[agent_id] = ours
        self._watch(ours.fileno(), (agent_id, "conn"))
        self._watch(proc.sentinel, (agent_id, "sentinel"))
        return proc.pid

    def _watch(self, fd: int, owner: tuple[str, str]) -> None:
        self._by_fd[fd] = owner
        self._poll.register(fd, select.POLLIN)

    def task_pid(self, agent_id: str) -> int | None:
        """The pid of the command the agent is running, as the agent put it in its slot (None: none)."""
        slot = self._slot_of.get(agent_id)
        if slot is None:
            return None
        return _SLOT.unpack_from(self._slots, slot * _SLOT.size)[0] or None

    def chunk_position(self, agent_id: str) -> int | None:
        """Which task of its chunk the agent was on (0-based), as it noted in its slot; None: unknown."""
        slot = self._slot_of.get(agent_id)
        if slot is None:
            return None
        position = _SLOT.unpack_from(self._slots, slot * _SLOT.size)[1]
        return position if position >= 0 else None

    def stopped(self, agent_id: str) -> bool:
        """True when the agent's process is stopped (SIGSTOP, or traced): it cannot answer anything."""
        proc = self._procs.get(agent_id)
        if proc is None or proc.exitcode is not None:
            return False
        return is_stopped(proc.pid)

    def pid(self, agent_id: str) -> int | None:
        proc = self._procs.get(agent_id)
        return proc.pid if proc else None

    def send(self, agent_id: str, msg) -> bool:
        """Send a message; False when the agent is already gone (its death will be reported by wait)."""
        try:
            self._conns[agent_id].send(msg)
            return True
        except (OSError, KeyError, ValueError):
            return False

    def wait(self, timeout: float | None, extra: list[int] | None = None) -> tuple[list[tuple[str, object]], list]:
        """Block until a message, a death, or an extra fd is ready; returns (events, ready extra fds)."""
        for fd in extra or ():
            if fd not in self._extra:
                self._extra.add(fd)
                self._poll.register(fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        ready = self._poll.poll(ms)  # PEP 475: retried on EINTR with the time left; the wake-up fd says "signal"
        events: list[tuple[str, object]] = []
        dead: list[str] = []
        extras = []
        for fd, _ in ready:
            owner = self._by_fd.get(fd)
            if owner is None:
                if fd in self._extra:
                    extras.append(fd)
                continue
            agent_id, kind = owner
            if kind == "sentinel":
                dead.append(agent_id)
            else:
                self._drain(agent_id, events, dead, readable=True)
        for agent_id in dict.fromkeys(dead):
            if agent_id in self._procs:
                for _ in range(1000):  # everything it sent before dying, not just one read's worth
                    before = len(events)
                    self._drain(agent_id, events, [])
                    if len(events) == before:
                        break
                task_pid, position = self.task_pid(agent_id), self.chunk_position(agent_id)
                done = tuple(outbox.read(self._outboxes[agent_id])) if position is not None else ()
                events.append((agent_id, AgentGone(agent_id, self._forget(agent_id), task_pid, position, done)))
        if dead:
            self._sweep_orphans()
        return events, extras

    def spared_env(self) -> dict[str, str]:
        """The environment for a process the manager itself starts (a landing's check): the watchdog kills
        it should the manager die, and the sweep after an agent's death leaves it alone."""
        token = self._watchdog.token
        return {MARK: f"{token}:{token}{_SPARED}"}

    def _sweep_orphans(self) -> None:
        """Kill and reap what dead agents left behind: processes re-parented to us, in sessions of their own.

        Round after round, as the children of those killed become ours in turn. A callable's children
        are in our session, and are known by the run's mark in their environment; our own children
        (a program embedding the runner may have some) are left alone.
        """
        if not self._reaper:
            return
        own_session = os.getsid(0)
        token = self._watchdog.token
        for _ in range(100):
            ours = {p.pid for p in self._procs.values()} | {self._watchdog.pid}
            strays = []
            for pid in child_pids() or ():
                try:
                    if pid in ours or carries(pid, f"{token}{_SPARED}"):  # the manager's own (landing checks)
                        continue
                    if os.getsid(pid) != own_session or carries(pid, token):
                        strays.append(pid)
                except OSError:
                    pass
            if not strays:
                return
            for pid in strays:  # no grace: their agent is dead, nothing of theirs is waited for
                kill_tree(pid, 0.0)
            for pid in strays:
                _reap(pid, 2.0)

    def _drain(self, agent_id: str, events: list, dead: list, readable: bool = False) -> None:
        """Read what the agent sent; readable: its pipe is known to be readable (else it is checked)."""
        conn = self._conns.get(agent_id)
        if conn is None:
            return
        try:
            messages, gone = conn.recv_ready() if readable or conn.poll() else ([], False)
        except (EOFError, OSError):
            messages, gone = [], True
        events.extend((agent_id, m) for m in messages)
        if gone:
            dead.append(agent_id)

    def _forget(self, agent_id: str) -> str:
        slot = self._slot_of.pop(agent_id, None)
        if slot is not None:
            self._free_slots.append(slot)
        proc = self._procs.pop(agent_id)
        conn = self._conns.pop(agent_id)
        self._outboxes.pop(agent_id).close()
        for fd in (conn.fileno(), proc.sentinel):
            self._by_fd.pop(fd, None)
            try:
                self._poll.unregister(fd)
            except KeyError:
                pass
        conn.close()
        proc.join(5)
        proc.close()
        code = proc.exitcode
        if code is None:
            return "did not exit"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def kill(self, agent_id: str) -> None:
        proc = self._procs.get(agent_id)
        if proc is not None and proc.exitcode is None:  # once reaped, its pid may belong to another process
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def retire(self, agent_id: str) -> None:
        """Ask an idle agent to exit; its exit is reported by wait()."""
        self.send(agent_id, None)

    def agents(self) -> list[str]:
        return list(self._procs)

    def stop(self, timeout: float) -> list[tuple[str, str]]:
        """Stop every agent: the stop message, a join, then SIGKILL for stragglers; returns (agent, how it ended)."""
        for agent_id in list(self._procs):
            self.send(agent_id, None)
        deadline_each = max(0.1, timeout / max(1, len(self._procs)))
        for agent_id, proc in list(self._procs.items()):
            proc.join(deadline_each)
            if proc.exitcode is None:
                self.kill(agent_id)
                proc.join(2)
        ended = [(agent_id, self._forget(agent_id)) for agent_id in list(self._procs)]
        self._sweep_orphans()
        self._watchdog.stop()
        if self._reaper:
            _set_subreaper(False)
            self._reaper = False
        return ended
