"""Chunks of quick tasks in the manager: a chunk held, given back in part, and its results recorded.

Part of runner.manager.run.Run (a mixin). Which tasks are quick, and how many make a chunk, is
runner.manager.quick; this is the bookkeeping of a chunk once it is handed out.
"""

from __future__ import annotations

import logging
import time

from runner.agents.backend import AgentGone
from runner.agents.messages import BatchResult, TaskResult
from runner.model import Outcome

log = logging.getLogger(__name__)


class Chunks:
    """A chunk's give-back and results (mixed into Run)."""

    def _observe(self, res: TaskResult) -> None:
        """How long a task took, for judging which tasks are quick enough to chunk."""
        if res.outcome == Outcome.SUCCEEDED.value:
            key = self._quick.key(self.tasks[res.task_id])
            if key is not None:
                self._quick.observe(key, res.end - res.start)

    def _chunk_returned(self, agent_id: str, task_ids: tuple[str, ...]) -> None:
        """An agent gave back the unstarted tail of its chunk: those tasks are queued again, uncounted."""
        held = self._chunks.get(agent_id)
        n = len(task_ids)
        if not held or n >= len(held) or tuple(held[-n:]) != tuple(task_ids):
            log.warning("agent %s gave back tasks it does not hold at the end of a chunk; ignored", agent_id)
            return
        del held[-n:]
        self._give_back(agent_id, list(task_ids), why="the chunk was stopped or one of its tasks is slow")

    def _give_back(self, agent_id: str, task_ids: list[str], why: str) -> None:
        """Tasks of a chunk that will not run there go back to the queue (uncounted: not an attempt)."""
        now = time.monotonic()
        for task_id in task_ids:
            rec = self._records.pop((task_id, self.sched.next_attempt(task_id)), None)
            if rec is not None and rec.get("reserved") is not None:  # the chunk's head: its reservation ends here
                self._emit("task:returned", task=task_id, agent=agent_id, reason=why)
            self.sched.unassign(task_id, now)
        self._emit("chunk:returned", agent=agent_id, tasks=len(task_ids), reason=why)

    def _batch_done(self, agent_id: str, batch: BatchResult) -> None:
        """A chunk of quick callables is back: record each as if the agent had held them one by one."""
        ids = self._chunks.pop(agent_id, None)
        if ids is None or [r.task_id for r in batch.results] != ids or self.pool.reservations.get(agent_id) != ids[0]:
            log.warning("agent %s reported a chunk it does not hold; ignored", agent_id)
            return
        self.pool.release(agent_id)
        self._record_chunk(agent_id, batch.results)

    def _salvage(self, agent_id: str, gone: AgentGone) -> int | None:
        """A dead agent's chunk: record the tasks it finished but never reported, so they never run again.

        Returns the position, in what it still holds, of the task it was on (the one lost to its death).
        """
        held = self._chunks.get(agent_id)
        if not held or not gone.results:
            return gone.position
        done = list(gone.results)
        if [r.task_id for r in done] != held[: len(done)] or self.pool.reservations.get(agent_id) != held[0]:
            log.warning("agent %s died holding results of a chunk it does not hold; ignored", agent_id)
            return gone.position
        self._record_chunk(agent_id, done)
        del held[: len(done)]
        if not held:  # it died after its last task, before reporting the chunk: nothing is lost
            del self._chunks[agent_id]
            self.pool.release(agent_id)
            return None
        return 0

    def _record_chunk(self, agent_id: str, results) -> None:
        """Record a chunk's results in order, as if the agent had held its tasks one by one."""
        previous_end = None
        for res in results:
            rec = self._records.get((res.task_id, res.attempt))
            if rec is not None and previous_end is not None:
                rec["reserved"] = previous_end
                queued = rec.get("queued") or previous_end
                self._emit(
                    "task:reserved", ts=previous_end, task=res.task_id, agent=agent_id, attempt=res.attempt,
                    wait_s=round(max(0.0, previous_end - queued), 6),
                )
            if rec is not None:
                rec["start"] = res.start
            self._emit("task:started", ts=res.start, task=res.task_id, agent=agent_id, attempt=res.attempt, pid=None)
            self._observe(res)
            self._outcome(agent_id, res.task_id, res.attempt, Outcome(res.outcome), res)
            previous_end = res.end
