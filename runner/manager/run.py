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
import time

from runner.agents.backend import AgentGone, AgentReady
from runner.agents.messages import BatchResult, ChunkReturn, Started, TaskBatch, TaskMessage, TaskResult
from runner.coding import executors
from runner.errors import UsageError
from runner.manager import statedir
from runner.manager.accounts import Accounts
from runner.manager.chunks import Chunks
from runner.manager.landing import Landing
from runner.manager.live import Live
from runner.manager.interface import Reporter, RunOptions, RunResult, default_roles, make_backend  # noqa: F401 - the run's API
from runner.manager.ledger import Ledger
from runner.manager.liveness import Liveness
from runner.manager.outcomes import Outcomes
from runner.manager.pool import Pool, serve_board
from runner.manager.quick import QuickCalls
from runner.manager.review import Review
from runner.manager.scaling import _REFRESH_S, Scaling
from runner.manager.stopping import Stopping
from runner.manager.scheduler import AgentView, Scheduler
from runner.manager.telemetry import EventLog, event
from runner.model import Outcome, Roadmap, Task

log = logging.getLogger(__name__)

# A hung agent (or a callable past its timeout) is killed this long after its task's deadline + grace.
_BACKSTOP_S = 5.0
# Longest time an outcome waits to be committed and reported (group commit).
_FLUSH_S = 0.05
# The board (--status) is served from the first refresh after this long: a run of a few quick tasks
# is over before anyone could ask, and serving it costs ~10 ms of start-up.
_BOARD_AFTER_S = 0.25


