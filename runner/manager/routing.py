"""The ready queue of the scheduler: who may take each ready task now, and in which order.

Part of runner.manager.scheduler.Scheduler (a mixin; the scheduler's docstring states the rules).
Every ready task sits in exactly one heap, chosen by who may take it now: any idle agent (`_ANY`),
one agent (affinity: the agent its key was last handed to), or one role (routing: its `role:`, a
critic for a review task, the orchestrator for a complex one). A held task moves to `_ANY` when its
wait runs out (a timer). Keys carry the priority and the aging steps; stale heap entries are skipped.

Reviews (runner.manager.review_rounds drives them): a task whose work waits for its critic is queued again as
a review attempt, which prefers a critic (any agent after `route_wait` when none is idle, at once when
the pool has none); a rejected task is queued for rework by any agent but a critic (`_NOT_CRITIC`),
unless the pool has only critics; after `review_rounds` rejections it fails as needs_improvement.
"""

from __future__ import annotations

import heapq
import math
import re

from runner.errors import InvariantError  # noqa: F401 - raised by the scheduler, re-exported
from runner.model import record, Complexity, Outcome, Priority, Task, TaskState

_REVIEW = re.compile(r"\b(review\w*|critiqu\w*|critics?|validat\w*)\b", re.IGNORECASE)
_ANY = ("any", "")  # label of the heap of tasks any idle agent may take now
_OVERDUE = -1  # the level one age step past the top: from there, oldest first
_NOT_CRITIC = ("role", "!critic")  # label of the heap of rework that any agent but a critic may take
REVIEW_OUTCOMES = frozenset({Outcome.NEEDS_REVIEW, Outcome.REJECTED})
# Who holds a task between its agent's success and its landing (hand_over): no agent.
LANDING = "(landing)"


@record(frozen=True)
class Retry:
    """A task will run again, after `delay` seconds (0: as soon as an agent is free)."""

    task_id: str
    attempt: int  # the attempt that did not succeed
    delay: float
    reason: str


@record(frozen=True)
class AgentView:
    """What the scheduler needs to know of an idle agent."""

    id: str
    role: str
    load: float = 0.0  # busy seconds so far; least-loaded first


def preferred_role(task: Task) -> str | None:
    """The role a task prefers by the routing rules, before knowing which roles exist."""
    if task.role:
        return task.role
    if _REVIEW.search(task.title or ""):
        return "critic"
    if task.complexity is Complexity.COMPLEX:
        return "orchestrator"
    return None


_GLOB_CHARS = "*?["


def _literal_prefix(glob: str) -> str:
    cut = min((i for i, c in enumerate(glob) if c in _GLOB_CHARS), default=len(glob))
    return glob[:cut]


