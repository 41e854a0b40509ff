"""Agent-CLI accounts of a run: limits that pause an account, stops, sessions, tokens, cost and budgets.

A component of the run (runner.manager.components). An agent-CLI attempt's TaskResult carries `cli`
(see runner.agents.cli_attempt), the worker's and the critic's alike; from it:

    failure class     what the run does
    rate_limited      the task is requeued, not counted; that agent backs off (the scheduler's cool-down)
    usage_limited     every agent on that account pauses until the reset time (default: an hour); a reset
                      beyond --max-wait stops the hand-out, exit 75 with the time, --resume continues
    auth_failed,      the run stops at the first: one message naming the executor and the fix; tasks not
    setup_failed      started are not started (no further attempt is burnt)
    stalled           (the watchdog killed it) requeued, not counted, resuming its session

Sessions: each task's last session id (and, per affinity key and agent, the key's last one) is kept; a
retry resumes it with the feedback as its prompt, unless the task says `session: fresh` or the failure
said the session cannot be resumed (drop_session). Usage: codex reports thread totals and claude a
session's total cost, so each attempt's share is the difference from the session's previous report
(output.attempt_usage / attempt_cost); a CLI that reports no cost is priced from `prices:` (estimated).
"""

from __future__ import annotations

import os
import time

from runner.agents.messages import TaskResult
from runner.errors import EXIT_LIMITED, Problem
from runner.manager import events as ev
from runner.manager.components import Component
from runner.manager.exits import Ending
from runner.model import Task

MAX_WAIT_S = 2 * 3600.0  # --max-wait default: a longer usage-limit pause ends the run (exit 75)
DEFAULT_PAUSE_S = 3600.0  # a usage limit that named no reset time
_HOME_VAR = {"codex-json": "CODEX_HOME", "claude-json": "CLAUDE_CONFIG_DIR"}
_FIX = {
    "auth_failed": {
        "codex-json": "log in with `codex login`, or set CODEX_API_KEY / OPENAI_API_KEY",
        "claude-json": "log in with `claude /login`, or set ANTHROPIC_API_KEY",
    },
    "setup_failed": {
        "": "check that the program is installed and on PATH and that its options are right",
    },
}


def usage_line(usage: dict) -> str:
    """"tokens 12.3k in / 2.1k out · $0.42" (cost marked ~ when estimated); '' when nothing was spent."""
    if not usage or not (usage.get("input") or usage.get("output") or usage.get("cost_usd")):
        return ""
    line = f"tokens {_k(usage.get('input', 0))} in / {_k(usage.get('output', 0))} out"
    if usage.get("cost_usd") is not None:
        line += f" · {'~' if usage.get('cost_estimated') else ''}${usage['cost_usd']:.2f}"
    return line


