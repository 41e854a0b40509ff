"""The run's record: every attempt's end in the ledger, then in the events, then told; and the run's end.

An outcome goes to the ledger first (a pending transaction, committed by the loop's group commit);
events and the reporter hear of it only after the commit (flush). A ledger or an events file that
cannot be written stops the hand-out: running tasks finish, and the run ends with exit 74.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

from runner.agents.messages import TaskResult, plain_result, plain_row
from runner.manager import events as ev
from runner.manager.exits import Ending, decide, status as status_of
from runner.manager.ledger import Attempt
from runner.manager.recovery import crash_point
from runner.manager.options import RunResult
from runner.manager.telemetry import EventLog, esc as _esc, json_value, summarize
from runner.model import Outcome, Priority, TaskState

_ROW_STATUSES = ("failed", "timed_out", "agent_died", "no_changes", "check_failed", "conflict", "setup_failed",
                 "needs_improvement", "auth_failed", "usage_limited")  # fmt: skip
_COUNT_KEY = {TaskState.SUCCEEDED: "succeeded", TaskState.FAILED: "failed", TaskState.SKIPPED: "skipped",
              TaskState.INTERRUPTED: "interrupted"}  # fmt: skip


def scheduler_outcome(outcome: Outcome, msg: TaskResult) -> Outcome:
    """The outcome the scheduler sees: a usage limit or a stall is requeued like a rate limit."""
    if outcome is Outcome.USAGE_LIMITED:
        return Outcome.RATE_LIMITED
    if outcome is Outcome.TIMED_OUT and (msg.cli or {}).get("failure") == "stalled":
        return Outcome.RATE_LIMITED
    if outcome is Outcome.AUTH_FAILED:
        return Outcome.FAILED
    return outcome


def _reason(reason: str | None, error: str | None) -> str | None:
    """A task's reason in the summary and --json: its last attempt's error when the scheduler's is the bare outcome."""
    if error and reason in _ROW_STATUSES and reason != "needs_improvement":
        return error
    return reason


