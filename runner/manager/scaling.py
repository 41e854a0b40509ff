"""Dynamic scaling (--min-agents/--max-agents) and the periodic refresh of the board and status events.

Part of runner.manager.run.Run (a mixin).
"""

from __future__ import annotations

import os
import time

# How often the board and the status/queue events are refreshed while tasks run.
_REFRESH_S = 0.5


class Scaling:
    """Adding and retiring agents; refreshing the board (mixed into Run)."""

    def _scale(self, now: float) -> None:
        """--min-agents/--max-agents: add a worker while tasks wait and the machine has room; retire idlers."""
        if not self.opt.max_agents or now - self._last_scale < _REFRESH_S or self.interrupted_by is not None:
            return
        live = len(self.pool.agents) - len(self._retiring)
        if (
            self.sched.queue_length()
            and not self.pool.idle()
            and self.sched.oldest_wait(now) > self.opt.scale_up_wait
            and live < self.opt.max_agents
            and _headroom(self.opt.scale_max_load)
        ):
            self._last_scale = now
            agent_id = self._spawn("worker")
            self._emit("agent:scaled", agent=agent_id, direction="up", agents=live + 1)
            return
        minimum = self.opt.min_agents or 1
        wall = time.time()
        for row in self.pool.idle():
            if live <= minimum:
                break
            if row.id not in self._retiring and wall - row.since > self.opt.scale_down_idle:
                self._retiring.add(row.id)
                self.pool.set_state(row.id, "retiring")
                self.backend.retire(row.id)
                self._emit("agent:scaled", agent=row.id, direction="down", agents=live - 1)
                live -= 1
                self._last_scale = now

    def _refresh(self) -> None:
        now = time.monotonic()
        self._scale(now)
        self.pool.stats.update(
            queue=self.sched.queue_length(),
            oldest_wait_s=round(self.sched.oldest_wait(now), 3),
            active=self.sched.active(),
            total=self._total,
            run_id=self.run_id,
            pid=os.getpid(),
        )
        if self._spaces:  # worktree tasks: how many wait to land, and the last that did
            self.pool.stats.update(landing=self._land_busy, landed=getattr(self, "_last_landed", None))
        busy = self.pool.busy_count()
        self._emit("status:updated", busy=busy, idle=len(self.pool.agents) - busy, queue=self.sched.queue_length())
        self._emit("queue:updated", length=self.sched.queue_length(), oldest_wait_s=round(self.sched.oldest_wait(now), 3))
        self._flush()
        self.reporter.refresh(self.pool)


def _headroom(max_load: float | None) -> bool:
    """Room for one more agent: the load average below max_load (default: the core count), 10% memory free."""
    import psutil

    limit = max_load if max_load is not None else float(os.cpu_count() or 1)
    return os.getloadavg()[0] < limit and psutil.virtual_memory().percent < 90
