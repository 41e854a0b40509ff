"""The roadmap as live shared state (--write-back): statuses written as tasks move, edits read as they come.

A component of the run (runner.manager.components).

    task started ──▶ in_progress      a critic has it ──▶ needs_review (the review's hook)
    succeeded (landed) ──▶ done       failed ──▶ blocked + last_error     review rounds spent ──▶ needs_improvement
         │ status() queues the status; on_commit writes it (runner.roadmap.writeback) after the ledger's commit
         ▼
    roadmap file ──stat every _WATCH_S (a timer of the loop)──▶ changed? load it again ──▶ diff by task
         new task: joins when its dependencies allow · removed, not started: dropped · changed, not
         started: its new definition · invalid: reported once, ignored until it is fixed

A status the run wrote itself is not an edit: the diff ignores a status equal to the one last written.
Only a whole-roadmap run watches (not a --only / --max-tasks batch), and a task that needs a worktree
cannot join a run that uses them (it is reported; the next run takes it).
"""

from __future__ import annotations

import logging
import os
import time

from runner.manager import events as ev
from runner.manager.components import Component
from runner.model import FINAL_STATES, TaskState

log = logging.getLogger(__name__)

_WATCH_S = 2.0  # how often the roadmap files are stat()ed while the run lasts
_REMOVED = "removed from the roadmap"


def _signature(task) -> tuple:
    """What an edit can change that matters to the run (status apart)."""
    return (
        task.command if not isinstance(task.command, list) else tuple(task.command),
        task.call, repr(task.args), repr(task.kwargs), tuple(sorted(task.env.items())), task.cwd, task.timeout,
        tuple(task.dependencies), task.title, task.description, task.priority, task.role, task.retries,
        task.complexity, task.affinity,
    )  # fmt: skip