def globs_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two `files:` lists may name a common path; when unsure, yes (the tasks then take turns).

    Two globs may overlap unless the literal text before the first wildcard of one is neither a
    prefix of the other's nor has it as a prefix (`src/auth/**` and `src/db/*.py` never do; `*.py`
    and anything else may). Two globs without wildcards overlap only when equal, or one is a folder
    of the other.
    """
    for x in a:
        px = _literal_prefix(x).lstrip("./")
        for y in b:
            py = _literal_prefix(y).lstrip("./")
            if px == x.lstrip("./") and py == y.lstrip("./"):  # two plain paths: equal, or one holds the other
                if px == py or py.startswith(px.rstrip("/") + "/") or px.startswith(py.rstrip("/") + "/"):
                    return True
            elif px.startswith(py) or py.startswith(px):
                return True
    return False


class ReadyQueue:
    """The heaps, aging and holds of the ready queue, and the choice of agent (mixed into Scheduler)."""

    def _preference(self, task: Task) -> str | None:
        if self._review and task.id in self._review:
            return "critic" if "critic" in self.roles else None
        try:
            return self._prefer[task.id]
        except KeyError:
            role = preferred_role(task)
            role = self._prefer[task.id] = role if role in self.roles else None
            return role

    def _key_for(self, task_id: str, steps: int) -> tuple:
        task = self.tasks[task_id]
        rank = task.priority.rank
        level = rank - steps
        tier = 0 if rank == 0 else 1  # critical tasks stay ahead of every aged one
        if level <= _OVERDUE:  # oldest first, then the more urgent, then roadmap order
            return (tier, _OVERDUE, self.queued_at[task_id], rank, task.order)
        return (tier, level, 0.0, 0, task.order)

    def _enter(self, task_id: str, now: float, since: float | None = None, announce: bool = True) -> None:
        """Put a QUEUED task into the queue: keyed, placed in its heap, its timers set."""
        q = self.queued_at[task_id] = now if since is None else since
        seq = self._seq[task_id] = self._seq.get(task_id, 0) + 1
        steps = int((now - q) // self.age_every) if self._ages else 0
        steps = min(steps, self.tasks[task_id].priority.rank + 1)
        self._key[task_id] = self._key_for(task_id, steps)
        affinity = self.tasks[task_id].affinity
        if affinity:
            self._with_key.setdefault(affinity, set()).add(task_id)
        self._place(task_id, now)
        if self._ages and self._key[task_id][1] != _OVERDUE:
            self._age_later(q + (steps + 1) * self.age_every, task_id, seq, steps + 1)
        heapq.heappush(self._oldest, (q, task_id, seq))
        if announce:
            self._changes.append(task_id)

    def _age_later(self, when: float, task_id: str, seq: int, steps: int) -> None:
        bucket = self._aging_at.get(when)
        if bucket is None:  # tasks queued at one moment age together: one heap entry for all
            bucket = self._aging_at[when] = []
            heapq.heappush(self._aging, when)
        bucket.append((task_id, seq, steps))

    def _age_bucket(self, when: float, now: float) -> None:
        """Lift each still-queued task of one aging bucket by the steps it has waited (hot: inlined)."""
        seqs, where, keys, queued_at, tasks = self._seq, self._where, self._key, self.queued_at, self.tasks
        every, rekeyed = self.age_every, []
        for task_id, seq, steps in self._aging_at.pop(when):
            if seqs.get(task_id) != seq or task_id not in where:
                continue
            q = queued_at[task_id]
            waited = int((now - q) // every)
            if waited > steps:
                steps = waited
            old = keys[task_id]
            rank = tasks[task_id].priority.rank
            level = rank - steps
            key = (old[0], _OVERDUE, q, rank, old[4]) if level <= _OVERDUE else (old[0], level, 0.0, 0, old[4])
            if key != old:
                keys[task_id] = key
                rekeyed.append(task_id)
            if level > _OVERDUE:
                self._age_later(q + (steps + 1) * every, task_id, seq, steps + 1)
        if len(rekeyed) > 64 and 4 * len(rekeyed) > len(where):
            self._rebuild()  # O(queue) once beats a push per task, and drops the stale entries
        else:
            for task_id in rekeyed:
                heapq.heappush(self._heaps[where[task_id]], (keys[task_id], task_id))

    def _rebuild(self) -> None:
        """Heapify every heap afresh from the live keys (after re-keying much of the queue at once)."""
        heaps: dict[tuple[str, str], list] = {_ANY: []}
        for task_id, label in self._where.items():
            heaps.setdefault(label, []).append((self._key[task_id], task_id))
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps

    def _stage(self, task_id: str, now: float) -> tuple[tuple[str, str], float | None]:
        """Which heap a queued task belongs in now, and until when (None: for good)."""
        task = self.tasks[task_id]
        if task.priority is Priority.CRITICAL:
            return _ANY, None
        q = self.queued_at[task_id]
        if task.affinity:
            owner = self._owner.get(task.affinity)
            until = q + self.affinity_wait
            if owner is not None and owner not in self._gone and now < until:
                return ("agent", owner), until
        role = self._preference(task)
        rework = bool(self._rework) and task_id in self._rework
        if rework and role == "critic":
            role = None
        until = q + self.route_wait
        if role is not None and now < until:
            return ("role", role), until
        if rework and self.roles - {"critic"}:
            return _NOT_CRITIC, None
        return _ANY, None

    def _place(self, task_id: str, now: float) -> None:
        label, until = self._stage(task_id, now)
        old = self._where.get(task_id)
        if old == label:
            return
        if old is not None and old != _ANY:
            self._held[old] -= 1
            self._n_held -= 1
        self._where[task_id] = label
        if label != _ANY:
            self._held[label] = self._held.get(label, 0) + 1
            self._n_held += 1
        heapq.heappush(self._heaps.setdefault(label, []), (self._key[task_id], task_id))
        if until is not None and until < math.inf:  # an endless wait needs no timer
            heapq.heappush(self._holds, (until, task_id, self._seq[task_id]))

    def _leave(self, task_id: str) -> None:
        label = self._where.pop(task_id)
        if label != _ANY:
            self._held[label] -= 1
            self._n_held -= 1
        del self._key[task_id]
        affinity = self.tasks[task_id].affinity
        if affinity:
            self._with_key[affinity].discard(task_id)

    def _top(self, label: tuple[str, str]) -> tuple | None:
        heap = self._heaps.get(label)
        while heap:
            key, task_id = heap[0]
            if self._where.get(task_id) == label and self._key[task_id] == key:
                return heap[0]
            heapq.heappop(heap)  # stale: the task was re-keyed, moved or left the queue
        return None

    def _clear_queue(self) -> None:
        self._file_waiting.clear()
        if self._gate is not None:
            self._gate.clear()
        for store in (self._where, self._held, self._key, self._with_key, self._aging_at):
            store.clear()
        self._n_held = 0
        self._heaps = {_ANY: []}
        for heap in (self._aging, self._holds, self._oldest, self._delayed):
            heap.clear()

    def _tick(self, now: float) -> None:
        """Apply what time alone changes: retries out of backoff, aging, waits that ran out."""
        while self._delayed and self._delayed[0][0] <= now:
            ready_at, _, task_id = heapq.heappop(self._delayed)
            if self.state[task_id] is TaskState.QUEUED and task_id not in self._where:
                self._enter(task_id, now, since=ready_at)  # it has waited since its backoff ended
        for agent_id in self._orphaned:
            label = ("agent", agent_id)
            for _, task_id in list(self._heaps.get(label, ())):
                if self._where.get(task_id) == label:
                    self._place(task_id, now)
            self._heaps.pop(label, None)
        self._orphaned.clear()
        while self._aging and self._aging[0] <= now:
            self._age_bucket(heapq.heappop(self._aging), now)
        while self._holds and self._holds[0][0] <= now:
            _, task_id, seq = heapq.heappop(self._holds)
            if self._seq.get(task_id) == seq and task_id in self._where:
                self._place(task_id, now)
        if self._gate is not None and self._gate.recheck_at is not None:
            self._gate.tick(now)  # ports found in use outside the run: ask again
            self._wake_leased(now)

    # -- leases (runner.manager.leases.LeaseGate): a task refused a slot waits out of the heaps --------------

    def _lease(self, task: Task, now: float) -> bool:
        """Lease the task's slots; refused, it leaves the heaps until a slot of its pool is freed."""
        key = self._key[task.id]
        rank = (key[0], self.queued_at[task.id], task.order)
        got = self._gate.try_lease(task.id, self.next_attempt(task.id), rank, key[1] == _OVERDUE, now)
        if got is None:
            self._leave(task.id)
        self._wake_leased(now)
        return got is not None

    def _release_lease(self, task_id: str, now: float) -> None:
        if self._gate is not None:
            self._gate.release(task_id)
            self._wake_leased(now)

    def _wake_leased(self, now: float) -> None:
        for other in self._gate.drain_woken():
            if self.state.get(other) is TaskState.QUEUED and other not in self._where:
                self._enter(other, now, since=self.queued_at[other], announce=False)

    def _choose(self, task: Task, free: list[AgentView]) -> AgentView:
        """The agent for a task that may take any: its affinity owner, its role, one nobody waits for."""
        owner = self._owner.get(task.affinity) if task.affinity else None
        for a in free:
            if a.id == owner:
                return a
        role = self._preference(task)
        if role is not None:
            for a in free:
                if a.role == role:
                    return a
        if self._n_held:
            for a in free:
                if not self._held.get(("agent", a.id)) and not self._held.get(("role", a.role)):
                    return a
        return free[0]


