"""Agents as local OS processes (fork), one duplex pipe each.

The interface every backend keeps: start(agent_id, role), send(agent_id, msg),
wait(timeout, extra) -> [(agent_id, message | AgentGone)], kill(agent_id), pid(agent_id), stop(timeout).
A dead agent is seen at once: wait() watches every agent's process sentinel beside its pipe.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import wait as wait_any

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
        self._by_object: dict[object, tuple[str, str]] = {}  # conn / sentinel -> (agent id, "conn" | "sentinel")

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
        self._by_object[ours] = (agent_id, "conn")
        self._by_object[proc.sentinel] = (agent_id, "sentinel")
        return proc.pid

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

    def wait(self, timeout: float | None, extra: list | None = None) -> tuple[list[tuple[str, object]], list]:
        """Block until a message, a death, or an extra object is ready; returns (events, ready extras)."""
        objects = [*self._by_object, *(extra or ())]
        ready = wait_any(objects, timeout)
        events: list[tuple[str, object]] = []
        dead: list[str] = []
        extras = []
        for obj in ready:
            owner = self._by_object.get(obj)
            if owner is None:
                extras.append(obj)
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
        self._by_object.pop(conn, None)
        self._by_object.pop(proc.sentinel, None)
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

    def stop(self, timeout: float) -> None:
        """Stop every agent: the stop message, a join, then SIGKILL for stragglers."""
        for agent_id in list(self._procs):
            self.send(agent_id, None)
        deadline_each = max(0.1, timeout / max(1, len(self._procs)))
        for agent_id, proc in list(self._procs.items()):
            proc.join(deadline_each)
            if proc.exitcode is None:
                self.kill(agent_id)
                proc.join(2)
        for agent_id in list(self._procs):
            self._forget(agent_id)