def _k(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def _add(total: dict, usage, cost: float | None, estimated: bool) -> None:
    for key, value in usage.as_dict().items():
        total[key] = total.get(key, 0) + value
    if cost is not None:
        total["cost_usd"] = round(total.get("cost_usd", 0.0) + cost, 6)
        total["cost_estimated"] = total.get("cost_estimated", False) or estimated


class Accounts(Component):
    """Limits, stops, sessions, spend and models of agent-CLI attempts."""

    def __init__(self, ctx, fleet=None):
        self.ctx = ctx
        self.fleet = fleet  # runner.coding.executors.Fleet: the run's executors by name, or None (no agent task)
        self.sessions: dict[str, tuple[str, str]] = {}  # task id -> (session id, account) of its worker's last attempt
        self._affinity: dict[tuple[str, str], str] = {}  # (affinity key, agent id) -> session id
        self._carried: dict[str, tuple[str, str]] = {}  # task id -> (session id, why its run stopped): --resume continues it
        self._reported: dict[str, tuple] = {}  # session -> (output.Usage, cost): the last totals it reported
        self._usage: dict[str, dict] = {}  # task id -> tokens and cost over its attempts (worker's and critic's)
        self._total_usage: dict = {}  # tokens and cost over every attempt of the run: what --budget counts
        self.spent_before = ctx.opt.spent_usd  # USD counted before the run: the loop's earlier batches, the resumed run
        self._cli_rows: dict[tuple[str, int], dict] = {}  # (task, attempt) -> ledger fields, until recorded
        self._denied: dict[str, list[str]] = {}  # task id -> tools the CLI refused
        self._last_failure: dict[str, str | None] = {}  # task id -> its last attempt's failure class
        self._paused: dict[str, float] = {}  # account -> epoch time its usage limit lifts
        self._models: dict[tuple[str, int], str] = {}  # (task, attempt) -> model its argv named
        self._executor: dict[tuple[str, int], str] = {}  # (task, attempt) -> name of the executor it ran with
        self._reviews: set[tuple[str, int]] = set()  # (task, attempt) of critics' attempts: their sessions are their own
        self._stopped_by: str | None = None  # what stopped the hand-out: usage_limited, auth_failed, setup_failed, budget
        budget = ctx.opt.budget if ctx.opt.budget is not None else (ctx.roadmap.settings or {}).get("budget")
        self.budget = float(budget) if isinstance(budget, (int, float)) and not isinstance(budget, bool) else None
        self.max_wait = ctx.opt.max_wait if ctx.opt.max_wait is not None else MAX_WAIT_S

    # -- which executor and which account an attempt uses ----------------------------------------------

    def choose(self, task: Task, role: str, attempt: int, review: bool = False):
        """The attempt's executors.Choice (its own, its agent's role's, the run's; the critic's for a review), noted."""
        choice = self.fleet.reviewer(task) if review else self.fleet.choose(task, role)
        if choice is not None:
            self._executor[(task.id, attempt)] = choice.name
        return choice

    def executor_of(self, task_id: str, attempt: int):
        """The Executor an attempt ran with (the run's when it was not noted)."""
        name = self._executor.get((task_id, attempt))
        return self.fleet.executors[name] if name is not None else self.ctx.executor

    def _account_of(self, agent_id: str, name: str | None) -> str:
        """The executor's account the agent uses: one of its `accounts:` (spread over agents), else its name."""
        ex = self.fleet.executors.get(name) if self.fleet is not None and name is not None else None
        if ex is None:
            return ""
        if not ex.accounts:
            return name
        agents = self.ctx.pool.agents
        order = sorted(agents) if agent_id in agents else [agent_id]
        index = order.index(agent_id) if agent_id in order else 0
        return ex.accounts[index % len(ex.accounts)]

    def cli_message(self, task: Task, role: str, agent_id: str, attempt: int, feedback: str, leased: dict | None = None) -> dict:
        """The TaskMessage fields of an agent-CLI attempt: argv (resuming a session), env, output."""
        name = self._executor[(task.id, attempt)]
        ex = self.fleet.executors[name]
        account = self._account_of(agent_id, name)
        session, prompt = None, None
        if not self._fresh(task) and ex.output in _HOME_VAR:
            kept = self.sessions.get(task.id)
            if kept is not None and kept[1] == account and attempt > 1:
                session = kept[0]
                prompt = feedback or None  # a retry: the feedback is the new turn; the earlier turns are in the session
            elif task.id in self._carried:  # --resume: the earlier run's last session of the task
                session, why = self._carried.pop(task.id)
                prompt = (f"The earlier run stopped before this task was done ({why}). Continue task {task.id} "
                          f"where you left off: {task.title or ''}\n\n{feedback}").strip()
            elif task.affinity:
                session = self._affinity.get((task.affinity, agent_id))
        argv = executors_module().build_argv(task, role, ex, feedback, attempt, session=session, prompt=prompt, leased=leased)
        return {"command": argv, "env": self._account_env(ex, agent_id, name), "output": ex.output,
                "stall_timeout": ex.stall_timeout}

    def _account_env(self, ex, agent_id: str, name: str) -> dict:
        """The environment that points the CLI at the agent's account (its CODEX_HOME / CLAUDE_CONFIG_DIR)."""
        if ex.accounts and ex.output in _HOME_VAR:
            return {_HOME_VAR[ex.output]: self._account_of(agent_id, name)}
        return {}

    def _fresh(self, task: Task) -> bool:
        """`session: fresh` (the task's, else the roadmap's): never continue an earlier session."""
        return (task.meta.get("session") or (self.ctx.roadmap.settings or {}).get("session")) == "fresh"

    def carry_spend(self, previous: int) -> None:
        """--resume: what the run `previous` counted against the budget counts here too (every attempt counts)."""
        self.spent_before += self.ctx.ledger.spent(previous)

    def start(self) -> None:
        if self.budget is not None and self.spent_before >= self.budget:  # spent by the resumed run or earlier batches
            self._budget_reached(self.spent_before)

    def carry_sessions(self, previous: int, carried) -> None:
        """--resume: each unfinished agent task of the run `previous` continues its last session, unless `session: fresh`."""
        ctx = self.ctx
        if self.fleet is None:
            return
        for task_id, (outcome, failure, error, session, executor) in ctx.ledger.last_attempts(previous).items():
            task = ctx.tasks.get(task_id)
            if task is None or task_id in carried or not session or task.command is not None or task.call is not None:
                continue
            if self._fresh(task):
                continue
            why = _interrupted_by(outcome, failure, error)
            self._carried[task_id] = (session, why)
            ctx.reporter.message(f"resume: task {task_id} continues session {session} (interrupted: {why})")

    def note_model(self, task: Task, role: str, attempt: int, review: bool = False) -> None:
        """The model an agent-CLI attempt's argv names (`escalate:`), for its event and its task's row."""
        ex = self.executor_of(task.id, attempt)
        if ex is not None and (review or (task.command is None and task.call is None)):
            self._models[(task.id, attempt)] = executors_module().model_of(task, role, ex, attempt)
        if review:
            self._reviews.add((task.id, attempt))

    def event_fields(self, task_id: str, attempt: int) -> dict:
        model = self._models.get((task_id, attempt))
        return {"model": model} if model else {}

    # -- an attempt's result ---------------------------------------------------------------------------

    def on_result(self, agent_id: str, result) -> bool:
        if isinstance(result, TaskResult) and result.cli is not None:
            self._cli_result(agent_id, result)  # every attempt's spend, the worker's and the critic's
        return False

    def _cli_result(self, agent_id: str, msg: TaskResult) -> None:
        """An agent-CLI attempt ended: spend, session, and what its failure class means for the run."""
        # lazily: a run of plain commands never reads a CLI's output (~6 ms of start-up)
        from runner.coding.output import CliResult, Usage, attempt_cost, attempt_usage
        from runner.coding.pricing import with_cost

        ctx = self.ctx
        cli = msg.cli
        task = ctx.tasks[msg.task_id]
        executor = self.executor_of(msg.task_id, msg.attempt)
        account = self._account_of(agent_id, self._executor.get((msg.task_id, msg.attempt)))
        session = cli.get("session_id")
        result = CliResult(format=cli.get("format", "text"), session_id=session, usage=Usage(**cli["usage"]),
                           usage_cumulative=bool(cli.get("usage_cumulative")), cost_usd=cli.get("cost_usd"),
                           cost_cumulative=bool(cli.get("cost_cumulative")), model=cli.get("model"))
        before = self._reported.get(session) if session else None
        usage = attempt_usage(result, before[0] if before else None)
        cost = attempt_cost(result, before[1] if before else None)
        estimated = False
        if cost is None and executor.prices:
            model = cli.get("model") or self._models.get((msg.task_id, msg.attempt)) or \
                executors_module().task_fields(task, "worker", executor)["model"]
            priced = with_cost(result, usage, model, executor.prices)
            cost, estimated = priced.cost_usd, priced.cost_estimated
        if session:
            totals = result.usage if result.usage else (before[0] if before else Usage())
            self._reported[session] = (totals, result.cost_usd if result.cost_usd is not None else (before or (0, None))[1])
            if (msg.task_id, msg.attempt) in self._reviews:
                pass  # the critic's session is its own (recorded with its attempt): the rework resumes the worker's
            elif cli.get("drop_session"):
                self.sessions.pop(msg.task_id, None)
            else:
                self.sessions[msg.task_id] = (session, account)
                if task.affinity:
                    self._affinity[(task.affinity, agent_id)] = session
        _add(self._usage.setdefault(msg.task_id, {}), usage, cost, estimated)
        _add(self._total_usage, usage, cost, estimated)
        if cli.get("permission_denials"):
            self._denied.setdefault(msg.task_id, []).extend(cli["permission_denials"])
        self._cli_rows[(msg.task_id, msg.attempt)] = {
            "session_id": session, "model": cli.get("model"), "usage": usage.as_dict(), "cost_usd": cost,
            "cost_estimated": estimated, "failure": cli.get("failure"), "num_turns": cli.get("num_turns"),
        }
        ctx.emit(ev.TASK_USAGE, task=msg.task_id, attempt=msg.attempt, agent=agent_id, session=session,
                 usage=usage.as_dict(), cost_usd=cost, cost_estimated=estimated, failure=cli.get("failure"))
        failure = cli.get("failure")
        self._last_failure[msg.task_id] = failure
        if failure in ("auth_failed", "setup_failed"):
            self._stop_for(failure, cli.get("reason") or msg.error or failure, msg.task_id, executor)
        elif failure == "usage_limited":
            self._pause(account, cli.get("reset_at"), cli.get("reason") or "usage limit")
        spent = self._total_usage.get("cost_usd", 0) + self.spent_before
        if self.budget is not None and self._stopped_by is None and spent >= self.budget:
            self._budget_reached(spent)

    def _budget_reached(self, spent: float) -> None:
        self.ctx.reporter.message(f"budget reached: ${spent:.2f} of ${self.budget:.2f}; no new attempt starts, "
                                  "running ones finish")
        self._stopped_by = "budget"
        self.ctx.sched.stop(f"not started: budget reached (${spent:.2f} of ${self.budget:.2f})")

    def attempt_fields_of(self, rows) -> list[dict] | None:
        return super().attempt_fields_of(rows) if self._cli_rows or self._executor else None  # none: no agent CLI ran

    def event_fields_of(self, rows) -> list[dict] | None:
        return super().event_fields_of(rows) if self._models else None

    def attempt_fields(self, task_id: str, attempt: int) -> dict:
        fields = self._cli_rows.pop((task_id, attempt), {})
        name = self._executor.get((task_id, attempt))
        return {**fields, "executor": name} if name is not None else fields

    def _stop_for(self, failure: str, reason: str, task_id: str, ex) -> None:
        if self._stopped_by is not None:
            return
        fixes = _FIX[failure]
        fix = fixes.get(ex.output or "", fixes.get("", "")) or fixes.get("", "")
        if failure == "auth_failed" and not fix:
            fix = "log the CLI in, or set its API key"
        name = ex.source or ex.program
        self.ctx.reporter.message(f"error: executor {name} ({ex.program}): {failure.replace('_', ' ')} on task {task_id}: "
                                  f"{reason}; {fix}. No further task is started.")
        self._stopped_by = failure
        self.ctx.sched.stop(f"not started: executor {name} {failure.replace('_', ' ')}")

    def _pause(self, account: str, reset_at: float | None, reason: str) -> None:
        ctx = self.ctx
        wall = time.time()
        until = reset_at if reset_at and reset_at > wall else wall + DEFAULT_PAUSE_S
        self._paused[account] = max(until, self._paused.get(account, 0.0))
        at = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self._paused[account]))
        if self._paused[account] - wall > self.max_wait and self._stopped_by is None:
            ctx.reporter.message(f"usage limit of {account}: resets at {at}, beyond --max-wait "
                                 f"{self.max_wait:g}s; stopping (exit {EXIT_LIMITED}); run again with --resume then")
            self._stopped_by = "usage_limited"
            ctx.sched.stop(f"not started: usage limit until {at}")
            return
        ctx.reporter.message(f"usage limit of {account}: its agents pause until {at} ({reason})")
        ctx.emit(ev.ACCOUNT_PAUSED, account=account, until=self._paused[account], reason=reason)
        self.hold_paused(time.monotonic())

    def hold_paused(self, now: float) -> None:
        """Idle agents of a paused account take no task until it lifts (called before each hand-out)."""
        if not self._paused:
            return
        ctx = self.ctx
        wall = time.time()
        for account, until in list(self._paused.items()):
            if until <= wall:
                del self._paused[account]
                ctx.emit(ev.ACCOUNT_RESUMED, account=account)
                continue
            for row in ctx.pool.idle():
                if self._account_of(row.id, self._role_executor(row.role)) == account:
                    ctx.pool.set_state(row.id, "cooling")
                    ctx.cooling[row.id] = now + (until - wall)

    def _role_executor(self, role: str) -> str | None:
        """The executor an agent of role runs tasks with unless a task has its own (what a pause holds it for)."""
        if self.fleet is None:
            return None
        return self.fleet.roles.get(role) or self.fleet.run

    def timers(self, now: float) -> list[float]:
        wall = time.time()
        return [now + until - wall for until in self._paused.values() if until > wall]  # a past one: no busy loop

    # -- the end ---------------------------------------------------------------------------------------

    def ending(self) -> Ending:
        if self._stopped_by is None:
            return Ending()
        if self._stopped_by == "usage_limited":
            return Ending(usage_limited=True)
        return Ending(failed=True, stopped=self._stopped_by)

    def task_rows(self, rows: list[dict]) -> None:
        if self._usage or self._last_failure or self._denied or self._models or self._executor:
            super().task_rows(rows)  # else no agent-CLI attempt in the run: nothing to add

    def task_row(self, task_id: str, row: dict) -> None:
        if task_id in self._usage:
            row["usage"] = dict(self._usage[task_id])
        if row["status"] == "failed" and self._last_failure.get(task_id) in ("auth_failed", "setup_failed"):
            row["status"] = self._last_failure[task_id]
        if task_id in self._denied:
            row["permission_denials"] = sorted(set(self._denied[task_id]))
        models = [self._models.get((task_id, n)) for n in range(1, row["attempts"] + 1)]
        if any(models):
            row["models"] = models
        executors = [self._executor.get((task_id, n)) for n in range(1, row["attempts"] + 1)]
        if any(executors):
            row["executors"] = executors

    def summary(self, summary: dict) -> None:
        if self._total_usage:
            summary["usage"] = dict(self._total_usage)
        if self.budget is not None:
            summary["budget_usd"] = self.budget
        if self.spent_before:
            summary["spent_before_usd"] = round(self.spent_before, 6)
        if self._paused:
            summary["paused"] = dict(self._paused)


