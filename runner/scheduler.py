"""Which task runs next, on which agent: pure logic, no processes, no clock of its own.

Every method takes `now` (seconds, monotonic), so tests drive it with a fake clock.

Rules, in the order they apply:
- A task is ready when every dependency succeeded (or was `done` in the roadmap). A dependency that
  failed or was skipped skips its dependents, with the reason.
- Ready tasks are handed out by priority (critical > high > medium > low), then roadmap order.
  Aging: a task's priority rises one level for every `age_every` seconds it has waited in the queue,
  so low priority never starves.
- Routing: a task with `role:` prefers that role; a review task (role critic, or a title with
  review / critique / validate) prefers a critic; a complex task prefers the orchestrator. When no agent
  of the preferred role is idle, the task waits at most `route_wait` seconds, then takes any idle agent.
  Other tasks take any idle agent at once, a worker first, the least-loaded one first. Critical tasks
  ignore roles: they take the next idle agent. A role that no agent has is no preference.
- Affinity: a task with an affinity key prefers the agent that ran the last task of that key, waiting
  for it at most `affinity_wait` seconds before spilling over.
- A task held back for a role or an agent never holds back the tasks behind it.
- A failed attempt with retries left is queued again after an exponential backoff with jitter.
  A rate-limited attempt is queued again without counting, and its agent cools down. An attempt lost
  to a dying agent is queued again at once and not counted, twice at most (a task that keeps killing
  its agent then fails like any other).
"""

from __future__ import annotations

import heapq
import random
import re
from dataclasses import dataclass

from runner.model import FINAL_STATES, TRANSITIONS, Complexity, Outcome, Priority, Task, TaskState

_REVIEW = re.compile(r"\b(review|critique|critic|validate|validation)\b", re.IGNORECASE)


@dataclass(frozen=True)
class AgentView:
    """What the scheduler needs to know of an idle agent."""

    id: str
    role: str
    load: float = 0.0  # busy seconds so far; least-loaded first


@dataclass(frozen=True)
class Retry:
    """A failed attempt will be tried again at `at`."""

    task_id: str
    attempt: int  # the attempt that failed
    delay: float
    reason: str


class InvariantError(RuntimeError):
    """A scheduling invariant was about to be broken: a bug, never a user error."""


def preferred_role(task: Task) -> str | None:
    """The role a task prefers by the routing rules, before knowing which roles exist."""
    if task.role:
        return task.role
    if _REVIEW.search(task.title or ""):
        return "critic"
    if task.complexity is Complexity.COMPLEX:
        return "orchestrator"
    return None


