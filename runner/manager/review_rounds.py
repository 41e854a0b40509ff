"""The critic's review in the manager: which tasks are reviewed, the review attempt, and its verdict.

A component of the run (runner.manager.components). A reviewed task's life (`review:` in
runner.coding.review):

    worker attempt: exit 0, committed, checks passed ──▶ recorded `needs_review` ──▶ queued for a critic
         ──▶ review attempt (a critic; any agent after --route-wait): the executor's review_prompt with
             {diff} and {checks}, in a fresh detached worktree at the task's commit (removed afterwards)
         ──▶ VERDICT: APPROVE ──▶ landing (runner.manager.landing_queue), or succeeded when it does not land
             VERDICT: REJECT why ──▶ recorded `rejected`, the reason is the next attempt's {feedback};
                                     rework by any agent but a critic; after review_rounds: needs_improvement
             no verdict, or the task branch moved ──▶ a failed review attempt, retried like any failure

The verdict is read from the critic's final answer only (runner.coding.review), as the critic's agent read
it from the critic's own output through a pipe (TaskResult.answer), never from its log file. The critic never edits
the task branch or `into`: it works on a detached HEAD, and if either moved anyway while it ran (`into`
may only move forward: other tasks land), it is put back and the attempt fails (runner.manager.refcheck).
The critic's output is read like the worker's (runner.manager.accounts): its session, tokens and cost are
recorded with its attempt.
"""

from __future__ import annotations

import os
from dataclasses import replace

from runner.agents.messages import TaskMessage, TaskResult
from runner.errors import UsageError
from runner.manager.logs import Logger
from runner.manager import events as ev
from runner.manager import statedir
from runner.manager.accounts import executors_module as _ex
from runner.manager.components import Component
from runner.model import Outcome, Task

log = Logger(__name__)

_SETUP_FAILED = ("/bin/sh", "-c", 'printf "wvo-batch: cannot set up the review: %s\\n" "$WVO_REVIEW_ERROR" >&2; exit 1')


