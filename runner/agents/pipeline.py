"""One attempt, the same on every backend: local agents and Ray actors both call run_attempt_pipeline.

    TaskMessage ──▶ an ATTEMPT_MARK of its own in the environment (runner.agents.kill)
      │ workspace: a worktree on a new branch wvo/<run>/<task> at `into`'s tip (runner.coding.workspace);
      │ the task runs there (its `cwd:` the same folder of the worktree), with WVO_WORKTREE, WVO_BRANCH,
      │ WVO_BASE_COMMIT, in an environment sealed to it (runner.coding.sealed)
      ▼ set-up: `copy:` files from the user's checkout, then `setup:` commands (runner.agents.worktree_setup);
        a failure ends the attempt setup_failed, and the worktree goes with nothing of it committed
    run_task: an agent CLI with its output parser (msg.output: runner.agents.cli_attempt; a claude
      │       session resumed in another folder is carried there first: runner.agents.sessions), a
      │       critic's answer read from its own output (both through a pipe the agent reads), or the
      │       command / callable itself (runner.agents.execute)
      ▼ exit 0
    commit what it left (`<id>: <title>`, author wvo-batch) ──▶ checks (runner.agents.checks) ──▶ TaskResult
      │  anything else: a WIP commit of what it left, so `git log <branch>` shows it; then the worktree
      │  is removed (kept with --keep-worktrees) and the branch stays for the manager to land
      ▼ always: every process that carries the attempt's mark and is still alive is killed
        (a worker's `setsid` child must not outlive its attempt)

It all happens in the agent, so agents create, commit and check in parallel; only landing on `into`
is serialised, in the manager. Plain commands take the shortest path: nothing of the coding layer is
imported for them.
"""

from __future__ import annotations

import time
from dataclasses import replace

from runner.agents.execute import LogFiles, append_to_log as _append, reap_children, run_attempt
from runner.agents.kill import ATTEMPT_MARK, kill_tree, new_mark
from runner.agents.messages import TaskMessage, TaskResult
from runner.model import Outcome

# What a TaskMessage's `workspace` dict carries (the manager fills it in):
WORKSPACE_KEYS = ("repo", "state_dir", "run", "into", "title", "allow_empty", "keep", "setup", "copy")


def run_attempt_pipeline(msg: TaskMessage, conn, base_env: dict, logs: LogFiles | None = None,
                         announce_after: float = 0.0, note_pid=None, on_mark=None) -> TaskResult:
    """Run one attempt of msg through every step it asks for; what it started is gone when this returns.

    conn: the channel (Started out, Cancel in); note_pid(pid) as in runner.agents.execute.run_attempt;
    on_mark(token) is told the attempt's mark first, for whoever must kill the attempt from outside.
    """
    mark = new_mark()
    if on_mark is not None:
        on_mark(mark)
    msg = replace(msg, env={**msg.env, ATTEMPT_MARK: mark})
    try:
        if msg.workspace is not None:
            return run_in_worktree(msg, conn, base_env, logs, announce_after, note_pid)
        result = run_task(msg, conn, base_env, logs, announce_after, note_pid)
        if msg.checks and result.outcome == Outcome.SUCCEEDED.value:  # in its own cwd: a timeout of their own
            result = after_checks(msg, result, msg.cwd, base_env, time.monotonic(), conn)
        return result
    finally:
        end_attempt(mark, msg.grace)


def end_attempt(mark: str, grace: float) -> None:
    """Kill what the attempt left running, wherever it went; reaps what was ours.

    An agent is a subreaper, so a leftover is our child by now: when none runs, nothing is scanned
    (the no-op path costs one waitpid).
    """
    if reap_children():
        kill_tree(None, grace, mark=mark)
        reap_children()


def run_task(msg: TaskMessage, conn, base_env: dict, logs: LogFiles | None = None, announce_after: float = 0.0,
             note_pid=None) -> TaskResult:
    """The task itself: an agent CLI's attempt when msg.output names its parser, else the command or callable."""
    if msg.output:
        from runner.agents.cli_attempt import run_cli_attempt
        from runner.agents.sessions import carry_session

        carry_session(msg, {**base_env, **msg.env})
        return run_cli_attempt(msg, conn, base_env, logs, announce_after, note_pid)
    if msg.env.get("WVO_REVIEW"):  # a critic without a parser: its verdict is read from its own output
        from runner.agents.cli_attempt import run_plain_review

        return run_plain_review(msg, conn, base_env, logs, announce_after, note_pid)
    return run_attempt(msg, conn, base_env, logs, announce_after, note_pid)


