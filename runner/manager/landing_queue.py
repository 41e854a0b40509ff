"""Worktree tasks in the manager: their settings, the landing queue, and the end of their run.

A component of the run (runner.manager.components). An agent runs a worktree attempt and commits it
(runner.agents.coding_attempt); when it succeeded, the manager hands the task over to the landing
queue and the agent is free for its next task at once:

    TaskResult(succeeded, workspace.commit) ──▶ sched.hand_over(task, agent) ──▶ queue (FIFO)
         ──▶ landing thread (runner.coding.speculative): the next k merged, each on top of those ahead,
             and checked at once, each in a landing worktree of its own; verdicts in order at the head
         ──▶ wake-up pipe ──▶ loop: record the outcome (succeeded / conflict / check_failed), dependents ready

k is --land-parallel (default: the number of agents); with k = 1 one task lands at a time. One thread per
(repo, into) lands; it touches git only and hands its verdicts back through a deque and a byte on the
loop's wake-up pipe. Nothing else is shared with it. The checks on the merged result run through the
agents' check runner (runner.agents.checks.landing_checks): the same environment as in the attempt's
worktree (WVO_TASK_ID, WVO_ATTEMPT, WVO_BRANCH, WVO_WORKTREE = the landing worktree, the task's env),
sealed (runner.coding.sealed.environment), TERM → --grace → KILL; a stop of the run cancels them.
Each runs in a session of its own marked as the manager's (the backend's spared_env), so the backend's
orphan sweep never takes them and the watchdog kills them should the manager die.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time

from runner.agents.messages import TaskResult
from runner.errors import UsageError
from runner.manager.logs import Logger
from runner.manager import events as ev
from runner.manager.components import Component
from runner.manager.scheduler import LANDING
from runner.model import Outcome

log = Logger(__name__)

LAND_PARALLEL_MAX = 64  # the default k: min(this, agents): as many as the agents can hand over at once (--land-parallel's cap)


def workspace_settings(roadmap, opt, members) -> dict:
    """Each task's workspace (task id -> coding.settings.Workspace); UsageError naming the place."""
    ws: dict = {}
    coding_keys = ("files", "checks", "allow_empty", "workspace")
    if not (opt.workspace or roadmap.settings.get("workspace") or (roadmap.defaults or {}).get("workspace")
            or any((t.command is None and t.call is None) or (t.meta and any(k in t.meta for k in coding_keys)) for t in members)):
        return ws  # plain commands and callables with no workspace setting: nothing to read (no import either)
    from runner.coding import settings

    overrides = settings.Overrides(opt.workspace, opt.land, opt.into, opt.keep_worktrees)
    top = roadmap.settings.get("workspace") if roadmap.settings else None
    defaults = roadmap.defaults.get("workspace") if roadmap.defaults else None
    repos: dict[str, str | None] = {}

    def repo_of(folder: str) -> str | None:
        if folder not in repos:
            repos[folder] = _repo_top(folder)
        return repos[folder]

    problems_at = []
    block_problems: list[str] = []  # the blocks were checked at load time (file:line); here once, not per task
    top_s = settings.parse_block(top, "workspace", block_problems)
    def_s = settings.parse_block(defaults, "defaults.workspace", block_problems)
    for task in members:
        if not task.runnable_status or task.id in opt.blocked:
            continue
        agent_task = task.command is None and task.call is None
        wanted = opt.workspace or any(k in task.meta for k in coding_keys) or top or defaults
        if not agent_task and not wanted:
            continue
        problems: list[str] = list(block_problems)
        w = settings.for_task(task, top_s, def_s, overrides, agent_task, repo_of, problems)
        if w.mode == "worktree" and task.call is not None:
            problems.append("a `call:` task runs inside its agent and cannot have a worktree; use mode: shared")
        if w.mode == "worktree" and task.env:  # nothing of it may take git out of the worktree or past the ref guard
            from runner.coding.gitenv import worktree_env_problem

            bad = worktree_env_problem(task.env)
            if bad is not None:
                problems.append(f"`env.{bad[0]}` (task or defaults) {bad[1]}")
        if problems:
            problems_at.append(f"{task.place()}: task {task.id}: {problems[0]}")
            continue
        if w.mode == "worktree" or w.files or w.checks:
            ws[task.id] = w
    if problems_at:
        more = f" (and {len(problems_at) - 1} more)" if len(problems_at) > 1 else ""
        raise UsageError(problems_at[0] + more)
    if any(w.mode == "worktree" for w in ws.values()):
        from runner.coding.workspace import WorkspaceError, refuse_if_checked_out

        for repo, into in {(w.repo, w.into) for w in ws.values() if w.mode == "worktree"}:
            try:
                refuse_if_checked_out(repo, into)
            except WorkspaceError as exc:
                raise UsageError(f"workspace: {exc}") from None
    return ws


