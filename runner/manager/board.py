"""The board: the agent table served to `--status`, and the periodic status events and display refresh.

A component of the run (runner.manager.components). The board is served from the first look after
_BOARD_AFTER_S: a run of a few quick tasks is over before anyone could ask, and serving it costs
~10 ms of start-up.
"""

from __future__ import annotations

import os

from runner.manager import events as ev
from runner.manager.components import Component
from runner.manager.pool import serve_board

# How often the board and the status/queue events are refreshed while tasks run.
REFRESH_S = 0.5
_BOARD_AFTER_S = 0.25


class Board(Component):
    """The served board and the refresh of status figures."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._server = None  # pool.serve_board's server, once served
        self._serve_at = 0.0  # monotonic time the board is first served
        self._unservable = False  # serving it failed: the run goes on without it
        self._next = 0.0  # monotonic time of the next refresh

    def start(self) -> None:
        import time

        self._serve_at = time.monotonic() + _BOARD_AFTER_S

    def timers(self, now: float) -> list[float]:
        times = [self._serve_at] if self._server is None and not self._unservable else []
        if self.ctx.pool.reservations:
            times.append(self._next)
        return times

    def tick(self, now: float) -> None:
        ctx = self.ctx
        if self._server is None and not self._unservable and now >= self._serve_at:
            try:
                self._server = serve_board(ctx.pool, ctx.folder)
            except OSError as exc:  # the run folder is within a task's reach: the run goes on without its board
                self._unservable = True
                where = f" ({exc.filename})" if exc.filename else ""
                ctx.reporter.message(f"warning: the live board cannot be served: {exc.strerror or exc}{where}; "
                                     "--status will not see this run")
        if now < self._next:
            return
        self._next = now + REFRESH_S
        sched = ctx.sched
        ctx.pool.stats.update(queue=sched.queue_length(), oldest_wait_s=round(sched.oldest_wait(now), 3),
                              active=sched.active(), total=ctx.total, run_id=ctx.run_id, pid=os.getpid())  # fmt: skip
        busy = ctx.pool.busy_count()
        ctx.emit(ev.STATUS_UPDATED, busy=busy, idle=len(ctx.pool.agents) - busy, queue=sched.queue_length())
        ctx.emit(ev.QUEUE_UPDATED, length=sched.queue_length(), oldest_wait_s=round(sched.oldest_wait(now), 3))
        ctx.flush()
        ctx.reporter.refresh(ctx.pool)

    def finish(self) -> None:
        if self._server is not None:
            self._server.close()