def _interrupted_by(outcome: str, failure: str | None, error: str | None) -> str:
    """Why an attempt did not finish its task, in a few words (for --resume's line and the resumed prompt)."""
    if failure:
        return failure.replace("_", " ").replace("limited", "limit")
    if outcome == "interrupted":
        return "the run was stopped"
    return (error or outcome).splitlines()[0][:120] if (error or outcome) else "unknown"


def fleet_of_run(roadmap, run_executor):
    """The run's executors.Fleet (runner.roadmap.fleet.run_fleet); None, with nothing of runner.coding nor of the
    fleet module imported, when it has no executor at all: a run of commands."""
    if run_executor is None and roadmap.executor is None and not roadmap.settings.get("executors") \
            and not any(t.meta.get("executor") is not None for t in roadmap.tasks):
        return None
    from runner.roadmap.fleet import run_fleet

    return run_fleet(roadmap, run_executor)


def without_executor(tasks, fleet, blocked) -> list:
    """The tasks that need an executor when the run has none: no command, no callable, runnable, not blocked.

    The run and --check both ask it. The run refuses them before anything runs (UsageError, exit 2); --check
    says so in its plan and stays valid: a roadmap of agent tasks is valid with no executor in the file (one is
    often given on the command line), and `--check --executor ...` checks exactly what that run would do.
    """
    if fleet is not None:
        return []
    return [t for t in tasks if t.command is None and t.call is None and t.runnable_status and t.id not in blocked]


