"""Which callables are quick enough to hand out several at a time, and how many (pure logic).

A no-op callable costs the manager a round trip per task (result in, bookkeeping, next task out),
which is 10-100 times the call itself. A chunk of quick callables goes to one agent under one
reservation, is run in order, and comes back as one message. Commands are never chunked: their
fork and exec cost far more than the round trip. A callable is chunked only once it has been seen
to be quick (from its second call on), and never when it has a timeout or an affinity key.
"""

from __future__ import annotations

from runner.model import Task

_QUICK_S = 0.002  # a callable faster than this (moving average) may be chunked
_CHUNK_S = 0.02  # a chunk is sized to take about this long, so progress stays live
_MAX_CHUNK = 64
_WEIGHT = 0.2  # of the newest observation in the moving average


class QuickCalls:
    """Moving average of each callable's duration; the chunk size for the next hand-out."""

    def __init__(self, quick_s: float | None = None, chunk_s: float | None = None, max_chunk: int | None = None):
        self.quick_s = _QUICK_S if quick_s is None else quick_s
        self.chunk_s = _CHUNK_S if chunk_s is None else chunk_s
        self.max_chunk = _MAX_CHUNK if max_chunk is None else max_chunk
        self.cost: dict[str, float] = {}  # "module:function" -> seconds per call, moving average
        self._seen: set[str] = set()  # functions called at least once

    def observe(self, call: str, seconds: float) -> None:
        if call not in self._seen:  # the first call of a function also imported its module: not a measure
            self._seen.add(call)
            return
        old = self.cost.get(call)
        self.cost[call] = seconds if old is None else old + _WEIGHT * (seconds - old)

    def fits(self, task: Task) -> bool:
        """True when the task may join a chunk."""
        if task.call is None or task.timeout is not None or task.affinity:
            return False
        cost = self.cost.get(task.call)
        return cost is not None and cost < self.quick_s

    def size(self, task: Task, queued: int, agents: int) -> int:
        """How many tasks the agent taking `task` gets at once (1: no chunk)."""
        if not self.fits(task):
            return 1
        by_time = int(self.chunk_s / max(self.cost[task.call], 1e-6))
        fair = queued // max(1, 2 * agents)  # leave most of the queue to the other agents
        return max(1, min(self.max_chunk, by_time, fair + 1))