class Outcomes:
    """Records outcomes (ledger first), commits and reports them, and closes the run."""

    def __init__(self, ctx, hooks):
        self.ctx = ctx
        self.hooks = hooks  # the run's components' (runner.manager.components.Hooks)
        self.events: EventLog | None = None  # events.jsonl and --events; opened once the run folder exists
        self.ledger_error: str | None = None  # the ledger could not be written: why
        self.events_error: str | None = None  # "PATH: reason" once an events file cannot be written
        self.recorded = 0  # outcomes committed to the ledger
        self.unrecorded = 0  # outcomes written but not yet committed
        # task id -> its last attempt: (agent, attempt, duration in seconds, exit code, log, error, value)
        self.last: dict[str, tuple] = {}

    def open_events(self, paths: list[str]) -> None:
        self.events = EventLog(paths)

    def check_events(self) -> None:
        if self.events.error is not None:
            self._events_failed()

    # -- one attempt's end ----------------------------------------------------------------------------

    def record(self, agent_id: str, task_id: str, attempt: int, outcome: Outcome, msg: TaskResult, holder: str | None = None) -> None:
        """Record an attempt's outcome and move its task; `holder`: who holds it when not the agent (landing)."""
        ctx = self.ctx
        now = time.monotonic()
        rec = ctx.records.setdefault((task_id, attempt), {"task": task_id, "attempt": attempt, "agent": agent_id})
        rec["start"] = rec.get("start") or msg.start
        rec["end"] = msg.end
        log_path = rec.get("log") if msg.log else None  # None: the attempt wrote nothing
        rec["log"] = log_path
        fields: dict = {}
        for attempt_fields in self.hooks.attempt_fields:
            fields.update(attempt_fields(task_id, attempt))
        try:
            ctx.ledger.record(ctx.run_id, Attempt(task_id, attempt, agent_id, msg.start, msg.end, msg.exit_code, outcome.value,
                                                  log_path, msg.error, msg.value, **fields))  # fmt: skip
            self.unrecorded += 1
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike: the run must stop cleanly
            self._ledger_failed(exc)
        retry = ctx.sched.finish(task_id, holder or agent_id, scheduler_outcome(outcome, msg), now, msg.retry_after)
        if outcome not in (Outcome.SUCCEEDED, Outcome.INTERRUPTED, Outcome.NEEDS_REVIEW) and holder is None:
            why = msg.error or outcome.value
            if msg.check_tail:
                why += f"\nLast lines of its output:\n{msg.check_tail}"
            ctx.feedback_note(task_id, attempt, why)
        wall = time.time()
        duration = (msg.end - msg.start) if msg.start else 0.0
        extra: dict = {}
        for event_fields in self.hooks.event_fields:
            extra.update(event_fields(task_id, attempt))
        ctx.emit(ev.TASK_FINISHED, task=task_id, agent=agent_id, attempt=attempt, status=outcome.value,
                 exit_code=msg.exit_code,
                 wait_s=round((rec.get("reserved") or wall) - (rec.get("queued") or rec.get("reserved") or wall), 6),
                 duration_s=round(duration, 6), log=log_path, error=msg.error, **extra)  # fmt: skip
        self.last[task_id] = (agent_id, attempt, duration, msg.exit_code, log_path, msg.error, msg.value)
        for on_outcome in self.hooks.on_outcome:
            on_outcome(task_id, attempt, outcome, msg)
        if retry is not None:
            extra = {}
            if outcome is Outcome.RATE_LIMITED:
                pause = max(0.0, ctx.sched.cooldown_until(agent_id) - now)
                extra = {"agent": agent_id, "cooldown_s": round(pause, 3)}
                ctx.pool.set_state(agent_id, "cooling")
                ctx.cooling[agent_id] = ctx.sched.cooldown_until(agent_id)
                ctx.emit(ev.AGENT_COOLDOWN, agent=agent_id, cooldown_s=round(pause, 3), task=task_id)
            ctx.emit(ev.TASK_RETRY, task=task_id, attempt=retry.attempt, delay_s=round(retry.delay, 3), reason=retry.reason, **extra)
        ctx.note_changes(wall)

    def record_chunk(self, agent_id: str, results) -> None:
        """Record a chunk's results, in order, as if the agent had held its tasks one after another.

        results: a BatchResult's items (runner.agents.messages), each a TaskResult or a plain one's row.
        Each task after the first is reserved when the one before it ended (task:reserved), started
        (task:started) and finished (task:finished). When every call succeeded (the usual case) the
        bookkeeping is done in one pass over the batch: one clock reading, the ledger rows as one list,
        one call of each batch hook, one note_changes; it gives the same rows, events and counts as
        recording them one by one (what a chunk with a failure still does), but for the time stamps:
        a task:finished is stamped when its call ended (the agent's clock), not when it was recorded.
        """
        ctx = self.ctx
        for item in results:
            if type(item) is not tuple:  # a dead agent's results (the outbox's), or one that did not succeed plainly
                rows = [r if type(r) is tuple else plain_row(r) for r in results]
                if not all(type(r) is tuple for r in rows):
                    self._record_chunk_one_by_one(agent_id, [r if type(r) is not tuple else plain_result(r) for r in results])
                    return
                results = rows
                break
        records, pending, run_id = ctx.records, ctx.pending, ctx.run_id
        now, wall = time.monotonic(), time.time()
        if not pending:
            ctx.pending_since = now
        hooks = self.hooks
        fields = _fields_of(hooks.attempt_fields_of, results)
        extras = _fields_of(hooks.event_fields_of, results)
        rows, done = [], []
        last, reserved_ev, started_ev, finished_ev = self.last, ev.TASK_RESERVED, ev.TASK_STARTED, ev.TASK_FINISHED
        succeeded = Outcome.SUCCEEDED.value
        # Nobody reads the dicts (--quiet): a task's events are written as their JSON lines, one str a task,
        # byte for byte what the encoder makes of the dicts (tests/test_chunk_bookkeeping.py)
        as_text = not ctx.reporter.reads_events
        agent_json = json_value(agent_id)
        previous_end = None
        for i, (task_id, attempt, start, end, exit_code, logged, error, value) in enumerate(results):
            reserved_wait = None  # the wait of its task:reserved, when it has one here
            rec = records.get((task_id, attempt))
            if rec is None:
                rec = records[(task_id, attempt)] = {"task": task_id, "attempt": attempt, "agent": agent_id}
                reserved = queued = None
            else:
                if previous_end is not None:
                    rec["reserved"] = previous_end
                    queued = rec.get("queued") or previous_end
                    reserved_wait = round(max(0.0, previous_end - queued), 6)
                    if not as_text:
                        pending.append({"ts": previous_end, "event": reserved_ev, "task": task_id, "agent": agent_id,
                                        "attempt": attempt, "wait_s": reserved_wait})  # fmt: skip
                reserved, queued = rec.get("reserved"), rec.get("queued")
            if not as_text:
                pending.append({"ts": start, "event": started_ev, "task": task_id, "agent": agent_id, "attempt": attempt, "pid": None})
            rec["start"] = start
            rec["end"] = end
            log_path = rec.get("log") if logged else None
            rec["log"] = log_path
            if fields is not None and fields[i]:
                rows.append(Attempt(task_id, attempt, agent_id, start, end, exit_code, succeeded, log_path, error, value, **fields[i]))
            else:
                rows.append((task_id, attempt, agent_id, start, end, exit_code, succeeded, log_path, error, value))
            done.append(task_id)
            duration = (end - start) if start else 0.0
            wait = round((reserved or wall) - (queued or reserved or wall), 6)
            duration6 = round(duration, 6)
            extra = extras[i] if extras is not None else None
            if as_text:
                ids = f',"task":{_esc(task_id) if type(task_id) is str else json_value(task_id)},"agent":{agent_json},"attempt":{json_value(attempt)}'
                # finite floats (their sum is finite) are spelt by repr, as the encoder spells them
                total = start + end + wait + duration6 + (0.0 if reserved_wait is None else previous_end + reserved_wait)
                if (type(start) is float is type(end) is type(wait) is type(duration6)
                        and (reserved_wait is None or type(previous_end) is float is type(reserved_wait)) and total - total == 0.0):
                    text = "" if reserved_wait is None else f'{{"ts":{previous_end!r},"event":"{reserved_ev}"{ids},"wait_s":{reserved_wait!r}}}\n'
                    text += f'{{"ts":{start!r},"event":"{started_ev}"{ids},"pid":null}}\n'
                    finished = (f'{{"ts":{end!r},"event":"{finished_ev}"{ids},"status":"{succeeded}","exit_code":{json_value(exit_code)},'
                                f'"wait_s":{wait!r},"duration_s":{duration6!r},')  # fmt: skip
                else:
                    text = "" if reserved_wait is None else (f'{{"ts":{json_value(previous_end)},"event":"{reserved_ev}"{ids},'
                                                             f'"wait_s":{json_value(reserved_wait)}}}\n')  # fmt: skip
                    text += f'{{"ts":{json_value(start)},"event":"{started_ev}"{ids},"pid":null}}\n'
                    finished = (f'{{"ts":{json_value(end)},"event":"{finished_ev}"{ids},"status":"{succeeded}",'
                                f'"exit_code":{json_value(exit_code)},"wait_s":{json_value(wait)},"duration_s":{json_value(duration6)},')  # fmt: skip
                if not extra:
                    pending.append(f'{text}{finished}"log":{"null" if log_path is None else json_value(log_path)},'
                                   f'"error":{"null" if error is None else json_value(error)}}}\n')  # fmt: skip
                else:
                    pending.append(text)
            if not as_text or extra:
                event = {"ts": end, "event": finished_ev, "task": task_id, "agent": agent_id, "attempt": attempt,
                         "status": succeeded, "exit_code": exit_code, "wait_s": wait,
                         "duration_s": duration6, "log": log_path, "error": error}  # fmt: skip
                if extra:
                    event.update(extra)
                pending.append(event)
            last[task_id] = (agent_id, attempt, duration, exit_code, log_path, error, value)
            previous_end = end
        try:
            ctx.ledger.record_many(run_id, rows)
            self.unrecorded += len(rows)
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike: the run must stop cleanly
            self._ledger_failed(exc)
        ctx.sched.finish_succeeded(done, agent_id, now)
        for on_outcomes in hooks.on_outcomes:
            on_outcomes(results)
        ctx.note_changes(wall)

    def _record_chunk_one_by_one(self, agent_id: str, results) -> None:
        """record_chunk for a chunk with a failure in it: each result through record()."""
        ctx = self.ctx
        records, emit = ctx.records, ctx.emit
        previous_end = None
        for res in results:
            task_id, attempt = res.task_id, res.attempt
            rec = records.get((task_id, attempt))
            if rec is not None:
                if previous_end is not None:
                    rec["reserved"] = previous_end
                    queued = rec.get("queued") or previous_end
                    emit(ev.TASK_RESERVED, ts=previous_end, task=task_id, agent=agent_id, attempt=attempt,
                         wait_s=round(max(0.0, previous_end - queued), 6))  # fmt: skip
                rec["start"] = res.start
            emit(ev.TASK_STARTED, ts=res.start, task=task_id, agent=agent_id, attempt=attempt, pid=None)
            self.record(agent_id, task_id, attempt, Outcome(res.outcome), res)
            previous_end = res.end

    def record_lost(self, agent_id: str, task_id: str, outcome: Outcome, error: str) -> None:
        """The attempt an agent held when it died (or was killed for a timeout, or stopped)."""
        ctx = self.ctx
        attempt = ctx.sched.current_attempt(task_id)
        rec = ctx.records.get((task_id, attempt), {})
        if rec and rec.get("reserved") is None:  # a chunk's later task: held from now, in the record
            rec["reserved"] = time.time()
            ctx.emit(ev.TASK_RESERVED, task=task_id, agent=agent_id, attempt=attempt, wait_s=0.0)
        logged = bool(rec.get("log")) and os.path.exists(rec["log"])  # a quick, silent attempt may have left none
        result = TaskResult(task_id, attempt, outcome.value, None, rec.get("start") or time.time(), time.time(), error=error, log=logged)
        self.record(agent_id, task_id, attempt, outcome, result)

    # -- commit, then report --------------------------------------------------------------------------

    def commit(self) -> None:
        self.ctx.released = False
        if self.unrecorded:
            crash_point("commit")  # tests: outcomes recorded, not yet committed (nothing may have started on them)
        try:
            self.ctx.ledger.commit()
            self.recorded = self.ctx.ledger.committed
            if self.unrecorded:
                crash_point("committed")  # tests: outcomes committed, not yet reported (events, --write-back)
            self.unrecorded = 0
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike: the run must stop cleanly
            self._ledger_failed(exc)

    def flush(self) -> None:
        """Commit the ledger, then report: an outcome is durable before anyone hears of it.

        After a ledger failure nothing more is committed until the run's end (close_ledger tries once
        more), so the count the message gave stays the ledger's truth meanwhile.
        """
        ctx = self.ctx
        if not ctx.pending:
            return
        if self.ledger_error is None:
            self.commit()
        for on_commit in self.hooks.on_commit:
            on_commit()
        batch, ctx.pending = ctx.pending, []
        self.events.write(batch)
        self.events.flush()
        if self.events.error is not None and self.events_error is None:
            self._events_failed()
        if ctx.reporter.reads_events:
            ctx.reporter.events(batch)

    def _ledger_failed(self, exc: BaseException) -> None:
        """The ledger cannot be written: stop like _record_failed; what it holds is counted there, not here."""
        if self.ledger_error is not None:
            return
        ledger = self.ctx.ledger
        self.ledger_error = _describe(exc)
        try:  # what was recorded before the failure, if the database still takes a commit
            ledger.commit()
        except Exception:  # noqa: BLE001 - it is failing; the count below says what it holds
            pass
        held = ledger.count_attempts(self.ctx.run_id)
        self.recorded = held if held is not None else ledger.committed
        self.unrecorded = ledger.pending
        self._record_failed(
            f"cannot write the ledger {ledger.path} ({self.ledger_error}); "
            f"{'' if held is not None else 'at least '}{self.recorded} outcome(s) were recorded"
            + (f", {self.unrecorded} not yet" if self.unrecorded else "")
        )

    def _events_failed(self) -> None:
        """An events file (events.jsonl, --events) cannot be written: the same stop as the ledger's."""
        if self.events_error is None:
            self.events_error = self.events.error
            self._record_failed(f"cannot write the events file {self.events_error}")

    def _record_failed(self, what: str) -> None:
        """A record of the run cannot be written: hand out nothing more; running tasks finish, then the run ends."""
        ctx = self.ctx
        ctx.reporter.message(f"error: {what}; handing out no more tasks, running ones finish")
        ctx.sched.draining = True
        ctx.sched.abandon_waiting("not started: the run's record cannot be written")
        ctx.note_changes()

    # -- the run's end --------------------------------------------------------------------------------

    def _close_ledger(self, status: str, counts: dict, summary: dict) -> None:
        """Write what is pending and close the run in the ledger; after a ledger failure, one more try."""
        ctx = self.ctx
        row = {k: summary[k] for k in ("total", *counts, "makespan_s")}
        if ctx.ws_info:  # worktree tasks: where each one's work went, for --history
            keys = ("branch", "files", "added", "deleted", "landed", "why")
            row["work"] = {tid: {k: info.get(k) for k in keys if info.get(k) is not None} for tid, info in ctx.ws_info.items()}
        failed_before = self.ledger_error is not None
        try:
            ctx.ledger.finish_run(ctx.run_id, status, row)
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and OSError alike
            self.ledger_error = self.ledger_error or _describe(exc)
            held = ctx.ledger.count_attempts(ctx.run_id)
            ctx.reporter.message(
                f"error: run {ctx.run_id} could not be closed in the ledger ({_describe(exc)}): "
                f"{'?' if held is None else held} outcome(s) of it are recorded there, {ctx.ledger.pending} lost; "
                "--history shows it as running/crashed; --resume runs what is not recorded as succeeded"
            )
            return
        if failed_before:
            held = ctx.ledger.count_attempts(ctx.run_id)
            ctx.reporter.message(f"the ledger took the run's end after all: {held} outcome(s) of run {ctx.run_id} are "
                                 f"recorded, and the run is closed as {status}")  # fmt: skip

    def _rows(self) -> tuple[list[dict], dict]:
        ctx = self.ctx
        rows = []
        counts = {"succeeded": 0, "failed": 0, "skipped": 0, "interrupted": 0}
        states, reasons, last_of, ws_info = ctx.sched.state, ctx.sched.reason, self.last, ctx.ws_info
        succeeded, failed, no_last = TaskState.SUCCEEDED, TaskState.FAILED, (None, 0, None, None, None, None, None)
        for task in ctx.members():
            task_id = task.id
            state = states[task_id]
            agent, attempts, duration, exit_code, log_path, error, value = last_of.get(task_id, no_last)
            if state is succeeded:
                status, reason = "succeeded", None
                counts["succeeded"] += 1
            else:
                status = state.value
                if state is failed:
                    status = reasons.get(task_id, "failed")
                    status = status if status in _ROW_STATUSES else "failed"
                counts[_COUNT_KEY.get(state, "interrupted")] += 1
                reason = _reason(reasons.get(task_id), error)
            row = {"task": task_id, "title": task.title, "status": status, "agent": agent, "attempts": attempts,
                   "duration_s": None if duration is None else round(duration, 3), "exit_code": exit_code, "log": log_path,
                   "reason": reason, "value": value}  # fmt: skip
            if task_id in ws_info:
                row["workspace"] = dict(ws_info[task_id])
            rows.append(row)
        for task_rows in self.hooks.task_rows:
            task_rows(rows)
        return rows, counts

    def finish(self, stuck: bool) -> RunResult:
        """The run's summary, its exit code (runner.manager.exits), the ledger closed; the reporter told."""
        ctx = self.ctx
        crash_point("finish")  # tests: every outcome committed, the run not closed in the ledger
        rows, counts = self._rows()
        deps = {t.id: list(t.dependencies) for t in ctx.roadmap.tasks if t.dependencies}  # summarize: none when missing
        priorities = {t.id: t.priority.value for t in ctx.roadmap.tasks if t.priority is not Priority.MEDIUM}  # and medium
        telemetry = summarize(list(ctx.records.values()), sum(ctx.roles.values()), deps, priorities)
        ending = Ending(signal=ctx.interrupted_by, record_failed=bool(self.ledger_error or self.events_error),
                        failed=bool(counts["failed"] or ctx.sched.failures or stuck),
                        stopped="--max-failures" if ctx.sched.max_failures_reached else "")  # fmt: skip
        for component_ending in self.hooks.ending:
            ending = ending.merge(component_ending())  # a usage limit, an auth failure or the budget stopped it
        status = status_of(ending)
        summary = {"run_id": ctx.run_id, "status": status, "total": len(rows), **counts,
                   "makespan_s": telemetry["makespan_s"], "agents": dict(ctx.roles), "folder": ctx.folder,
                   "telemetry": telemetry}  # fmt: skip
        for summary_of in self.hooks.summary:
            summary_of(summary)
        ctx.emit(ev.RUN_FINISHED, run=ctx.run_id, status=status, exit_code=decide(ending))
        self.flush()
        self.events.close()
        if self.events_error:  # the last events could not be written
            ending = replace(ending, record_failed=True)
            summary["status"] = status = status_of(ending)
        self._close_ledger(status, counts, summary)
        ctx.ledger.close()
        if self.ledger_error:  # the run's end could not be written
            ending = replace(ending, record_failed=True)
            summary["status"] = status_of(ending)
            summary["ledger_error"] = self.ledger_error
        if self.events_error:
            summary["events_error"] = self.events_error
        result = RunResult(decide(ending), ctx.run_id, ctx.folder, summary, rows, ending)
        ctx.reporter.finished(result)
        return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def killpg(pgid: int) -> None:
    """SIGKILL a task's whole process group (its pid is its group's id); gone already is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _fields_of(hooks: list, rows: list) -> list[dict] | None:
    """Each row's fields from every batch hook of one kind (attempt_fields_of, event_fields_of); None when no
    hook gave one."""
    fields: list[dict] | None = None  # made at the first field a hook gives: a callable's chunk has none
    for hook in hooks:
        more = hook(rows)
        if more is None:
            continue
        if fields is None:
            fields = [{} for _ in rows]
        for mine, theirs in zip(fields, more):
            if theirs:
                mine.update(theirs)
    return fields