class ReviewRounds(Component):
    """Review attempts and their verdicts."""

    def __init__(self, ctx, landing, accounts, live):
        self.ctx = ctx
        self.landing = landing  # approved work lands through it; its workspaces hold the branches
        self.accounts = accounts  # each attempt's model, and which attempts are a critic's
        self.live = live  # the roadmap's status while a critic has the task
        self.rounds: dict[str, int] = {}  # task id -> rejections that end it (reviewed tasks only)
        self._reviews: dict[str, dict] = {}  # task id -> {"rounds", "verdicts"}, for the task rows
        self._under_review: dict[str, dict] = {}  # task id -> the reviewed work: workspace info and checks
        self._attempts: dict[tuple[str, int], str | None] = {}  # (task, attempt) -> critic worktree
        self._seen: dict[tuple[str, int], str | None] = {}  # (task, attempt) -> into's tip before the review
        self._config: dict[tuple[str, int], tuple] = {}  # (task, attempt) -> the shared config's bytes before it
        self._settings()

    def _settings(self) -> None:
        """Which tasks a critic reviews; UsageError naming the place for one that cannot be."""
        ctx = self.ctx
        problems_at = []
        for task in ctx.members():
            if not task.meta or not task.runnable_status or task.id in ctx.opt.blocked:
                continue  # no meta: no `review` (decide's first answer)
            rounds, problem = self.decide(task, ctx.ws.get(task.id))
            if problem:
                problems_at.append(f"{task.place()}: task {task.id}: {problem}")
            elif rounds is not None:
                self.rounds[task.id] = rounds
        if problems_at:
            more = f" (and {len(problems_at) - 1} more)" if len(problems_at) > 1 else ""
            raise UsageError(problems_at[0] + more)

    def decide(self, task: Task, ws) -> tuple[int | None, str | None]:
        """(rejections that end it, or None: not reviewed; why it cannot be reviewed) for a task whose
        workspace is ws (coding.settings.Workspace or None)."""
        return decide_review(task, ws, self.ctx.executor is not None)

    def joined(self, task_id: str, rounds: int | None) -> None:
        """A task joined the run mid-way (runner.manager.live) with the review decide() gave it."""
        if rounds is None:
            self.rounds.pop(task_id, None)
        else:
            self.rounds[task_id] = rounds

    # -- the review attempt -----------------------------------------------------------------------------

    def message(self, task: Task, role: str, attempt: int, agent_id: str) -> TaskMessage | None:
        """A critic's attempt: the review prompt, run in a detached worktree at the reviewed commit."""
        if task.id not in self.rounds or not self.ctx.sched.reviewing(task.id):
            return None
        from runner.coding.workspace import GitError, WorkspaceError

        ctx = self.ctx
        work = self._under_review[task.id]
        ws = work["workspace"]
        env = {**{k: str(v) for k, v in task.env.items()}, "WVO_TASK_ID": task.id, "WVO_ATTEMPT": str(attempt),
               "WVO_REVIEW": "1", "WVO_BRANCH": ws["branch"], "WVO_BASE_COMMIT": ws["base"], "WVO_REVIEW_COMMIT": ws["commit"] or ws["base"]}  # fmt: skip
        spaces = self.landing.spaces_of(task.id)
        executor = self.accounts.choose(task, role, attempt, review=True).executor  # the critic role's
        cwd = None
        try:
            into_before = _refcheck().before_review(spaces, ws["branch"], ws["commit"] or ws["base"])
            diff = spaces.diff_text(ws["branch"], ws["base"], _rv().DIFF_CAP) or "(no changes)"
            cwd = self._critic_tree(spaces, task.id, attempt, ws["commit"] or ws["base"])
            env = _guarded(env, spaces, cwd)  # its git moves no branch: only its detached HEAD
            fields = {"diff": diff, "checks": _rv().checks_text(work["checks"])}
            command = _ex().build_argv(task, role, executor, ctx.feedback_text(task.id), attempt, fields)
            self._seen[(task.id, attempt)] = into_before
            self._config[(task.id, attempt)] = _refguard().config_snapshot(spaces.common_dir())
        except (GitError, WorkspaceError, OSError) as exc:
            command, env["WVO_REVIEW_ERROR"] = _SETUP_FAILED, str(exc)
        self._attempts[(task.id, attempt)] = cwd
        self.accounts.note_model(task, role, attempt, review=True)
        return TaskMessage(
            task_id=task.id, attempt=attempt, log_path=os.path.join(ctx.logs, f"{statedir.safe_name(task.id)}.{attempt}.log"),
            command=command, env=env, cwd=cwd, timeout=task.timeout, grace=ctx.opt.grace,
            rate_limit_pattern=ctx.opt.rate_limit or executor.rate_limit,
            # its output read like the worker's: session, tokens, cost and failure class are recorded
            output=executor.output if command is not _SETUP_FAILED else None,
            stall_timeout=executor.stall_timeout,
        )  # fmt: skip

    def _critic_tree(self, spaces, task_id: str, attempt: int, commit: str) -> str:
        spaces.worktrees_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = spaces.worktrees_dir / f"review-{statedir.safe_name(task_id)}-{attempt}"
        spaces._worktree("add", "-q", "--detach", str(path), commit)  # under the run's worktree lock, as every add
        return str(path)

    def on_outcomes(self, rows) -> None:
        if self._seen or self._attempts:  # nothing else to do for a chunk's tasks: none is a review
            super().on_outcomes(rows)

    def on_outcome(self, task_id: str, attempt: int, outcome, result) -> None:
        """Every recorded outcome: a review attempt's worktree goes (what the critic left in it is not kept)."""
        self._seen.pop((task_id, attempt), None)
        self._config.pop((task_id, attempt), None)
        if (task_id, attempt) in self._attempts:
            self._drop_tree(task_id, self._attempts.pop((task_id, attempt)))

    def _drop_tree(self, task_id: str, path: str | None) -> None:
        if path is None:
            return
        spaces = self.landing.spaces_of(task_id)
        proc = spaces._worktree("remove", "--force", path, check=False)
        if proc.returncode != 0:
            log.warning("cannot remove the review worktree %s: %s", path, proc.stderr.strip())

    def finish(self) -> None:
        """The run's end: review worktrees of attempts never recorded (there should be none)."""
        for (task_id, _), path in list(self._attempts.items()):
            self._drop_tree(task_id, path)
        self._attempts.clear()

    # -- results ----------------------------------------------------------------------------------------

    def on_result(self, agent_id: str, res) -> bool:
        """A reviewed task's attempt ended: send its work to review, or act on the verdict. True: recorded here."""
        if not isinstance(res, TaskResult) or res.task_id not in self.rounds:
            return False
        ctx, record = self.ctx, self.ctx.outcomes.record
        task_id, attempt = res.task_id, res.attempt
        if (task_id, attempt) in self._attempts:
            if res.outcome != Outcome.SUCCEEDED.value:
                return False  # the critic's CLI failed: recorded as it is, the review is retried
            verdict, problem = self._verdict(task_id, res)
            if verdict is None:
                record(agent_id, task_id, attempt, Outcome.FAILED,
                       replace(res, outcome=Outcome.FAILED.value, error=f"review: {problem}"))  # fmt: skip
                return True
            entry = self._reviews.setdefault(task_id, {"rounds": 0, "verdicts": []})
            entry["rounds"] += 1
            entry["verdicts"].append({"attempt": attempt, "agent": agent_id, "verdict": "approve" if verdict.approve else "reject",
                                      "reason": verdict.reason or None})  # fmt: skip
            ctx.emit(ev.TASK_REVIEWED, task=task_id, attempt=attempt, agent=agent_id,
                     verdict="approve" if verdict.approve else "reject", reason=verdict.reason or None)  # fmt: skip
            if not verdict.approve:
                ctx.ws_info.setdefault(task_id, {})["review"] = "rejected"
                record(agent_id, task_id, attempt, Outcome.REJECTED, replace(
                    res, outcome=Outcome.REJECTED.value, error=f"rejected by the critic: {verdict.reason}"))  # fmt: skip
                return True
            ctx.sched.approved(task_id)
            work = self._under_review.pop(task_id)
            approved = replace(res, workspace=work["workspace"], checks=work["checks"])
            if not self.landing.take(agent_id, approved):
                record(agent_id, task_id, attempt, Outcome.SUCCEEDED, approved)
            return True
        if res.outcome != Outcome.SUCCEEDED.value or not ctx.sched.needs_review(task_id) or res.workspace is None:
            return False
        self._under_review[task_id] = {"workspace": dict(res.workspace), "checks": tuple(res.checks)}
        ctx.ws_info[task_id] = {**res.workspace, "review": "pending"}
        record(agent_id, task_id, attempt, Outcome.NEEDS_REVIEW, replace(res, outcome=Outcome.NEEDS_REVIEW.value))
        if ctx.opt.write_back and ctx.sched.reviewing(task_id):
            self.live.status(task_id, "needs_review")
        return True

    def _verdict(self, task_id: str, res: TaskResult) -> tuple[object, str]:
        """The critic's verdict from its final answer, and why there is none; neither ref may have moved back."""
        ws = self._under_review[task_id]["workspace"]
        into_before = self._seen.pop((task_id, res.attempt), None)
        spaces = self.landing.spaces_of(task_id)
        problem = _refcheck().after_review(spaces, ws["branch"], ws["commit"] or ws["base"], into_before)
        before = self._config.pop((task_id, res.attempt), None)
        changed = before and _refguard().config_change(before, _refguard().config_snapshot(spaces.common_dir()))
        if changed:  # not put back: the change may be the user's (runner.coding.refguard)
            problem = "; ".join(filter(None, [problem, f"the repository's shared config changed during the review "
                                                       f"({changed}); not put back, look at it"]))
        if problem:
            return None, problem
        # the answer its agent read from the critic's own output (a pipe), never its log: any process can write that
        return _rv().verdict_of_answer(res.answer, self.accounts.executor_of(task_id, res.attempt).output)

    # -- for the records ----------------------------------------------------------------------------------

    def task_rows(self, rows: list[dict]) -> None:
        if self._reviews or self.rounds:  # else no task of the run is reviewed
            super().task_rows(rows)

    def task_row(self, task_id: str, row: dict) -> None:
        """A reviewed task's row: its review rounds and verdicts."""
        if task_id in self._reviews or task_id in self.rounds:
            row["review"] = {"rounds": 0, "verdicts": [], **self._reviews.get(task_id, {}),
                             "rounds_allowed": self.rounds.get(task_id)}  # fmt: skip


