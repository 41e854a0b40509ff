"""The roadmap as live shared state (--write-back): statuses written as tasks move, edits read as they come.

A component of the run (runner.manager.components).

    task started ──▶ in_progress      a critic has it ──▶ needs_review (the review's hook)
    succeeded (landed) ──▶ done       failed ──▶ blocked + last_error     review rounds spent ──▶ needs_improvement
         │ status() queues the status; on_commit writes it (runner.roadmap.writeback) after the ledger's commit
         │ a file that cannot take them (invalid YAML): held, written once it changes (fixed) and before
         │ it is read for edits; a task not found in it: tried again with the file's next write; any
         │ still held at the run's end are named
         ▼
    roadmap file ──stat every _WATCH_S (a timer of the loop)──▶ changed? load it again ──▶ diff by task
         new task: joins when its dependencies allow · removed, not started: dropped · changed, not
         started: its new definition · invalid: reported once, ignored until it is fixed

A task that joins gets the decisions the run made for the tasks it started with: its workspace
(runner.manager.landing_queue.workspace_settings: a worktree, its `files:` and `checks:`), its review
(runner.manager.review_rounds) and its `uses:` leases. One that cannot run in this run is reported
once, on the terminal and as a task:refused event, with why: a worktree on an `into` the run opened no
worktree layer for, a review or workspace setting that cannot be honoured, resources the run does not
lease, an agent task with no executor. The next run takes it.

A status the run wrote itself is not an edit: the diff ignores a status equal to the one last written.
Only a whole-roadmap run watches (not a --only / --max-tasks batch).
"""

from __future__ import annotations

import os
import time

from runner.errors import UsageError
from runner.manager.logs import Logger
from runner.manager import events as ev
from runner.manager import roadmap_edits
from runner.manager.components import Component
from runner.model import FINAL_STATES, TaskState

log = Logger(__name__)

_WATCH_S = 2.0  # how often the roadmap files are stat()ed while the run lasts
_REMOVED = "removed from the roadmap"
_RUN_WRITES = ("last_error",)  # fields the run writes itself (with the status): never an edit


def _signature(task) -> tuple:
    """What an edit can change that matters to the run (status apart)."""
    return (
        task.command if not isinstance(task.command, list) else tuple(task.command),
        task.call, repr(task.args), repr(task.kwargs), tuple(sorted(task.env.items())), task.cwd, task.timeout,
        tuple(task.dependencies), task.title, task.description, task.priority, task.role, task.retries,
        task.complexity, task.affinity, repr(sorted(((k, v) for k, v in task.meta.items() if k not in _RUN_WRITES), key=lambda kv: str(kv[0]))),
    )  # fmt: skip


