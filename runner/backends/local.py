"""Agents as local OS processes (fork), one duplex pipe each.

The interface every backend keeps: start(agent_id, role), send(agent_id, msg),
wait(timeout, extra) -> [(agent_id, message | AgentGone)], kill(agent_id), pid(agent_id), stop(timeout).
A dead agent is seen at once: wait() watches every agent's process sentinel beside its pipe.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal

from runner.agent import agent_main
from runner.backends import AgentGone

_ctx = multiprocessing.get_context("fork")


def _agent_entry(agent_id: str, role: str, conn, manager_pid: int, close_fds: list[int]) -> None:
    for fd in close_fds:  # the other agents' pipe ends: without this, EOF would never reach them
        try:
            os.close(fd)
        except OSError:
            pass
    agent_main(agent_id, role, conn, manager_pid)


class LocalBackend:
    name = "local"

    def __init__(self):
        self._procs: dict[str, multiprocessing.Process] = {}  # agent id -> process
        self._conns: dict[str, object] = {}  # agent id -> manager's end of its pipe
        self._by_fd: dict[int, tuple[str, str]] = {}  # fd of a conn / sentinel -> (agent id, "conn" | "sentinel")
        self._poll = select.poll()  # kept across calls: registering every fd on every wait costs more than the wait
        self._extra: set[int] = set()  # fds of the caller's that are registered too

    def start(self, agent_id: str, role: str) -> int:
        """Start an agent process; returns its pid."""
        ours, theirs = _ctx.Pipe(duplex=True)
        close = [c.fileno() for c in self._conns.values()]
        proc = _ctx.Process(
            target=_agent_entry, args=(agent_id, role, theirs, os.getpid(), close), name=agent_id, daemon=False
        )
        proc.start()
        theirs.close()
        self._procs[agent_id] = proc
        self._conns[agent_id] = ours
        self._watch(ours.fileno(), (agent_id, "conn"))
        self._watch(proc.sentinel, (agent_id, "sentinel"))
        return proc.pid

    def _watch(self, fd: int, owner: tuple[str, str]) -> None:
        self._by_fd[fd] = owner
        self._poll.register(fd, select.POLLIN)

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
                self._drain(agent_id, events, dead)
        for agent_id in dict.fromkeys(dead):
            if agent_id in self._procs:
                self._drain(agent_id, events, [])
                events.append((agent_id, AgentGone(agent_id, self._forget(agent_id))))
        return events, extras

    def _drain(self, agent_id: str, events: list, dead: list) -> None:
        conn = self._conns.get(agent_id)
        if conn is None:
            return
        try:
            while conn.poll():
                events.append((agent_id, conn.recv()))
        except (EOFError, OSError):
            dead.append(agent_id)

    def _forget(self, agent_id: str) -> str:
        proc = self._procs.pop(agent_id)
        conn = self._conns.pop(agent_id)
        for fd in (conn.fileno(), proc.sentinel):
            self._by_fd.pop(fd, None)
            try:
                self._poll.unregister(fd)
            except KeyError:
                pass
        conn.close()
        proc.join(5)
        code = proc.exitcode
        if code is None:
            return "did not exit"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def kill(self, agent_id: str) -> None:
        proc = self._procs.get(agent_id)
        if proc is not None and proc.pid:
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
        return [(agent_id, self._forget(agent_id)) for agent_id in list(self._procs)]
