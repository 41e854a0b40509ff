"""Which callables are quick enough to hand out several at a time, and how many (pure logic).

A no-op task costs the manager a round trip (result in, bookkeeping, next task out), which is
10-100 times a no-op callable and about as much as a no-op command. A chunk of quick tasks goes to
one agent under one reservation, is run in order, and comes back as one message. A task is chunked
only once its function (or program) has been seen to be quick, from its second run on, and never
when it has a timeout or an affinity key. An agent gives back the unstarted rest of its chunk as
soon as one of its tasks turns out slow, so a misjudged task never holds the others up for long.
"""

from __future__ import annotations

from runner.model import Task

_QUICK_S = 0.002  # a callable faster than this (moving average) may be chunked
_CHUNK_S = 0.02  # a chunk is sized to take about this long, so progress stays live
_MAX_CHUNK = 64
# With a deep queue a chunk may grow to this: fewer messages and wake-ups per task (a chunk of 256
# no-op calls still takes the agent ~3 ms), while the queue left behind keeps every agent fed.
_DEEP_CHUNK = 256
_DEEP_PER_AGENT = 8  # a chunk takes at most 1/(this × agents) of the queue beyond _MAX_CHUNK
_WEIGHT = 0.2  # of the newest observation in the moving average


class ChunkSizes:
    """Moving average of each callable's duration; the chunk size for the next hand-out."""

    def __init__(self, quick_s: float | None = None, chunk_s: float | None = None, max_chunk: int | None = None,
                 deep_chunk: int | None = None):  # fmt: skip
        self.quick_s = _QUICK_S if quick_s is None else quick_s
        self.chunk_s = _CHUNK_S if chunk_s is None else chunk_s
        self.max_chunk = _MAX_CHUNK if max_chunk is None else max_chunk
        self.deep_chunk = max(self.max_chunk, _DEEP_CHUNK if deep_chunk is None else deep_chunk)
        self.cost: dict[str, float] = {}  # "module:function" -> seconds per call, moving average
        self._seen: set[str] = set()  # functions called at least once

    def observe(self, call: str, seconds: float) -> None:
        if call not in self._seen:  # the first call of a function also imported its module: not a measure
            self._seen.add(call)
            return
        old = self.cost.get(call)
        self.cost[call] = seconds if old is None else old + _WEIGHT * (seconds - old)

    @staticmethod
    def key(task: Task) -> str | None:
        """What a task's speed is judged by: its function, or its program; None: never chunked."""
        if task.call is not None:
            return task.call
        command = task.command
        if isinstance(command, str):
            words = command.split(None, 1)
            return f"sh:{words[0]}" if words else None
        if command:
            return f"exec:{command[0]}"
        return None  # an agent CLI built from a prompt: never quick

    def fits(self, task: Task) -> bool:
        """True when the task may join a chunk."""
        if task.timeout is not None or task.affinity:
            return False
        call = task.call
        key = call if call is not None else self.key(task)  # a callable's key is its call
        cost = self.cost.get(key) if key is not None else None
        return cost is not None and cost < self.quick_s

    def size(self, task: Task, queued: int, agents: int) -> int:
        """How many tasks the agent taking `task` gets at once (1: no chunk)."""
        if not self.fits(task):
            return 1
        by_time = int(self.chunk_s / max(self.cost[self.key(task)], 1e-6))
        fair = queued // max(1, 2 * agents)  # leave most of the queue to the other agents
        cap = min(self.deep_chunk, max(self.max_chunk, queued // max(1, _DEEP_PER_AGENT * agents)))
        return max(1, min(cap, by_time, fair + 1))