class LiveRoadmap(Component):
    """Live statuses and the roadmap watch."""

    def __init__(self, ctx):
        self.ctx = ctx
        # runner.manager.review_rounds.ReviewRounds, set by the run once both are built (the review reports
        # needs_review through this component; this one asks it whether a joining task is reviewed)
        self.review = None
        self._pending: dict[str, dict[str, tuple[str, str | None]]] = {}  # file -> task id -> (status, error) to write
        self._held: dict[str, dict[str, tuple[str, str | None]]] = {}  # file -> statuses it could not take yet
        self._held_stat: dict[str, tuple | None] = {}  # file -> its stat when they were held; retried once it changes
        self._held_why: dict[str, str] = {}  # file -> why its statuses are held (the last warning given)
        self._warned: set[tuple[str, str]] = set()  # (file, why or task id) warned of, once each
        self._layers: set[tuple[str, str]] = set()  # (repo, into) the run opened a worktree layer for
        self._written: dict[str, str] = {}  # task id -> status the run last wrote for it
        self._on = bool(ctx.opt.write_back) and ctx.opt.selected is None  # watching the files
        self._next = 0.0  # monotonic time of the next stat
        self._stats: dict = {}  # file -> (inode, size, mtime) last seen
        # what the files held, for the watch's diff: a run that does not watch never reads them (~10 µs a task)
        self._seen = {t.id: _signature(t) for t in ctx.roadmap.tasks} if self._on else {}  # task id -> signature last read
        self._status_seen = {t.id: t.status for t in ctx.roadmap.tasks} if self._on else {}  # task id -> status last read
        self._bad: str | None = None  # the invalid edit last reported, until it is fixed
        self._refused: dict[str, str] = {}  # task id -> why it cannot join, as reported (once per reason)

    def start(self) -> None:
        """The scheduler exists: remember what the files hold now."""
        self._next = time.monotonic() + _WATCH_S
        self._stats = {f: _stat(f) for f in self.ctx.roadmap.files} if self._on else {}
        self._layers = {(w.repo, w.into) for w in self.ctx.ws.values() if w.mode == "worktree"}
        if self.ctx.opt.write_back:  # a task --resume carries over: its `done` may have died with the run it succeeded in
            state = self.ctx.sched.state
            for task in self.ctx.tasks.values():
                if state.get(task.id) is TaskState.SUCCEEDED and task.runnable_status:  # pending, in_progress...: not done
                    self.status(task.id, "done")

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

    def on_outcomes(self, rows) -> None:
        if self.ctx.opt.write_back:  # nothing to do without it
            super().on_outcomes(rows)

    def on_outcome(self, task_id: str, attempt: int, outcome, result) -> None:
        ctx = self.ctx
        if not ctx.opt.write_back or ctx.sched.state[task_id] not in FINAL_STATES:
            return
        final = "needs_improvement" if ctx.sched.reason.get(task_id) == "needs_improvement" else outcome.value
        log_path = ctx.records.get((task_id, attempt), {}).get("log")  # None: the attempt printed nothing, left no log
        self.end(task_id, final, f"{result.error or outcome.value}" + (f" (log: {log_path})" if log_path else ""))

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
        if not self._pending and not self._held:
            return
        pending, self._pending = self._pending, {}
        for path, updates in pending.items():
            if path in self._held_why and _stat(path) == self._held_stat[path]:  # it cannot take them yet
                self._held[path].update(updates)  # after the held ones: a newer status of a task replaces its older
            else:  # with any held for it (a task not found then may be back)
                self._write(path, {**self._take_held(path), **updates})
        self._retry()

    def _retry(self) -> None:
        """Write the held statuses of each file that could not take them and has changed since (fixed, perhaps)."""
        for path in [p for p in self._held_why if _stat(p) != self._held_stat[p]]:
            self._write(path, self._take_held(path))

    def _take_held(self, path: str) -> dict:
        self._held_stat.pop(path, None)
        return self._held.pop(path, {})

    def _write(self, path: str, updates: dict[str, tuple[str, str | None]]) -> None:
        from runner.roadmap.writeback import write_statuses

        before = _stat(path)  # a change after this is seen as one, and the statuses are tried again
        try:
            missing = write_statuses(path, updates)
        except OSError as exc:
            self._hold(path, updates, before, f"cannot update {path}: {exc.strerror}")
            return
        if self._held_why.pop(path, None) is not None:
            self.ctx.reporter.message(f"--write-back: {path} is updated again; the statuses held meanwhile are written")
        if missing:
            for task_id in missing:
                if (path, task_id) not in self._warned:
                    self._warned.add((path, task_id))
                    self.ctx.reporter.message(f"warning: --write-back: task {task_id} not found as a block mapping "
                                              f"in {path}; its status is written if it comes back")  # fmt: skip
            self._hold(path, {t: updates[t] for t in missing}, _stat(path), None)

    def _hold(self, path: str, updates: dict, stat: tuple | None, why: str | None) -> None:
        self._held.setdefault(path, {}).update(updates)
        self._held_stat[path] = stat
        if why is None:
            return
        self._held_why[path] = why
        if (path, why) not in self._warned:
            self._warned.add((path, why))
            self.ctx.reporter.message(f"warning: --write-back: {why}; held until the file changes")

    def finish(self) -> None:
        """The run's end: name the statuses no write could place (the file stayed invalid, the task gone)."""
        for path in list(self._held):  # a last try, but not of a file left as it was when it could not be read
            if path not in self._held_why or _stat(path) != self._held_stat[path]:
                self._write(path, self._take_held(path))
        for path, updates in self._held.items():
            why = self._held_why.get(path, "not found as a block mapping")
            shown = ", ".join(f"{t}: {s}" for t, (s, _) in list(updates.items())[:5]) + (" ..." if len(updates) > 5 else "")
            self.ctx.reporter.message(f"warning: --write-back: {len(updates)} status(es) never written to {path} "
                                      f"({shown}): {why}")  # fmt: skip

    # -- the watch ------------------------------------------------------------------------------------

    def timers(self, now: float) -> list[float]:
        return [self._next] if self._on or self._held else []

    def tick(self, now: float) -> None:
        self._look(now)

    def at_end(self, now: float) -> bool:
        return self._look(now, force=True)

    def _look(self, now: float, force: bool = False) -> bool:
        """Stat the files when due (or now, with force); True when an edit gave the run more to do."""
        if not (self._on or self._held) or (now < self._next and not force):
            return False
        self._next = now + _WATCH_S
        if force:  # what is recorded, then its statuses, are written first, as the run's end would
            self.ctx.flush()
            self.on_commit()
        else:  # held statuses first: read again, the file shows them as the run's own, not as edits
            self._retry()
        if not self._on:
            return False
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
            self._join(task, task_id not in ctx.tasks, now, result.roadmap)
        ctx.note_changes(wall)

    def _join(self, task, added: bool, now: float, roadmap) -> None:
        """Add or replace a task with the run's decisions for it (workspace, review, leases), or report why not."""
        ctx = self.ctx
        if ctx.sched.draining:  # stopping (a signal, --max-failures, the budget): it would wait forever
            why, ws, rounds = "the run is stopping and starts nothing more; the next run takes it", None, None
        elif roadmap_edits.can_add(ctx.sched, task.id):
            why, ws, rounds = self._decide(task, roadmap)
        else:
            why, ws, rounds = "it has already started in this run; the change applies to the next run", None, None
        if why is not None:
            if self._refused.get(task.id) != why:
                self._refused[task.id] = why
                ctx.reporter.message(f"roadmap: task {task.id} {'was added' if added else 'changed'} but {why}")
                ctx.emit(ev.TASK_REFUSED, task=task.id, reason=why)
            return
        ctx.sched.add_task(task, now, ws.files if ws is not None else (), rounds)
        if ws is not None:
            ctx.ws[task.id] = ws  # what the landing queue, the run's messages and the review read of it
        else:
            ctx.ws.pop(task.id, None)
        if self.review is not None:
            self.review.joined(task.id, rounds)
        self._seen[task.id] = _signature(task)
        self._refused.pop(task.id, None)
        if added:
            ctx.roadmap.tasks.append(task)
            ctx.total += 1
        else:
            at = next(i for i, t in enumerate(ctx.roadmap.tasks) if t.id == task.id)
            ctx.roadmap.tasks[at] = task
        ctx.tasks[task.id] = task
        ctx.reporter.message(f"roadmap: task {task.id} {'joined the run' if added else 'changed; its new definition runs'}")
        ctx.emit(ev.TASK_ADDED if added else ev.TASK_CHANGED, task=task.id)

    def _decide(self, task, roadmap) -> tuple[str | None, object, int | None]:
        """(why it cannot join or None, its coding.settings.Workspace or None, its review rounds or None)."""
        ctx = self.ctx
        if task.command is None and task.call is None and ctx.executor is None:
            return "it has no command and no executor is configured", None, None
        from runner.manager.landing_queue import workspace_settings  # not imported by a run that nothing joins

        try:  # the decision the landing queue made for the tasks of the start, from the file as it is now
            ws = workspace_settings(roadmap, ctx.opt, [task]).get(task.id)
        except UsageError as exc:
            return f"its workspace cannot be set up ({exc})", None, None
        if ws is not None and ws.mode == "worktree" and (ws.repo, ws.into) not in self._layers:
            where = "no worktree layer" if not self._layers else f"none for {ws.into}"
            return (f"it needs a worktree (landing on {ws.into}) and this run opened {where}; "
                    "the next run takes it"), None, None  # fmt: skip
        rounds, problem = self.review.decide(task, ws) if self.review is not None else (None, None)
        if problem is not None:
            return f"its review cannot be done ({problem})", None, None
        problem = roadmap_edits.lease_problem(ctx.sched, task)
        if problem is not None:
            return problem, None, None
        return None, ws, rounds


def _stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
