"""What checking a roadmap finds: the problems collected while reading it, and the CheckResult."""

from __future__ import annotations

from dataclasses import field

from runner.errors import Problem
from runner.model import record, Roadmap, Task

MAX_PROBLEMS = 1000  # per list; the rest are counted in one closing line


@record
class CheckResult:
    """What load() found: the roadmap when valid, and every problem with its place."""

    roadmap: Roadmap | None
    tasks_total: int  # every task item in the files, valid or not
    errors: list[Problem]
    warnings: list[Problem]
    blocked: dict[str, str] = field(default_factory=dict)  # task id -> why it cannot run in this run
    tasks: list[Task] = field(default_factory=list)  # every task that could be read, also when invalid
    files: list[str] = field(default_factory=list)
    critical_path: list[str] = field(default_factory=list)  # longest dependency chain of tasks that would run

    @property
    def valid(self) -> bool:
        return not self.errors


class Problems:
    """Collects errors and warnings, keeping at most MAX_PROBLEMS of each."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.file_order: dict[str, int] = {}
        self._dropped = {"error": 0, "warning": 0}

    def error(self, message: str, file: str | None = None, line: int | None = None, task: str | None = None):
        self._add(self.errors, "error", Problem(message, file, line, task))

    def warn(self, message: str, file: str | None = None, line: int | None = None, task: str | None = None):
        self._add(self.warnings, "warning", Problem(message, file, line, task))

    def _add(self, bucket: list, kind: str, p: Problem) -> None:
        if len(bucket) < MAX_PROBLEMS:
            bucket.append(p)
        else:
            self._dropped[kind] += 1

    def finish(self, strict: bool) -> tuple[list[Problem], list[Problem]]:
        """(errors, warnings) in file and line order; with strict, warnings count as errors."""

        def place(p: Problem):
            return (self.file_order.get(p.file or "", -1), p.line or 0)

        more = {kind: Problem(f"... and {n} more {kind}s not shown") for kind, n in self._dropped.items() if n}
        if strict:
            return sorted(self.errors + self.warnings, key=place) + list(more.values()), []
        errors = sorted(self.errors, key=place) + ([more["error"]] if "error" in more else [])
        warnings = sorted(self.warnings, key=place) + ([more["warning"]] if "warning" in more else [])
        return errors, warnings
