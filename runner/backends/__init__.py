"""Where agents live. Each backend implements the same small interface (see local.LocalBackend)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentGone:
    """An agent process ended; `reason` says how (exit code, signal, node lost)."""

    agent_id: str
    reason: str