class LandingQueue(Component):
    """Workspaces of worktree tasks, the landing thread and its queue."""

    def __init__(self, ctx):
        self.ctx = ctx
        ctx.ws = workspace_settings(ctx.roadmap, ctx.opt, ctx.members())
        self._spaces: dict = {}  # (repo, into) -> runner.coding.workspace.Workspaces, once the run folder exists
        self._landers: dict = {}  # (repo, into) -> runner.coding.speculative.SpeculativeLander
        self._done: collections.deque = collections.deque()  # verdicts from the landing threads
        self._busy = 0  # tasks handed over and not yet recorded
        self._cancelled = False  # the run is stopping: the landing checks were cancelled
        self._last_landed: str | None = None  # "task (commit)" of the last that landed, for the board
        self._set_up: set[tuple] = set()  # (landing worktree, copy, setup) done there: its set-up survives resets
        self._starting: set[str] = set()  # worktree tasks with checks: their message sent, their process not up yet
        self._working: set[str] = set()  # ... their process up, their result not in yet
        self._undispatched = {tid for tid, w in ctx.ws.items() if w.mode == "worktree" and w.checks and w.land == "merge"}
        self.lease_env = _no_leases  # task id -> WVO_PORT, ...: set by the run when it leases (runner.manager.leasing)
        self.lease_for_resume = _no_resume_lease  # (task id, attempt) -> a context giving WVO_PORT, ... or None: the same
        agents = self._agents = sum(ctx.roles.values()) or 1
        self.k = ctx.opt.land_parallel or min(LAND_PARALLEL_MAX, agents)  # candidates checked at once

    def _worktree_tasks(self) -> list[str]:
        return [tid for tid, w in self.ctx.ws.items() if w.mode == "worktree"]

    def open_workspaces(self) -> None:
        """One journal of branches per (repo, into), in the run folder; `into` created from base when missing."""
        if not self._worktree_tasks():
            return
        from runner.coding.speculative import SpeculativeLander
        from runner.coding.workspace import GitError, WorkspaceError, Workspaces

        ctx = self.ctx
        for key in sorted({(w.repo, w.into, w.base) for w in ctx.ws.values() if w.mode == "worktree"}, key=str):
            repo, into, base = key
            folder = os.path.join(ctx.folder, "ws" if not self._spaces else f"ws{len(self._spaces) + 1}")
            try:
                spaces = Workspaces(repo, folder, os.path.basename(ctx.folder), into, base=base)
            except (GitError, WorkspaceError) as exc:
                raise UsageError(f"workspace: {exc}") from None
            self._spaces[(repo, into)] = spaces
            self._landers[(repo, into)] = SpeculativeLander(spaces, self.k, self._verdict)

    def spaces_of(self, task_id: str):
        w = self.ctx.ws[task_id]
        return self._spaces[(w.repo, w.into)]

    def workspace_field(self, task_id: str) -> dict | None:
        """The TaskMessage's `workspace` of a worktree task (None for any other)."""
        w = self.ctx.ws.get(task_id)
        if w is None or w.mode != "worktree":
            return None
        spaces = self._spaces[(w.repo, w.into)]
        task = self.ctx.tasks[task_id]
        if w.checks and w.land == "merge":
            self._starting.add(task_id)
            self._undispatched.discard(task_id)
        field = {
            "repo": w.repo, "state_dir": str(spaces.state_dir), "run": spaces.run, "into": w.into,
            "title": task.title, "allow_empty": w.allow_empty, "keep": self.ctx.opt.keep_worktrees,
        }  # fmt: skip
        copy, setup = self._set_up_of(task)
        if copy or setup:
            field.update(setup=setup, copy=copy)
        return field

    def _set_up_of(self, task) -> tuple[tuple, tuple]:
        """(workspace.copy, workspace.setup) of a task, as the agent runs them in its worktree."""
        top = self.ctx.roadmap.settings or {}
        if not (task.meta.get("setup") or task.meta.get("copy") or top.get("setup") or top.get("copy")):
            return (), ()
        from runner.roadmap.fleet import for_task

        fleet = for_task(self.ctx.roadmap, task)
        return tuple(fleet.copy or ()), tuple(fleet.setup or ())

    def recover(self, previous_run: int, review_rounds: dict) -> set[str]:
        """--resume: the dead run's worktrees saved (WIP) and removed; its committed attempts landed now.

        Returns the tasks whose work is on `into` (landed before the crash, or just now): they are not
        run again. A committed attempt that no longer lands (a conflict, failing checks) runs again.
        """
        from runner.coding.landing import Landed, Lander, remove_merge_trees
        from runner.coding.speculative import remove_slots
        from runner.coding.workspace import JOURNAL, GitError, WorkspaceError, Workspaces

        ctx = self.ctx
        if not ctx.ws:
            return set()
        row = ctx.ledger.db.execute("SELECT folder FROM runs WHERE id = ?", (previous_run,)).fetchone()
        if not row or not row[0] or not os.path.isdir(row[0]):
            return set()
        done: set[str] = set()
        for name in sorted(os.listdir(row[0])):
            folder = os.path.join(row[0], name)
            if not name.startswith("ws") or not os.path.isfile(os.path.join(folder, JOURNAL)):
                continue
            try:
                spaces = Workspaces.open(folder)
                recovery = spaces.recover()
                for problem in recovery.problems + remove_slots(spaces):
                    ctx.reporter.message(f"warning: resume: run {previous_run}: {problem}")
                owned = spaces.owned()
                done |= {owned[b]["task"] for b in recovery.landed}
                from runner.manager.recovery import landed_tasks

                done |= landed_tasks(spaces)  # journalled landed, killed before the ledger: on `into`, done
                lander = Lander(spaces)
                for ws in recovery.finished:
                    task = ctx.tasks.get(ws.task_id)
                    w = ctx.ws.get(ws.task_id)
                    if task is None or w is None or w.mode != "worktree" or w.land != "merge":
                        continue  # (land: branch keeps the attempt on its branch, as the run would have)
                    if ws.task_id in review_rounds:  # its review never ended: run it again
                        ctx.reporter.message(f"resume: task {ws.task_id}: its committed attempt was not reviewed; running it again")
                        continue
                    log_path = os.path.join(row[0], "logs", f"{ws.task_id}.resume-landing.log")
                    rec = spaces.owned().get(ws.branch, {})
                    # each attempt of the task made one branch, journalled in order: this one's number
                    attempt = [b for b, r in spaces.owned().items() if r.get("task") == ws.task_id].index(ws.branch) + 1
                    with self.lease_for_resume(ws.task_id, attempt) as leased:  # its checks need its WVO_PORT, ... too
                        if leased is None:
                            ctx.reporter.message(f"resume: task {ws.task_id}: no free slot of its resources to check its "
                                                 "committed attempt on; running it again")  # fmt: skip
                            continue
                        checks = None
                        if w.checks:
                            checks = self._checks(task, w.checks, attempt, ws.branch, rec.get("base_commit"),
                                                  spaces.landing_path, log_path, None, leased, spaces=spaces)  # fmt: skip
                        verdict = lander.land(ws.branch, task.title or task.id, checks)
                    if isinstance(verdict, Landed):
                        done.add(ws.task_id)
                        ctx.reporter.message(f"resume: task {ws.task_id}: its committed attempt of run {previous_run} landed now")
                    else:
                        ctx.reporter.message(f"resume: task {ws.task_id}: its committed attempt does not land "
                                             f"({_why_not(verdict, w.into)}); running it again")  # fmt: skip
                for problem in spaces.finish(keep_worktrees=False).problems:
                    ctx.reporter.message(f"warning: resume: run {previous_run}: {problem}")
                remove_merge_trees(spaces)
            except (GitError, WorkspaceError, OSError) as exc:
                ctx.reporter.message(f"warning: resume: the workspaces of run {previous_run} in {folder}: {exc}")
        return done

    # -- after an attempt -----------------------------------------------------------------------------

    def on_started(self, agent_id: str, task_id: str) -> None:
        """Once no worktree task is setting up and none waits for an agent, the landing slots their checks will
        need are made while they work (not alongside the agents' own checkouts, nor when all hand over at once)."""
        if task_id not in self._starting:
            return
        self._starting.discard(task_id)
        self._working.add(task_id)
        if not self._starting and (not self._undispatched or len(self.ctx.pool.reservations) >= self._agents):
            w = self.ctx.ws[task_id]
            self._landers[(w.repo, w.into)].warm(len(self._working) + self._busy)

    def on_result(self, agent_id: str, res) -> bool:
        if not isinstance(res, TaskResult) or not self.ctx.ws:
            return False
        self._starting.discard(res.task_id)
        self._working.discard(res.task_id)
        return self.take(agent_id, res)

    def take(self, agent_id: str, res: TaskResult) -> bool:
        """A worktree attempt succeeded: queue it to land (True), or let it be recorded as it is (False)."""
        ctx = self.ctx
        w = ctx.ws.get(res.task_id)
        if res.workspace is not None:
            ctx.ws_info[res.task_id] = dict(res.workspace)
        if w is None or w.mode != "worktree" or res.outcome != Outcome.SUCCEEDED.value:
            return False
        if w.land != "merge" or not (res.workspace or {}).get("commit"):
            if res.workspace is not None:
                ctx.ws_info[res.task_id]["landed"] = None
                ctx.ws_info[res.task_id]["why"] = "land: branch" if w.land != "merge" else "nothing to land"
            return False
        ctx.sched.hand_over(res.task_id, agent_id)
        self._busy += 1
        task = ctx.tasks[res.task_id]
        branch = res.workspace["branch"]
        log_path = ctx.records.get((res.task_id, res.attempt), {}).get("log") or os.path.join(
            ctx.logs, f"{res.task_id}.{res.attempt}.log")

        leased = self.lease_env(res.task_id)  # read here, on the loop's thread: held until the landing's verdict

        def checks_for(path: str, cancel):
            """The task's checks in the landing worktree `path` (the queue calls it in each it merges the branch in)."""
            return self._checks(task, w.checks, res.attempt, branch, res.workspace.get("base"), path, log_path, cancel,
                                leased)  # fmt: skip

        self._landers[(w.repo, w.into)].submit((res.task_id, agent_id, res.attempt, res), branch, task.title or task.id,
                                               checks_for if w.checks else None)  # fmt: skip
        ctx.emit(ev.TASK_LANDING, task=res.task_id, agent=agent_id, attempt=res.attempt, branch=res.workspace["branch"])
        return True

    def _verdict(self, job, verdict) -> None:
        """From a landing thread: a verdict for the loop, which records it at its next tick."""
        self._done.append((*job, verdict, time.time()))
        self.ctx.wake()

    def _guard(self, spaces, where: str, extra: dict) -> dict:
        """The task's own variables (extra) with the ref guard for what runs in the landing worktree `where` over
        them (runner.coding.refguard): its detached HEAD only, extra's config entries kept before ours. Looked up
        once the worktree exists, as its checks start."""
        from runner.coding.git import GitError, WorkspaceError
        from runner.coding.gitenv import guarded
        from runner.coding.sealed import admin_dir

        try:
            return guarded(extra, spaces.hooks(), admin_dir(where, spaces.common_dir()).resolve(), "")
        except (GitError, WorkspaceError, OSError) as exc:  # the landing's own look at its worktree reports it
            log.warning("no ref guard for the landing checks in %s: %s", where, exc)
            return extra

    def _checks(self, task, commands, attempt: int, branch: str, base_commit: str | None, path, log_path: str, cancel,
                leased: dict | None = None, spaces=None):
        """The checks on the merged result in the landing worktree `path`: the attempt's environment there,
        its leased resources (WVO_PORT, ...) included. spaces: the workspaces of `path` (default: this run's)."""
        from runner.agents.checks import landing_checks
        from runner.coding.sealed import environment

        base_env = {**environment(os.environ, str(path)), **self._spared_env()}
        extra = {**{k: str(v) for k, v in task.env.items()}, **(leased or {})}
        spaces = spaces or self.spaces_of(task.id)

        def run(where: str) -> tuple[bool, str]:
            from runner.coding.refguard import config_change, config_snapshot

            before = config_snapshot(spaces.common_dir())
            ok, detail = landing_checks(commands, base_env, task.id, attempt, branch, self.ctx.opt.grace, log_path,
                                        timeout=task.timeout, cancel=cancel, extra=self._guard(spaces, where, extra),
                                        base_commit=base_commit)(where)  # fmt: skip
            changed = config_change(before, config_snapshot(spaces.common_dir()))
            if changed:  # not put back: the change may be the user's (runner.coding.refguard)
                why = f"the repository's shared config changed during the landing checks ({changed}); not put back, look at it"
                return False, f"{why}\n{detail}".rstrip()
            return ok, detail

        copy, setup = self._set_up_of(task)
        if not (copy or setup):
            return run

        def set_up_then_run(where: str) -> tuple[bool, str]:
            """The task's workspace.copy and workspace.setup, once per landing worktree, before its checks there."""
            key = (str(where), copy, setup)
            if key not in self._set_up:  # a landing worktree's reset (clean -fd) keeps ignored files: once is enough
                from runner.agents.checks import checks_env
                from runner.agents.worktree_setup import set_up
                from runner.coding.git import Git

                env = checks_env(base_env, task.id, attempt, worktree=str(where), branch=branch,
                                 base_commit=base_commit, extra=self._guard(spaces, where, extra))  # fmt: skip
                done = set_up(Git(), self.ctx.ws[task.id].repo, str(where), copy, setup, env, self.ctx.opt.grace,
                              cancel=cancel)  # fmt: skip
                if done.output and log_path:
                    with open(log_path, "a", encoding="utf-8") as f:
                        f.write(done.output)
                if done.error:
                    return False, f"{done.error} (in the landing worktree)\n{done.tail}".rstrip()
                self._set_up.add(key)
            return run(where)

        return set_up_then_run

    def tick(self, now: float) -> None:
        """Record what the landing thread decided since the last look."""
        if not self._spaces:
            return
        from runner.coding.landing import ChecksFailed, Conflict, Interrupted, Landed

        ctx = self.ctx
        if ctx.interrupted_by is not None and not self._cancelled:  # the run is stopping: so is the landing
            self._cancelled = True
            for lander in self._landers.values():
                lander.cancel()
        while self._done:
            task_id, agent_id, attempt, res, verdict, end = self._done.popleft()
            self._busy -= 1
            info = ctx.ws_info.setdefault(task_id, {})
            into = ctx.ws[task_id].into
            if isinstance(verdict, Landed):
                from runner.manager.recovery import crash_point

                crash_point("landed")  # tests: into moved and journalled, the ledger not written
                info["landed"] = verdict.commit
                self._last_landed = f"{task_id} ({verdict.commit[:10]})"
                outcome, error = Outcome.SUCCEEDED, None
            elif isinstance(verdict, Conflict):
                info["landed"], info["why"] = None, f"conflict in {', '.join(verdict.files)}"
                outcome, error = Outcome.CONFLICT, f"conflict landing on {into}: {', '.join(verdict.files)}"
                ctx.feedback_note(task_id, attempt, f"Your previous attempt conflicted with work landed meanwhile on "
                                  f"{into}, in: {', '.join(verdict.files)}. Start from the new tip.")
            elif isinstance(verdict, ChecksFailed):
                info["landed"], info["why"] = None, "checks failed on the merged result"
                outcome, error = Outcome.CHECK_FAILED, f"check failed on the merged result: {verdict.detail.splitlines()[0] if verdict.detail else ''}"
                ctx.feedback_note(task_id, attempt, f"The checks failed once your work was merged:\n{verdict.detail}")
            elif isinstance(verdict, Interrupted):
                info["landed"], info["why"] = None, "interrupted before it landed (--resume lands it)"
                outcome, error = Outcome.INTERRUPTED, "interrupted before it landed"
            else:
                info["landed"], info["why"] = None, f"landing failed: {verdict}"
                outcome, error = Outcome.FAILED, f"landing failed: {verdict}"
            msg = TaskResult(task_id, attempt, outcome.value, res.exit_code, res.start, end, error=error, log=res.log,
                             workspace=info, checks=res.checks)  # fmt: skip
            ctx.emit(ev.TASK_LANDED if outcome is Outcome.SUCCEEDED else ev.TASK_NOT_LANDED, task=task_id,
                     attempt=attempt, commit=info.get("landed"), reason=error)  # fmt: skip
            ctx.outcomes.record(agent_id, task_id, attempt, outcome, msg, holder=LANDING)
        ctx.pool.stats.update(landing=self._busy, landed=self._last_landed)  # how many wait to land, the last that did

    def _spared_env(self) -> dict:
        """What marks a landing's check as the run's (killed with it) but the manager's own (not an orphan)."""
        spared = getattr(self.ctx.backend, "spared_env", None)
        return spared() if spared is not None else {}

    def busy(self) -> bool:
        return self._busy > 0

    # -- the end --------------------------------------------------------------------------------------

    def stop_thread(self) -> None:
        for lander in self._landers.values():
            lander.stop(timeout=60.0)

    def summary(self, summary: dict) -> None:
        """Remove worktrees (unless kept), delete landed branches, list the others."""
        if not self._spaces:
            return
        from runner.coding.landing import remove_merge_trees
        from runner.coding.speculative import remove_slots
        from runner.coding.workspace import GitError, WorkspaceError

        out = {"kept": [], "deleted": 0, "worktrees_kept": []}
        for spaces in self._spaces.values():
            try:
                spaces.reload()  # the agents journalled their branches in their own processes
                cleanup = spaces.finish(keep_worktrees=self.ctx.opt.keep_worktrees)
                remove_merge_trees(spaces)
            except (GitError, WorkspaceError, OSError) as exc:
                self.ctx.reporter.message(f"warning: workspace clean-up in {spaces.repo}: {exc}")
                continue
            for problem in cleanup.problems + remove_slots(spaces):  # each named; the others were cleaned all the same
                self.ctx.reporter.message(f"warning: workspace clean-up in {spaces.repo}: {problem}")
            out["deleted"] += len(cleanup.deleted)
            out["kept"] += [{"branch": b, "state": s} for b, s in cleanup.kept]
            out["worktrees_kept"] += cleanup.worktrees_kept
        summary["workspaces"] = out


