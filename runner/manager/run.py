"""The manager: one event loop that owns the agent table, the reservations and the ledger.

    Roadmap ──▶ Scheduler (pure) ──assign()──▶ Pool.reserve(agent, task)  [lock; agent id -> task id]
                     ▲                                 │ TaskMessage over the agent's pipe
                     │ finish(outcome)                 ▼
    ledger.commit() ◀── TaskResult / AgentGone ◀── agents (one OS process each; tasks in own sessions)
         │
         └──▶ then events (events.jsonl, --events) and the reporter (terminal)

One thread changes all shared state. It sleeps in one poll() on every
agent's pipe, every agent's process sentinel (death is seen at once) and a signal wake-up pipe,
with a timeout set by the nearest timer (retry backoff, route wait, a task's deadline).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field

from runner.coding import executors

from runner.manager import statedir
from runner.agents.backend import AgentGone, AgentReady
from runner.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TASK_FAILED, EXIT_TERMINATED, UsageError
from runner.manager.ledger import Attempt, Ledger, task_hash
from runner.agents.messages import BatchResult, Cancel, ChunkReturn, Started, TaskBatch, TaskMessage, TaskResult
from runner.model import Outcome, Roadmap, Task, TaskState
from runner.manager.pool import Pool, serve_board
from runner.manager.quick import QuickCalls
from runner.manager.scheduler import AgentView, Scheduler
from runner.manager.telemetry import EventLog, event, summarize

log = logging.getLogger(__name__)

# A hung agent (or a callable past its timeout) is killed this long after its task's deadline + grace.
_BACKSTOP_S = 5.0
# How often the board and the status/queue events are refreshed while tasks run.
_REFRESH_S = 0.5
# Longest time an outcome waits to be committed and reported (group commit).
_FLUSH_S = 0.05
# The board (--status) is served from the first refresh after this long: a run of a few quick tasks
# is over before anyone could ask, and serving it costs ~10 ms of start-up.
_BOARD_AFTER_S = 0.25


def default_roles(n: int) -> dict[str, int]:
    """The original design's pool: 1 orchestrator, 1 critic when n >= 4, the rest workers."""
    if n <= 1:
        return {"worker": 1}
    critic = 1 if n >= 4 else 0
    return {"orchestrator": 1, "worker": n - 1 - critic, "critic": critic}


@dataclass
class RunOptions:
    agents: int = 4
    roles: dict[str, int] | None = None  # role -> count; None: default_roles(agents)
    state_dir: str | None = None
    resume: bool = False
    grace: float = 10.0  # seconds between TERM and KILL (timeouts, Ctrl-C)
    retries: int | None = None  # --retries: at least this many retries for every task
    max_failures: int | None = None
    memfree: int | None = None  # bytes; no task starts while less memory is available
    max_load: float | None = None  # no task starts while the 1-minute load average is above
    events_file: str | None = None
    executor: object | None = None  # --executor; overrides the roadmap's
    rate_limit: str | None = None  # regex; None: the executor's (commands: none)
    route_wait: float = 0.5
    affinity_wait: float = 30.0
    age_every: float = 300.0
    backoff_base: float = 1.0
    blocked: dict[str, str] = field(default_factory=dict)  # task id -> why it cannot run (from the loader)
    backend: str = "local"
    ray_address: str | None = None  # --backend ray: None starts a local Ray; auto / ray://host:port join one
    write_back: bool = False  # set each finished task's status in the roadmap file
    min_agents: int | None = None  # dynamic scaling: start with this many ...
    max_agents: int | None = None  # ... add workers up to this many while tasks wait
    scale_up_wait: float = 2.0  # a queued task waiting longer than this asks for another agent
    scale_down_idle: float = 10.0  # an agent idle longer than this is retired (down to min_agents)
    scale_max_load: float | None = None  # no agent is added while the load average is above (None: the core count)
    selected: set[str] | None = None  # a batch: only these tasks belong to the run (None: all)
    done: set[str] = field(default_factory=set)  # succeeded earlier (an earlier batch): count as satisfied


@dataclass
class RunResult:
    exit_code: int
    run_id: int
    folder: str
    summary: dict
    tasks: list[dict]  # one row per task: task, title, agent, status, attempts, duration_s, exit_code, log, reason


