"""Which task runs next, on which agent: pure logic, no processes, no clock of its own.

Every method takes `now` (seconds, monotonic), so tests drive it with a fake clock.

    set-up / a dependency succeeded ──▶ queue ──assign(idle agents, now)──▶ [(agent, task)]
                                          ▲  a held task waits in its role's or its agent's heap
        retry after backoff, rate limit ──┘  until its wait runs out (a timer, see next_timer)

Rules, in the order they apply:
- A task is ready when every dependency succeeded (in this run, in the resumed one, or was `done` in
  the roadmap). A dependency that failed, was skipped or interrupted skips its dependents and theirs,
  each with the reason naming the dependency.
- Ready tasks are handed out critical first, then by level (high > medium > low), then roadmap order.
  Aging: a task rises one level for every `age_every` seconds it has waited in the queue; one step past
  the top it is overdue, and overdue tasks go oldest first, so no task starves behind a stream of
  others. Aging never lifts a task above a critical one: a critical task goes to the next idle agent.
- Routing: a task with `role:` prefers that role; a review task (role critic, or a title with review /
  critique / critic / validate or their forms) prefers a critic; a complex task prefers the
  orchestrator. When no agent of the preferred role is idle, the task waits at most `route_wait`
  seconds, then takes any idle agent. Other tasks take any idle agent at once, a worker first, the
  least-loaded one first. A role that no agent has is no preference. A review attempt (the critic's
  look at a task's committed work) prefers a critic the same way; rework after a rejection takes any
  agent but a critic (routing.Reviews).
- Affinity: a task with an affinity key prefers the agent its key was last handed to (recorded at
  reservation, so tasks of one key do not split in one round), waiting for it at most `affinity_wait`
  seconds, and not at all once that agent is gone.
- Critical tasks never wait for a role or an agent; they take their preferred agent only if it is idle.
- A held task never holds back the tasks behind it, and a task that may take any agent leaves alone,
  when another will do, an idle agent that a held task waits for.
- Leases (`uses:`, runner.manager.leases): a task is reserved with a slot of each pool it uses, held until
  its outcome (through hand_over); refused one, it waits out of the queue, holding back no other task.
- A failed attempt with retries left is queued again after an exponential backoff with jitter.
  A rate-limited attempt is queued again without counting (`max_rate_limits` times; past that, it
  counts like a failure, so a provider that always answers 429 cannot keep a run alive forever), and
  its agent cools down (retry-after honoured, capped at `cooldown_cap`). An attempt lost
  to a dying agent is queued again at once and not counted, `free_deaths` times at most (a task that
  keeps killing its agent then fails like any other).
- Draining (stop(), --max-failures, or set by the run): nothing is handed out or retried; an attempt
  that would have been retried ends the task (interrupted after stop(), failed otherwise).

Raises InvariantError on any move the transition table forbids, or a report from an agent that does
not hold the task.
"""

from __future__ import annotations

import gc
import heapq
import math

from runner.manager.routing import (  # noqa: F401 - re-exported: the scheduler's API
    _ANY, _NOT_CRITIC, LANDING, REVIEW_OUTCOMES, AgentView, InvariantError, ReadyQueue, Retry, Reviews, globs_overlap,
    preferred_role,
)
from runner.manager import roadmap_edits
from runner.model import FINAL_STATES, TRANSITIONS, Complexity, Outcome, Priority, Task, TaskState

_RANK = {p: p.rank for p in Priority}


def _order(task: Task) -> int:
    return task.order


