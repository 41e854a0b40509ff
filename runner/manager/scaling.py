"""Dynamic scaling (--min-agents/--max-agents): add a worker while tasks wait, retire idle ones.

A component of the run (runner.manager.components).
"""

from __future__ import annotations

import os
import time

from runner.manager import events as ev
from runner.manager.components import Component

# How often the pool is looked at while tasks run.
_EVERY_S = 0.5


class Scaling(Component):
    """Adding and retiring agents."""

    def __init__(self, ctx, spawn):
        self.ctx = ctx
        self.spawn = spawn  # the run's: start an agent of a role, returns its id
        self.on = bool(ctx.opt.max_agents)
        self._next = 0.0  # monotonic time of the next look
        self._last_scale = 0.0  # monotonic time of the last change
        self._retiring: set[str] = set()  # agents told to exit, not yet gone

    def timers(self, now: float) -> list[float]:
        return [self._next] if self.on and self.ctx.pool.reservations else []

    def on_agent_gone(self, agent_id: str, gone) -> None:
        self._retiring.discard(agent_id)
        return None

    def tick(self, now: float) -> None:
        """Add a worker while tasks wait and the machine has room; retire idlers down to --min-agents."""
        ctx, opt = self.ctx, self.ctx.opt
        if not self.on or now < self._next:
            return
        self._next = now + _EVERY_S
        if now - self._last_scale < _EVERY_S or ctx.interrupted_by is not None:
            return
        live = len(ctx.pool.agents) - len(self._retiring)
        if (
            ctx.sched.queue_length()
            and not ctx.pool.idle()
            and ctx.sched.oldest_wait(now) > opt.scale_up_wait
            and live < opt.max_agents
            and _headroom(opt.scale_max_load)
        ):
            self._last_scale = now
            agent_id = self.spawn("worker")
            ctx.emit(ev.AGENT_SCALED, agent=agent_id, direction="up", agents=live + 1)
            return
        minimum = opt.min_agents or 1
        wall = time.time()
        for row in ctx.pool.idle():
            if live <= minimum:
                break
            if row.id not in self._retiring and wall - row.since > opt.scale_down_idle:
                self._retiring.add(row.id)
                ctx.pool.set_state(row.id, "retiring")
                ctx.backend.retire(row.id)
                ctx.emit(ev.AGENT_SCALED, agent=row.id, direction="down", agents=live - 1)
                live -= 1
                self._last_scale = now


def _headroom(max_load: float | None) -> bool:
    """Room for one more agent: the load average below max_load (default: the core count), 10% memory free."""
    import psutil

    limit = max_load if max_load is not None else float(os.cpu_count() or 1)
    return os.getloadavg()[0] < limit and psutil.virtual_memory().percent < 90
