"""The roadmap as live shared state (--write-back): statuses written as tasks move, edits read as they come.

Part of runner.manager.run.Run (a mixin: the loop there owns the state these methods change).

    task started ──▶ in_progress      a critic has it ──▶ needs_review (the review's hook)
    succeeded (landed) ──▶ done       failed ──▶ blocked + last_error     review rounds spent ──▶ needs_improvement
         │ _live_status() queues the status; Run._flush writes it (runner.roadmap.writeback) after the commit
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

from runner.model import TaskState

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


class Live:
    """Live statuses and the roadmap watch (mixed into Run)."""

    _live_on = False  # watching the files (set by _live_start)

    def _live_start(self) -> None:
        """Called once the scheduler exists: remember what the files hold now."""
        self._live_written: dict[str, str] = {}  # task id -> status the run last wrote for it
        self._live_on = bool(self.opt.write_back) and self.opt.selected is None
        self._live_next = time.monotonic() + _WATCH_S
        self._live_stats = {f: _stat(f) for f in self.roadmap.files} if self._live_on else {}
        self._live_seen = {t.id: _signature(t) for t in self.roadmap.tasks}  # task id -> signature last read
        self._live_status_seen = {t.id: t.status for t in self.roadmap.tasks}  # task id -> status last read
        self._live_bad: str | None = None  # the invalid edit last reported, until it is fixed
        self._live_refused: set[str] = set()  # tasks reported as unable to join, once each

    def _live_status(self, task_id: str, status: str, error: str | None = None) -> None:
        """Queue a task's status (and last_error) for the roadmap file; written at the next flush."""
        if not self.opt.write_back or task_id not in self.tasks:
            return
        if not hasattr(self, "_live_written"):
            self._live_written = {}
        self._live_written[task_id] = status
        self._write_back.setdefault(self.tasks[task_id].file, {})[task_id] = (status, error)

    def _live_end(self, task_id: str, outcome_value: str, error: str | None) -> None:
        """The task's last outcome in this run, as a roadmap status."""
        state = self.sched.state.get(task_id)
        if state is TaskState.SUCCEEDED:
            self._live_status(task_id, "done")
        elif state is TaskState.FAILED:
            status = "needs_improvement" if outcome_value == "needs_improvement" else "blocked"
            self._live_status(task_id, status, error)
        elif state is TaskState.INTERRUPTED and task_id in self._live_written:
            # it was marked in_progress: it is not, any more (a next run takes it again)
            self._live_status(task_id, self.tasks[task_id].status or "pending")

    def _live_due(self, now: float) -> float | None:
        """The loop's timer for the next stat, while the run watches."""
        return self._live_next if self._live_on else None

    def _live_tick(self, now: float, force: bool = False) -> bool:
        """Stat the files when due (or now, with force); True when an edit gave the run more to do."""
        if not self._live_on or (now < self._live_next and not force):
            return False
        self._live_next = now + _WATCH_S
        if force:  # what is recorded, then its statuses, are written first, as the run's end would
            self._flush()
            if self._write_back:
                self._write_statuses()
        stats = {f: _stat(f) for f in self.roadmap.files}
        if stats == self._live_stats:
            return False
        self._live_stats = stats
        active = self.sched.active()
        self._live_reload(now)
        return self.sched.active() > active

    def _live_reload(self, now: float) -> None:
        from runner.roadmap.loader import load

        result = load(self.roadmap.files)
        self._emit("roadmap:read", valid=result.roadmap is not None)
        if result.roadmap is None:
            text = "; ".join(str(p) for p in result.errors[:3])
            if text != self._live_bad:
                self._live_bad = text
                self.reporter.message(f"warning: roadmap edit ignored until it is valid again: {text}")
                self._emit("roadmap:invalid", errors=[p.as_dict() for p in result.errors[:20]])
            return
        if self._live_bad is not None:
            self._live_bad = None
            self.reporter.message("roadmap: valid again; its edits apply")
        new = {t.id: t for t in result.roadmap.tasks}
        wall = time.time()
        for task_id in list(self.tasks):
            if task_id not in new and self.sched.drop_task(task_id, _REMOVED):
                self._live_seen.pop(task_id, None)
                self.reporter.message(f"roadmap: task {task_id} was removed; it will not run")
                self._emit("task:removed", task=task_id)
        for task_id, task in new.items():
            status_edit = task.status != self._live_status_seen.get(task_id) and task.status != self._live_written.get(task_id)
            if task_id in self._live_seen and self._live_seen[task_id] == _signature(task) and not status_edit:
                continue
            self._live_status_seen[task_id] = task.status
            self._live_join(task, task_id not in self.tasks, now)
        for changed in self.sched.drain_changes():
            self._note_change(changed, wall)

    def _live_join(self, task, added: bool, now: float) -> None:
        why = self._cannot_join(task)
        if why is None and not self.sched.add_task(task, now):
            why = "it has already started in this run; the change applies to the next run"
        if why is not None:
            if task.id not in self._live_refused:
                self._live_refused.add(task.id)
                self.reporter.message(f"roadmap: task {task.id} {'was added' if added else 'changed'} but {why}")
            return
        self._live_seen[task.id] = _signature(task)
        self._live_refused.discard(task.id)
        if added:
            self.roadmap.tasks.append(task)
            self._total += 1
        else:
            at = next(i for i, t in enumerate(self.roadmap.tasks) if t.id == task.id)
            self.roadmap.tasks[at] = task
        self.tasks[task.id] = task
        self.reporter.message(f"roadmap: task {task.id} {'joined the run' if added else 'changed; its new definition runs'}")
        self._emit("task:added" if added else "task:changed", task=task.id)

    def _cannot_join(self, task) -> str | None:
        agent_task = task.command is None and task.call is None
        if agent_task and self.executor is None:
            return "it has no command and no executor is configured"
        if self.ws and (agent_task or any(k in task.meta for k in ("files", "checks", "allow_empty", "workspace"))):
            return "tasks that need a worktree cannot join a running run; the next run takes it"
        return None


def _stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
