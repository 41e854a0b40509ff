"""Chunks of quick tasks: handed out several at a time under one reservation, given back in part, recorded.

A component of the run (runner.manager.components). Which tasks are quick, and how many make a
chunk, is runner.manager.chunk_sizes (pure); this is the bookkeeping of a chunk once handed out.
Only the local backend chunks: a Ray actor's round trip is not worth saving this way.
"""

from __future__ import annotations

import time

from runner.agents.messages import BatchResult, ChunkReturn, TaskResult
from runner.manager.logs import Logger
from runner.manager import events as ev
from runner.manager.chunk_sizes import ChunkSizes
from runner.manager.components import Component
from runner.model import Outcome

log = Logger(__name__)


class Chunks(Component):
    """Chunks of quick tasks, from hand-out to their recorded results."""

    def __init__(self, ctx, gate, returned):
        self.ctx = ctx
        self.gate = gate  # the run's can_start (None: no component has one): a chunk's later tasks pass it as its head did
        self.returned = returned  # the run's: tell every component a task went back unstarted
        self.sizes = ChunkSizes()  # each function's (or program's) speed, the next chunk's size
        self.held: dict[str, list[str]] = {}  # agent id -> task ids of the chunk it holds, in order
        self.on = False  # the backend is local (set by start)

    def start(self) -> None:
        self.on = self.ctx.backend.name == "local"

    def _fits(self, task) -> bool:  # a worktree, checks or files, a call with a cwd: an attempt of its own
        return task.id not in self.ctx.ws and not (task.call is not None and task.cwd) and self.sizes.fits(task)

    def chunk(self, agent, task, now: float) -> list:
        if not self.on or not self._fits(task):
            return []
        ctx = self.ctx
        limit = self.sizes.size(task, ctx.sched.queue_length() + 1, len(ctx.pool.agents))
        fits = self._fits if ctx.ws else self.sizes.fits  # no worktree, checks or files task in the run: one call less a task
        more = ctx.sched.assign_chunk(agent, now, fits, self.gate, limit - 1)
        if more:
            self.held[agent.id] = [task.id] + [t.id for t in more]
        return more

    def on_result(self, agent_id: str, result) -> bool:
        if isinstance(result, TaskResult):
            self._observe(result)
            return False
        if isinstance(result, BatchResult):
            self._chunk_done(agent_id, result)
            return True
        if isinstance(result, ChunkReturn):
            self._returned(agent_id, result.task_ids)
            return True
        return False

    def _observe(self, res: TaskResult) -> None:
        """How long a task took, for judging which tasks are quick enough to chunk."""
        if res.outcome == Outcome.SUCCEEDED.value:
            key = self.sizes.key(self.ctx.tasks[res.task_id])
            if key is not None:
                self.sizes.observe(key, res.end - res.start)

    def _returned(self, agent_id: str, task_ids: tuple[str, ...]) -> None:
        """An agent gave back the unstarted tail of its chunk: those tasks are queued again, uncounted."""
        held = self.held.get(agent_id)
        n = len(task_ids)
        if not held or n >= len(held) or tuple(held[-n:]) != tuple(task_ids):
            log.warning("agent %s gave back tasks it does not hold at the end of a chunk; ignored", agent_id)
            return
        del held[-n:]
        self._give_back(agent_id, list(task_ids), why="the chunk was stopped or one of its tasks is slow")

    def _give_back(self, agent_id: str, task_ids: list[str], why: str) -> None:
        """Tasks of a chunk that will not run there go back to the queue (uncounted: not an attempt)."""
        ctx = self.ctx
        now = time.monotonic()
        for task_id in task_ids:
            rec = ctx.records.pop((task_id, ctx.sched.next_attempt(task_id)), None)
            if rec is not None and rec.get("reserved") is not None:  # the chunk's head: its reservation ends here
                ctx.emit(ev.TASK_RETURNED, task=task_id, agent=agent_id, reason=why)
            ctx.sched.unassign(task_id, now)
            self.returned(task_id)
        ctx.emit(ev.CHUNK_RETURNED, agent=agent_id, tasks=len(task_ids), reason=why)

    def _chunk_done(self, agent_id: str, done: BatchResult) -> None:
        """A chunk is back: record each task as if the agent had held them one by one."""
        ids = self.held.pop(agent_id, None)
        items = done.items
        if ids is None or [r[0] if type(r) is tuple else r.task_id for r in items] != ids \
                or self.ctx.pool.reservations.get(agent_id) != ids[0]:
            log.warning("agent %s reported a chunk it does not hold; ignored", agent_id)
            return
        self.ctx.pool.release(agent_id)
        self._record(agent_id, items)

    def on_agent_gone(self, agent_id: str, gone) -> list[str] | None:
        """A dead agent's chunk: what it finished is recorded (never run again), the rest not lost is given back.

        Returns the one task lost to its death ([] when it died after its last task), or None: no chunk.
        """
        held = self.held.get(agent_id)
        if not held:
            return None
        position = gone.position
        done = list(gone.results or ())
        if done and ([r.task_id for r in done] != held[: len(done)] or self.ctx.pool.reservations.get(agent_id) != held[0]):
            log.warning("agent %s died holding results of a chunk it does not hold; ignored", agent_id)
            done = []
        if done:
            self._record(agent_id, done)
            del held[: len(done)]
            position = 0
            if not held:  # it died after its last task, before reporting the chunk: nothing is lost
                del self.held[agent_id]
                self.ctx.pool.release(agent_id)
                return []
        del self.held[agent_id]
        if len(held) == 1:
            return held
        # Of a chunk, only the task the agent was on is lost to its death; the others (done but not
        # reported, or not started) go back to the queue uncounted.
        lost = held[position] if position is not None and 0 <= position < len(held) else held[0]
        self._give_back(agent_id, [t for t in held if t != lost], why=f"agent {agent_id} died")
        return [lost]

    def _record(self, agent_id: str, results) -> None:
        """Record a chunk's results in order, as if the agent had held its tasks one by one.

        results: a BatchResult's items (a TaskResult, or a plain one's row: runner.agents.messages).
        """
        tasks, key_of = self.ctx.tasks, self.sizes.key
        spent: dict[str, list[float]] = {}  # a function's (or program's) key -> [seconds, successful calls]
        succeeded = Outcome.SUCCEEDED.value
        for res in results:
            if type(res) is tuple:
                task_id, start, end = res[0], res[2], res[3]
            elif res.outcome == succeeded:
                task_id, start, end = res.task_id, res.start, res.end
            else:
                continue
            task = tasks[task_id]
            key = task.call if task.call is not None else key_of(task)  # a callable's key is its call
            if key is not None:
                total = spent.get(key)
                if total is None:
                    total = spent[key] = [0.0, 0]
                total[0] += end - start
                total[1] += 1
        self.ctx.outcomes.record_chunk(agent_id, results)
        for key, (seconds, n) in spent.items():  # one observation per function and chunk: its mean call
            self.sizes.observe(key, seconds / n)