def _repo_top(folder: str) -> str | None:
    """The top folder of the git repository holding `folder`, or None."""
    from runner.coding.git import GitError, WorkspaceError, find_repo

    try:
        return str(find_repo(folder))
    except (GitError, WorkspaceError, OSError):
        return None


def workspace_plan(roadmap, options) -> list[dict]:
    """What `--check` says of workspaces: one entry per (mode, repo, base, into, land), with its tasks.

    Raises UsageError for a setting that cannot be honoured (worktree mode outside a repository,
    `into` checked out), as the run itself would, before anything runs.
    """
    from runner.coding.git import Git, checked_out_branch

    ws = workspace_settings(roadmap, options, roadmap.tasks)
    groups: dict[tuple, dict] = {}
    git = Git()
    for task in roadmap.tasks:
        w = ws.get(task.id)
        if w is None:
            continue
        base = w.base
        if w.mode == "worktree" and base is None:
            has_into = git.ok(w.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{w.into}")
            base = f"{w.into} (it exists)" if has_into else (checked_out_branch(w.repo, git) or "HEAD")
        key = (w.mode, w.repo, base if w.mode == "worktree" else None, w.into if w.mode == "worktree" else None, w.land)
        g = groups.setdefault(key, {"mode": w.mode, "repo": w.repo, "base": key[2], "into": key[3],
                                    "land": w.land if w.mode == "worktree" else None, "tasks": []})  # fmt: skip
        g["tasks"].append(task.id)
    return list(groups.values())


def _why_not(verdict, into: str) -> str:
    """One line for a landing that did not land, as a run's outcome says it (the check's output is in the log)."""
    from runner.coding.landing import ChecksFailed, Conflict

    if isinstance(verdict, Conflict):
        return f"conflict landing on {into}: {', '.join(verdict.files)}"
    if isinstance(verdict, ChecksFailed):
        return f"check failed on the merged result: {verdict.detail.splitlines()[0] if verdict.detail else ''}"
    return str(verdict)


def _no_leases(task_id: str) -> dict:
    return {}


def _no_resume_lease(task_id: str, attempt: int) -> contextlib.nullcontext:
    """lease_for_resume of a run without `resources:`: nothing to hold, no variable to set."""
    return contextlib.nullcontext({})