def after_checks(msg: TaskMessage, result: TaskResult, cwd: str | None, base_env: dict, began: float,
                 conn=None) -> TaskResult:
    """Run msg.checks in cwd (runner.agents.checks); the first that fails fails the attempt (check_failed).

    The attempt's timeout covers its checks; an order waiting on conn (a Cancel, the order to stop, the
    manager gone) ends the running check (TERM, grace, KILL) and the attempt is interrupted.
    """
    from runner.agents.checks import run_checks

    deadline = None if msg.timeout is None else began + msg.timeout
    cancel = None if conn is None else _OrderWaiting(conn)
    checked = run_checks(msg.checks, cwd, {**base_env, **msg.env}, msg.grace, msg.log_path, cancel=cancel,
                         deadline=deadline)
    if checked.passed:
        return replace(result, checks=checked.ran, end=time.time(), log=True)  # the checks' output is in the log
    if checked.outcome == Outcome.INTERRUPTED.value:
        return replace(result, outcome=Outcome.INTERRUPTED.value, error="interrupted", checks=checked.ran,
                       end=time.time(), log=True)
    if checked.exit_code is None and checked.outcome == Outcome.TIMED_OUT.value:  # no time left to start it
        return replace(result, outcome=Outcome.TIMED_OUT.value, error=checked.error, checks=checked.ran)
    return replace(result, outcome=Outcome.CHECK_FAILED.value, exit_code=checked.exit_code, error=checked.error,
                   checks=checked.ran, check_tail=checked.tail, end=time.time(), log=True)


class _OrderWaiting:
    """The checks' cancel: set while an order waits on the agent's channel. The order is left there: the
    agent reads it once the attempt is reported (a Cancel then finds the attempt over, as when it races)."""

    def __init__(self, conn):
        self._conn = conn

    def is_set(self) -> bool:
        try:
            return bool(self._conn.poll(0))
        except (OSError, EOFError):
            return True


