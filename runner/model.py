"""The roadmap's data model: tasks, their settings, and the states a task and an attempt go through."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Priority(str, Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 is most urgent."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class Complexity(str, Enum):
    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


# Roadmap statuses: which run, which are skipped. Anything else is unknown (warned, skipped).
RUN_STATUSES = frozenset({"pending", "planned", "in_progress", "needs_improvement", "todo", "open", "ready", ""})
SKIP_STATUSES = frozenset({"done", "blocked", "on_hold", "cancelled", "skipped"})


class Outcome(str, Enum):
    """How one attempt ended. Exactly one per attempt, written to the ledger before it is reported."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    AGENT_DIED = "agent_died"
    INTERRUPTED = "interrupted"
    RATE_LIMITED = "rate_limited"
    # coding-agent attempts (runner.coding): a failure, each with its own reason
    NO_CHANGES = "no_changes"  # exited 0 but changed nothing (and the task does not allow_empty)
    CHECK_FAILED = "check_failed"  # a check run after the attempt failed
    CONFLICT = "conflict"  # landing on `into` conflicted; the branch is kept
    SETUP_FAILED = "setup_failed"  # the worktree (or the agent CLI) could not be set up
    # review (runner.manager.review): the worker's attempt passed its checks and waits for a critic,
    # or a critic's attempt rejected the work (the task goes back for rework, or ends needs_improvement)
    NEEDS_REVIEW = "needs_review"
    REJECTED = "rejected"
    USAGE_LIMITED = "usage_limited"  # an agent CLI's account is out of usage until a reset time
    AUTH_FAILED = "auth_failed"  # an agent CLI is not logged in / its key is refused


class TaskState(str, Enum):
    """Where a task stands in one run."""

    WAITING = "waiting"  # dependencies not yet succeeded
    QUEUED = "queued"  # ready, no agent reserved yet
    RESERVED = "reserved"  # an agent is reserved and has been sent the task
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run: status said so, or a dependency failed / is unknown
    INTERRUPTED = "interrupted"


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.INTERRUPTED})

# The one table of allowed transitions; the scheduler checks every change against it.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.WAITING: frozenset({TaskState.QUEUED, TaskState.SKIPPED, TaskState.INTERRUPTED}),
    TaskState.QUEUED: frozenset({TaskState.RESERVED, TaskState.SKIPPED, TaskState.INTERRUPTED}),
    TaskState.RESERVED: frozenset(
        {TaskState.RUNNING, TaskState.QUEUED, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.INTERRUPTED}
    ),
    TaskState.RUNNING: frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.QUEUED, TaskState.INTERRUPTED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
    TaskState.INTERRUPTED: frozenset(),
}


@dataclass(slots=True)
class Task:
    """One task of a roadmap, with defaults already applied."""

    id: str
    title: str = ""
    command: str | list[str] | None = None  # a string runs under /bin/sh -c; a list is argv, no shell
    call: str | None = None  # "package.module:function", run inside the agent
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    status: str = ""  # the roadmap's status, lower-cased
    dependencies: list[str] = field(default_factory=list)
    priority: Priority = Priority.MEDIUM
    complexity: Complexity | None = None
    complexity_score: int | None = None
    complexity_inferred: bool = False  # neither was written: runner.roadmap.complexity chose `complexity`
    timeout: float | None = None  # seconds; None means no timeout
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    role: str | None = None
    affinity: str | None = None  # `affinity`, or WeatherVane's `set_id`
    description: str = ""
    exit_criteria: list[str] = field(default_factory=list)
    epic: str | None = None  # id of the enclosing epic, if any
    milestone: str | None = None  # id of the enclosing milestone, if any
    meta: dict = field(default_factory=dict)  # every other field, kept as written
    file: str = ""  # roadmap file the task came from
    line: int | None = None  # 1-based line of the task's mapping in that file
    order: int = 0  # position in the roadmap(s), for "roadmap order"

    @property
    def runnable_status(self) -> bool:
        return self.status in RUN_STATUSES

    def place(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


_new = object.__new__
_MEDIUM = Priority.MEDIUM


def new_task(id: str, file: str, line: int | None, order: int, epic: str | None, milestone: str | None) -> Task:
    """Task(id=id, file=file, line=line, order=order, epic=epic, milestone=milestone), in half the time.

    The dataclass's __init__ matches each keyword against its 26 parameters; the roadmap builder makes one
    Task per task (0.1 s per 100,000). Every other field gets its default, as Task() gives it (tests/test_model.py).
    """
    t = _new(Task)
    t.id = id
    t.title = ""
    t.command = None
    t.call = None
    t.args = []
    t.kwargs = {}
    t.status = ""
    t.dependencies = []
    t.priority = _MEDIUM
    t.complexity = None
    t.complexity_score = None
    t.complexity_inferred = False
    t.timeout = None
    t.retries = 0
    t.env = {}
    t.cwd = None
    t.role = None
    t.affinity = None
    t.description = ""
    t.exit_criteria = []
    t.epic = epic
    t.milestone = milestone
    t.meta = {}
    t.file = file
    t.line = line
    t.order = order
    return t


@dataclass
class Roadmap:
    """One or more roadmap files, loaded and validated."""

    files: list[str]
    tasks: list[Task]
    defaults: dict = field(default_factory=dict)
    executor: object | None = None  # the top-level `executor:` as written (template or mapping)
    agents: dict[str, int] | None = None  # an `agents:` block: role -> count
    content_hash: str = ""  # sha256 over the files' bytes, in order
    warnings: list = field(default_factory=list)  # list[errors.Problem]
    settings: dict = field(default_factory=dict)  # top-level blocks of the coding layer as written (`workspace:`)

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}