class Reporter:
    """What the run tells the outside world; the CLI's display implements it. Core code never prints."""

    def started(self, info: dict) -> None: ...

    def events(self, events: list[dict]) -> None: ...

    def refresh(self, pool: Pool) -> None: ...

    def finished(self, result: RunResult) -> None: ...

    def message(self, text: str) -> None: ...


def make_backend(name: str, options: RunOptions):
    if name == "local":
        from runner.agents.local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from runner.agents.ray_backend import RayBackend

        return RayBackend(address=options.ray_address)
    raise UsageError(f"--backend: unknown backend {name!r} (choose local or ray)")


class Run:
    """One run of a roadmap on a pool of agents."""

    def __init__(self, roadmap: Roadmap, options: RunOptions, reporter: Reporter | None = None):
        self.roadmap = roadmap
        self.opt = options
        self.reporter = reporter or Reporter()
        self.tasks = roadmap.by_id()
        self.executor = executors.parse(options.executor if options.executor is not None else roadmap.executor)
        start = options.min_agents if options.max_agents else options.agents
        self.roles = options.roles or roadmap.agents or default_roles(start or 1)
        self.pool = Pool()
        self.backend = None
        self._pending_events: list[dict] = []
        self._pending_since = 0.0  # monotonic time the oldest pending event was emitted
        self._records: dict[tuple[str, int], dict] = {}  # (task, attempt) -> times, for telemetry
        self._queued_at: dict[str, float] = {}  # task id -> wall time it last entered the queue
        self._deadline: dict[str, float] = {}  # agent id -> monotonic time to kill it (hung / callable timeout)
        self._timed_out: set[str] = set()  # agents killed by the manager for a task timeout
        self._last_outcome: dict[str, dict] = {}  # task id -> its last attempt's row
        self._next_index: dict[str, int] = {}  # role -> number of the next agent of that role
        self._retiring: set[str] = set()  # agents told to exit by the scaler
        self._cooling: dict[str, float] = {}  # agent id -> monotonic time its rate-limit cool-down ends
        self._last_scale = 0.0
        self.interrupted_by: int | None = None  # the first SIGINT / SIGTERM received
        self._signals: list[int] = []
        self._stop_deadline: float | None = None
        self.ledger_error: str | None = None
        self._write_back: dict[str, dict[str, tuple[str, str | None]]] = {}  # file -> task id -> (status, error)
        self._chunks: dict[str, list[str]] = {}  # agent id -> task ids of the chunk of quick callables it holds
        self._quick = QuickCalls()
        self._recorded = 0  # outcomes committed to the ledger
        self._unrecorded = 0  # outcomes written but not yet committed

    # -- set-up ---------------------------------------------------------------------------------------

    def _check_runnable(self) -> None:
        missing = [
            t
            for t in self._members()
            if t.command is None and t.call is None and t.runnable_status and t.id not in self.opt.blocked
        ]
        if missing and self.executor is None:
            names = ", ".join(t.id for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise UsageError(
                f"{len(missing)} task(s) have no command and no executor is configured ({names}); "
                "set `executor:` in the roadmap or pass --executor"
            )

    def _members(self) -> list[Task]:
        """The tasks this run accounts for: the whole roadmap, or the selected batch."""
        if self.opt.selected is None:
            return self.roadmap.tasks
        return [t for t in self.roadmap.tasks if t.id in self.opt.selected]

    def execute(self) -> RunResult:
        """Run the roadmap to the end; raises BatchError subclasses for what stops it before it starts."""
        self._check_runnable()
        state_dir = statedir.prepare(self.opt.state_dir or statedir.default_state_dir(self.roadmap.files))
        lock = statedir.RunLock.of_roadmaps(state_dir, self.roadmap.files)
        lock.acquire()
        try:
            if lock.stale_pid:
                self.reporter.message(f"warning: taking over a stale lock left by PID {lock.stale_pid}")
            return self._execute_locked(state_dir)
        finally:
            lock.release()

    def _execute_locked(self, state_dir: str) -> RunResult:
        # The backend first: a missing Ray is a usage error before anything is recorded, and a
        # cluster's start-up is not counted as queue wait.
        self.backend = make_backend(self.opt.backend, self.opt)
        self._chunking = self.backend.name == "local"  # a Ray actor's round trip is not worth saving this way
        try:
            self.ledger = Ledger(os.path.join(state_dir, "ledger.sqlite"))
            carried, resumed_from = self._resume_set()
            run_id = self.ledger.start_run(self.roadmap, sum(self.roles.values()), "", resumed_from, set(carried))
        except BaseException:
            self.backend.stop(timeout=5.0)
            raise
        self.run_id = run_id
        self.folder = statedir.new_run_folder(state_dir, run_id)
        self.logs = os.path.join(self.folder, "logs")
        self.ledger.db.execute("UPDATE runs SET folder = ? WHERE id = ?", (self.folder, run_id))
        paths = [os.path.join(self.folder, "events.jsonl")] + ([self.opt.events_file] if self.opt.events_file else [])
        self.events = EventLog(paths)
        self.board = None  # served once the run has lasted _BOARD_AFTER_S, while the first tasks already run
        now = time.monotonic()
        blocked = dict(self.opt.blocked)
        if self.opt.selected is not None:
            for t in self.roadmap.tasks:
                if t.id not in self.opt.selected and t.id not in self.opt.done:
                    blocked.setdefault(t.id, "not in this batch")
        self.sched = Scheduler(
            self.roadmap.tasks,
            now=now,
            roles={r for r, n in self.roles.items() if n > 0},
            succeeded=set(carried) | (set(self.opt.done) & set(self.tasks)),
            blocked=blocked,
            default_retries=self.opt.retries,
            route_wait=self.opt.route_wait,
            affinity_wait=self.opt.affinity_wait,
            age_every=self.opt.age_every,
            backoff_base=self.opt.backoff_base,
            max_failures=self.opt.max_failures,
        )
        wall = time.time()
        for task_id in self.sched.drain_changes():
            if self.opt.selected is None or task_id in self.opt.selected:
                self._note_change(task_id, wall)
        self._total = len(self._members())
        self.reporter.started(
            {
                "run_id": run_id,
                "folder": self.folder,
                "state_dir": state_dir,
                "agents": dict(self.roles),
                "tasks": len(self._members()),
                "runnable": self.sched.active(),
                "resumed_from": resumed_from,
                "carried": len(carried),
            }
        )
        self._emit("run:started", run=run_id, agents=sum(self.roles.values()), tasks=len(self._members()))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        old = self._install_signals(wake_w)
        try:
            for role, count in self.roles.items():
                for _ in range(count):
                    self._spawn(role)
                    if not self.sched.draining:  # the first agents start work while the others are forked
                        self._hand_out(time.monotonic())
            self._loop(wake_r)
        finally:
            self._restore_signals(old)
            os.close(wake_r)
            os.close(wake_w)
            for agent_id, reason in self.backend.stop(timeout=5.0):
                self._emit("agent:exited", agent=agent_id, reason=reason)
            self._flush()
            if self.board is not None:
                self.board.close()
        return self._finish()

    def _resume_set(self) -> tuple[dict[str, str], int | None]:
        """Tasks to carry over from the run being resumed: succeeded there, definition unchanged."""
        if not self.opt.resume:
            return {}, None
        previous = self.ledger.latest_unfinished(self.roadmap.files)
        if previous is None:
            self.reporter.message("resume: no unfinished run of this roadmap; starting a fresh run")
            return {}, None
        done = self.ledger.succeeded_tasks(previous.id)
        carried = {}
        for task_id, old_hash in done.items():
            task = self.tasks.get(task_id)
            if task is None:
                continue
            if task_hash(task) == old_hash:
                carried[task_id] = old_hash
            else:
                self.reporter.message(f"resume: task {task_id} changed since run {previous.id}; running it again")
        self.reporter.message(
            f"resume: continuing run {previous.id}: {len(carried)} task(s) already succeeded are not run again"
        )
        return carried, previous.id

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

    def _spawn(self, role: str) -> str:
        index = self._next_index.get(role, 0)
        self._next_index[role] = index + 1
        agent_id = f"{role}-{index}"
        pid = self.backend.start(agent_id, role)
        # A local agent is up once forked; a Ray actor only when its AgentReady arrives.
        self.pool.add(agent_id, role, pid, state="idle" if pid is not None else "starting")
        self._emit("agent:spawned", agent=agent_id, role=role, pid=pid)
        return agent_id

    # -- signals --------------------------------------------------------------------------------------

    def _install_signals(self, wake_w: int):
        def on_signal(signum, frame):
            self._signals.append(signum)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
        old["wakeup"] = signal.set_wakeup_fd(wake_w)
        return old

    def _restore_signals(self, old) -> None:
        signal.set_wakeup_fd(old.pop("wakeup"))
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _on_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if self.interrupted_by is None:
                self.interrupted_by = signum
                self._begin_stop(f"{signal.Signals(signum).name} received")
            else:
                self._kill_now()

    def _begin_stop(self, why: str) -> None:
        """Hand out nothing more; TERM every running task tree, KILL after the grace period."""
        self.reporter.message(f"{why}: stopping; running tasks get {self.opt.grace:g}s to exit (again to stop now)")
        self.sched.stop()
        wall = time.time()
        for task_id in self.sched.drain_changes():
            self._note_change(task_id, wall)
        for agent_id in list(self.pool.reservations):
            self.backend.send(agent_id, Cancel(self.opt.grace))
        self._stop_deadline = time.monotonic() + self.opt.grace + 1.0

    def _kill_now(self) -> None:
        for row in list(self.pool.agents.values()):
            if row.state == "busy":
                task_pid = row.task_pid or self.backend.task_pid(row.id)
                if task_pid:
                    _killpg(task_pid)
                self.backend.kill(row.id)

    # -- the loop -------------------------------------------------------------------------------------

    def _loop(self, wake_r: int) -> None:
        next_refresh = 0.0
        self._board_at = time.monotonic() + _BOARD_AFTER_S
        while True:
            now = time.monotonic()
            if not self.sched.draining and self.ledger_error is None:
                self._hand_out(now)
            if self.board is None and now >= self._board_at:
                self.board = serve_board(self.pool, self.folder)
            if self.sched.finished() and not self.pool.reservations:
                self._flush()
                return
            if now >= next_refresh:
                self._refresh()
                next_refresh = now + _REFRESH_S
            timeout = self._timeout(now, next_refresh)
            starting = any(r.state == "starting" for r in self.pool.agents.values())
            if timeout is None and not self.pool.reservations and not starting and not self.sched.finished():
                self._stuck()
                continue
            # Group commit: outcomes are committed, then reported, together, at most _FLUSH_S after the
            # first of them: while tasks keep finishing, one COMMIT and one write serve many outcomes.
            if self._pending_events:
                due = self._pending_since + _FLUSH_S
                if now >= due:
                    self._flush()
                else:
                    timeout = due - now if timeout is None else min(timeout, due - now)
            messages, extras = self.backend.wait(timeout, [wake_r])
            if extras:
                _drain_fd(wake_r)
                self._on_signals()
            for agent_id, msg in messages:  # hand-outs wait for the whole batch: an AgentGone may follow
                self._handle(agent_id, msg)
            self._check_deadlines(time.monotonic())

    def _timeout(self, now: float, next_refresh: float) -> float | None:
        times = []
        t = self.sched.next_timer(now)
        if t is not None:
            times.append(now + t)
        times.extend(self._deadline.values())
        if self._stop_deadline is not None:
            times.append(self._stop_deadline)
        if self.board is None:
            times.append(self._board_at)
        if self.pool.reservations:
            times.append(next_refresh)
        if self.sched.queue_length() and (self.opt.memfree or self.opt.max_load):
            times.append(now + 1.0)
        return None if not times else max(0.0, min(times) - now)

    def _stuck(self) -> None:
        """Nothing runs, nothing can be handed out and no timer is set: a bug; never hang on it."""
        log.error("no task can be scheduled and none is running; skipping the rest")
        self.sched.abandon_waiting("could not be scheduled")
        wall = time.time()
        for task_id in self.sched.drain_changes():
            self._note_change(task_id, wall)

    def _gates_open(self) -> bool:
        if self.opt.memfree is None and self.opt.max_load is None:
            return True
        import psutil

        if self.opt.memfree is not None and psutil.virtual_memory().available < self.opt.memfree:
            return False
        if self.opt.max_load is not None and os.getloadavg()[0] > self.opt.max_load:
            return False
        return True

    def _hand_out(self, now: float) -> None:
        for agent_id, until in list(self._cooling.items()):
            if until <= now:
                del self._cooling[agent_id]
                self.pool.set_state(agent_id, "idle")
        idle = self.pool.idle()
        if not idle or not self._gates_open():
            return
        views = [AgentView(r.id, r.role, r.busy_s) for r in idle]
        wall = time.time()
        pairs = self.sched.assign(views, now)
        for task_id in self.sched.drain_changes():  # retries whose backoff ran out are queued again
            self._note_change(task_id, wall)
        for agent, task in pairs:
            chunk = [task]
            if self._chunking and self._quick.fits(task):
                limit = self._quick.size(task, self.sched.queue_length() + 1, len(self.pool.agents))
                while len(chunk) < limit:
                    more = self.sched.assign_more(agent, now, self._quick.fits)
                    if more is None:
                        break
                    chunk.append(more)
            title = task.title if len(chunk) == 1 else f"{task.title or task.id} (+{len(chunk) - 1} quick tasks)"
            self.pool.reserve(agent.id, task.id, title)
            messages = []
            for t in chunk:
                attempt = self.sched.next_attempt(t.id)
                msg = self._message(t, agent.role, attempt)
                messages.append(msg)
                self._records[(t.id, attempt)] = {
                    "task": t.id,
                    "attempt": attempt,
                    "agent": agent.id,
                    "queued": self._queued_at.get(t.id),
                    "reserved": wall if t is task else None,  # a chunk's later tasks: when the one before ends
                    "start": None,
                    "end": None,
                    "log": msg.log_path,
                }
            self._emit(
                "task:reserved",
                ts=wall,
                task=task.id,
                agent=agent.id,
                attempt=messages[0].attempt,
                wait_s=round(wall - self._queued_at.get(task.id, wall), 6),
                **({"chunk": len(chunk)} if len(chunk) > 1 else {}),
            )
            if len(chunk) > 1:
                self._chunks[agent.id] = [t.id for t in chunk]
                out = TaskBatch(tuple(messages))
            else:
                out = messages[0]
                if task.timeout is not None:
                    self._deadline[agent.id] = now + task.timeout + self.opt.grace + _BACKSTOP_S
                    if task.call:
                        self._deadline[agent.id] = now + task.timeout
            if not self.backend.send(agent.id, out):
                log.debug("agent %s gone before it got %s; its death will requeue it", agent.id, task.id)

    def _message(self, task: Task, role: str, attempt: int) -> TaskMessage:
        log_path = os.path.join(self.logs, f"{statedir.safe_name(task.id)}.{attempt}.log")
        command = task.command
        rate_limit = self.opt.rate_limit
        if command is None and task.call is None:
            command = executors.build_argv(task, role, self.executor)
            rate_limit = rate_limit or self.executor.rate_limit
        elif isinstance(command, list):
            command = tuple(command)
        return TaskMessage(
            task_id=task.id,
            attempt=attempt,
            log_path=log_path,
            command=command,
            call=task.call,
            args=tuple(task.args),
            kwargs=dict(task.kwargs),
            env={**{k: str(v) for k, v in task.env.items()}, "WVO_TASK_ID": task.id, "WVO_ATTEMPT": str(attempt)},
            cwd=task.cwd,
            timeout=task.timeout,
            grace=self.opt.grace,
            rate_limit_pattern=rate_limit,
        )

    def _handle(self, agent_id: str, msg) -> None:
        if isinstance(msg, Started):
            if self.pool.reservations.get(agent_id) != msg.task_id:
                log.warning("agent %s started %s, which it does not hold; ignored", agent_id, msg.task_id)
                return
            self.pool.set_task_pid(agent_id, msg.pid)
            self.sched.started(msg.task_id, agent_id)
            rec = self._records.get((msg.task_id, msg.attempt))
            if rec is not None:
                rec["start"] = msg.start
            self._emit("task:started", ts=msg.start, task=msg.task_id, agent=agent_id, attempt=msg.attempt, pid=msg.pid)
        elif isinstance(msg, TaskResult):
            if self.pool.reservations.get(agent_id) != msg.task_id:
                log.warning("agent %s reported %s, which it does not hold; ignored", agent_id, msg.task_id)
                return
            rec = self._records.get((msg.task_id, msg.attempt))
            if rec is not None and rec["start"] is None:  # a callable, or a command that ended before its Started
                rec["start"] = msg.start
                self._emit("task:started", ts=msg.start, task=msg.task_id, agent=agent_id, attempt=msg.attempt, pid=msg.pid)
            self._deadline.pop(agent_id, None)
            self.pool.release(agent_id)
            self._observe(msg)
            self._outcome(agent_id, msg.task_id, msg.attempt, Outcome(msg.outcome), msg)
        elif isinstance(msg, BatchResult):
            self._batch_done(agent_id, msg)
        elif isinstance(msg, ChunkReturn):
            self._chunk_returned(agent_id, msg.task_ids)
        elif isinstance(msg, AgentGone):
            self._agent_gone(agent_id, msg.reason, msg.task_pid, msg.position)
        elif isinstance(msg, AgentReady):
            row = self.pool.agents.get(agent_id)
            if row is not None:
                row.pid = msg.pid
                self.pool.set_state(agent_id, "idle")

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
        previous_end = None
        for res in batch.results:
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

    def _agent_gone(self, agent_id: str, reason: str, task_pid: int | None = None, position: int | None = None) -> None:
        row = self.pool.agents.get(agent_id)
        task_pid = (row.task_pid if row else None) or task_pid  # the slot's pid, when its Started never came
        task_id = self.pool.remove(agent_id)
        self._deadline.pop(agent_id, None)
        self.sched.agent_gone(agent_id)
        self._emit("agent:exited", agent=agent_id, reason=reason)
        held = self._chunks.pop(agent_id, None) or ([task_id] if task_id is not None else [])
        if task_pid and task_id is not None:
            _killpg(task_pid)  # its whole process group: the agent cannot do it any more
        if len(held) > 1:
            # Of a chunk, only the task the agent was on is lost to its death; the others (done but not
            # reported, or not started) go back to the queue uncounted.
            lost = held[position] if position is not None and 0 <= position < len(held) else held[0]
            self._give_back(agent_id, [t for t in held if t != lost], why=f"agent {agent_id} died")
            held = [lost]
        for held_id in held:  # one task at most by now
            if agent_id in self._timed_out:
                outcome, error = Outcome.TIMED_OUT, f"timed out after {self.tasks[held_id].timeout:g}s; agent killed"
            elif self.interrupted_by is not None:
                outcome, error = Outcome.INTERRUPTED, "interrupted"
            else:
                outcome, error = Outcome.AGENT_DIED, f"agent {agent_id} died ({reason})"
            attempt = self.sched.current_attempt(held_id)
            rec = self._records.get((held_id, attempt), {})
            if rec and rec.get("reserved") is None:  # a chunk's later task: held from now, in the record
                rec["reserved"] = time.time()
                self._emit("task:reserved", task=held_id, agent=agent_id, attempt=attempt, wait_s=0.0)
            logged = bool(rec.get("log")) and os.path.exists(rec["log"])  # a quick, silent attempt may have left none
            result = TaskResult(
                held_id, attempt, outcome.value, None, rec.get("start") or time.time(), time.time(), error=error, log=logged
            )
            self._outcome(agent_id, held_id, attempt, outcome, result)
        self._timed_out.discard(agent_id)
        if agent_id in self._retiring:
            self._retiring.discard(agent_id)
        elif self.interrupted_by is None and not self.sched.finished() and row is not None:
            self._spawn(row.role)

    def _outcome(self, agent_id: str, task_id: str, attempt: int, outcome: Outcome, msg: TaskResult) -> None:
        now = time.monotonic()
        rec = self._records.setdefault((task_id, attempt), {"task": task_id, "attempt": attempt, "agent": agent_id})
        rec["start"] = rec.get("start") or msg.start
        rec["end"] = msg.end
        log_path = rec.get("log") if msg.log else None  # None: the attempt wrote nothing
        rec["log"] = log_path
        try:
            self.ledger.record(
                self.run_id,
                Attempt(task_id, attempt, agent_id, msg.start, msg.end, msg.exit_code, outcome.value, log_path, msg.error, msg.value),
            )
            self._unrecorded += 1
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike: the run must stop cleanly
            self._ledger_failed(exc)
        retry = self.sched.finish(task_id, agent_id, outcome, now, msg.retry_after)
        wall = time.time()
        duration = (msg.end - msg.start) if msg.start else 0.0
        self._emit(
            "task:finished",
            task=task_id,
            agent=agent_id,
            attempt=attempt,
            status=outcome.value,
            exit_code=msg.exit_code,
            wait_s=round((rec.get("reserved") or wall) - (rec.get("queued") or rec.get("reserved") or wall), 6),
            duration_s=round(duration, 6),
            log=log_path,
            error=msg.error,
        )
        self._last_outcome[task_id] = {
            "agent": agent_id,
            "attempts": attempt,
            "duration_s": round(duration, 3),
            "exit_code": msg.exit_code,
            "log": log_path,
            "error": msg.error,
            "value": msg.value,
        }
        if self.opt.write_back and self.sched.state[task_id] in (TaskState.SUCCEEDED, TaskState.FAILED):
            status = "done" if outcome is Outcome.SUCCEEDED else "blocked"
            error = None if status == "done" else f"{msg.error or outcome.value} (log: {log_path})"
            self._write_back.setdefault(self.tasks[task_id].file, {})[task_id] = (status, error)
        if retry is not None:
            extra = {}
            if outcome is Outcome.RATE_LIMITED:
                pause = max(0.0, self.sched.cooldown_until(agent_id) - now)
                extra = {"agent": agent_id, "cooldown_s": round(pause, 3)}
                self.pool.set_state(agent_id, "cooling")
                self._cooling[agent_id] = self.sched.cooldown_until(agent_id)
                self._emit("agent:cooldown", agent=agent_id, cooldown_s=round(pause, 3), task=task_id)
            self._emit(
                "task:retry", task=task_id, attempt=retry.attempt, delay_s=round(retry.delay, 3), reason=retry.reason, **extra
            )
        for changed in self.sched.drain_changes():
            self._note_change(changed, wall)

    def _note_change(self, task_id: str, wall: float) -> None:
        state = self.sched.state[task_id]
        if state is TaskState.QUEUED:
            self._queued_at[task_id] = wall
            self._emit("task:queued", ts=wall, task=task_id, priority=self.tasks[task_id].priority.value)
        elif state is TaskState.SKIPPED:
            self._emit("task:skipped", task=task_id, reason=self.sched.reason.get(task_id, ""))

    def _write_statuses(self) -> None:
        from runner.roadmap.writeback import write_statuses

        pending, self._write_back = self._write_back, {}
        for path, updates in pending.items():
            try:
                missing = write_statuses(path, updates)
            except OSError as exc:
                self.reporter.message(f"warning: --write-back: cannot update {path}: {exc.strerror}")
                continue
            for task_id in missing:
                self.reporter.message(f"warning: --write-back: task {task_id} not found as a block mapping in {path}")

    def _ledger_failed(self, exc: Exception) -> None:
        if self.ledger_error is None:
            self.ledger_error = f"{type(exc).__name__}: {exc}"
            try:  # keep what was written before the failure, if the database still takes a commit
                self.ledger.commit()
                self._recorded += self._unrecorded
            except Exception:  # noqa: BLE001 - it is already failing; the message says what was recorded
                pass
            self._unrecorded = 0
            self.reporter.message(
                f"error: cannot write the ledger ({self.ledger_error}); {self._recorded} outcome(s) were recorded; "
                "handing out no more tasks, running ones finish"
            )
            self.sched.draining = True
            self.sched.abandon_waiting("not started: the ledger cannot be written")

    def _check_deadlines(self, now: float) -> None:
        for agent_id, deadline in list(self._deadline.items()):
            if now >= deadline:
                del self._deadline[agent_id]
                self._timed_out.add(agent_id)
                self.backend.kill(agent_id)
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._stop_deadline = None
            self._kill_now()

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
        busy = self.pool.busy_count()
        self._emit("status:updated", busy=busy, idle=len(self.pool.agents) - busy, queue=self.sched.queue_length())
        self._emit("queue:updated", length=self.sched.queue_length(), oldest_wait_s=round(self.sched.oldest_wait(now), 3))
        self._flush()
        self.reporter.refresh(self.pool)

    def _emit(self, name: str, ts: float | None = None, **fields) -> None:
        if not self._pending_events:
            self._pending_since = time.monotonic()
        ev = event(name, **fields)
        if ts is not None:
            ev["ts"] = ts  # the moment the figures in the event were taken, so wait_s matches the timestamps
        self._pending_events.append(ev)

    def _flush(self) -> None:
        """Commit the ledger, then report: an outcome is durable before anyone hears of it."""
        if not self._pending_events:
            return
        if self.ledger_error is None:
            try:
                self.ledger.commit()
                self._recorded += self._unrecorded
                self._unrecorded = 0
            except Exception as exc:  # noqa: BLE001
                self._ledger_failed(exc)
        if self._write_back:
            self._write_statuses()
        batch, self._pending_events = self._pending_events, []
        self.events.write(batch)
        self.events.flush()
        self.reporter.events(batch)

    # -- the end --------------------------------------------------------------------------------------

    def _finish(self) -> RunResult:
        rows = []
        counts = {"succeeded": 0, "failed": 0, "skipped": 0, "interrupted": 0}
        for task in self._members():
            state = self.sched.state[task.id]
            last = self._last_outcome.get(task.id, {})
            status = state.value
            if state is TaskState.FAILED:
                status = self.sched.reason.get(task.id, "failed")
                if status not in ("failed", "timed_out", "agent_died"):
                    status = "failed"
            counts_key = {
                TaskState.SUCCEEDED: "succeeded",
                TaskState.FAILED: "failed",
                TaskState.SKIPPED: "skipped",
                TaskState.INTERRUPTED: "interrupted",
            }.get(state, "interrupted")
            counts[counts_key] += 1
            rows.append(
                {
                    "task": task.id,
                    "title": task.title,
                    "status": status,
                    "agent": last.get("agent"),
                    "attempts": last.get("attempts", 0),
                    "duration_s": last.get("duration_s"),
                    "exit_code": last.get("exit_code"),
                    "log": last.get("log"),
                    "reason": self.sched.reason.get(task.id) if state is not TaskState.SUCCEEDED else None,
                    "value": last.get("value"),
                }
            )
        deps = {t.id: list(t.dependencies) for t in self.roadmap.tasks}
        priorities = {t.id: t.priority.value for t in self.roadmap.tasks}
        telemetry = summarize(list(self._records.values()), sum(self.roles.values()), deps, priorities)
        if self.interrupted_by == signal.SIGINT:
            code, status = EXIT_INTERRUPTED, "interrupted"
        elif self.interrupted_by == signal.SIGTERM:
            code, status = EXIT_TERMINATED, "interrupted"
        elif counts["failed"] or self.ledger_error or self.sched.failures:
            code, status = EXIT_TASK_FAILED, "failed"
        else:
            code, status = EXIT_OK, "succeeded"
        summary = {
            "run_id": self.run_id,
            "status": status,
            "total": len(rows),
            **counts,
            "makespan_s": telemetry["makespan_s"],
            "agents": dict(self.roles),
            "folder": self.folder,
            "telemetry": telemetry,
        }
        if self.ledger_error:
            summary["ledger_error"] = self.ledger_error
        self._emit("run:finished", run=self.run_id, status=status, exit_code=code)
        self._flush()
        self.events.close()
        if self.ledger_error is None:
            try:
                self.ledger.finish_run(self.run_id, status, {k: summary[k] for k in ("total", *counts, "makespan_s")})
            except Exception as exc:  # noqa: BLE001
                self._ledger_failed(exc)
        self.ledger.close()
        result = RunResult(code, self.run_id, self.folder, summary, rows)
        self.reporter.finished(result)
        return result


def _headroom(max_load: float | None) -> bool:
    """Room for one more agent: the load average below max_load (default: the core count), 10% memory free."""
    import psutil

    limit = max_load if max_load is not None else float(os.cpu_count() or 1)
    return os.getloadavg()[0] < limit and psutil.virtual_memory().percent < 90


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _drain_fd(fd: int) -> None:
    try:
        os.read(fd, 4096)
    except BlockingIOError:
        pass
