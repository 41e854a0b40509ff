"""Hung agents: one that is there but stopped is found and killed, and its task counted as lost to its death.

A component of the run (runner.manager.components). A SIGSTOPped agent cannot answer anything, and a dead one
is already seen at once (its sentinel); what is left to find is an agent that is there but stopped.
The kernel knows it without the agent's help, so there is no heartbeat: the manager asks the backend
(`stopped(agent_id)`; local agents: the state in /proc/<pid>/stat) about each agent that holds a
reservation, at most once every _CHECK_S, and kills one seen stopped _MISSES times in a row (a Ctrl-Z
and `fg` of the whole process group is over long before). The kill is an agent death as any other:
the task it held is retried or failed as such. Cost: nothing per task, no message on the hot path,
nothing while no task runs; one read of a /proc file per busy agent per second otherwise.

Why not a heartbeat over the channel: a callable runs in the agent's only thread, so beats during it
would need a thread of their own (silenced, too, by a callable holding the GIL in C), a wake-up per
beat in every agent, and a message per beat in the manager. The Ray backend looks at the actors on the
driver's node the same way; Ray's own health checks are of nodes, not of a worker that stopped answering,
so an actor stopped on another node is not found. A backend without `stopped` is not checked, and asks
for no wake-up (the loop spun on an overdue one, a whole core, while a task ran on Ray).
"""

from __future__ import annotations


from runner.manager.logs import Logger
from runner.manager import events as ev
from runner.manager.components import Component

log = Logger(__name__)

_CHECK_S = 1.0  # how often agents holding a task are looked at
_MISSES = 3  # looks in a row that find an agent stopped, before it is killed


class HungAgents(Component):
    """Finding hung agents."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._next = 0.0  # monotonic time of the next look
        self._seen: dict[str, int] = {}  # agent id -> looks in a row that found it stopped

    def timers(self, now: float) -> list[float]:
        """When the loop must wake for the next look (none while no agent holds a task)."""
        if not self.ctx.pool.reservations or getattr(self.ctx.backend, "stopped", None) is None:
            return []
        return [self._next]

    def tick(self, now: float) -> None:
        ctx = self.ctx
        stopped = getattr(ctx.backend, "stopped", None)
        if now < self._next or stopped is None:
            return
        self._next = now + _CHECK_S
        seen = self._seen
        for agent_id in list(seen):
            if agent_id not in ctx.pool.reservations:
                del seen[agent_id]
        for agent_id in list(ctx.pool.reservations):
            if not stopped(agent_id):
                seen.pop(agent_id, None)
                continue
            seen[agent_id] = seen.get(agent_id, 0) + 1
            if seen[agent_id] >= _MISSES:
                del seen[agent_id]
                log.warning("agent %s is stopped (hung) holding a task; killing it", agent_id)
                ctx.emit(ev.AGENT_HUNG, agent=agent_id, task=ctx.pool.reservations[agent_id], stopped_s=_MISSES * _CHECK_S)
                ctx.backend.kill(agent_id)
