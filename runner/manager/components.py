"""The hooks a feature plugs into the run loop with, each a no-op until a component overrides it.

As dramatiq's Middleware plugs into its worker: a feature of a run (chunks of quick tasks, the
landing queue, review, accounts, the live roadmap, hung agents, scaling, the board, resource leases)
is a Component that owns its state, is built from its own options, and is called by the loop at
these points only. The loop calls every component, in the order the run lists them.
"""

from __future__ import annotations

from collections.abc import Iterable

from runner.agents.messages import plain_result
from runner.manager.exits import Ending
from runner.model import Outcome


class Component:
    """A feature of the run; override the hooks it needs."""

    def start(self) -> None:
        """The run folder, the ledger and the scheduler exist (a component is built with the run's context)."""

    # -- hand-out ---------------------------------------------------------------------------------

    def can_start(self, task) -> bool:
        """False: the task may not start now; it keeps its place and tasks behind it go first.

        Asked last, just before the task is reserved: True means it is reserved now, so a component
        that leases a resource takes it here, and gives it back in on_outcome or on_returned.
        """
        return True

    def chunk(self, agent, task, now: float) -> list:
        """More tasks for the same reservation (a chunk of quick tasks); [] for none."""
        return []

    def message(self, task, role: str, attempt: int, agent_id: str):
        """A TaskMessage of this component's own for the attempt (a critic's review), or None."""
        return None

    def message_env(self, task, attempt: int) -> dict:
        """Environment the attempt gets from this component (a leased port, a database name)."""
        return {}

    # -- what comes back --------------------------------------------------------------------------

    def on_started(self, agent_id: str, task_id: str) -> None:
        """The task's process is up on the agent."""

    def on_result(self, agent_id: str, result) -> bool:
        """A message from an agent (TaskResult, a chunk's BatchResult / ChunkReturn); True: consumed here."""
        return False

    def attempt_fields(self, task_id: str, attempt: int) -> dict:
        """Ledger fields of an attempt about to be recorded (session, tokens, cost)."""
        return {}

    def event_fields(self, task_id: str, attempt: int) -> dict:
        """Fields of the attempt's task:finished event (its model)."""
        return {}

    def on_outcome(self, task_id: str, attempt: int, outcome, result) -> None:
        """An attempt's outcome is recorded (in the ledger's pending transaction)."""

    # A chunk's calls that all succeeded are recorded together: each hook above is asked once for all of
    # them, with their rows (task_id, attempt, start, end, exit_code, log, error, value; runner.agents.
    # messages.BatchResult). By default, the hook of each row; a component that knows it has nothing to
    # add for such tasks says so at once.

    def attempt_fields_of(self, rows) -> list[dict] | None:
        """attempt_fields of each row, in order; None: none for any."""
        return _each(self.attempt_fields, rows)

    def event_fields_of(self, rows) -> list[dict] | None:
        """event_fields of each row, in order; None: none for any."""
        return _each(self.event_fields, rows)

    def on_outcomes(self, rows) -> None:
        """on_outcome of each row, in order (each a success)."""
        for row in rows:
            self.on_outcome(row[0], row[1], Outcome.SUCCEEDED, plain_result(row))

    def on_returned(self, task_id: str) -> None:
        """A reservation ended with no attempt (a chunk's unstarted tasks given back to the queue)."""

    def on_agent_gone(self, agent_id: str, gone) -> list[str] | None:
        """An agent died or left (gone: runner.agents.backend.AgentGone); the tasks it held that are lost
        with it, when this component knows better than the reservation (a chunk), else None."""
        return None

    # -- time -------------------------------------------------------------------------------------

    def timers(self, now: float) -> Iterable[float]:
        """Monotonic times the loop must wake at for this component."""
        return ()

    def tick(self, now: float) -> None:
        """Every turn of the loop, after the messages are handled."""

    def busy(self) -> bool:
        """Work in flight outside the agents that will wake the loop (the landing thread)."""
        return False

    def at_end(self, now: float) -> bool:
        """Nothing is left to run or running; True: this component gave the run more (a roadmap edit)."""
        return False

    def on_commit(self) -> None:
        """The ledger committed: write what follows from it (the roadmap's statuses)."""

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """The loop is over and the agents are stopped."""

    def ending(self) -> Ending:
        """What this component stopped the run for (a usage limit, the budget)."""
        return Ending()

    def task_row(self, task_id: str, row: dict) -> None:
        """Add to a task's row of the summary."""

    def task_rows(self, rows: list[dict]) -> None:
        """task_row for each row of the summary (row["task"] is its task), in order; a component that has
        nothing to add for any says so at once."""
        for row in rows:
            self.task_row(row["task"], row)

    def summary(self, summary: dict) -> None:
        """Add to the run's summary."""


def _each(hook, rows) -> list[dict] | None:
    out = [hook(row[0], row[1]) for row in rows]
    return out if any(out) else None


class Hooks:
    """Each hook, bound to the components that override it, in the run's order (the loop skips no-ops)."""

    def __init__(self, components: list[Component]):
        def bound(name: str, also: str | None = None) -> list:
            """also: the hook this batch hook calls by default; a component overriding either is bound."""
            return [getattr(c, name) for c in components if getattr(type(c), name) is not getattr(Component, name)
                    or (also is not None and getattr(type(c), also) is not getattr(Component, also))]  # fmt: skip

        self.start = bound("start")
        self.can_start = bound("can_start")
        self.chunk = bound("chunk")
        self.message = bound("message")
        self.message_env = bound("message_env")
        self.on_started = bound("on_started")
        self.on_result = bound("on_result")
        self.attempt_fields = bound("attempt_fields")
        self.event_fields = bound("event_fields")
        self.on_outcome = bound("on_outcome")
        self.attempt_fields_of = bound("attempt_fields_of", "attempt_fields")
        self.event_fields_of = bound("event_fields_of", "event_fields")
        self.on_outcomes = bound("on_outcomes", "on_outcome")
        self.on_returned = bound("on_returned")
        self.on_agent_gone = bound("on_agent_gone")
        self.timers = bound("timers")
        self.tick = bound("tick")
        self.busy = bound("busy")
        self.at_end = bound("at_end")
        self.on_commit = bound("on_commit")
        self.finish = bound("finish")
        self.ending = bound("ending")
        self.task_rows = bound("task_rows", "task_row")
        self.summary = bound("summary")
