"""One attempt of a task in a worktree of its own, and the checks after any task that has them.

    TaskMessage(workspace=...) ──▶ worktree on a new branch wvo/<run>/<task> at `into`'s tip
         │  the task runs there (cwd), with WVO_WORKTREE, WVO_BRANCH, WVO_BASE_COMMIT
         ▼  exit 0
    commit what it left (`<id>: <title>`, author wvo-batch) ──▶ checks, in the worktree ──▶ result
         │  anything else: a WIP commit of what it left, so `git log <branch>` shows it
         ▼
    worktree removed (kept with --keep-worktrees); the branch stays for the manager to land

It all happens in the agent, so agents create, commit and check in parallel; only landing on `into`
is serialised, in the manager (runner.manager.landing). Git is runner.coding.workspace.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from runner.agents.execute import append_to_log as _append, LogFiles, run_attempt
from runner.agents.messages import TaskMessage, TaskResult
from runner.model import Outcome

# What a TaskMessage's `workspace` dict carries (the manager fills it in):
WORKSPACE_KEYS = ("repo", "state_dir", "run", "into", "title", "allow_empty", "keep")
CHECK_TAIL_LINES = 40


def run_with_checks(msg: TaskMessage, conn, base_env: dict, logs: LogFiles, announce_after: float = 0.0, note_pid=None) -> TaskResult:
    """Run an attempt: in a worktree when msg.workspace says so, then its checks when it exited 0."""
    if msg.workspace is None:
        result = _attempt(msg, conn, base_env, logs, announce_after, note_pid)
        if result.outcome == Outcome.SUCCEEDED.value and msg.checks:
            result = _checks(msg, result, msg.cwd, base_env, time.monotonic())
        return result
    return _in_worktree(msg, conn, base_env, logs, announce_after, note_pid)


def _in_worktree(msg: TaskMessage, conn, base_env: dict, logs: LogFiles, announce_after: float, note_pid) -> TaskResult:
    from runner.coding.workspace import GitError, WorkspaceError, Workspaces

    w = msg.workspace
    began = time.monotonic()
    start = time.time()
    try:
        spaces = Workspaces(w["repo"], w["state_dir"], w["run"], w["into"])
        ws = spaces.create(msg.task_id)
    except (GitError, WorkspaceError, OSError) as exc:
        _append(msg.log_path, f"wvo-batch: cannot create the worktree: {exc}\n")
        return TaskResult(msg.task_id, msg.attempt, Outcome.SETUP_FAILED.value, None, start, time.time(), error=f"worktree: {exc}",
                          log=True)
    env = {**msg.env, "WVO_WORKTREE": ws.path, "WVO_BRANCH": ws.branch, "WVO_BASE_COMMIT": ws.base_commit}
    result = _attempt(replace(msg, cwd=ws.path, env=env), conn, base_env, logs, announce_after, note_pid)
    info = {"branch": ws.branch, "base": ws.base_commit, "commit": None, "files": 0, "added": 0, "deleted": 0}
    try:
        if result.outcome == Outcome.SUCCEEDED.value:
            title = (w.get("title") or "").splitlines()[0] if w.get("title") else ""
            tip = spaces.commit_all(ws, f"{msg.task_id}: {title}".rstrip(": ").rstrip() or msg.task_id)
            info["commit"] = tip
            if tip is None and not w.get("allow_empty"):
                info["state"] = "no_changes"
                result = replace(result, outcome=Outcome.NO_CHANGES.value, error="the attempt changed nothing")
            else:
                info["state"] = "committed"
                if msg.checks:
                    result = _checks(replace(msg, env=env), result, ws.path, base_env, began)
                    # checks may leave files behind: back to the commit, nothing of theirs is kept
                    spaces.git.run(ws.path, "reset", "-q", "--hard", check=False)
                    spaces.git.run(ws.path, "clean", "-q", "-fd", check=False)
        else:
            wip = spaces.wip_commit(ws, f"{msg.task_id} attempt {msg.attempt}: {result.outcome}")
            info["commit"], info["state"] = wip, "wip"
        stats = spaces.diff_stats(ws.branch, ws.base_commit)
        info.update(files=stats.files_changed, added=stats.added, deleted=stats.deleted)
        if not w.get("keep"):
            # everything in it was committed just now (the result, or a WIP commit): no second snapshot
            spaces.remove(ws, f"attempt {msg.attempt} ended: {result.outcome}", saved=True)
    except (GitError, WorkspaceError, OSError) as exc:
        _append(msg.log_path, f"\nwvo-batch: git failed after the attempt: {exc}\n")
        result = replace(result, outcome=Outcome.FAILED.value, error=f"git: {exc}")
    return replace(result, workspace=info)


def _attempt(msg: TaskMessage, *args) -> TaskResult:
    """The task itself: an agent CLI's attempt (runner.agents.cli_attempt) when msg.output says so."""
    if msg.output:
        from runner.agents.cli_attempt import run_cli_attempt

        return run_cli_attempt(msg, *args)
    return run_attempt(msg, *args)


def _checks(msg: TaskMessage, result: TaskResult, cwd: str | None, base_env: dict, began: float) -> TaskResult:
    """Run msg.checks one by one; the first that fails fails the attempt (check_failed)."""
    ran = []
    logs = LogFiles(f"check-{os.getpid()}", lazy=False)
    for i, check in enumerate(msg.checks, 1):
        left = None if msg.timeout is None else msg.timeout - (time.monotonic() - began)
        if left is not None and left <= 0:
            return replace(result, outcome=Outcome.TIMED_OUT.value, error=f"timed out before check {check!r}", checks=tuple(ran))
        path = f"{msg.log_path}.check{i}"
        check_msg = replace(msg, command=check, cwd=cwd, timeout=left, log_path=path, rate_limit_pattern=None, checks=(), workspace=None)
        res = run_attempt(check_msg, _NoOrders(), base_env, logs)
        output = _read(path)
        try:
            os.unlink(path)
        except OSError:
            pass
        _append(msg.log_path, f"\n===== wvo-batch check {i}/{len(msg.checks)}: {check} =====\n{output}"
                f"===== exit {res.exit_code} ({res.outcome}) =====\n")
        ran.append((check, res.exit_code))
        if res.outcome != Outcome.SUCCEEDED.value:
            tail = "\n".join(output.splitlines()[-CHECK_TAIL_LINES:])
            why = f"exit {res.exit_code}" if res.outcome == Outcome.FAILED.value else res.outcome
            return replace(
                result, outcome=Outcome.CHECK_FAILED.value, exit_code=res.exit_code,
                error=f"check failed: {check} ({why})", checks=tuple(ran), check_tail=tail, end=time.time(), log=True,
            )
    return replace(result, checks=tuple(ran), end=time.time(), log=True)  # the checks' output is in the log


class _NoOrders:
    """A check takes no orders: a Cancel for the attempt waits on the real channel until the checks end."""

    def send(self, obj) -> None:
        pass

    def fileno(self) -> int:
        return _NEVER_READABLE[0]

    def recv(self):
        raise EOFError


_NEVER_READABLE = os.pipe()  # a read end nobody writes to: never readable


def _read(path: str, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