class Scheduler:
    """Tracks every task's state in one run and decides assignments."""

    def __init__(
        self,
        tasks: list[Task],
        *,
        now: float,
        roles: set[str] | frozenset[str] = frozenset({"worker"}),
        succeeded: set[str] | frozenset[str] = frozenset(),
        blocked: dict[str, str] | None = None,
        default_retries: int | None = None,
        route_wait: float = 0.5,
        affinity_wait: float = 30.0,
        age_every: float = 300.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        cooldown_base: float = 5.0,
        cooldown_cap: float = 300.0,
        max_failures: int | None = None,
        free_deaths: int = 2,
        rng: random.Random | None = None,
    ):
        self.tasks = {t.id: t for t in tasks}
        self.roles = set(roles)
        self.route_wait = route_wait
        self.affinity_wait = affinity_wait
        self.age_every = age_every
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.cooldown_base, self.cooldown_cap = cooldown_base, cooldown_cap
        self.max_failures = max_failures
        self.free_deaths = free_deaths  # attempts lost to a dying agent that do not count as failures
        self.default_retries = default_retries
        self.rng = rng or random.Random()
        self.state: dict[str, TaskState] = {}  # task id -> state
        self.reason: dict[str, str] = {}  # task id -> why it was skipped / failed
        self.attempts: dict[str, int] = {}  # task id -> attempts started so far (numbering)
        self.counted: dict[str, int] = {}  # task id -> failed attempts counted against `retries`
        self.deaths: dict[str, int] = {}  # task id -> attempts lost to a dying agent
        self.queued_at: dict[str, float] = {}  # task id -> when it last entered the queue
        self.failures = 0
        self.draining = False  # no new task is handed out (max failures, or stopping)
        self._pending: dict[str, int] = {}  # task id -> dependencies not yet succeeded
        self._dependents: dict[str, list[str]] = {}  # task id -> tasks that depend on it
        self._heap: list[tuple[int, int, str]] = []  # (effective rank, order, id) of queued tasks
        self._rank: dict[str, int] = {}  # task id -> effective rank its live heap entry carries
        self._next_aging = float("inf")
        self._delayed: list[tuple[float, int, str]] = []  # (ready at, order, id): retries in backoff
        self._last_agent: dict[str, str] = {}  # affinity key -> agent that ran its last task
        self._cooldown: dict[str, float] = {}  # agent id -> until when it takes no task
        self._cooldown_level: dict[str, int] = {}  # agent id -> consecutive rate limits
        self._gone: set[str] = set()  # agents that died or retired
        self._wake = float("inf")  # when a held task's wait runs out (set by assign)
        self._active = 0  # tasks not yet final
        self._changes: list[str] = []  # tasks newly queued or skipped, for the run's events
        self._setup(succeeded, blocked or {}, now)

    # -- set-up -----------------------------------------------------------------------------------

    def _setup(self, succeeded, blocked: dict[str, str], now: float) -> None:
        ids = self.tasks
        for t in self.tasks.values():
            self._dependents.setdefault(t.id, [])
            for d in t.dependencies:
                self._dependents.setdefault(d, []).append(t.id)
        for t in sorted(self.tasks.values(), key=lambda t: t.order):
            if t.id in succeeded:
                self.state[t.id] = TaskState.SUCCEEDED
                self.reason[t.id] = "succeeded in the resumed run"
            elif t.id in blocked:
                self._final(t.id, TaskState.SKIPPED, blocked[t.id], count=False)
            elif not t.runnable_status:
                self.state[t.id] = TaskState.SKIPPED
                self.reason[t.id] = f"status: {t.status}"
            else:
                self.state[t.id] = TaskState.WAITING
                self._active += 1
        for t in sorted(self.tasks.values(), key=lambda t: t.order):
            if self.state[t.id] is not TaskState.WAITING:
                continue
            pending = 0
            for d in t.dependencies:
                dep_state = self.state.get(d)
                if d not in ids:
                    self._final(t.id, TaskState.SKIPPED, f"unknown dependency {d}")
                    break
                if dep_state is TaskState.SUCCEEDED or (dep_state is TaskState.SKIPPED and ids[d].status == "done"):
                    continue
                if dep_state in FINAL_STATES:
                    self._final(t.id, TaskState.SKIPPED, f"dependency {d} {self._describe(d)}")
                    break
                pending += 1
            else:
                self._pending[t.id] = pending
                if pending == 0:
                    self._enqueue(t.id, now)

    def _describe(self, task_id: str) -> str:
        state = self.state[task_id]
        if state is TaskState.SKIPPED:
            return f"was skipped ({self.reason.get(task_id, '')})"
        return {TaskState.FAILED: "failed", TaskState.INTERRUPTED: "was interrupted"}.get(state, state.value)

    # -- state changes --------------------------------------------------------------------------------

    def _move(self, task_id: str, new: TaskState) -> None:
        old = self.state[task_id]
        if new not in TRANSITIONS[old]:
            raise InvariantError(f"task {task_id}: {old.value} -> {new.value} is not allowed")
        self.state[task_id] = new

    def _final(self, task_id: str, new: TaskState, reason: str | None = None, count: bool = True) -> None:
        if task_id in self.state:
            self._move(task_id, new)
            self._active -= 1
        else:
            self.state[task_id] = new
        if reason:
            self.reason[task_id] = reason
        if new is TaskState.SKIPPED:
            self._changes.append(task_id)
        if new is not TaskState.SUCCEEDED:
            self._skip_dependents(task_id)

    def _skip_dependents(self, task_id: str) -> None:
        stack = [task_id]
        while stack:
            cur = stack.pop()
            for dep in self._dependents.get(cur, ()):
                if self.state.get(dep) is TaskState.WAITING:
                    self._final(dep, TaskState.SKIPPED, f"dependency {cur} {self._describe(cur)}")

    def _enqueue(self, task_id: str, now: float) -> None:
        self._move(task_id, TaskState.QUEUED)
        self.queued_at[task_id] = now
        self._changes.append(task_id)
        rank = self.tasks[task_id].priority.rank
        self._push(task_id, rank)
        if rank > 0:
            self._next_aging = min(self._next_aging, now + self.age_every)

    def _push(self, task_id: str, rank: int) -> None:
        self._rank[task_id] = rank
        heapq.heappush(self._heap, (rank, self.tasks[task_id].order, task_id))

    def _age(self, now: float) -> None:
        """Re-rank queued tasks by how long they have waited (rare: at most once per age_every)."""
        self._next_aging = float("inf")
        entries = []
        for task_id, rank in self._rank.items():
            base = self.tasks[task_id].priority.rank
            waited = now - self.queued_at[task_id]
            eff = max(0, base - int(waited // self.age_every))
            entries.append((eff, self.tasks[task_id].order, task_id))
            self._rank[task_id] = eff
            if eff > 0:
                steps = int(waited // self.age_every) + 1
                self._next_aging = min(self._next_aging, self.queued_at[task_id] + steps * self.age_every)
        heapq.heapify(entries)
        self._heap = entries

    # -- the public interface ---------------------------------------------------------------------------

    def drain_changes(self) -> list[str]:
        """Tasks queued or skipped since the last call, in order."""
        changes, self._changes = self._changes, []
        return changes

    def queue_length(self) -> int:
        return len(self._rank)

    def oldest_wait(self, now: float) -> float:
        return max((now - self.queued_at[t] for t in self._rank), default=0.0)

    def finished(self) -> bool:
        return self._active == 0

    def active(self) -> int:
        return self._active

    def assign(self, idle: list[AgentView], now: float) -> list[tuple[AgentView, Task]]:
        """Pair ready tasks with idle agents; each agent and each task at most once."""
        self._release_delayed(now)
        if now >= self._next_aging:
            self._age(now)
        self._wake = float("inf")
        if self.draining or not self._heap:
            return []
        free = [a for a in idle if self._cooldown.get(a.id, 0.0) <= now]
        if not free:
            return []
        free.sort(key=lambda a: (a.role != "worker", a.load))
        pairs: list[tuple[AgentView, Task]] = []
        held: list[tuple[int, int, str]] = []
        while free and self._heap:
            entry = heapq.heappop(self._heap)
            rank, _, task_id = entry
            if self._rank.get(task_id) != rank:
                continue  # a stale entry: the task was re-ranked or left the queue
            agent = self._pick_agent(self.tasks[task_id], free, now)
            if agent is None:
                held.append(entry)
                continue
            free.remove(agent)
            del self._rank[task_id]
            self._move(task_id, TaskState.RESERVED)
            pairs.append((agent, self.tasks[task_id]))
        for entry in held:
            heapq.heappush(self._heap, entry)
        return pairs

    def _pick_agent(self, task: Task, free: list[AgentView], now: float) -> AgentView | None:
        waited = now - self.queued_at[task.id]
        if task.affinity and task.affinity in self._last_agent:
            owner = self._last_agent[task.affinity]
            for a in free:
                if a.id == owner:
                    return a
            if waited < self.affinity_wait and self._owner_alive(owner):
                self._wake = min(self._wake, self.queued_at[task.id] + self.affinity_wait)
                return None
        role = preferred_role(task)
        if role is None or role not in self.roles or task.priority is Priority.CRITICAL:
            return free[0]
        for a in free:
            if a.role == role:
                return a
        if waited >= self.route_wait:
            return free[0]
        self._wake = min(self._wake, self.queued_at[task.id] + self.route_wait)
        return None

    def _owner_alive(self, agent_id: str) -> bool:
        return agent_id not in self._gone

    def agent_gone(self, agent_id: str) -> None:
        """An agent died or retired: affinity no longer waits for it."""
        self._gone.add(agent_id)
        self._cooldown.pop(agent_id, None)

    def unassign(self, task_id: str, now: float) -> None:
        """A reservation could not be delivered: the task goes back to the queue, uncounted."""
        self._move(task_id, TaskState.QUEUED)
        self._push(task_id, self.tasks[task_id].priority.rank)

    def started(self, task_id: str, agent_id: str) -> int:
        """The reserved agent started the task; returns the attempt number (1-based)."""
        self._move(task_id, TaskState.RUNNING)
        self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
        task = self.tasks[task_id]
        if task.affinity:
            self._last_agent[task.affinity] = agent_id
        return self.attempts[task_id]

    def next_attempt(self, task_id: str) -> int:
        return self.attempts.get(task_id, 0) + 1

    def current_attempt(self, task_id: str) -> int:
        """The number of the attempt a reserved or running task is on."""
        if self.state[task_id] is TaskState.RESERVED:
            return self.next_attempt(task_id)
        return self.attempts.get(task_id, 0)

    def finish(
        self, task_id: str, agent_id: str, outcome: Outcome, now: float, retry_after: float | None = None
    ) -> Retry | None:
        """Record an attempt's outcome; returns a Retry when the task will run again."""
        state = self.state[task_id]
        if state is TaskState.RESERVED:  # ended before its Started reached us (e.g. the agent died)
            self.started(task_id, agent_id)
        if outcome is Outcome.SUCCEEDED:
            self._cooldown_level.pop(agent_id, None)
            self._final(task_id, TaskState.SUCCEEDED)
            for dep in self._dependents.get(task_id, ()):
                if self.state.get(dep) is TaskState.WAITING:
                    self._pending[dep] -= 1
                    if self._pending[dep] == 0:
                        self._enqueue(dep, now)
            return None
        if outcome is Outcome.INTERRUPTED:
            self._final(task_id, TaskState.INTERRUPTED, "interrupted")
            return None
        if outcome is Outcome.RATE_LIMITED:
            level = self._cooldown_level.get(agent_id, 0)
            self._cooldown_level[agent_id] = level + 1
            pause = retry_after if retry_after else min(self.cooldown_cap, self.cooldown_base * 2**level)
            self._cooldown[agent_id] = now + pause
            self._requeue(task_id, now, 0.0)
            return Retry(task_id, self.attempts[task_id], 0.0, f"rate limited; {agent_id} cools down {pause:g}s")
        if outcome is Outcome.AGENT_DIED and self.deaths.get(task_id, 0) < self.free_deaths and not self.draining:
            self.deaths[task_id] = self.deaths.get(task_id, 0) + 1
            self._requeue(task_id, now, 0.0)
            return Retry(task_id, self.attempts[task_id], 0.0, f"agent {agent_id} died; not counted as a failure")
        retries = self.tasks[task_id].retries
        if self.default_retries is not None:
            retries = max(retries, self.default_retries)
        counted = self.counted[task_id] = self.counted.get(task_id, 0) + 1
        if counted <= retries and not self.draining:
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (counted - 1)) * (0.5 + self.rng.random() / 2)
            self._requeue(task_id, now, delay)
            return Retry(task_id, self.attempts[task_id], delay, outcome.value)
        self.failures += 1
        self._final(task_id, TaskState.FAILED, outcome.value)
        if self.max_failures is not None and self.failures >= self.max_failures:
            self.draining = True
            self.abandon_waiting(f"not started: {self.failures} failure(s) reached --max-failures")
        return None

    def cooldown_until(self, agent_id: str) -> float:
        return self._cooldown.get(agent_id, 0.0)

    def _requeue(self, task_id: str, now: float, delay: float) -> None:
        self._move(task_id, TaskState.QUEUED)
        self.queued_at[task_id] = now
        if delay <= 0:
            self._changes.append(task_id)
            self._push(task_id, self.tasks[task_id].priority.rank)
        else:
            heapq.heappush(self._delayed, (now + delay, self.tasks[task_id].order, task_id))

    def _release_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, task_id = heapq.heappop(self._delayed)
            if self.state[task_id] is TaskState.QUEUED:
                self.queued_at[task_id] = now
                self._changes.append(task_id)
                self._push(task_id, self.tasks[task_id].priority.rank)

    def next_timer(self, now: float) -> float | None:
        """Seconds until assign() may pair something new without any other event; None = no timer."""
        times = [self._wake, self._next_aging]
        if self._delayed:
            times.append(self._delayed[0][0])
        times.extend(t for t in self._cooldown.values() if t > now)
        soonest = min(times)
        return None if soonest == float("inf") else max(0.0, soonest - now)

    def stop(self, reason: str = "interrupted before it started") -> None:
        """Hand out nothing more; tasks not yet started end as interrupted."""
        self.draining = True
        for task_id, state in list(self.state.items()):
            if state in (TaskState.WAITING, TaskState.QUEUED):
                self._rank.pop(task_id, None)
                self.state[task_id] = TaskState.INTERRUPTED
                self.reason[task_id] = reason
                self._active -= 1
        self._heap.clear()
        self._delayed.clear()

    def abandon_waiting(self, reason: str) -> None:
        """After --max-failures: tasks never started are skipped, running ones finish."""
        for task_id, state in list(self.state.items()):
            if state in (TaskState.WAITING, TaskState.QUEUED):
                self._rank.pop(task_id, None)
                self.state[task_id] = TaskState.SKIPPED
                self.reason[task_id] = reason
                self._changes.append(task_id)
                self._active -= 1
        self._heap.clear()
        self._delayed.clear()
