"""Where agents live. Each backend implements the same small interface (see local.LocalBackend)."""

from __future__ import annotations

from runner.model import record


@record(frozen=True)
class AgentGone:
    """An agent process ended; `reason` says how (exit code, signal, node lost)."""

    agent_id: str
    reason: str
    task_pid: int | None = None  # the task it was running, when its Started never came (local agents)
    position: int | None = None  # which task of its chunk it was on (local agents), None: unknown
    results: tuple = ()  # TaskResults of its chunk's first tasks, finished but never reported (local agents)


@record(frozen=True)
class AgentReady:
    """An agent whose start() returned before it was up (a Ray actor) is now up, on a node."""

    agent_id: str
    pid: int
    node: str  # Ray node id
    ip: str
