"""Liveness of agents: a hung agent is found and killed, and its task counted as lost to its death.

Part of runner.manager.run.Run (a mixin). A SIGSTOPped agent cannot answer anything, and a dead one
is already seen at once (its sentinel); what is left to find is an agent that is there but stopped.
The kernel knows it without the agent's help, so there is no heartbeat: the manager asks the backend
(`stopped(agent_id)`; local agents: the state in /proc/<pid>/stat) about each agent that holds a
reservation, at most once every _CHECK_S, and kills one seen stopped _MISSES times in a row (a Ctrl-Z
and `fg` of the whole process group is over long before). The kill is an agent death as any other:
the task it held is retried or failed as such. Cost: nothing per task, no message on the hot path,
nothing while no task runs; one read of a /proc file per busy agent per second otherwise.

Why not a heartbeat over the channel: a callable runs in the agent's only thread, so beats during it
would need a thread of their own (silenced, too, by a callable holding the GIL in C), a wake-up per
beat in every agent, and a message per beat in the manager. A backend without `stopped` (Ray, whose
own health checks see a worker that stopped answering) is not checked.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_CHECK_S = 1.0  # how often agents holding a task are looked at
_MISSES = 3  # looks in a row that find an agent stopped, before it is killed


class Liveness:
    """Finding hung agents (mixed into Run)."""

    _live_at = 0.0  # monotonic time of the next look

    def _liveness_timer(self) -> float | None:
        """When the loop must wake for the next look (None: no agent holds a task)."""
        return self._live_at if self.pool.reservations else None

    def _check_liveness(self, now: float) -> None:
        stopped = getattr(self.backend, "stopped", None)
        if now < self._live_at or stopped is None:
            return
        self._live_at = now + _CHECK_S
        seen = self.__dict__.setdefault("_stopped_seen", {})  # agent id -> looks in a row it was stopped
        for agent_id in list(seen):
            if agent_id not in self.pool.reservations:
                del seen[agent_id]
        for agent_id in list(self.pool.reservations):
            if not stopped(agent_id):
                seen.pop(agent_id, None)
                continue
            seen[agent_id] = seen.get(agent_id, 0) + 1
            if seen[agent_id] >= _MISSES:
                del seen[agent_id]
                log.warning("agent %s is stopped (hung) holding a task; killing it", agent_id)
                self._emit("agent:hung", agent=agent_id, task=self.pool.reservations[agent_id], stopped_s=_MISSES * _CHECK_S)
                self.backend.kill(agent_id)