class Reviews:
    """Review attempts and rework in the scheduler's state (mixed into Scheduler)."""

    def _init_reviews(self, review_rounds: dict[str, int]) -> None:
        self.review_rounds = review_rounds  # task id -> rejections that end it (reviewed tasks only)
        self.rejections: dict[str, int] = {}  # task id -> times its critic rejected it
        self._review: set[str] = set()  # tasks whose next attempt is a critic's review
        self._rework: set[str] = set()  # rejected tasks: the next attempt is any agent's but a critic's

    def needs_review(self, task_id: str) -> bool:
        return task_id in self.review_rounds

    def reviewing(self, task_id: str) -> bool:
        """Whether the task's next (or current) attempt is a review."""
        return task_id in self._review

    def approved(self, task_id: str) -> None:
        """The critic approved: whatever comes next (landing, a retry after a conflict) is ordinary work."""
        self._review.discard(task_id)
        self._rework.discard(task_id)

    def _review_step(self, task_id: str, outcome: Outcome, now: float) -> Retry | None:
        """A worker's attempt passed its checks (needs_review), or a critic rejected the work (rejected)."""
        attempt = self.attempts[task_id]
        if self.draining:  # no critic will be handed it; the work stays on its branch
            self._end(task_id, TaskState.INTERRUPTED if self._stopped else TaskState.FAILED, f"{outcome.value}; the run is stopping")
            return None
        if outcome is Outcome.NEEDS_REVIEW:
            self._review.add(task_id)
            self._rework.discard(task_id)
            self._requeue(task_id, now, 0.0)
            return Retry(task_id, attempt, 0.0, "checks passed; queued for a critic's review")
        self._review.discard(task_id)
        rounds = self.review_rounds.get(task_id, 2)
        n = self.rejections[task_id] = self.rejections.get(task_id, 0) + 1
        if n >= rounds:
            self._end(task_id, TaskState.FAILED, "needs_improvement")
            self.count_failure()
            return None
        self._rework.add(task_id)
        self._requeue(task_id, now, 0.0)
        return Retry(task_id, attempt, 0.0, f"rejected by the critic (round {n} of {rounds}); back for rework")