class LiveRoadmap(Component):
    """Live statuses and the roadmap watch."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._pending: dict[str, dict[str, tuple[str, str | None]]] = {}  # file -> task id -> (status, error) to write
        self._written: dict[str, str] = {}  # task id -> status the run last wrote for it
        self._on = bool(ctx.opt.write_back) and ctx.opt.selected is None  # watching the files
        self._next = 0.0  # monotonic time of the next stat
        self._stats: dict = {}  # file -> (inode, size, mtime) last seen
        self._seen = {t.id: _signature(t) for t in ctx.roadmap.tasks}  # task id -> signature last read
        self._status_seen = {t.id: t.status for t in ctx.roadmap.tasks}  # task id -> status last read
        self._bad: str | None = None  # the invalid edit last reported, until it is fixed
        self._refused: set[str] = set()  # tasks reported as unable to join, once each

    def start(self) -> None:
        """The scheduler exists: remember what the files hold now."""
        self._next = time.monotonic() + _WATCH_S
        self._stats = {f: _stat(f) for f in self.ctx.roadmap.files} if self._on else {}

    # -- statuses -------------------------------------------------------------------------------------

    def status(self, task_id: str, status: str, error: str | None = None) -> None:
        """Queue a task's status (and last_error) for the roadmap file; written after the next commit."""
        ctx = self.ctx
        if not ctx.opt.write_back or task_id not in ctx.tasks:
            return
        self._written[task_id] = status
        self._pending.setdefault(ctx.tasks[task_id].file, {})[task_id] = (status, error)

    def on_started(self, agent_id: str, task_id: str) -> None:
        self.status(task_id, "in_progress")

    def on_outcome(self, task_id: str, attempt: int, outcome, result) -> None:
        ctx = self.ctx
        if not ctx.opt.write_back or ctx.sched.state[task_id] not in FINAL_STATES:
            return
        final = "needs_improvement" if ctx.sched.reason.get(task_id) == "needs_improvement" else outcome.value
        log_path = ctx.records.get((task_id, attempt), {}).get("log")
        self.end(task_id, final, f"{result.error or outcome.value} (log: {log_path})")

    def end(self, task_id: str, outcome_value: str, error: str | None) -> None:
        """The task's last outcome in this run, as a roadmap status."""
        state = self.ctx.sched.state.get(task_id)
        if state is TaskState.SUCCEEDED:
            self.status(task_id, "done")
        elif state is TaskState.FAILED:
            status = "needs_improvement" if outcome_value == "needs_improvement" else "blocked"
            self.status(task_id, status, error)
        elif state is TaskState.INTERRUPTED and task_id in self._written:
            # it was marked in_progress: it is not, any more (a next run takes it again)
            self.status(task_id, self.ctx.tasks[task_id].status or "pending")

    def on_commit(self) -> None:
        if not self._pending:
            return
        from runner.roadmap.writeback import write_statuses

        reporter = self.ctx.reporter
        pending, self._pending = self._pending, {}
        for path, updates in pending.items():
            try:
                missing = write_statuses(path, updates)
            except OSError as exc:
                reporter.message(f"warning: --write-back: cannot update {path}: {exc.strerror}")
                continue
            for task_id in missing:
                reporter.message(f"warning: --write-back: task {task_id} not found as a block mapping in {path}")

    # -- the watch ------------------------------------------------------------------------------------

    def timers(self, now: float) -> list[float]:
        return [self._next] if self._on else []

    def tick(self, now: float) -> None:
        self._look(now)

    def at_end(self, now: float) -> bool:
        return self._look(now, force=True)

    def _look(self, now: float, force: bool = False) -> bool:
        """Stat the files when due (or now, with force); True when an edit gave the run more to do."""
        if not self._on or (now < self._next and not force):
            return False
        self._next = now + _WATCH_S
        if force:  # what is recorded, then its statuses, are written first, as the run's end would
            self.ctx.flush()
            self.on_commit()
        stats = {f: _stat(f) for f in self.ctx.roadmap.files}
        if stats == self._stats:
            return False
        self._stats = stats
        active = self.ctx.sched.active()
        self._reload(now)
        return self.ctx.sched.active() > active

    def _reload(self, now: float) -> None:
        from runner.roadmap.loader import load

        ctx = self.ctx
        result = load(ctx.roadmap.files)
        ctx.emit(ev.ROADMAP_READ, valid=result.roadmap is not None)
        if result.roadmap is None:
            text = "; ".join(str(p) for p in result.errors[:3])
            if text != self._bad:
                self._bad = text
                ctx.reporter.message(f"warning: roadmap edit ignored until it is valid again: {text}")
                ctx.emit(ev.ROADMAP_INVALID, errors=[p.as_dict() for p in result.errors[:20]])
            return
        if self._bad is not None:
            self._bad = None
            ctx.reporter.message("roadmap: valid again; its edits apply")
        new = {t.id: t for t in result.roadmap.tasks}
        wall = time.time()
        for task_id in list(ctx.tasks):
            if task_id not in new and ctx.sched.drop_task(task_id, _REMOVED):
                self._seen.pop(task_id, None)
                ctx.reporter.message(f"roadmap: task {task_id} was removed; it will not run")
                ctx.emit(ev.TASK_REMOVED, task=task_id)
        for task_id, task in new.items():
            status_edit = task.status != self._status_seen.get(task_id) and task.status != self._written.get(task_id)
            if task_id in self._seen and self._seen[task_id] == _signature(task) and not status_edit:
                continue
            self._status_seen[task_id] = task.status
            self._join(task, task_id not in ctx.tasks, now)
        ctx.note_changes(wall)

    def _join(self, task, added: bool, now: float) -> None:
        ctx = self.ctx
        why = self._cannot_join(task)
        if why is None and not ctx.sched.add_task(task, now):
            why = "it has already started in this run; the change applies to the next run"
        if why is not None:
            if task.id not in self._refused:
                self._refused.add(task.id)
                ctx.reporter.message(f"roadmap: task {task.id} {'was added' if added else 'changed'} but {why}")
            return
        self._seen[task.id] = _signature(task)
        self._refused.discard(task.id)
        if added:
            ctx.roadmap.tasks.append(task)
            ctx.total += 1
        else:
            at = next(i for i, t in enumerate(ctx.roadmap.tasks) if t.id == task.id)
            ctx.roadmap.tasks[at] = task
        ctx.tasks[task.id] = task
        ctx.reporter.message(f"roadmap: task {task.id} {'joined the run' if added else 'changed; its new definition runs'}")
        ctx.emit(ev.TASK_ADDED if added else ev.TASK_CHANGED, task=task.id)

    def _cannot_join(self, task) -> str | None:
        agent_task = task.command is None and task.call is None
        if agent_task and self.ctx.executor is None:
            return "it has no command and no executor is configured"
        if self.ctx.ws and (agent_task or any(k in task.meta for k in ("files", "checks", "allow_empty", "workspace"))):
            return "tasks that need a worktree cannot join a running run; the next run takes it"
        return None


def _stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
