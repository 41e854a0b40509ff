"""Resource leases in a run: the scheduler's LeaseGate built from `resources:`, the attempt's variables, the ledger.

A component of the run (runner.manager.components). The pure part is runner.manager.leases: the
scheduler leases inside assign() and releases in finish() (after the merged result's checks, for a task
that lands) or unassign(). This component

    run start ──▶ LeaseGate(Leases(pools, port_in_use), task -> uses) ──▶ Scheduler(leases=...)
    --resume  ──▶ the resumed run's unreleased lease rows recorded released (its holders died with it)
    can_start ──▶ the slots just leased: a ledger row each          message_env ──▶ WVO_PORT, WVO_DB, ...
    on_outcome / on_returned ──▶ the rows of slots the scheduler freed marked released (same commit)
    tick ──▶ who holds what, for the board (--status); summary / task_row ──▶ --json

A task that joins mid-run (the live roadmap) leases by its `uses:`: the gate reads them from the run's tasks
(UsesOf). Its pools must be among the run's: the roadmap is checked when it is read.
"""

from __future__ import annotations

import contextlib

from runner.manager.components import Component

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up
if TYPE_CHECKING:
    from runner.manager.leases import LeaseGate


def port_in_use(resource: str, value: str) -> bool:
    """Whether something on this machine holds the port: bind 127.0.0.1 with SO_REUSEADDR, OSError = in use."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(value)))
        return False
    except OSError:
        return True
    finally:
        s.close()


class UsesOf:
    """Task id -> the pools it uses, read from the run's tasks as they are now: a task the live roadmap adds
    or redefines mid-run leases by its `uses:` with no call from it (LeaseGate.uses)."""

    def __init__(self, tasks: dict):
        self._tasks = tasks  # the run's task id -> Task (RunContext.tasks, which the live roadmap edits)

    def __contains__(self, task_id) -> bool:
        task = self._tasks.get(task_id)
        return task is not None and bool(task.meta.get("uses"))

    def __getitem__(self, task_id) -> tuple[str, ...]:
        return tuple(self._tasks[task_id].meta["uses"])


def lease_gate(roadmap, tasks: dict, probe=port_in_use) -> LeaseGate | None:
    """The scheduler's gate for the roadmap's `resources:` and tasks' `uses:`; None when it declares no pool."""
    pools = (roadmap.settings or {}).get("resources")
    if not pools:
        return None
    from runner.manager.leases import LeaseGate, Leases  # a run without `resources:` never needs them

    return LeaseGate(Leases(pools, probe), UsesOf(tasks))


class Leasing(Component):
    """The run's side of the leases: environment, template fields, ledger rows, board and summary."""

    def __init__(self, ctx, probe=None):
        """probe(resource, value): whether a port is in use outside the run (default: port_in_use)."""
        self.ctx = ctx
        self.gate: LeaseGate | None = lease_gate(ctx.roadmap, ctx.tasks, probe or port_in_use)  # the scheduler's
        #   (it changes the leases; this component only reads them); None when the roadmap declares no pool
        self._recorded: dict[str, dict[str, str]] = {}  # task id -> slots written to the ledger and not yet released
        self._last: dict[str, dict[str, str]] = {}  # task id -> the slots its last attempt held, for --json

    @property
    def active(self) -> bool:
        return self.gate is not None

    def values(self, task_id: str) -> dict[str, str]:
        """The slots the task holds now ({port: '8100'}): its `{port}` template fields."""
        return self.gate.leases.values(task_id) if self.gate is not None else {}

    def env(self, task_id: str) -> dict[str, str]:
        """WVO_PORT=8100, ...: for the task's checks on the merged result too (the landing's)."""
        return self.gate.leases.env(task_id) if self.gate is not None else {}

    @contextlib.contextmanager
    def for_resume(self, task_id: str, attempt: int):
        """A context holding the task's slots while --resume lands a dead run's committed attempt (before the
        scheduler exists, so nothing else leases then): its WVO_PORT, ..., or None when a pool has no free slot."""
        gate = self.gate
        if gate is None or task_id not in gate.uses:
            yield {}
            return
        if gate.leases.lease(task_id, attempt, gate.uses[task_id]) is None:
            yield None
            return
        try:
            yield gate.leases.env(task_id)
        finally:
            gate.leases.release(task_id)

    # -- hooks ------------------------------------------------------------------------------------------

    def start(self) -> None:
        ctx = self.ctx
        if not ctx.opt.resume:
            return
        this = ctx.ledger.runs(ctx.roadmap.files, limit=1)
        previous = this[0].resumed_from if this and this[0].id == ctx.run_id else None
        if previous is None:
            return
        dead = ctx.ledger.unreleased_leases(previous)
        if dead:
            ctx.ledger.free_dead_leases(previous)
            held = ", ".join(f"{resource} {value} ({task})" for task, _, resource, value in dead)
            ctx.reporter.message(f"resume: run {previous} died holding {len(dead)} lease(s), now released: {held}")

    def can_start(self, task) -> bool:
        """Asked last (the scheduler has leased the task's slots by now): a ledger row for each slot."""
        held = self.values(task.id)
        if held:
            ctx = self.ctx
            attempt = ctx.sched.next_attempt(task.id)
            for resource, value in held.items():
                ctx.ledger.take_lease(ctx.run_id, task.id, attempt, resource, value)
            self._recorded[task.id] = held
            self._last[task.id] = held
        return True

    def message_env(self, task, attempt: int) -> dict:
        return self.env(task.id)

    def on_outcome(self, task_id: str, attempt: int, outcome, result) -> None:
        self._released(task_id, "outcome")

    def on_returned(self, task_id: str) -> None:
        """The reservation ended with no attempt: the scheduler frees its slots (now, or right after a later
        component's no), so its rows are released whatever it holds at this moment."""
        self._released(task_id, "returned", force=True)

    def _released(self, task_id: str, why: str, force: bool = False) -> None:
        if task_id in self._recorded and (force or not self.values(task_id)):
            del self._recorded[task_id]
            self.ctx.ledger.release_leases(self.ctx.run_id, task_id, why)

    def finish(self) -> None:
        """Rows of a lease whose outcome never came (the run stopped around it) close with the run."""
        for task_id in list(self._recorded):
            self._released(task_id, "run end", force=True)

    def tick(self, now: float) -> None:
        if self.gate is not None:
            self.ctx.pool.stats["leases"] = self.gate.leases.held()

    def task_row(self, task_id: str, row: dict) -> None:
        if task_id in self._last:
            row["leased"] = dict(self._last[task_id])

    def summary(self, summary: dict) -> None:
        if self.gate is not None:
            summary["leases"] = self.gate.leases.held()  # at the end: nobody holds anything
            skipped = {f"{r}={v}": n for (r, v), n in self.gate.leases.skipped.items()}
            if skipped:
                summary["leases_skipped_in_use"] = skipped
