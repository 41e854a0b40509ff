"""Outcome bookkeeping of a run: every attempt's end recorded, the task's state moved, the run's end.

Part of runner.manager.run.Run (a mixin: the loop there owns the state these methods change). An
outcome goes to the ledger first; events and the reporter hear of it only after the commit (_flush).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import replace

from runner.agents.messages import TaskResult
from runner.manager.exits import Ending, decide, status as status_of
from runner.manager.interface import RunResult
from runner.manager.ledger import Attempt, task_hash
from runner.manager.telemetry import summarize
from runner.model import FINAL_STATES, Outcome, TaskState

log = logging.getLogger(__name__)


class Outcomes:
    """Recording outcomes, agent deaths, write-back and the run's summary (mixed into Run)."""

    def _agent_gone(self, agent_id: str, reason: str, task_pid: int | None = None, position: int | None = None) -> None:
        row = self.pool.agents.get(agent_id)
        task_pid = (row.task_pid if row else None) or task_pid  # the slot's pid, when its Started never came
        task_id = self.pool.remove(agent_id)
        self._deadline.pop(agent_id, None)
        self.sched.agent_gone(agent_id)
        self._emit("agent:exited", agent=agent_id, reason=reason)
        held = self._chunks.pop(agent_id, None) or ([task_id] if task_id is not None else [])
        if task_pid and task_id is not None:
            _killpg(task_pid)  # its whole process group: the agent cannot do it any more
        if len(held) > 1:
            # Of a chunk, only the task the agent was on is lost to its death; the others (done but not
            # reported, or not started) go back to the queue uncounted.
            lost = held[position] if position is not None and 0 <= position < len(held) else held[0]
            self._give_back(agent_id, [t for t in held if t != lost], why=f"agent {agent_id} died")
            held = [lost]
        for held_id in held:  # one task at most by now
            if agent_id in self._timed_out:
                outcome, error = Outcome.TIMED_OUT, f"timed out after {self.tasks[held_id].timeout:g}s; agent killed"
            elif self.interrupted_by is not None:
                outcome, error = Outcome.INTERRUPTED, "interrupted"
            else:
                outcome, error = Outcome.AGENT_DIED, f"agent {agent_id} died ({reason})"
            attempt = self.sched.current_attempt(held_id)
            rec = self._records.get((held_id, attempt), {})
            if rec and rec.get("reserved") is None:  # a chunk's later task: held from now, in the record
                rec["reserved"] = time.time()
                self._emit("task:reserved", task=held_id, agent=agent_id, attempt=attempt, wait_s=0.0)
            logged = bool(rec.get("log")) and os.path.exists(rec["log"])  # a quick, silent attempt may have left none
            result = TaskResult(
                held_id, attempt, outcome.value, None, rec.get("start") or time.time(), time.time(), error=error, log=logged
            )
            self._outcome(agent_id, held_id, attempt, outcome, result)
        self._timed_out.discard(agent_id)
        if agent_id in self._retiring:
            self._retiring.discard(agent_id)
        elif self.interrupted_by is None and not self.sched.finished() and row is not None:
            self._spawn(row.role)

    def _resume_set(self) -> tuple[dict[str, str], int | None]:
        """Tasks to carry over from the run being resumed: succeeded there, definition unchanged."""
        if not self.opt.resume:
            return {}, None
        previous = self.ledger.latest_unfinished(self.roadmap.files)
        if previous is None:
            self.reporter.message("resume: no unfinished run of this roadmap; starting a fresh run")
            return {}, None
        done = self.ledger.succeeded_tasks(previous.id)
        carried = {}
        for task_id, old_hash in done.items():
            task = self.tasks.get(task_id)
            if task is None:
                continue
            if task_hash(task) == old_hash:
                carried[task_id] = old_hash
            else:
                self.reporter.message(f"resume: task {task_id} changed since run {previous.id}; running it again")
        if self.ws:
            for task_id in self._recover_workspaces(previous.id) - set(carried):
                if task_id in self.tasks:
                    carried[task_id] = task_hash(self.tasks[task_id])
        self.reporter.message(
            f"resume: continuing run {previous.id}: {len(carried)} task(s) already succeeded are not run again"
        )
        return carried, previous.id

    def _outcome(self, agent_id: str, task_id: str, attempt: int, outcome: Outcome, msg: TaskResult, holder: str | None = None) -> None:
        now = time.monotonic()
        self._review_ended(task_id, attempt)
        rec = self._records.setdefault((task_id, attempt), {"task": task_id, "attempt": attempt, "agent": agent_id})
        rec["start"] = rec.get("start") or msg.start
        rec["end"] = msg.end
        log_path = rec.get("log") if msg.log else None  # None: the attempt wrote nothing
        rec["log"] = log_path
        try:
            self.ledger.record(
                self.run_id,
                Attempt(task_id, attempt, agent_id, msg.start, msg.end, msg.exit_code, outcome.value, log_path, msg.error,
                        msg.value, **self._cli_fields(task_id, attempt)),
            )
            self._unrecorded += 1
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike: the run must stop cleanly
            self._ledger_failed(exc)
        retry = self.sched.finish(task_id, holder or agent_id, self._sched_outcome(outcome, msg), now, msg.retry_after)
        if outcome not in (Outcome.SUCCEEDED, Outcome.INTERRUPTED, Outcome.NEEDS_REVIEW) and holder is None:
            why = msg.error or outcome.value
            if msg.check_tail:
                why += f"\nLast lines of its output:\n{msg.check_tail}"
            self._feedback_note(task_id, attempt, why)
        wall = time.time()
        duration = (msg.end - msg.start) if msg.start else 0.0
        self._emit(
            "task:finished",
            task=task_id,
            agent=agent_id,
            attempt=attempt,
            status=outcome.value,
            exit_code=msg.exit_code,
            wait_s=round((rec.get("reserved") or wall) - (rec.get("queued") or rec.get("reserved") or wall), 6),
            duration_s=round(duration, 6),
            log=log_path,
            error=msg.error,
            **self._model_field(task_id, attempt),
        )
        self._last_outcome[task_id] = {
            "agent": agent_id,
            "attempts": attempt,
            "duration_s": round(duration, 3),
            "exit_code": msg.exit_code,
            "log": log_path,
            "error": msg.error,
            "value": msg.value,
        }
        if self.opt.write_back and self.sched.state[task_id] in FINAL_STATES:
            final = "needs_improvement" if self.sched.reason.get(task_id) == "needs_improvement" else outcome.value
            self._live_end(task_id, final, f"{msg.error or outcome.value} (log: {log_path})")
        if retry is not None:
            extra = {}
            if outcome is Outcome.RATE_LIMITED:
                pause = max(0.0, self.sched.cooldown_until(agent_id) - now)
                extra = {"agent": agent_id, "cooldown_s": round(pause, 3)}
                self.pool.set_state(agent_id, "cooling")
                self._cooling[agent_id] = self.sched.cooldown_until(agent_id)
                self._emit("agent:cooldown", agent=agent_id, cooldown_s=round(pause, 3), task=task_id)
            self._emit(
                "task:retry", task=task_id, attempt=retry.attempt, delay_s=round(retry.delay, 3), reason=retry.reason, **extra
            )
        for changed in self.sched.drain_changes():
            self._note_change(changed, wall)

    def _note_change(self, task_id: str, wall: float) -> None:
        state = self.sched.state[task_id]
        if state is TaskState.QUEUED:
            self._released = True
            self._queued_at[task_id] = wall
            self._emit("task:queued", ts=wall, task=task_id, priority=self.tasks[task_id].priority.value)
        elif state is TaskState.SKIPPED:
            self._emit("task:skipped", task=task_id, reason=self.sched.reason.get(task_id, ""))

    def _write_statuses(self) -> None:
        from runner.roadmap.writeback import write_statuses

        pending, self._write_back = self._write_back, {}
        for path, updates in pending.items():
            try:
                missing = write_statuses(path, updates)
            except OSError as exc:
                self.reporter.message(f"warning: --write-back: cannot update {path}: {exc.strerror}")
                continue
            for task_id in missing:
                self.reporter.message(f"warning: --write-back: task {task_id} not found as a block mapping in {path}")

    def _ledger_failed(self, exc: BaseException) -> None:
        """The ledger cannot be written: stop like _record_failed; what it holds is counted there, not here."""
        if self.ledger_error is not None:
            return
        self.ledger_error = _describe(exc)
        try:  # what was recorded before the failure, if the database still takes a commit
            self.ledger.commit()
        except Exception:  # noqa: BLE001 - it is failing; the count below says what it holds
            pass
        held = self.ledger.count_attempts(self.run_id)
        self._recorded = held if held is not None else self.ledger.committed
        self._unrecorded = self.ledger.pending
        self._record_failed(
            f"cannot write the ledger {self.ledger.path} ({self.ledger_error}); "
            f"{'' if held is not None else 'at least '}{self._recorded} outcome(s) were recorded"
            + (f", {self._unrecorded} not yet" if self._unrecorded else "")
        )

    def _events_failed(self) -> None:
        """An events file (events.jsonl, --events) cannot be written: the same stop as the ledger's."""
        if self.events_error is None:
            self.events_error = self.events.error
            self._record_failed(f"cannot write the events file {self.events_error}")

    def _record_failed(self, what: str) -> None:
        """A record of the run cannot be written: hand out nothing more; running tasks finish, then the run ends."""
        self.reporter.message(f"error: {what}; handing out no more tasks, running ones finish")
        self.sched.draining = True
        self.sched.abandon_waiting("not started: the run's record cannot be written")
        wall = time.time()
        for task_id in self.sched.drain_changes():
            self._note_change(task_id, wall)

    def _close_ledger(self, status: str, counts: dict, summary: dict) -> None:
        """Write what is pending and close the run in the ledger; after a ledger failure, one more try."""
        row = {k: summary[k] for k in ("total", *counts, "makespan_s")}
        if getattr(self, "_ws_info", None):  # worktree tasks: where each one's work went, for --history
            keys = ("branch", "files", "added", "deleted", "landed", "why")
            row["work"] = {tid: {k: info.get(k) for k in keys if info.get(k) is not None} for tid, info in self._ws_info.items()}
        failed_before = self.ledger_error is not None
        try:
            self.ledger.finish_run(self.run_id, status, row)
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike
            self.ledger_error = self.ledger_error or _describe(exc)
            held = self.ledger.count_attempts(self.run_id)
            self.reporter.message(
                f"error: run {self.run_id} could not be closed in the ledger ({_describe(exc)}): "
                f"{'?' if held is None else held} outcome(s) of it are recorded there, {self.ledger.pending} lost; "
                "--history shows it as running/crashed; --resume runs what is not recorded as succeeded"
            )
            return
        if failed_before:
            held = self.ledger.count_attempts(self.run_id)
            self.reporter.message(
                f"the ledger took the run's end after all: {held} outcome(s) of run {self.run_id} are recorded, "
                f"and the run is closed as {status}"
            )

    def _finish(self) -> RunResult:
        rows = []
        counts = {"succeeded": 0, "failed": 0, "skipped": 0, "interrupted": 0}
        for task in self._members():
            state = self.sched.state[task.id]
            last = self._last_outcome.get(task.id, {})
            status = state.value
            if state is TaskState.FAILED:
                status = self.sched.reason.get(task.id, "failed")
                if status not in ("failed", "timed_out", "agent_died", "no_changes", "check_failed", "conflict", "setup_failed",
                                  "needs_improvement", "auth_failed", "usage_limited"):
                    status = "failed"
            counts_key = {
                TaskState.SUCCEEDED: "succeeded",
                TaskState.FAILED: "failed",
                TaskState.SKIPPED: "skipped",
                TaskState.INTERRUPTED: "interrupted",
            }.get(state, "interrupted")
            counts[counts_key] += 1
            rows.append(
                {
                    "task": task.id,
                    "title": task.title,
                    "status": status,
                    "agent": last.get("agent"),
                    "attempts": last.get("attempts", 0),
                    "duration_s": last.get("duration_s"),
                    "exit_code": last.get("exit_code"),
                    "log": last.get("log"),
                    "reason": self.sched.reason.get(task.id) if state is not TaskState.SUCCEEDED else None,
                    "value": last.get("value"),
                }
            )
            info = getattr(self, "_ws_info", {}).get(task.id)
            if info is not None:
                rows[-1]["workspace"] = dict(info)
            rows[-1].update(self._review_row(task.id, last.get("attempts", 0)))
        deps = {t.id: list(t.dependencies) for t in self.roadmap.tasks}
        priorities = {t.id: t.priority.value for t in self.roadmap.tasks}
        telemetry = summarize(list(self._records.values()), sum(self.roles.values()), deps, priorities)
        ending = Ending(
            signal=self.interrupted_by,
            record_failed=bool(self.ledger_error or self.events_error),
            failed=bool(counts["failed"] or self.sched.failures or getattr(self, "stuck", False)),
        ).merge(self._limits_ending())  # a usage limit, an auth failure or the budget stopped it
        status = status_of(ending)
        summary = {
            "run_id": self.run_id,
            "status": status,
            "total": len(rows),
            **counts,
            "makespan_s": telemetry["makespan_s"],
            "agents": dict(self.roles),
            "folder": self.folder,
            "telemetry": telemetry,
        }
        self._spend_summary(rows, summary)
        if self._spaces:
            self._drop_review_trees()
            summary["workspaces"] = self._finish_workspaces()
        self._emit("run:finished", run=self.run_id, status=status, exit_code=decide(ending))
        self._flush()
        self.events.close()
        if self.events_error:  # the last events could not be written
            ending = replace(ending, record_failed=True)
            summary["status"] = status = status_of(ending)
        self._close_ledger(status, counts, summary)
        self.ledger.close()
        if self.ledger_error:  # the run's end could not be written
            ending = replace(ending, record_failed=True)
            summary["status"] = status_of(ending)
        if self.ledger_error:
            summary["ledger_error"] = self.ledger_error
        if self.events_error:
            summary["events_error"] = self.events_error
        result = RunResult(decide(ending), self.run_id, self.folder, summary, rows, ending)
        self.reporter.finished(result)
        return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
