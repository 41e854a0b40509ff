"""How a run ended, and the one exit code the shell sees for it (the README's table).

A single run and the autopilot loop (--iterations / --once) both describe their end as an `Ending`
and ask `decide()`; nothing else computes an exit code. When several things went wrong, the code
names the one that matters most to whoever reads it (cron, a Makefile):

    a signal stopped it      130 (SIGINT) / 143 (SIGTERM)   the user asked; nothing else is news
    the record failed        74  (EX_IOERR)                 the ledger or an events file cannot be trusted
    the roadmap went bad     2                              an edit between batches made it invalid
    a usage limit            75  (EX_TEMPFAIL)              resets beyond --max-wait: come back later, --resume
    a task failed            1                              or --max-failures, the budget, an auth failure
    otherwise                0
"""

from __future__ import annotations

import signal

from runner.errors import (
    EXIT_INTERRUPTED,
    EXIT_LIMITED,
    EXIT_OK,
    EXIT_RECORD_FAILED,
    EXIT_TASK_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from runner.model import record


@record(frozen=True)
class Ending:
    """What stopped a run (or a loop of runs); every field False/None: it ran to the end, all good."""

    signal: int | None = None  # the first SIGINT / SIGTERM received
    record_failed: bool = False  # the ledger or an events file could not be written
    invalid_roadmap: bool = False  # the autopilot loop re-read a roadmap that no longer validates
    usage_limited: bool = False  # an account's usage limit resets later than --max-wait
    failed: bool = False  # a task failed, or the run was stopped (budget, auth, --max-failures, a bug)
    stopped: str = ""  # why the hand-out stopped for good (the budget, an auth or set-up failure): the loop ends too

    def merge(self, other: Ending) -> Ending:
        """Both endings at once (the loop's end over its batches): the first signal, any of the rest."""
        return Ending(
            signal=self.signal if self.signal is not None else other.signal,
            record_failed=self.record_failed or other.record_failed,
            invalid_roadmap=self.invalid_roadmap or other.invalid_roadmap,
            usage_limited=self.usage_limited or other.usage_limited,
            failed=self.failed or other.failed,
            stopped=self.stopped or other.stopped,
        )


def decide(ending: Ending) -> int:
    """The exit code of a run or a loop that ended so (the table in the module docstring)."""
    if ending.signal == signal.SIGINT:
        return EXIT_INTERRUPTED
    if ending.signal is not None:
        return EXIT_TERMINATED
    if ending.record_failed:
        return EXIT_RECORD_FAILED
    if ending.invalid_roadmap:
        return EXIT_USAGE
    if ending.usage_limited:
        return EXIT_LIMITED
    if ending.failed:
        return EXIT_TASK_FAILED
    return EXIT_OK


def status(ending: Ending) -> str:
    """The run's status in the ledger and the summary: interrupted (it may go on), failed or succeeded."""
    if ending.signal is not None or (ending.usage_limited and not ending.record_failed):
        return "interrupted"
    if ending.record_failed or ending.invalid_roadmap or ending.failed:
        return "failed"
    return "succeeded"