class Scheduler(ReadyQueue, Reviews):
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
        failures_before: int = 0,
        free_deaths: int = 2,
        max_rate_limits: int = 20,
        rng=None,  # random.Random for the retries' jitter; None: one is made at the first retry
        files: dict[str, tuple[str, ...]] | None = None,
        review_rounds: dict[str, int] | None = None, leases=None,
    ):
        self.tasks = {t.id: t for t in tasks}
        self.roles = set(roles)
        self.route_wait = route_wait
        self.affinity_wait = affinity_wait
        self.age_every = age_every
        self._ages = 0 < age_every < math.inf  # a zero or infinite age_every turns aging off
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.cooldown_base, self.cooldown_cap = cooldown_base, cooldown_cap
        self.max_failures = max_failures
        self.failures_before = failures_before  # failures of the --iterations loop's earlier batches: count too
        self.max_failures_reached = False  # --max-failures stopped the hand-out (the loop ends then too)
        self.free_deaths = free_deaths  # attempts lost to a dying agent that do not count as failures
        self.max_rate_limits = max_rate_limits  # requeues of one task for rate limits; past that they count
        self.limited: dict[str, int] = {}  # task id -> times it was rate limited
        self.default_retries = default_retries
        self.rng = rng  # made when first needed: importing random costs a run ~1 ms of start-up
        self.state: dict[str, TaskState] = {}  # task id -> state
        self.reason: dict[str, str] = {}  # task id -> why it was skipped / failed
        self._cause: dict[str, str] = {}  # skipped task id -> the failure or skip at the root of its chain
        self.attempts: dict[str, int] = {}  # task id -> attempts started so far (numbering)
        self.counted: dict[str, int] = {}  # task id -> failed attempts counted against `retries`
        self.deaths: dict[str, int] = {}  # task id -> attempts lost to a dying agent
        self.queued_at: dict[str, float] = {}  # task id -> when it last entered the queue
        self.failures = 0
        self.draining = False  # no new task is handed out (max failures, stopping, or set by the run)
        self._stopped = False  # stop() was called: work that would be retried ends as interrupted
        self._pending: dict[str, int] = {}  # task id -> dependencies not yet succeeded
        self._dependents: dict[str, list[str]] = {}  # task id -> tasks that depend on it
        self._holder: dict[str, str] = {}  # task id -> agent it is reserved to or running on
        # The queue: every ready task sits in exactly one heap, chosen by who may take it now.
        self._where: dict[str, tuple[str, str]] = {}  # task id -> _ANY, ("agent", id) or ("role", role)
        self._heaps: dict[tuple[str, str], list] = {_ANY: []}  # label -> heap of (key, task id), stale skipped
        self._held: dict[tuple[str, str], int] = {}  # held label -> tasks waiting in it
        self._n_held = 0  # tasks held in all of them
        self._key: dict[str, tuple] = {}  # task id -> sort key of its live heap entry
        self._seq: dict[str, int] = {}  # task id -> times it entered the queue (tells stale timers)
        self._aging: list[float] = []  # times at which some queued tasks age a step (a heap)
        self._aging_at: dict[float, list[tuple[str, int, int]]] = {}  # time -> (task id, seq, steps by then)
        self._holds: list[tuple[float, str, int]] = []  # (when a held task's wait runs out, id, seq)
        self._oldest: list[tuple[float, str, int]] = []  # (queued at, task id, seq), for oldest_wait
        self._delayed: list[tuple[float, int, str]] = []  # (ready at, order, id): retries in backoff
        self._prefer: dict[str, str | None] = {}  # task id -> preferred role that some agent has
        self._with_key: dict[str, set[str]] = {}  # affinity key -> queued tasks carrying it
        self._owner: dict[str, str] = {}  # affinity key -> agent its last task was handed to
        self._owner_changed: tuple[str, str | None] | None = None  # (key, previous owner) of the last reservation
        self._drain_reason: str | None = None  # why unstarted tasks were ended (stop, --max-failures)
        self._cooldown: dict[str, float] = {}  # agent id -> until when it takes no task
        self._cooldown_level: dict[str, int] = {}  # agent id -> consecutive rate limits
        self._gone: set[str] = set()  # agents that died or retired
        self._orphaned: list[str] = []  # gone agents whose held tasks are not yet let go
        self._active = 0  # tasks not yet final
        self._changes: list[str] = []  # tasks newly queued or skipped, for the run's events
        self._files = files or {}  # task id -> its `files:` globs (tasks whose globs overlap never run together)
        self._claims: dict[str, tuple[str, ...]] = {}  # task id -> globs it holds from reservation to its outcome
        self._file_waiting: list[str] = []  # queued tasks out of the heaps until the claims they overlap end
        self._gate = leases  # runner.manager.leases.LeaseGate: slots of the pools in tasks' `uses:`, or None
        self._init_reviews(review_rounds or {})
        # The cyclic collector is off meanwhile, as in roadmap.loader.load: the ~5 tuples a task gets here would
        # set off its collections again and again (~15 ms at 20,000 tasks), and none of them is garbage.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._setup(succeeded, blocked or {}, now)
        finally:
            if collecting:
                gc.enable()

    # -- set-up -----------------------------------------------------------------------------------

    def _setup(self, succeeded, blocked: dict[str, str], now: float) -> None:
        ids = self.tasks
        ready: list[Task] = []
        ordered = sorted(ids.values(), key=_order)
        state, reason, dependents = self.state, self.reason, self._dependents  # a task no other needs has no entry there
        waiting = TaskState.WAITING
        for t in ordered:
            task_id = t.id
            for d in t.dependencies:
                dependents.setdefault(d, []).append(task_id)
            if task_id in succeeded:
                state[task_id] = TaskState.SUCCEEDED
                reason[task_id] = "succeeded in the resumed run"
            elif task_id in blocked:
                state[task_id] = TaskState.SKIPPED
                reason[task_id] = blocked[task_id]
                self._changes.append(task_id)
            elif not t.runnable_status:
                state[task_id] = TaskState.SKIPPED
                reason[task_id] = f"status: {t.status}"
            else:
                state[task_id] = waiting
                self._active += 1
        for t in ordered:
            if not t.dependencies:
                if state[t.id] is waiting:
                    self._pending[t.id] = 0
                    ready.append(t)
                continue
            if state[t.id] is not waiting:
                continue  # final, or skipped just now because a dependency earlier in order was
            pending, unknown, ended = 0, None, None
            for d in t.dependencies:
                if d not in ids:
                    unknown = d
                    break
                dep_state = state[d]
                if dep_state is TaskState.SUCCEEDED or (dep_state is TaskState.SKIPPED and ids[d].status == "done"):
                    continue
                if dep_state in FINAL_STATES:
                    ended = d
                    break
                pending += 1
            if unknown is not None:
                self._end(t.id, TaskState.SKIPPED, f"unknown dependency {unknown}")
                continue
            if ended is not None:
                self._skip_for(t.id, ended)
                continue
            self._pending[t.id] = pending
            if pending == 0:
                ready.append(t)
        self._enter_ready(ready, now)

    def _enter_ready(self, ready: list[Task], now: float) -> None:
        """_move(QUEUED) and _enter(task, now) for each task ready at the start, in order, in one pass.

        A task any agent may take at once (no affinity, no role it prefers, or critical) goes straight
        into the open heap, which is heapified once; the others go through _enter.
        """
        queued_at, seqs, keys, where, changes = self.queued_at, self._seq, self._key, self._where, self._changes
        state, queued, waiting, critical, complex_ = self.state, TaskState.QUEUED, TaskState.WAITING, Priority.CRITICAL, Complexity.COMPLEX
        heap, oldest = self._heaps[_ANY], self._oldest
        aging = [] if self._ages else None
        prefer, roles, review, rework = self._prefer, self.roles, self._review, self._rework
        if waiting not in TRANSITIONS or queued not in TRANSITIONS[waiting]:
            raise InvariantError("a waiting task cannot be queued")  # _move's check, once for all
        for t in ready:
            task_id = t.id
            if state[task_id] is not waiting:
                self._move(task_id, queued)  # raises
            state[task_id] = queued
            if review and task_id in review:
                role = self._preference(t)
            elif t.role or t.title or t.complexity is complex_:  # _preference, without its cache miss raising KeyError
                role = preferred_role(t)
                role = prefer[task_id] = role if role in roles else None
            else:  # preferred_role's answer for a task with no role, no title and not complex
                role = prefer[task_id] = None
            priority = t.priority
            if t.affinity or (priority is not critical and role is not None) or task_id in seqs or task_id in rework:
                self._enter(task_id, now)
                continue
            queued_at[task_id] = now
            seqs[task_id] = 1
            rank = _RANK[priority]
            key = keys[task_id] = (0 if rank == 0 else 1, rank, 0.0, 0, t.order)  # _key_for(task_id, 0)
            where[task_id] = _ANY
            heap.append((key, task_id))
            oldest.append((now, task_id, 1))
            if aging is not None:
                aging.append((task_id, 1, 1))
            changes.append(task_id)
        heapq.heapify(heap)
        heapq.heapify(oldest)
        if aging:
            when = now + self.age_every
            self._age_later(when, *aging[0])
            self._aging_at[when].extend(aging[1:])

    def _skip_for(self, task_id: str, dependency: str, cascade: bool = True) -> None:
        """Skip a task for its dependency, naming it and the root cause (not the whole chain)."""
        state = self.state[dependency]
        if state is TaskState.SKIPPED:
            cause = self._cause.get(dependency) or self.reason.get(dependency, "")
            why = f"dependency {dependency} was skipped ({cause})"
        else:
            cause = why = f"dependency {dependency} " + (
                {TaskState.FAILED: "failed", TaskState.INTERRUPTED: "was interrupted"}.get(state, state.value)
            )
        self._cause[task_id] = cause
        self._end(task_id, TaskState.SKIPPED, why, cascade)

    # -- state changes --------------------------------------------------------------------------------

    def _move(self, task_id: str, new: TaskState) -> None:
        old = self.state.get(task_id)
        if old is None or new not in TRANSITIONS[old]:
            raise InvariantError(f"task {task_id}: {old and old.value} -> {new.value} is not allowed")
        self.state[task_id] = new

    def _end(self, task_id: str, new: TaskState, reason: str | None = None, cascade: bool = True) -> None:
        """Move a task to a final state; anything but success skips its dependents, transitively."""
        self._move(task_id, new)
        self._active -= 1
        if reason:
            self.reason[task_id] = reason
        if new is TaskState.SKIPPED:
            self._changes.append(task_id)
        if new is TaskState.SUCCEEDED or not cascade or not self._dependents.get(task_id):
            return
        stack = [task_id]  # iterative: a chain of thousands must not hit the recursion limit
        while stack:
            cur = stack.pop()
            for dep in self._dependents.get(cur, ()):
                if self.state.get(dep) is TaskState.WAITING:
                    stack.append(dep)
                    self._skip_for(dep, cur, cascade=False)

    def _check_holder(self, task_id: str, agent_id: str) -> None:
        holder = self._holder.get(task_id)
        if holder != agent_id:
            raise InvariantError(f"task {task_id} is held by {holder}, not by {agent_id}")

    # -- the public interface ---------------------------------------------------------------------------

    def drain_changes(self) -> list[str]:
        """Tasks queued or skipped since the last call, in order."""
        changes, self._changes = self._changes, []
        return changes

    def queue_length(self) -> int:
        """Ready tasks waiting for an agent (retries still in backoff not included)."""
        return len(self._where) + len(self._file_waiting) + (self._gate.waiting() if self._gate else 0)

    def oldest_wait(self, now: float) -> float:
        heap = self._oldest
        while heap:
            queued, task_id, seq = heap[0]
            if task_id in self._where and self._seq[task_id] == seq:
                return now - queued
            heapq.heappop(heap)
        return 0.0

    def finished(self) -> bool:
        return self._active == 0

    def active(self) -> int:
        return self._active

    def assign(self, idle: list[AgentView], now: float, gate=None) -> list[tuple[AgentView, Task]]:
        """Pair ready tasks with idle agents; each agent and each task at most once.

        gate(task) False: the task may not start now (a resource it needs is held); it keeps its place
        in the queue and the tasks behind it are paired as if it were not there. gate is asked last,
        just before a task is reserved: True means it is reserved now (a lease may be taken in it).
        """
        self._tick(now)
        if self.draining or not self._where:
            return []
        gated: list[tuple[tuple[str, str], tuple]] = []  # (heap label, entry) put back once the pairing is done
        cooling = self._cooldown
        free = [a for a in idle if cooling.get(a.id, 0.0) <= now] if cooling else list(idle)
        free.sort(key=lambda a: (a.role != "worker", a.load))
        pairs: list[tuple[AgentView, Task]] = []
        while free:
            # The best task any free agent may take: the open heap's top, or the top of a heap held
            # for one of the free agents or their roles (its least-loaded agent, by `free`'s order).
            best, label, agent = self._top(_ANY), _ANY, None
            if self._n_held:
                roles_seen = set()
                for a in free:
                    candidates = [("agent", a.id)]
                    if a.role not in roles_seen:
                        roles_seen.add(a.role)
                        candidates.append(("role", a.role))
                        if a.role != "critic" and _NOT_CRITIC not in roles_seen:  # rework after a rejection
                            roles_seen.add(_NOT_CRITIC)
                            candidates.append(_NOT_CRITIC)
                    for held in candidates:
                        if self._held.get(held):
                            top = self._top(held)
                            if best is None or top < best:
                                best, label, agent = top, held, a
            if best is None:
                break
            heapq.heappop(self._heaps[label])
            task = self.tasks[best[1]]
            if self._claims and task.id in self._files and self._overlaps(task.id):
                self._leave(task.id)  # it waits, out of the heaps, until the overlapping task ends
                self._file_waiting.append(task.id)
                continue
            leased = self._gate is not None and task.id in self._gate.uses
            if leased and not self._lease(task, now):
                continue  # it waits out of the queue for a slot; the agent stays free for the next task
            if gate is not None and not gate(task):  # a component's last word (runner.manager.components)
                if leased:
                    self._release_lease(task.id, now)
                gated.append((label, best))
                continue
            if agent is None:
                agent = self._choose(task, free)
            free.remove(agent)
            self._reserve(task, agent, now)
            pairs.append((agent, task))
        for label, entry in gated:
            heapq.heappush(self._heaps[label], entry)
        return pairs

    def assign_more(self, agent: AgentView, now: float, fits, gate=None) -> Task | None:
        """The task assign() would give this agent next, reserved to it as well if fits(task).

        For a chunk of quick callables, which one agent holds together and runs in order. When the
        next task does not fit, or gate(task) says it may not start now (asked only of a task that
        fits, as the last word), it stays queued where it was and None is returned.
        """
        self._owner_changed = None
        pairs = self.assign([agent], now)
        if not pairs:
            return None
        task = pairs[0][1]
        if fits(task) and (gate is None or gate(task)):
            return task
        self.unassign(task.id, now)
        if self._owner_changed is not None:  # taking it made this agent its affinity key's owner: undo
            key, previous = self._owner_changed
            if previous is None:
                self._owner.pop(key, None)
            else:
                self._owner[key] = previous
            for other in list(self._with_key.get(key, ())):
                self._place(other, now)
        return None

    def assign_chunk(self, agent: AgentView, now: float, fits, gate=None, k: int = 1) -> list[Task]:
        """What k calls of assign_more would give the agent, reserved to it in order; stops at the first
        task that does not fit (or that gate refuses), which stays queued where it was.

        With no held task, no `files:`, no leases and the agent not cooling, the next task is the open
        heap's top: it is taken straight from there; otherwise that step is an assign_more.
        """
        out: list[Task] = []
        ticked = False
        tasks = self.tasks
        while len(out) < k:
            if self._n_held or self._files or self._gate is not None or self._cooldown.get(agent.id, 0.0) > now:
                task = self.assign_more(agent, now, fits, gate)
                if task is None:
                    break
                out.append(task)
                continue
            if not ticked:  # what assign() applies first; once is enough for one `now`
                self._tick(now)
                ticked = True
                continue  # aging or a hold may have changed what is held
            # The open heap's tops, one after another, while nothing of the above can change: a task
            # without affinity leaves only the open heap (_reserve, inlined); one with affinity goes
            # through _reserve, which may hold others, so the loop looks again.
            heap, where, keys, holder, state = self._heaps[_ANY], self._where, self._key, self._holder, self.state
            reserved, allowed = TaskState.RESERVED, TRANSITIONS[TaskState.QUEUED]
            stop = True
            while len(out) < k and heap and not self.draining:
                key, task_id = heap[0]
                if where.get(task_id) != _ANY or keys[task_id] != key:  # _top: stale, it left or was re-keyed
                    heapq.heappop(heap)
                    continue
                task = tasks[task_id]
                if not fits(task) or (gate is not None and not gate(task)):
                    break
                heapq.heappop(heap)
                out.append(task)
                if task.affinity:
                    self._reserve(task, agent, now)
                    stop = False
                    break
                del where[task_id], keys[task_id]
                if state[task_id] is not TaskState.QUEUED or reserved not in allowed:
                    self._move(task_id, reserved)  # raises: not a queued task
                state[task_id] = reserved
                holder[task_id] = agent.id
            if stop:
                break
        return out

    def _overlaps(self, task_id: str) -> bool:
        mine = self._files[task_id]
        return any(globs_overlap(mine, theirs) for theirs in self._claims.values())

    def _release_files(self, task_id: str, now: float) -> None:
        """A task's claim on its `files:` ends: the tasks that waited for it (and no other) queue again."""
        if self._claims.pop(task_id, None) is None or not self._file_waiting:
            return
        waiting, self._file_waiting = self._file_waiting, []
        for other in waiting:
            if self.state.get(other) is not TaskState.QUEUED:
                continue
            if self._overlaps(other):
                self._file_waiting.append(other)
            else:
                self._enter(other, now, since=self.queued_at[other], announce=False)

    def _reserve(self, task: Task, agent: AgentView, now: float) -> None:
        self._leave(task.id)
        if task.id in self._files:
            self._claims[task.id] = self._files[task.id]
        self._move(task.id, TaskState.RESERVED)
        self._holder[task.id] = agent.id
        if task.affinity and self._owner.get(task.affinity) != agent.id:
            self._owner_changed = (task.affinity, self._owner.get(task.affinity))
            self._owner[task.affinity] = agent.id
            for other in list(self._with_key.get(task.affinity, ())):
                self._place(other, now)  # they now wait for the new owner

    def agent_gone(self, agent_id: str) -> None:
        """An agent died or retired: affinity no longer waits for it."""
        self._gone.add(agent_id)
        self._cooldown.pop(agent_id, None)
        self._orphaned.append(agent_id)

    def unassign(self, task_id: str, now: float) -> None:
        """A reservation was not used: the task goes back to the queue, uncounted.

        While draining (stopped, --max-failures) it ends as the other unstarted tasks did instead.
        """
        self._move(task_id, TaskState.QUEUED)
        self._holder.pop(task_id, None)
        self._release_files(task_id, now)
        self._release_lease(task_id, now)
        if self.draining and self._drain_reason is not None:
            new = TaskState.INTERRUPTED if self._stopped else TaskState.SKIPPED
            self._move(task_id, new)
            self.reason[task_id] = self._drain_reason
            self._active -= 1
            if new is TaskState.SKIPPED:
                self._changes.append(task_id)
            return
        self._enter(task_id, now, since=self.queued_at[task_id], announce=False)

    def started(self, task_id: str, agent_id: str) -> int:
        """The reserved agent started the task; returns the attempt number (1-based)."""
        if self.state.get(task_id) is TaskState.RESERVED:
            self._check_holder(task_id, agent_id)
        self._move(task_id, TaskState.RUNNING)
        self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
        return self.attempts[task_id]

    def next_attempt(self, task_id: str) -> int:
        return self.attempts.get(task_id, 0) + 1

    def next_attempts(self, tasks) -> list[int]:
        """next_attempt of each task, in order (a chunk's), in one pass."""
        tries = self.attempts
        return [tries.get(t.id, 0) + 1 for t in tasks]

    def current_attempt(self, task_id: str) -> int:
        """The number of the attempt a reserved or running task is on."""
        if self.state[task_id] is TaskState.RESERVED:
            return self.next_attempt(task_id)
        return self.attempts.get(task_id, 0)

    def finish(
        self, task_id: str, agent_id: str, outcome: Outcome, now: float, retry_after: float | None = None
    ) -> Retry | None:
        """Record an attempt's outcome; returns a Retry when the task will run again."""
        state = self.state.get(task_id)
        if state not in (TaskState.RESERVED, TaskState.RUNNING):
            raise InvariantError(f"task {task_id}: an outcome arrived while it is {state and state.value}")
        self._check_holder(task_id, agent_id)
        if state is TaskState.RESERVED:  # ended before its Started reached us (e.g. the agent died)
            self.started(task_id, agent_id)
        del self._holder[task_id]
        self._release_files(task_id, now)
        self._release_lease(task_id, now)
        if outcome in REVIEW_OUTCOMES:
            return self._review_step(task_id, outcome, now)
        if outcome is Outcome.SUCCEEDED:
            self._cooldown_level.pop(agent_id, None)
            self._end(task_id, TaskState.SUCCEEDED)
            for dep in self._dependents.get(task_id, ()):
                if self.state.get(dep) is TaskState.WAITING:
                    self._pending[dep] -= 1
                    if self._pending[dep] == 0:
                        self._move(dep, TaskState.QUEUED)
                        self._enter(dep, now)
            return None
        if outcome is Outcome.INTERRUPTED:
            self._end(task_id, TaskState.INTERRUPTED, "interrupted")
            return None
        if outcome is Outcome.RATE_LIMITED:
            level = self._cooldown_level.get(agent_id, 0)
            self._cooldown_level[agent_id] = level + 1
            pause = retry_after if retry_after else self.cooldown_base * 2 ** min(level, 32)
            pause = min(self.cooldown_cap, pause)
            self._cooldown[agent_id] = now + pause
            self.limited[task_id] = self.limited.get(task_id, 0) + 1
            if not self.draining and self.limited[task_id] <= self.max_rate_limits:
                self._requeue(task_id, now, 0.0)
                return Retry(task_id, self.attempts[task_id], 0.0, f"rate limited; {agent_id} cools down {pause:g}s")
            if self._stopped:
                self._end(task_id, TaskState.INTERRUPTED, "rate limited; not retried: the run is stopping")
                return None
        if outcome is Outcome.AGENT_DIED and self.deaths.get(task_id, 0) < self.free_deaths and not self.draining:
            self.deaths[task_id] = self.deaths.get(task_id, 0) + 1
            self._requeue(task_id, now, 0.0)
            return Retry(task_id, self.attempts[task_id], 0.0, f"agent {agent_id} died; not counted as a failure")
        retries = self.tasks[task_id].retries
        if self.default_retries is not None:
            retries = max(retries, self.default_retries)
        counted = self.counted[task_id] = self.counted.get(task_id, 0) + 1
        if counted <= retries and not self.draining:
            backoff = min(self.backoff_cap, self.backoff_base * 2 ** min(counted - 1, 64))
            if self.rng is None:
                import random

                self.rng = random.Random()
            delay = backoff * (0.5 + self.rng.random() / 2)
            self._requeue(task_id, now, delay)
            return Retry(task_id, self.attempts[task_id], delay, outcome.value)
        self._end(task_id, TaskState.FAILED, outcome.value)
        self.count_failure()
        return None

    def count_failure(self) -> None:
        """A task failed for good; past --max-failures (the loop's earlier batches' failures too), nothing more starts."""
        self.failures += 1
        total = self.failures_before + self.failures
        if self.max_failures is not None and total >= self.max_failures and not self.draining:
            self.draining = self.max_failures_reached = True
            self.abandon_waiting(f"not started: {total} failure(s) reached --max-failures")

    def finish_succeeded(self, task_ids: list[str], agent_id: str, now: float) -> None:
        """finish(task, agent_id, SUCCEEDED, now) for each task, in order: a chunk's calls that all succeeded."""
        state, holder, dependents, pending = self.state, self._holder, self._dependents, self._pending
        reserved, running, succeeded, waiting = TaskState.RESERVED, TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.WAITING
        self._cooldown_level.pop(agent_id, None)
        for task_id in task_ids:
            current = state.get(task_id)
            if current is not reserved and current is not running:
                raise InvariantError(f"task {task_id}: an outcome arrived while it is {current and current.value}")
            if holder.get(task_id) != agent_id:
                self._check_holder(task_id, agent_id)
            if current is reserved:  # a chunk's task: its Started is never sent
                self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
            state[task_id] = succeeded  # reserved/running -> running -> succeeded, both allowed moves
            del holder[task_id]
            if self._claims:
                self._release_files(task_id, now)
            if self._gate is not None:
                self._release_lease(task_id, now)
            self._active -= 1
            for dep in dependents.get(task_id, ()):
                if state.get(dep) is waiting:
                    pending[dep] -= 1
                    if pending[dep] == 0:
                        self._move(dep, TaskState.QUEUED)
                        self._enter(dep, now)

    def hand_over(self, task_id: str, agent_id: str, to: str = LANDING) -> None:
        """The agent is done with a running task that is not finished yet (it waits to land): the agent is
        free, the task stays running, held by `to`, until finish(task_id, to, ...) records its outcome."""
        if self.state.get(task_id) is TaskState.RESERVED:
            self.started(task_id, agent_id)
        if self.state.get(task_id) is not TaskState.RUNNING:
            raise InvariantError(f"task {task_id}: handed over while it is {self.state.get(task_id)}")
        self._check_holder(task_id, agent_id)
        self._holder[task_id] = to

    def cooldown_until(self, agent_id: str) -> float:
        return self._cooldown.get(agent_id, 0.0)

    def _requeue(self, task_id: str, now: float, delay: float) -> None:
        self._move(task_id, TaskState.QUEUED)
        self.queued_at[task_id] = now
        if delay <= 0:
            self._enter(task_id, now)
        else:
            heapq.heappush(self._delayed, (now + delay, self.tasks[task_id].order, task_id))

    def next_timer(self, now: float) -> float | None:
        """Seconds until assign() may pair something new without any other event; None = no timer.

        Applies what is due at `now` first, so it never answers 0 twice for the same reason (the run
        loop may not call assign() while no agent is idle).
        """
        self._tick(now)
        holds = self._holds
        while holds and (self._seq.get(holds[0][1]) != holds[0][2] or self._where.get(holds[0][1], _ANY) == _ANY):
            heapq.heappop(holds)
        times = [t for t in self._cooldown.values() if t > now]
        if holds:
            times.append(holds[0][0])
        if self._delayed:
            times.append(self._delayed[0][0])
        if self._gate is not None and self._gate.recheck_at is not None:  # ports in use outside the run
            times.append(self._gate.recheck_at)
        return max(0.0, min(times) - now) if times else None

    def stop(self, reason: str = "interrupted before it started") -> None:
        """Hand out nothing more; tasks not yet started end as interrupted."""
        self.draining = True
        self._stopped = True
        self._end_unstarted(TaskState.INTERRUPTED, reason)

    def abandon_waiting(self, reason: str) -> None:
        """After --max-failures: tasks never started are skipped, running ones finish."""
        self._end_unstarted(TaskState.SKIPPED, reason)

    def _end_unstarted(self, new: TaskState, reason: str) -> None:
        self._drain_reason = reason
        for task_id, state in list(self.state.items()):
            if state is TaskState.WAITING or state is TaskState.QUEUED:
                self._move(task_id, new)
                self.reason[task_id] = reason
                self._active -= 1
                if new is TaskState.SKIPPED:
                    self._changes.append(task_id)
        self._clear_queue()

    # -- roadmap edits while the run goes (runner.manager.roadmap_edits) ----------------------------

    def unstarted(self, task_id: str) -> bool:
        """The task is known and no attempt of it has started in this run."""
        return task_id in self.state and not self.attempts.get(task_id) and task_id not in self._holder

    def add_task(self, task: Task, now: float, files: tuple[str, ...] = (), review_rounds: int | None = None) -> bool:
        """Add a task, or take a new definition of one that has not started; False when it has started.

        files: its `files:` globs; review_rounds: rejections that end it when a critic reviews it.
        """
        return roadmap_edits.add_task(self, task, now, files, review_rounds)

    def drop_task(self, task_id: str, reason: str) -> bool:
        """A task that has not started leaves the run, skipped for reason (its dependents for it)."""
        return roadmap_edits.drop_task(self, task_id, reason)
