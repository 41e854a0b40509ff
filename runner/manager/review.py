"""The critic's review in the manager: which tasks are reviewed, the review attempt, and its verdict.

Part of runner.manager.run.Run (a mixin). A reviewed task's life (`review:` in runner.coding.review):

    worker attempt: exit 0, committed, checks passed ──▶ recorded `needs_review` ──▶ queued for a critic
         ──▶ review attempt (a critic; any agent after --route-wait): the executor's review_prompt with
             {diff} and {checks}, in a fresh detached worktree at the task's commit (removed afterwards)
         ──▶ VERDICT: APPROVE ──▶ landing (runner.manager.landing), or succeeded when it does not land
             VERDICT: REJECT why ──▶ recorded `rejected`, the reason is the next attempt's {feedback};
                                     rework by any agent but a critic; after review_rounds: needs_improvement
             no verdict, or the task branch moved ──▶ a failed review attempt, retried like any failure

The critic never edits the task branch: it works on a detached HEAD, and if the branch tip moved
anyway while it ran, the branch is put back and the attempt fails. The attempt's model (`escalate:`)
is kept per attempt for the events and the task rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from runner.agents.messages import TaskMessage, TaskResult
from runner.coding import executors
from runner.errors import UsageError
from runner.manager import statedir
from runner.model import Outcome, Task

log = logging.getLogger(__name__)

_LOG_TAIL = 256 * 1024  # bytes of a critic's log read for its verdict
_SETUP_FAILED = ("/bin/sh", "-c", 'printf "wvo-batch: cannot set up the review: %s\\n" "$WVO_REVIEW_ERROR" >&2; exit 1')


class Review:
    """Review attempts and their verdicts (mixed into Run)."""

    def _init_review(self) -> None:
        self.review_rounds: dict[str, int] = {}  # task id -> rejections that end it (reviewed tasks only)
        self._reviews: dict[str, dict] = {}  # task id -> {"rounds", "verdicts"}, for the task rows
        self._under_review: dict[str, dict] = {}  # task id -> the reviewed work: workspace info and checks
        self._review_attempts: dict[tuple[str, int], str | None] = {}  # (task, attempt) -> critic worktree
        self._attempt_models: dict[tuple[str, int], str] = {}  # (task, attempt) -> model its argv named

    def _review_settings(self) -> None:
        """Which tasks a critic reviews; UsageError naming the place for one that cannot be."""
        problems_at = []
        for task in self._members():
            if not task.runnable_status or task.id in self.opt.blocked:
                continue
            problems: list[str] = []
            policy = _rv().parse_policy(task.meta.get("review"), task.meta.get("review_rounds"), problems)
            if not problems and not _rv().needs_review(task, policy, executors.complexity_of(task)):
                continue
            ws = self.ws.get(task.id)
            if not problems and (ws is None or ws.mode != "worktree"):
                problems.append("`review` needs the task in a worktree (workspace mode worktree): the critic reviews its branch")
            if not problems and self.executor is None:
                problems.append("`review` needs an executor: the critic is an agent CLI run with its review_prompt")
            if problems:
                problems_at.append(f"{task.place()}: task {task.id}: {problems[0]}")
            else:
                self.review_rounds[task.id] = policy.rounds
        if problems_at:
            more = f" (and {len(problems_at) - 1} more)" if len(problems_at) > 1 else ""
            raise UsageError(problems_at[0] + more)

    # -- the review attempt -----------------------------------------------------------------------------

    def _review_message(self, task: Task, role: str, attempt: int) -> TaskMessage:
        """A critic's attempt: the review prompt, run in a detached worktree at the reviewed commit."""
        from runner.coding.workspace import GitError, WorkspaceError

        work = self._under_review[task.id]
        ws = work["workspace"]
        env = {**{k: str(v) for k, v in task.env.items()}, "WVO_TASK_ID": task.id, "WVO_ATTEMPT": str(attempt),
               "WVO_REVIEW": "1", "WVO_BRANCH": ws["branch"], "WVO_BASE_COMMIT": ws["base"], "WVO_REVIEW_COMMIT": ws["commit"] or ws["base"]}  # fmt: skip
        spaces = self._spaces_of(task.id)
        cwd = None
        try:
            diff = spaces.diff_text(ws["branch"], ws["base"], _rv().DIFF_CAP) or "(no changes)"
            cwd = self._critic_tree(spaces, task.id, attempt, ws["commit"] or ws["base"])
            fields = {"diff": diff, "checks": _rv().checks_text(work["checks"])}
            command = executors.build_argv(task, role, self.executor, self._feedback_text(task.id), attempt, fields)
        except (GitError, WorkspaceError, OSError) as exc:
            command, env["WVO_REVIEW_ERROR"] = _SETUP_FAILED, str(exc)
        self._review_attempts[(task.id, attempt)] = cwd
        self._attempt_models[(task.id, attempt)] = executors.model_of(task, role, self.executor, attempt)
        return TaskMessage(
            task_id=task.id, attempt=attempt, log_path=os.path.join(self.logs, f"{statedir.safe_name(task.id)}.{attempt}.log"),
            command=command, env=env, cwd=cwd, timeout=task.timeout, grace=self.opt.grace,
            rate_limit_pattern=self.opt.rate_limit or self.executor.rate_limit,
            # its output read like the worker's: session, tokens, cost and failure class are recorded
            output=self.executor.output if command is not _SETUP_FAILED else None,
            stall_timeout=self.executor.stall_timeout,
        )  # fmt: skip

    def _spaces_of(self, task_id: str):
        w = self.ws[task_id]
        return self._spaces[(w.repo, w.into)]

    def _critic_tree(self, spaces, task_id: str, attempt: int, commit: str) -> str:
        spaces.worktrees_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = spaces.worktrees_dir / f"review-{statedir.safe_name(task_id)}-{attempt}"
        spaces.git.run(spaces.repo, "worktree", "add", "-q", "--detach", str(path), commit)
        return str(path)

    def _is_review_attempt(self, task_id: str, attempt: int) -> bool:
        return (task_id, attempt) in self._review_attempts

    def _review_ended(self, task_id: str, attempt: int) -> None:
        """Every recorded outcome: a review attempt's worktree goes (what the critic left in it is not kept)."""
        if (task_id, attempt) in self._review_attempts:
            self._drop_tree(task_id, self._review_attempts.pop((task_id, attempt)))

    def _drop_tree(self, task_id: str, path: str | None) -> None:
        if path is None:
            return
        spaces = self._spaces_of(task_id)
        proc = spaces.git.run(spaces.repo, "worktree", "remove", "--force", path, check=False)
        if proc.returncode != 0:
            log.warning("cannot remove the review worktree %s: %s", path, proc.stderr.strip())

    def _drop_review_trees(self) -> None:
        """The run's end: review worktrees of attempts never recorded (there should be none)."""
        for (task_id, _), path in list(self._review_attempts.items()):
            self._drop_tree(task_id, path)
        self._review_attempts.clear()

    # -- results ----------------------------------------------------------------------------------------

    def _review_result(self, agent_id: str, res: TaskResult) -> bool:
        """A reviewed task's attempt ended: send its work to review, or act on the verdict. True: recorded here."""
        task_id, attempt = res.task_id, res.attempt
        if (task_id, attempt) in self._review_attempts:
            if res.outcome != Outcome.SUCCEEDED.value:
                return False  # the critic's CLI failed: recorded as it is, the review is retried
            verdict, problem = self._verdict(task_id, res)
            if verdict is None:
                self._outcome(agent_id, task_id, attempt, Outcome.FAILED,
                              replace(res, outcome=Outcome.FAILED.value, error=f"review: {problem}"))  # fmt: skip
                return True
            entry = self._reviews.setdefault(task_id, {"rounds": 0, "verdicts": []})
            entry["rounds"] += 1
            entry["verdicts"].append({"attempt": attempt, "agent": agent_id, "verdict": "approve" if verdict.approve else "reject",
                                      "reason": verdict.reason or None})  # fmt: skip
            self._emit("task:reviewed", task=task_id, attempt=attempt, agent=agent_id,
                       verdict="approve" if verdict.approve else "reject", reason=verdict.reason or None)  # fmt: skip
            if not verdict.approve:
                self._ws_info.setdefault(task_id, {})["review"] = "rejected"
                self._outcome(agent_id, task_id, attempt, Outcome.REJECTED, replace(
                    res, outcome=Outcome.REJECTED.value, error=f"rejected by the critic: {verdict.reason}"))  # fmt: skip
                return True
            self.sched.approved(task_id)
            work = self._under_review.pop(task_id)
            approved = replace(res, workspace=work["workspace"], checks=work["checks"])
            if not self._to_landing(agent_id, approved):
                self._outcome(agent_id, task_id, attempt, Outcome.SUCCEEDED, approved)
            return True
        if res.outcome != Outcome.SUCCEEDED.value or not self.sched.needs_review(task_id) or res.workspace is None:
            return False
        self._under_review[task_id] = {"workspace": dict(res.workspace), "checks": tuple(res.checks)}
        self._ws_info[task_id] = {**res.workspace, "review": "pending"}
        self._outcome(agent_id, task_id, attempt, Outcome.NEEDS_REVIEW, replace(res, outcome=Outcome.NEEDS_REVIEW.value))
        if self.opt.write_back and self.sched.reviewing(task_id):
            self._live_status(task_id, "needs_review")
        return True

    def _verdict(self, task_id: str, res: TaskResult) -> tuple[object, str]:
        """The critic's verdict from its log, and why there is none; the task branch must not have moved."""
        ws = self._under_review[task_id]["workspace"]
        spaces = self._spaces_of(task_id)
        ref = f"refs/heads/{ws['branch']}"
        proc = spaces.git.run(spaces.repo, "rev-parse", "--verify", "--quiet", ref, check=False)
        tip, reviewed = proc.stdout.strip(), ws["commit"] or ws["base"]
        if tip != reviewed:
            if tip:
                spaces.git.run(spaces.repo, "update-ref", "-m", "wvo-batch: undo a critic's change", ref, reviewed, tip, check=False)
            return None, f"the task branch {ws['branch']} moved during the review (a critic must not change it); put back"
        path = self._records.get((task_id, res.attempt), {}).get("log")
        data = b""
        if res.log and path:
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - _LOG_TAIL))
                    data = f.read()
            except OSError:
                pass
        verdict = _rv().verdict_of(data)
        if verdict is None:
            return None, "no verdict: the critic's output has no line `VERDICT: APPROVE` or `VERDICT: REJECT <reason>`"
        return verdict, ""

    # -- for the records ----------------------------------------------------------------------------------

    def _note_model(self, task: Task, role: str, attempt: int) -> None:
        if self.executor is not None and task.command is None and task.call is None:
            self._attempt_models[(task.id, attempt)] = executors.model_of(task, role, self.executor, attempt)

    def _model_field(self, task_id: str, attempt: int) -> dict:
        model = self._attempt_models.get((task_id, attempt))
        return {"model": model} if model else {}

    def _review_row(self, task_id: str, attempts: int) -> dict:
        """What a task row adds: its review rounds and verdicts, the model of each attempt."""
        out = {}
        if task_id in self._reviews or task_id in self.review_rounds:
            out["review"] = {"rounds": 0, "verdicts": [], **self._reviews.get(task_id, {}),
                             "rounds_allowed": self.review_rounds.get(task_id)}  # fmt: skip
        models = [self._attempt_models.get((task_id, n)) for n in range(1, attempts + 1)]
        if any(models):
            out["models"] = models
        return out


def _rv():
    """runner.coding.review, imported on the first review: a run without one never needs it."""
    from runner.coding import review

    return review