def run_in_worktree(msg: TaskMessage, conn, base_env: dict, logs: LogFiles | None, announce_after: float = 0.0,
                    note_pid=None) -> TaskResult:
    """The attempt in a worktree of its own on a new branch; what it left committed, then its checks.

    Its task, set-up and checks get an environment sealed to the worktree (runner.coding.sealed): no
    variable of the caller's points git elsewhere, and git stops at the worktree's parent.
    """
    from runner.coding import refguard, sealed
    from runner.coding.gitenv import guarded
    from runner.coding.workspace import GitError, WorkspaceError, Workspaces

    w = msg.workspace
    began = time.monotonic()
    start = time.time()
    try:
        spaces = Workspaces.attach(w["state_dir"])  # the manager opened them: nothing is checked again here
        ws = spaces.create(msg.task_id)
    except (GitError, WorkspaceError, OSError) as exc:
        _append(msg.log_path, f"wvo-batch: cannot create the worktree: {exc}\n")
        return TaskResult(msg.task_id, msg.attempt, Outcome.SETUP_FAILED.value, None, start, time.time(), error=f"worktree: {exc}",
                          log=True)
    info = {"branch": ws.branch, "base": ws.base_commit, "commit": None, "files": 0, "added": 0, "deleted": 0}
    try:
        cwd = sealed.worktree_cwd(ws.path, w["repo"], msg.cwd)
        # the task's git moves only its branch and its worktree's HEAD (runner.coding.refguard)
        guard = (spaces.hooks(), sealed.admin_dir(ws.path, spaces.common_dir()).resolve(), ws.branch)
    except (GitError, WorkspaceError, OSError) as exc:
        return _not_set_up(msg, spaces, ws, info, start, str(exc), Outcome.SETUP_FAILED.value)
    base_env = sealed.environment(base_env, ws.path)
    # The guard goes over the task's own variables, not under them: its `env:` may give git config entries of
    # its own (kept, ours after them), never take the guard's place.
    env = guarded({**msg.env, "WVO_WORKTREE": ws.path, "WVO_BRANCH": ws.branch, "WVO_BASE_COMMIT": ws.base_commit}, *guard)
    config_before = refguard.config_snapshot(spaces.common_dir())
    setup_output = ""
    if w.get("copy") or w.get("setup"):
        from runner.agents.checks import checks_env
        from runner.agents.worktree_setup import set_up

        done = set_up(spaces.git, str(spaces.repo), ws.path, tuple(w.get("copy") or ()), tuple(w.get("setup") or ()),
                      checks_env(base_env, msg.task_id, msg.attempt, ws.path, ws.branch, ws.base_commit, env),
                      msg.grace, _OrderWaiting(conn), None if msg.timeout is None else began + msg.timeout)
        info["setup_s"] = round(done.seconds, 3)
        if w.get("copy"):
            info["copied"] = done.copied
        if done.error is not None:
            _append(msg.log_path, done.output)
            return _not_set_up(msg, spaces, ws, info, start, done.error, done.outcome, done.tail)
        setup_output = done.output
    result = run_task(replace(msg, cwd=cwd, env=env), conn, base_env, logs, announce_after, note_pid)
    if setup_output:  # the task's log is made when it starts: the set-up's part goes after it
        _append(msg.log_path, f"\n===== wvo-batch: the set-up, before the task =====\n{setup_output}")
        result = replace(result, log=True)
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
                    result = after_checks(replace(msg, env=env), result, ws.path, base_env, began, conn)
                    if w.get("keep"):  # checks may leave files behind: back to the commit, nothing of theirs is kept
                        spaces.git.run(ws.path, "reset", "-q", "--hard", check=False)
                        spaces.git.run(ws.path, "clean", "-q", "-fd", check=False)
                    # else the worktree goes below with whatever they left (remove --force): a checkout less
        else:
            wip = spaces.wip_commit(ws, f"{msg.task_id} attempt {msg.attempt}: {result.outcome}")
            info["commit"], info["state"] = wip, "wip"
        result = _config_unchanged(msg, result, config_before, refguard.config_snapshot(spaces.common_dir()))
        stats = spaces.diff_stats(ws.branch, ws.base_commit)
        info.update(files=stats.files_changed, added=stats.added, deleted=stats.deleted)
        if not w.get("keep"):
            # everything in it was committed just now (the result, or a WIP commit): no second snapshot
            spaces.remove(ws, f"attempt {msg.attempt} ended: {result.outcome}", saved=True)
    except (GitError, WorkspaceError, OSError) as exc:
        _append(msg.log_path, f"\nwvo-batch: git failed after the attempt: {exc}\n")
        result = replace(result, outcome=Outcome.FAILED.value, error=f"git: {exc}")
    return replace(result, workspace=info)


def _config_unchanged(msg: TaskMessage, result: TaskResult, before: tuple, after: tuple) -> TaskResult:
    """The attempt fails when the repository's shared config changed while it ran; never put back (the user
    may have changed it meanwhile: runner.coding.refguard)."""
    from runner.coding.refguard import config_change

    what = config_change(before, after)
    if not what:
        return result
    why = (f"the repository's shared config changed while the attempt ran ({what}): by this task, one beside it or "
           f"you; a task must not change it (it is every worktree's and yours), and it is not put back: look at it")
    _append(msg.log_path, f"\nwvo-batch: {why}\n")
    failed = result.outcome == Outcome.SUCCEEDED.value
    return replace(result, outcome=Outcome.FAILED.value if failed else result.outcome, log=True,
                   error=why if failed or not result.error else f"{result.error}; {why}")


def _not_set_up(msg: TaskMessage, spaces, ws, info: dict, start: float, error: str, outcome: str,
                tail: str = "") -> TaskResult:
    """The worktree could not be made ready (its cwd, copy or set-up): it goes, nothing of it committed."""
    from runner.coding.workspace import BranchState, GitError, WorkspaceError

    _append(msg.log_path, f"wvo-batch: {error}\n")
    info["state"] = "setup_failed"
    try:
        if msg.workspace.get("keep"):
            spaces.mark(ws.branch, BranchState.REFUSED, why=error)  # kept to look at: --keep-worktrees
        else:
            spaces.discard(ws, error)
    except (GitError, WorkspaceError, OSError) as exc:
        _append(msg.log_path, f"wvo-batch: the worktree could not be removed: {exc}\n")
    return TaskResult(msg.task_id, msg.attempt, outcome, None, start, time.time(), error=error, log=True,
                      workspace=info, check_tail=tail or None)