class Run(Outcomes, Chunks, Scaling, Stopping, Landing, Review, Accounts, Live, Liveness):
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
        self.events_error: str | None = None  # "PATH: reason" once an events file cannot be written
        self._write_back: dict[str, dict[str, tuple[str, str | None]]] = {}  # file -> task id -> (status, error)
        self._chunks: dict[str, list[str]] = {}  # agent id -> task ids of the chunk of quick callables it holds
        self._quick = QuickCalls()
        self._recorded = 0  # outcomes committed to the ledger
        self._unrecorded = 0  # outcomes written but not yet committed
        self._feedback: dict[str, list[tuple[int, str]]] = {}  # task id -> (attempt, why it failed), for the next attempt
        self.ws = {}  # task id -> runner.coding.settings.Workspace (set by _check_runnable)
        self._released = False  # a task became ready since the last commit (set by Outcomes._note_change)
        self._init_review()  # review rounds, verdicts, critic worktrees, each attempt's model (manager.review)
        self._init_accounts()  # agent-CLI limits, sessions, spend (runner.manager.accounts)

    # -- set-up ---------------------------------------------------------------------------------------

    def _check_runnable(self) -> None:
        self._workspace_settings()
        self._review_settings()
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
            self.ledger = Ledger(os.path.join(state_dir, "ledger.sqlite"), full_check=self.opt.resume)
            carried, resumed_from = self._resume_set()
            run_id = self.ledger.start_run(self.roadmap, sum(self.roles.values()), "", resumed_from, set(carried))
        except BaseException:
            self.backend.stop(timeout=5.0)
            raise
        self.run_id = run_id
        self.folder = statedir.new_run_folder(state_dir, run_id)
        self.logs = os.path.join(self.folder, "logs")
        self._spaces, self._landers = {}, {}
        if self._worktree_tasks():
            self._open_workspaces()
        self.ledger.set_folder(run_id, self.folder)
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
            files=self._files_table(),
            review_rounds=self.review_rounds,
        )
        wall = time.time()
        for task_id in self.sched.drain_changes():
            if self.opt.selected is None or task_id in self.opt.selected:
                self._note_change(task_id, wall)
        self._total = len(self._members())
        self._live_start()
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
        if self.events.error is not None:  # an events file that cannot be opened: nothing is started
            self._events_failed()
        wake_r, wake_w = os.pipe()
        self._wake_w = wake_w  # the landing thread wakes the loop through it too
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
            self._stop_landing()
            os.close(wake_r)
            os.close(wake_w)
            for agent_id, reason in self.backend.stop(timeout=5.0):
                self._emit("agent:exited", agent=agent_id, reason=reason)
            self._flush()
            if self.board is not None:
                self.board.close()
        return self._finish()

    def _spawn(self, role: str) -> str:
        index = self._next_index.get(role, 0)
        self._next_index[role] = index + 1
        agent_id = f"{role}-{index}"
        pid = self.backend.start(agent_id, role)
        # A local agent is up once forked; a Ray actor only when its AgentReady arrives.
        self.pool.add(agent_id, role, pid, state="idle" if pid is not None else "starting")
        self._emit("agent:spawned", agent=agent_id, role=role, pid=pid)
        return agent_id

    # -- the loop -------------------------------------------------------------------------------------

    def _loop(self, wake_r: int) -> None:
        next_refresh = 0.0
        self._board_at = time.monotonic() + _BOARD_AFTER_S
        while True:
            now = time.monotonic()
            if self._released and self.ledger_error is None:  # a dependent starts on a committed success only
                self._commit()
            if not self.sched.draining and self.ledger_error is None:
                self._hand_out(now)
            if self.board is None and now >= self._board_at:
                self.board = serve_board(self.pool, self.folder)
            if self.sched.finished() and not self.pool.reservations:
                if self._live_tick(now, force=True):  # a task of the run added tasks to the roadmap
                    continue
                self._flush()
                return
            self._live_tick(now)
            if now >= next_refresh:
                self._refresh()
                next_refresh = now + _REFRESH_S
            timeout = self._timeout(now, next_refresh)
            starting = any(r.state == "starting" for r in self.pool.agents.values())
            if (
                timeout is None and not self.pool.reservations and not starting and not self.sched.finished()
                and not self._landing_pending()
            ):
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
            if self._spaces and self._land_done:
                self._collect_landings()
            if extras:
                _drain_fd(wake_r)
                self._on_signals()
            for agent_id, msg in messages:  # hand-outs wait for the whole batch: an AgentGone may follow
                self._handle(agent_id, msg)
            self._check_deadlines(time.monotonic())
            self._check_liveness(time.monotonic())

    def _timeout(self, now: float, next_refresh: float) -> float | None:
        times = []
        t = self.sched.next_timer(now)
        if t is not None:
            times.append(now + t)
        times.extend(self._deadline.values())
        times.extend(self._pause_timers(now))
        if self._stop_deadline is not None:
            times.append(self._stop_deadline)
        if self.board is None:
            times.append(self._board_at)
        if self.pool.reservations:
            times.append(next_refresh)
            times.append(self._liveness_timer())
        if self._live_on:
            times.append(self._live_next)
        if self.sched.queue_length() and (self.opt.memfree is not None or self.opt.max_load is not None):
            times.append(now + 1.0)
        return None if not times else max(0.0, min(times) - now)

    def _stuck(self) -> None:
        """Nothing runs, nothing can be handed out and no timer is set: a bug; never hang on it."""
        log.error("no task can be scheduled and none is running; skipping the rest")
        self.stuck = True  # a bug, never a success: the run ends failed
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
        self._hold_paused(now)  # agents of an account out of usage stay cooling
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
            if self._chunking and self._chunkable(task):
                limit = self._quick.size(task, self.sched.queue_length() + 1, len(self.pool.agents))
                while len(chunk) < limit:
                    more = self.sched.assign_more(agent, now, self._chunkable)
                    if more is None:
                        break
                    chunk.append(more)
            title = task.title if len(chunk) == 1 else f"{task.title or task.id} (+{len(chunk) - 1} quick tasks)"
            if self.review_rounds and self.sched.reviewing(task.id):
                title = f"review: {task.title or task.id}"
            self.pool.reserve(agent.id, task.id, title)
            messages = []
            for t in chunk:
                attempt = self.sched.next_attempt(t.id)
                msg = self._message(t, agent.role, attempt, agent.id)
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

    def _chunkable(self, task: Task) -> bool:  # a worktree, checks or files: an attempt of its own
        return task.id not in self.ws and self._quick.fits(task)

    def _message(self, task: Task, role: str, attempt: int, agent_id: str = "") -> TaskMessage:
        if self.review_rounds and self.sched.reviewing(task.id):
            return self._review_message(task, role, attempt)
        log_path = os.path.join(self.logs, f"{statedir.safe_name(task.id)}.{attempt}.log")
        command = task.command
        rate_limit = self.opt.rate_limit
        feedback = self._feedback_text(task.id)
        env = {**{k: str(v) for k, v in task.env.items()}, "WVO_TASK_ID": task.id, "WVO_ATTEMPT": str(attempt)}
        if feedback:
            env["WVO_FEEDBACK"] = feedback
        cli = {}
        if command is None and task.call is None and self.executor.output:  # an agent CLI (runner.manager.accounts)
            cli = self._cli_message(task, role, agent_id, attempt, feedback)
            command = cli.pop("command")
            env.update(cli.pop("env"))
            rate_limit = rate_limit or self.executor.rate_limit
        elif command is None and task.call is None:
            command = executors.build_argv(task, role, self.executor, feedback, attempt)
            rate_limit = rate_limit or self.executor.rate_limit
        elif isinstance(command, list):
            command = tuple(command)
        if task.command is None and task.call is None:
            self._note_model(task, role, attempt)
        return TaskMessage(
            task_id=task.id,
            attempt=attempt,
            log_path=log_path,
            command=command,
            call=task.call,
            args=tuple(task.args),
            kwargs=dict(task.kwargs),
            env=env,
            cwd=task.cwd,
            timeout=task.timeout,
            grace=self.opt.grace,
            rate_limit_pattern=rate_limit,
            workspace=self._workspace_field(task.id) if self.ws else None,
            checks=self.ws[task.id].checks if task.id in self.ws else (),
            **cli,
        )

    def _handle(self, agent_id: str, msg) -> None:
        if isinstance(msg, Started):
            if self.pool.reservations.get(agent_id) != msg.task_id:
                log.warning("agent %s started %s, which it does not hold; ignored", agent_id, msg.task_id)
                return
            self.pool.set_task_pid(agent_id, msg.pid)
            self.sched.started(msg.task_id, agent_id)
            self._live_status(msg.task_id, "in_progress")
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
            if msg.cli is not None:  # every attempt's spend, the worker's and the critic's, before review takes it
                self._cli_result(agent_id, msg)
            if self.review_rounds and self._review_result(agent_id, msg):
                return
            if self.ws and self._to_landing(agent_id, msg):
                return
            self._outcome(agent_id, msg.task_id, msg.attempt, Outcome(msg.outcome), msg)
        elif isinstance(msg, BatchResult):
            self._batch_done(agent_id, msg)
        elif isinstance(msg, ChunkReturn):
            self._chunk_returned(agent_id, msg.task_ids)
        elif isinstance(msg, AgentGone):
            position = self._salvage(agent_id, msg)  # what it finished of its chunk is recorded, not run again
            self._agent_gone(agent_id, msg.reason, msg.task_pid, position)
        elif isinstance(msg, AgentReady):
            row = self.pool.agents.get(agent_id)
            if row is not None:
                row.pid = msg.pid
                self.pool.set_state(agent_id, "idle")

    def _check_deadlines(self, now: float) -> None:
        for agent_id, deadline in list(self._deadline.items()):
            if now >= deadline:
                del self._deadline[agent_id]
                self._timed_out.add(agent_id)
                self.backend.kill(agent_id)
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._stop_deadline = None
            self._kill_now()

    def _emit(self, name: str, ts: float | None = None, **fields) -> None:
        if not self._pending_events:
            self._pending_since = time.monotonic()
        ev = event(name, **fields)
        if ts is not None:
            ev["ts"] = ts  # the moment the figures in the event were taken, so wait_s matches the timestamps
        self._pending_events.append(ev)

    def _flush(self) -> None:
        """Commit the ledger, then report: an outcome is durable before anyone hears of it.

        After a ledger failure nothing more is committed until the run's end (Outcomes._close_ledger
        tries once more), so the count the message gave stays the ledger's truth meanwhile.
        """
        if not self._pending_events:
            return
        if self.ledger_error is None:
            self._commit()
        if self._write_back:
            self._write_statuses()
        batch, self._pending_events = self._pending_events, []
        self.events.write(batch)
        self.events.flush()
        if self.events.error is not None and self.events_error is None:
            self._events_failed()
        self.reporter.events(batch)

    def _commit(self) -> None:
        self._released = False
        try:
            self.ledger.commit()
            self._recorded = self.ledger.committed
            self._unrecorded = 0
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike: the run must stop cleanly
            self._ledger_failed(exc)

    # -- the end --------------------------------------------------------------------------------------



def _drain_fd(fd: int) -> None:
    try:
        os.read(fd, 4096)
    except BlockingIOError:
        pass