def no_executor(missing) -> str:
    """Why a run with these tasks (from without_executor) does not start, one line."""
    names = ", ".join(t.id for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return (f"{len(missing)} task(s) have no command and no executor is configured ({names}); "
            "set `executor:` in the roadmap or pass --executor")


def executor_problems(tasks, fleet, roles: dict[str, int], blocked, programs: bool = True) -> list[Problem]:
    """What stops a run before anything runs, about its agent tasks' executors; the run and --check both ask it.

    `tasks`: the tasks the run accounts for; those with no command and no callable that can run need an
    executor. With executors configured: one for every role of the run's agents (`executors:` by role) unless
    the run or the task has its own, and each executor's program on PATH (not asked with `programs` False:
    a Ray run starts it on the cluster's nodes). Each problem names the place and the task.
    """
    agent = [t for t in tasks if t.command is None and t.call is None and t.runnable_status and t.id not in blocked]
    if not agent or fleet is None:
        return []
    live = [r for r, n in roles.items() if n > 0]
    problems = []
    for t in agent:
        lacking = fleet.missing(t, live)
        if lacking:
            problems.append(Problem(f"no executor for agents of role {lacking[0]}; add it to `executors:`, give the "
                                    "run an `executor:`, or the task its own", t.file, t.line, t.id))
    if programs:  # found on the run's PATH, or on the one a task sets for itself (`env: PATH`), where attempts look
        paths = [None, *dict.fromkeys(t.env["PATH"] for t in agent if t.env and t.env.get("PATH"))]
        problems += [Problem(p) for p in dict.fromkeys(p for ex in fleet.executors.values() for p in program_problems(ex, paths))]
    return problems


def program_problems(executor, paths=(None,)) -> list[str]:
    """An executor whose program is on none of these PATHs (None: this process's), nor a file: one line each."""
    import shutil

    if executor is None:
        return []
    program = executor.program
    if "{" in program:
        return []
    if os.sep in program:
        return [] if os.access(program, os.X_OK) else [f"executor {executor.source or program}: {program} is not an "
                                                       "executable file"]
    if all(shutil.which(program, path=p) is None for p in paths):
        return [f"executor {executor.source or program}: program {program!r} is not on PATH; install it or put its "
                "folder on PATH"]
    return []


def executors_module():
    """runner.coding.executors, imported on first use: a run of commands and callables never needs it."""
    from runner.coding import executors

    return executors
