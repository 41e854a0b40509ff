"""The manager's run loop: wait, dispatch, timers, group commit; every feature is a component.

    Roadmap ──▶ Scheduler (pure) ──assign(gate: can_start)──▶ pool.reserve(agent, task)   [agent id -> task id]
                     ▲                                          │ TaskMessage (+ message_env) over the backend
                     │ finish(outcome)                          ▼
    outcomes.record ◀── on_result (a component may take it) ◀── TaskResult / AgentGone ◀── agents (one OS
         │ the ledger first; one COMMIT per _FLUSH_S                                        process each)
         └──▶ events (events.jsonl, --events) ──▶ the reporter (terminal)

    components (runner.manager.components), each owning its state, in this order:
      chunks · accounts (executors by task and role, limits, sessions, spend, budget) · review ·
      landing queue · live roadmap · hung agents · scaling · board · leases (with `resources:` only)
    hooks: start · can_start · chunk · message · message_env · on_started · on_result · attempt_fields ·
      event_fields · on_outcome · on_agent_gone · timers · tick · busy · at_end · on_commit · finish ·
      ending · task_rows · summary

One thread changes all shared state (runner.manager.context). It sleeps in one wait on every agent's
pipe, every agent's process sentinel (a death is seen at once) and a wake-up pipe (signals, the
landing thread), with a timeout set by the nearest timer.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from dataclasses import replace

from runner.agents.backend import AgentGone, AgentReady
from runner.agents.messages import Cancel, Started, TaskBatch, TaskMessage, TaskResult
from runner.errors import RoadmapError, UsageError
from runner.manager.logs import Logger
from runner.manager import events as ev
from runner.manager import statedir
from runner.manager.accounts import (Accounts, executor_problems, executors_module as _executors, fleet_of_run,
                                     no_executor, without_executor)
from runner.manager.board import Board
from runner.manager.chunks import Chunks
from runner.manager.components import Hooks
from runner.manager.context import RunContext
from runner.manager.hung_agents import HungAgents
from runner.manager.landing_queue import LandingQueue
from runner.manager.ledger import Ledger, task_hash, task_hashes
from runner.manager.live import LiveRoadmap
from runner.manager.options import Reporter, RunOptions, RunResult, decide_pool, default_roles, make_backend  # noqa: F401 - the run's API
from runner.manager.outcomes import Outcomes, killpg
from runner.manager.review_rounds import ReviewRounds
from runner.manager.scaling import Scaling
from runner.manager.scheduler import AgentView, Scheduler
from runner.manager.stopping import Signals
from runner.model import Outcome, Roadmap, Task

log = Logger(__name__)

# A hung agent (or a callable past its timeout) is killed this long after its task's deadline + grace.
_BACKSTOP_S = 5.0
# Longest time an outcome waits to be committed and reported (group commit).
_FLUSH_S = 0.05


class Run:
    """One run of a roadmap on a pool of agents."""

    def __init__(self, roadmap: Roadmap, options: RunOptions, reporter: Reporter | None = None, plugins=()):
        """plugins: more components, each made from the run's context (`plugin(ctx) -> Component`)."""
        self._fleet = fleet_of_run(roadmap, options.executor)  # executors.Fleet or None: runner.coding only for one
        executor = None if self._fleet is None else self._fleet.default()
        roles = decide_pool(options, roadmap).roles  # its warning, if any, is the caller's (runner.manager.autopilot)
        self.ctx = RunContext(roadmap, options, reporter or Reporter(), executor, roles)
        self.pool = self.ctx.pool  # the agent table and the reservations (read by tests and --status)
        self.backend = None  # set once the run starts
        # The components, built by execute() (their settings are checked then, before anything runs); the
        # loop calls these three by name (set-up, messages), the rest only through their hooks.
        self.components: list = []  # in the order the hooks are called
        self.hooks: Hooks | None = None  # each hook bound to the components that override it
        self.landing: LandingQueue | None = None
        self.accounts: Accounts | None = None
        self.review: ReviewRounds | None = None
        self.outcomes: Outcomes | None = None  # the run's record: every outcome, the ledger and the events
        self.leasing = None  # runner.manager.leasing.Leasing when the roadmap declares `resources:`; built by _build
        self._plugins = tuple(plugins)
        self._deadline: dict[str, float] = {}  # agent id -> monotonic time to kill it (hung / callable timeout)
        self._timed_out: set[str] = set()  # agents killed by the loop for a task timeout
        self._next_index: dict[str, int] = {}  # role -> number of the next agent of that role
        self._signals = Signals()  # SIGINT / SIGTERM received, handled by the loop
        self._stop_deadline: float | None = None  # monotonic time a stop's grace runs out
        self._stuck = False  # nothing could be scheduled and nothing ran: a bug, the run ends failed
        self._template: TaskMessage | None = None  # what a chunk's rows share (_chunk_template)

    # -- set-up ---------------------------------------------------------------------------------------

    def _build(self) -> None:
        """The components, each from its settings; UsageError (RoadmapError) naming the place for a bad one."""
        ctx = self.ctx
        self.landing = LandingQueue(ctx)
        self.accounts = Accounts(ctx, self._fleet)
        live = LiveRoadmap(ctx)
        self.review = ReviewRounds(ctx, self.landing, self.accounts, live)
        live.review = self.review  # each needs the other: a joining task's review is decided by it
        chunks = Chunks(ctx, self._can_start, self._returned)
        self.components = [chunks, self.accounts, self.review, self.landing, live, HungAgents(ctx), Scaling(ctx, self._spawn),
                           Board(ctx)]  # fmt: skip
        if (ctx.roadmap.settings or {}).get("resources"):  # a run without pools has no hook of it on its path
            from runner.manager.leasing import Leasing

            self.leasing = Leasing(ctx)
            self.landing.lease_env = self.leasing.env  # the merged result's checks run with the task's lease too
            self.landing.lease_for_resume = self.leasing.for_resume  # and a dead run's attempt landed by --resume
            self.components.append(self.leasing)  # last: its can_start records what the scheduler leased
        self.components += [make(ctx) for make in self._plugins]
        self.hooks = Hooks(self.components)
        if not self.hooks.can_start:
            chunks.gate = None  # no component has a word on what starts: a chunk's tasks are not asked one by one
        self.outcomes = ctx.outcomes = Outcomes(ctx, self.hooks)
        ctx.flush = self.outcomes.flush
        missing = without_executor(ctx.members(), self._fleet, ctx.opt.blocked)
        if missing:  # --check's plan says so too
            raise UsageError(no_executor(missing))
        problems = executor_problems(ctx.members(), self._fleet, ctx.roles, ctx.opt.blocked, programs=ctx.opt.backend != "ray")
        if problems:
            raise RoadmapError(problems)  # what --check says too

    def execute(self) -> RunResult:
        """Run the roadmap to the end; raises BatchError subclasses for what stops it before it starts."""
        self._build()
        opt = self.ctx.opt
        state_dir, legacy = (opt.state_dir, None) if opt.state_dir else statedir.run_state_dir(self.ctx.roadmap.files)
        if legacy is not None:
            self.ctx.reporter.message(f"state dir: {state_dir} now leads to {legacy}, this roadmap's state dir by an "
                                      "earlier spelling of its path")
        state_dir = statedir.prepare(state_dir)
        shared = None if opt.state_dir else statedir.shared_lock_dir()  # two names of one file: two default state dirs
        lock = statedir.RunLock.of_roadmaps(state_dir, self.ctx.roadmap.files, shared)
        lock.acquire()
        try:
            if lock.stale_pid:
                self.ctx.reporter.message(f"warning: taking over a stale lock left by PID {lock.stale_pid}")
            return self._execute_locked(state_dir)
        finally:
            gc.unfreeze()  # what _execute_locked froze: a program that runs again (batches, a library's caller) collects it
            lock.release()

    def _execute_locked(self, state_dir: str) -> RunResult:
        ctx, opt = self.ctx, self.ctx.opt
        # The backend first: a missing Ray is a usage error before anything is recorded, and a
        # cluster's start-up is not counted as queue wait.
        self.backend = ctx.backend = make_backend(opt.backend, opt)
        try:
            ctx.ledger = Ledger(os.path.join(state_dir, "ledger.sqlite"), full_check=opt.resume)
            carried, resumed_from, absent = self._resume_set()
            if resumed_from is not None:
                self.accounts.carry_spend(resumed_from)
            # with the successes of the loop's earlier batches (opt.done): a --resume of this run does not run them
            # again; and what they spent, for its budget
            ctx.run_id = ctx.ledger.start_run(ctx.roadmap, sum(ctx.roles.values()), "", resumed_from,
                                              set(carried) | (set(opt.done) & set(ctx.tasks)), absent,
                                              self.accounts.spent_before)  # fmt: skip
            if resumed_from is not None:
                self.accounts.carry_sessions(resumed_from, carried)
        except BaseException:
            self.backend.stop(timeout=5.0)
            raise
        ctx.folder = statedir.new_run_folder(state_dir, ctx.run_id)
        ctx.logs = os.path.join(ctx.folder, "logs")
        self.landing.open_workspaces()
        ctx.ledger.set_folder(ctx.run_id, ctx.folder)
        if self.backend.name == "local":  # (a Ray driver has threads: no fork there)
            ctx.ledger.write_tasks_behind()  # a large roadmap's task rows, by a child, while the run sets up and starts
        self.outcomes.open_events([os.path.join(ctx.folder, "events.jsonl")] + ([opt.events_file] if opt.events_file else []))
        blocked = dict(opt.blocked)
        if opt.selected is not None:
            for t in ctx.roadmap.tasks:
                if t.id not in opt.selected and t.id not in opt.done:
                    blocked.setdefault(t.id, "not in this batch")
        ctx.sched = Scheduler(
            ctx.roadmap.tasks, now=time.monotonic(), roles={r for r, n in ctx.roles.items() if n > 0},
            succeeded=set(carried) | (set(opt.done) & set(ctx.tasks)), blocked=blocked, default_retries=opt.retries,
            route_wait=opt.route_wait, affinity_wait=opt.affinity_wait, age_every=opt.age_every,
            backoff_base=opt.backoff_base, max_failures=opt.max_failures, failures_before=opt.failures_before,
            files={tid: w.files for tid, w in ctx.ws.items() if w.files}, review_rounds=self.review.rounds,
            leases=self.leasing.gate if self.leasing is not None else None,
        )  # fmt: skip
        ctx.note_changes(time.time(), opt.selected)
        ctx.total = len(ctx.members())
        for start in self.hooks.start:
            start()
        ctx.reporter.started({"run_id": ctx.run_id, "folder": ctx.folder, "state_dir": state_dir, "agents": dict(ctx.roles),
                              "tasks": ctx.total, "runnable": ctx.sched.active(), "resumed_from": resumed_from,
                              "carried": len(carried)})  # fmt: skip
        ctx.emit(ev.RUN_STARTED, run=ctx.run_id, agents=sum(ctx.roles.values()), tasks=ctx.total)
        self.outcomes.check_events()  # an events file that cannot be opened: nothing is started
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        ctx.wake = lambda: _poke(wake_w)  # the landing thread wakes the loop through it too
        old = self._signals.install(wake_w)
        # What the run has set up (the roadmap, the scheduler, the components) lives as long as the run: the cyclic
        # collector leaves it alone until the end (~20 ms of collections at 20,000 tasks), and so do the agents'
        # collectors, forked from here (they would walk, and copy, the pages they share with the manager).
        gc.freeze()
        try:
            for role, count in ctx.roles.items():
                for _ in range(count):
                    self._spawn(role)
                    if not ctx.sched.draining:  # the first agents start work while the others are forked
                        self._hand_out(time.monotonic())
            self._loop(wake_r)
        finally:
            self._signals.restore(old)
            self.landing.stop_thread()
            ctx.wake = lambda: None
            os.close(wake_r)
            os.close(wake_w)
            for agent_id, reason in self.backend.stop(timeout=5.0):
                ctx.emit(ev.AGENT_EXITED, agent=agent_id, reason=reason)
            self.outcomes.flush()
            for finish in self.hooks.finish:
                finish()
        return replace(self.outcomes.finish(self._stuck), carried=frozenset(carried))

    def _resume_set(self) -> tuple[dict[str, str], int | None, dict[str, str]]:
        """Tasks to carry over from the run being resumed: succeeded there, definition unchanged; and those that
        succeeded there and are not in the roadmap now (kept in the ledger, should they come back)."""
        ctx = self.ctx
        if not ctx.opt.resume:
            return {}, None, {}
        previous = ctx.ledger.latest_unfinished(ctx.roadmap.files)
        if previous is None:
            ctx.reporter.message("resume: no unfinished run of this roadmap; starting a fresh run")
            return {}, None, {}
        carried = {}
        succeeded = ctx.ledger.succeeded_tasks(previous.id)
        absent = {task_id: old_hash for task_id, old_hash in succeeded.items() if task_id not in ctx.tasks}
        found = [(task_id, old_hash) for task_id, old_hash in succeeded.items() if task_id in ctx.tasks]
        for (task_id, old_hash), new_hash in zip(found, task_hashes([ctx.tasks[task_id] for task_id, _ in found])):
            if new_hash == old_hash:
                carried[task_id] = old_hash
            else:
                ctx.reporter.message(f"resume: task {task_id} changed since run {previous.id}; running it again")
        for task_id in self.landing.recover(previous.id, self.review.rounds) - set(carried):
            if task_id in ctx.tasks:
                carried[task_id] = task_hash(ctx.tasks[task_id])
        ctx.reporter.message(f"resume: continuing run {previous.id}: {len(carried)} task(s) already succeeded are not run again")
        return carried, previous.id, absent

    def _spawn(self, role: str) -> str:
        index = self._next_index.get(role, 0)
        self._next_index[role] = index + 1
        agent_id = f"{role}-{index}"
        pid = self.backend.start(agent_id, role)
        # A local agent is up once forked; a Ray actor only when its AgentReady arrives.
        self.ctx.pool.add(agent_id, role, pid, state="idle" if pid is not None else "starting")
        self.ctx.emit(ev.AGENT_SPAWNED, agent=agent_id, role=role, pid=pid)
        return agent_id

    # -- the loop -------------------------------------------------------------------------------------

    def _loop(self, wake_r: int) -> None:
        ctx, record = self.ctx, self.outcomes
        while True:
            now = time.monotonic()
            if ctx.released and record.ledger_error is None:  # a dependent starts on a committed success only
                record.commit()
            if not ctx.sched.draining and record.ledger_error is None:
                self._hand_out(now)
            if ctx.sched.finished() and not ctx.pool.reservations:
                if any([at_end(now) for at_end in self.hooks.at_end]):  # a task of the run added tasks to the roadmap
                    continue
                record.flush()
                return
            timeout = self._timeout(now)
            if timeout is None and self._idle_for_good():
                self._abandon()
                continue
            if ctx.pending:  # group commit: one COMMIT and one write serve every outcome of the next _FLUSH_S
                due = ctx.pending_since + _FLUSH_S
                if now >= due:
                    record.flush()
                else:
                    timeout = due - now if timeout is None else min(timeout, due - now)
            messages, woken = self.backend.wait(timeout, [wake_r])
            if woken:
                _drain_fd(wake_r)
                self._on_signals()
            for agent_id, msg in messages:  # hand-outs wait for the whole batch: an AgentGone may follow
                self._dispatch(agent_id, msg)
            now = time.monotonic()
            self._check_deadlines(now)
            for tick in self.hooks.tick:
                tick(now)

    def _timeout(self, now: float) -> float | None:
        times = list(self._deadline.values())
        t = self.ctx.sched.next_timer(now)
        if t is not None:
            times.append(now + t)
        if self._stop_deadline is not None:
            times.append(self._stop_deadline)
        for timers in self.hooks.timers:
            times.extend(timers(now))
        if self.ctx.sched.queue_length() and (self.ctx.opt.memfree is not None or self.ctx.opt.max_load is not None):
            times.append(now + 1.0)
        return None if not times else max(0.0, min(times) - now)

    def _idle_for_good(self) -> bool:
        """Nothing runs, nothing is starting, no component waits on work of its own, yet tasks remain."""
        ctx = self.ctx
        starting = any(r.state == "starting" for r in ctx.pool.agents.values())
        return not (ctx.pool.reservations or starting or ctx.sched.finished() or any([busy() for busy in self.hooks.busy]))

    def _abandon(self) -> None:
        """Nothing can be handed out and no timer is set: a bug; never hang on it."""
        log.error("no task can be scheduled and none is running; skipping the rest")
        self._stuck = True
        self.ctx.sched.abandon_waiting("could not be scheduled")
        self.ctx.note_changes()

    # -- hand-out -------------------------------------------------------------------------------------

    def _gates_open(self) -> bool:
        opt = self.ctx.opt
        if opt.memfree is None and opt.max_load is None:
            return True
        import psutil

        if opt.memfree is not None and psutil.virtual_memory().available < opt.memfree:
            return False
        return opt.max_load is None or os.getloadavg()[0] <= opt.max_load

    def _can_start(self, task: Task) -> bool:
        """Every component lets the task start; one that said yes is told if a later one says no."""
        passed = []
        for can_start in self.hooks.can_start:
            if not can_start(task):
                for component in passed:
                    component.on_returned(task.id)
                return False
            passed.append(can_start.__self__)
        return True

    def _returned(self, task_id: str) -> None:
        for on_returned in self.hooks.on_returned:
            on_returned(task_id)

    def _hand_out(self, now: float) -> None:
        ctx = self.ctx
        for agent_id, until in list(ctx.cooling.items()):
            if until <= now:
                del ctx.cooling[agent_id]
                ctx.pool.set_state(agent_id, "idle")
        self.accounts.hold_paused(now)  # agents of an account out of usage stay cooling
        idle = ctx.pool.idle()
        if not idle or not self._gates_open():
            return
        wall = time.time()
        gate = self._can_start if self.hooks.can_start else None
        pairs = ctx.sched.assign([AgentView(r.id, r.role, r.busy_s) for r in idle], now, gate)
        ctx.note_changes(wall)  # retries whose backoff ran out are queued again
        for agent, task in pairs:
            chunk = [task]
            for more in self.hooks.chunk:
                chunk += more(agent, task, now)
            title = task.title if len(chunk) == 1 else f"{task.title or task.id} (+{len(chunk) - 1} quick tasks)"
            if ctx.sched.reviewing(task.id):
                title = f"review: {task.title or task.id}"
            ctx.pool.reserve(agent.id, task.id, title)
            attempts = ctx.sched.next_attempts(chunk)
            messages = [self._message(task, agent.role, attempts[0], agent.id)]
            template = None
            if len(chunk) > 1:
                more, template = self._chunk_messages(chunk, attempts, agent.role, agent.id)
                messages += more
            records, queued_at, reserved = ctx.records, ctx.queued_at, wall  # a chunk's later tasks: when the one before ends
            for t, attempt, msg in zip(chunk, attempts, messages):
                records[(t.id, attempt)] = {
                    "task": t.id, "attempt": attempt, "agent": agent.id, "queued": queued_at.get(t.id),
                    "reserved": reserved, "start": None, "end": None, "log": msg[2] if type(msg) is tuple else msg.log_path,
                }  # fmt: skip
                reserved = None
            ctx.emit(ev.TASK_RESERVED, ts=wall, task=task.id, agent=agent.id, attempt=messages[0].attempt,
                     wait_s=round(wall - ctx.queued_at.get(task.id, wall), 6),
                     **({"chunk": len(chunk)} if len(chunk) > 1 else {}))  # fmt: skip
            out = TaskBatch(tuple(messages), template) if len(chunk) > 1 else messages[0]
            if len(chunk) == 1 and task.timeout is not None:
                self._deadline[agent.id] = now + task.timeout + (0.0 if task.call else ctx.opt.grace + _BACKSTOP_S)
            if not self.backend.send(agent.id, out):
                log.debug("agent %s gone before it got %s; its death will requeue it", agent.id, task.id)

    def _message(self, task: Task, role: str, attempt: int, agent_id: str) -> TaskMessage:
        ctx = self.ctx
        extra: dict = {}
        for message_env in self.hooks.message_env:
            extra.update(message_env(task, attempt))
        for message in self.hooks.message:
            own = message(task, role, attempt, agent_id)
            if own is not None:
                return replace(own, env={**own.env, **extra}) if extra else own
        command, rate_limit, cli = task.command, ctx.opt.rate_limit, {}
        feedback = ctx.feedback_text(task.id)
        env = {**{k: str(v) for k, v in task.env.items()}, "WVO_TASK_ID": task.id, "WVO_ATTEMPT": str(attempt)}
        if feedback:
            env["WVO_FEEDBACK"] = feedback
        if command is None and task.call is None:  # an agent CLI built from a prompt, by its executor
            executor = self.accounts.choose(task, role, attempt).executor
            rate_limit = rate_limit or executor.rate_limit
            self.accounts.note_model(task, role, attempt)
            leased = self.leasing.values(task.id) if self.leasing is not None else None  # {port}, {db} in its templates
            if executor.output:  # its structured output read (runner.manager.accounts)
                cli = self.accounts.cli_message(task, role, agent_id, attempt, feedback, leased)
                command = cli.pop("command")
                env.update(cli.pop("env"))
            else:
                command = _executors().build_argv(task, role, executor, feedback, attempt, leased=leased)
        elif isinstance(command, list):
            command = tuple(command)
        return TaskMessage(
            task_id=task.id, attempt=attempt, log_path=os.path.join(ctx.logs, f"{statedir.safe_name(task.id)}.{attempt}.log"),
            command=command, call=task.call, args=tuple(task.args), kwargs=dict(task.kwargs), env={**env, **extra},
            cwd=task.cwd, timeout=task.timeout, grace=ctx.opt.grace, rate_limit_pattern=rate_limit,
            workspace=self.landing.workspace_field(task.id), checks=ctx.ws[task.id].checks if task.id in ctx.ws else (), **cli,
        )  # fmt: skip

    def _chunk_template(self) -> TaskMessage | None:
        """What every row of a chunk's quick task shares (runner.agents.messages.TaskBatch); None when a
        component adds to the messages (message_env)."""
        if self.hooks.message_env:
            return None
        opt = self.ctx.opt
        template = self._template
        if template is None or template.grace != opt.grace or template.rate_limit_pattern != opt.rate_limit:
            template = self._template = TaskMessage("", 0, "", grace=opt.grace, rate_limit_pattern=opt.rate_limit)
        return template

    def _chunk_messages(self, chunk: list[Task], attempts: list[int], role: str, agent_id: str) -> tuple[list, TaskMessage | None]:
        """The messages of a chunk's tasks after its head, and their template: for a quick task (a command
        or a callable, no workspace) _message's as a row of a TaskBatch (runner.agents.messages.ROW_FIELDS),
        in one loop; any other as _message's (or its component's own) TaskMessage."""
        template = self._chunk_template()
        if template is None:
            return [self._message(t, role, n, agent_id) for t, n in zip(chunk[1:], attempts[1:])], None
        ctx = self.ctx
        ws, feedback_text, own_messages, safe_name = ctx.ws, ctx.feedback_text, self.hooks.message, statedir.safe_name
        logs = os.path.join(ctx.logs, "")
        feedback = ctx.has_feedback()
        out: list = []
        for task, attempt in zip(chunk[1:], attempts[1:]):
            task_id, command, call = task.id, task.command, task.call
            if task_id in ws or (command is None and call is None):
                out.append(self._message(task, role, attempt, agent_id))
                continue
            if own_messages:
                for message in own_messages:
                    own = message(task, role, attempt, agent_id)
                    if own is not None:  # a component's own attempt (no message_env to add: the template says so)
                        out.append(own)
                        break
                else:
                    own = None
                if own is not None:
                    continue
            text = feedback_text(task_id) if feedback else ""
            env = None  # the agent's: WVO_TASK_ID and WVO_ATTEMPT alone
            if task.env or text:
                env = {k: str(v) for k, v in task.env.items()} if task.env else {}
                env["WVO_TASK_ID"] = task_id
                env["WVO_ATTEMPT"] = str(attempt)
                if text:
                    env["WVO_FEEDBACK"] = text
            kwargs = task.kwargs
            out.append((task_id, attempt, f"{logs}{safe_name(task_id)}.{attempt}.log",
                        tuple(command) if type(command) is list else command, call, tuple(task.args),
                        dict(kwargs) if kwargs else {}, env, task.cwd, task.timeout))  # fmt: skip
        return out, template

    # -- dispatch -------------------------------------------------------------------------------------

    def _dispatch(self, agent_id: str, msg) -> None:
        ctx = self.ctx
        if isinstance(msg, Started):
            if ctx.pool.reservations.get(agent_id) != msg.task_id:
                log.warning("agent %s started %s, which it does not hold; ignored", agent_id, msg.task_id)
                return
            ctx.pool.set_task_pid(agent_id, msg.pid)
            ctx.sched.started(msg.task_id, agent_id)
            rec = ctx.records.get((msg.task_id, msg.attempt))
            if rec is not None:
                rec["start"] = msg.start
            ctx.emit(ev.TASK_STARTED, ts=msg.start, task=msg.task_id, agent=agent_id, attempt=msg.attempt, pid=msg.pid)
            for on_started in self.hooks.on_started:
                on_started(agent_id, msg.task_id)
        elif isinstance(msg, TaskResult):
            if ctx.pool.reservations.get(agent_id) != msg.task_id:
                log.warning("agent %s reported %s, which it does not hold; ignored", agent_id, msg.task_id)
                return
            rec = ctx.records.get((msg.task_id, msg.attempt))
            if rec is not None and rec["start"] is None:  # a callable, or a command that ended before its Started
                rec["start"] = msg.start
                ctx.emit(ev.TASK_STARTED, ts=msg.start, task=msg.task_id, agent=agent_id, attempt=msg.attempt, pid=msg.pid)
            self._deadline.pop(agent_id, None)
            ctx.pool.release(agent_id)
            if rec is not None:
                rec["released"] = msg.end  # the agent's part ends here, whatever comes after (landing)
            if not any(on_result(agent_id, msg) for on_result in self.hooks.on_result):
                self.outcomes.record(agent_id, msg.task_id, msg.attempt, Outcome(msg.outcome), msg)
        elif isinstance(msg, AgentGone):
            self._agent_gone(agent_id, msg)
        elif isinstance(msg, AgentReady):
            row = ctx.pool.agents.get(agent_id)
            if row is not None:
                row.pid = msg.pid
                ctx.pool.set_state(agent_id, "idle")
        elif not any(on_result(agent_id, msg) for on_result in self.hooks.on_result):
            log.warning("agent %s sent %s, which no part of the run takes; ignored", agent_id, type(msg).__name__)

    def _agent_gone(self, agent_id: str, gone: AgentGone) -> None:
        """An agent died or left: its reservation is released, the task it lost recorded, a new agent started."""
        ctx = self.ctx
        lost = None
        for on_agent_gone in self.hooks.on_agent_gone:  # a chunk's finished tasks are recorded before the reservation goes
            held = on_agent_gone(agent_id, gone)
            lost = held if held is not None else lost
        row = ctx.pool.agents.get(agent_id)
        task_pid = (row.task_pid if row else None) or gone.task_pid  # the slot's pid, when its Started never came
        task_id = ctx.pool.remove(agent_id)
        self._deadline.pop(agent_id, None)
        ctx.sched.agent_gone(agent_id)
        ctx.emit(ev.AGENT_EXITED, agent=agent_id, reason=gone.reason)
        if task_pid and task_id is not None:
            killpg(task_pid)  # its whole process group: the agent cannot do it any more
        for held_id in lost if lost is not None else ([task_id] if task_id is not None else []):
            if agent_id in self._timed_out:
                outcome, error = Outcome.TIMED_OUT, f"timed out after {ctx.tasks[held_id].timeout:g}s; agent killed"
            elif ctx.interrupted_by is not None:
                outcome, error = Outcome.INTERRUPTED, "interrupted"
            else:
                outcome, error = Outcome.AGENT_DIED, f"agent {agent_id} died ({gone.reason})"
            self.outcomes.record_lost(agent_id, held_id, outcome, error)
        self._timed_out.discard(agent_id)
        if row is not None and row.state != "retiring" and ctx.interrupted_by is None and not ctx.sched.finished():
            self._spawn(row.role)

    def _check_deadlines(self, now: float) -> None:
        for agent_id, deadline in list(self._deadline.items()):
            if now >= deadline:
                del self._deadline[agent_id]
                self._timed_out.add(agent_id)
                self.backend.kill(agent_id)
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._stop_deadline = None
            self._kill_now()

    # -- stopping -------------------------------------------------------------------------------------

    def _on_signals(self) -> None:
        for signum in self._signals.take():
            if self.ctx.interrupted_by is None:
                self.ctx.interrupted_by = signum
                self.begin_stop(f"{signal.Signals(signum).name} received")
            else:
                self._kill_now()

    def begin_stop(self, why: str) -> None:
        """Hand out nothing more; TERM every running task tree, KILL after the grace period."""
        ctx = self.ctx
        ctx.reporter.message(f"{why}: stopping; running tasks get {ctx.opt.grace:g}s to exit (again to stop now)")
        ctx.sched.stop()
        ctx.note_changes()
        for agent_id in list(ctx.pool.reservations):
            self.backend.send(agent_id, Cancel(ctx.opt.grace))
        self._stop_deadline = time.monotonic() + ctx.opt.grace + 1.0

    def _kill_now(self) -> None:
        for row in list(self.ctx.pool.agents.values()):
            if row.state == "busy":
                task_pid = row.task_pid or self.backend.task_pid(row.id)
                if task_pid:
                    killpg(task_pid)
                self.backend.kill(row.id)


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"L")
    except OSError:
        pass


def _drain_fd(fd: int) -> None:
    try:
        os.read(fd, 4096)
    except BlockingIOError:
        pass