def decide_review(task: Task, ws, has_executor: bool) -> tuple[int | None, str | None]:
    """ReviewRounds.decide for a run whose default executor is there or not; also what --check says."""
    if task.meta.get("review") is None and task.meta.get("review_rounds") is None:
        return None, None  # not reviewed (parse_policy would say so): no import of the review module
    problems: list[str] = []
    policy = _rv().parse_policy(task.meta.get("review"), task.meta.get("review_rounds"), problems)
    if not problems and not _rv().needs_review(task, policy, _ex().complexity_of(task)):
        return None, None
    if not problems and (ws is None or ws.mode != "worktree"):
        problems.append("`review` needs the task in a worktree (workspace mode worktree): the critic reviews its branch")
    if not problems and not has_executor:
        problems.append("`review` needs an executor: the critic is an agent CLI run with its review_prompt")
    return (None, problems[0]) if problems else (policy.rounds, None)


def _guarded(env: dict, spaces, worktree: str) -> dict:
    """env with the run's ref guard over it (runner.coding.refguard): a critic's git moves no branch of its own;
    the task's own config entries in env are kept, before ours."""
    from runner.coding.gitenv import guarded
    from runner.coding.sealed import admin_dir

    return guarded(env, spaces.hooks(), admin_dir(worktree, spaces.common_dir()).resolve(), "")


def _refguard():
    """runner.coding.refguard, imported once a task is reviewed."""
    from runner.coding import refguard

    return refguard


def _rv():
    """runner.coding.review, imported on the first review: a run without one never needs it."""
    from runner.coding import review

    return review


def _refcheck():
    """runner.manager.refcheck, imported once a task is reviewed."""
    from runner.manager import refcheck

    return refcheck
