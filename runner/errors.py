"""One exception hierarchy, each error with its exit code; how a run that started ends is decided in runner.manager.exits."""

from __future__ import annotations

from runner.model import record


# Exit codes, documented in --help and the README; which one a run ends with is decided in one place,
# runner.manager.exits.decide.
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2  # invalid roadmap or usage; nothing ran
EXIT_NO_RUN = 3  # --status: no run in progress
EXIT_RECORD_FAILED = 74  # the ledger or an events file could not be written mid-run (EX_IOERR)
EXIT_LOCKED = 75  # another run holds the lock (EX_TEMPFAIL, cron retries later)
EXIT_LIMITED = EXIT_LOCKED  # an agent CLI's usage limit resets later than --max-wait (EX_TEMPFAIL too)
EXIT_INTERRUPTED = 130  # SIGINT
EXIT_TERMINATED = 143  # SIGTERM


@record(frozen=True)
class Problem:
    """One error or warning about a roadmap, with its place."""

    message: str
    file: str | None = None
    line: int | None = None
    task: str | None = None

    def __str__(self) -> str:
        place = ""
        if self.file:
            place = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.task:
            place = f"{place}: task {self.task}" if place else f"task {self.task}"
        return f"{place}: {self.message}" if place else self.message

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "task": self.task, "message": self.message}


class BatchError(Exception):
    """Base of every error wvo-batch reports to the user."""

    exit_code = EXIT_TASK_FAILED


class UsageError(BatchError):
    """Bad command-line use; nothing ran."""

    exit_code = EXIT_USAGE


class RoadmapError(BatchError):
    """The roadmap is invalid; carries every problem found, not just the first."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StateError(BatchError):
    """The state dir or ledger cannot be used (unwritable, disk full)."""

    exit_code = EXIT_USAGE


class LockHeld(BatchError):
    """Another run of the same roadmap and state dir is in progress."""

    exit_code = EXIT_LOCKED


class InvariantError(BatchError):
    """A rule the run holds itself to was about to be broken (a double reservation, a forbidden move): a bug.

    Raised by the scheduler and the agent table before any harm is done; the run stops with exit 1.
    Agent deaths and task timeouts are not errors: they are outcomes of an attempt (model.Outcome).
    """
