"""Small frozen messages that cross between the manager and its agents."""

from __future__ import annotations

from dataclasses import field

from runner.model import record


@record(frozen=True)
class TaskMessage:
    """Manager -> agent: run this attempt of a task."""

    task_id: str
    attempt: int
    log_path: str
    command: str | tuple[str, ...] | None = None  # str: /bin/sh -c; tuple: argv
    call: str | None = None  # "module:function", run inside the agent
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)  # added to the agent's environment
    cwd: str | None = None
    timeout: float | None = None
    grace: float = 2.0  # seconds between TERM and KILL on timeout
    rate_limit_pattern: str | None = None  # regex searched in the output of a failed attempt
    workspace: dict | None = None  # a worktree attempt: runner.agents.pipeline.WORKSPACE_KEYS
    checks: tuple[str, ...] = ()  # shell commands run after the task exits 0 (in its worktree when it has one)
    output: str | None = None  # an agent-CLI attempt: codex-json | claude-json | text (runner.agents.cli_attempt)
    stall_timeout: float | None = None  # an agent-CLI attempt: kill it after this long without an event


def task_message(fields: dict) -> TaskMessage:
    """A TaskMessage from a dict holding every one of its fields, without the dataclass's __init__.

    For a chunk's messages, built from one template: ~0.5 µs against ~2.7 µs through __init__.
    """
    msg = object.__new__(TaskMessage)
    msg.__dict__.update(fields)
    return msg


@record(frozen=True)
class Cancel:
    """Manager -> agent: stop the running task (TERM its tree, KILL after grace)."""

    grace: float


@record(frozen=True)
class Started:
    """Agent -> manager: the task's process is up; pid is also its process group id."""

    task_id: str
    attempt: int
    pid: int | None
    start: float  # wall-clock seconds


@record(frozen=True)
class TaskResult:
    """Agent -> manager: how the attempt ended."""

    task_id: str
    attempt: int
    outcome: str  # model.Outcome value
    exit_code: int | None
    start: float
    end: float
    value: object = None  # a callable's JSON-serialisable return value
    error: str | None = None  # what went wrong, in a line (the traceback goes to the log)
    retry_after: float | None = None  # rate limited: seconds the output asked us to wait
    log: bool = True  # False: the attempt wrote nothing, and no log file was kept
    pid: int | None = None  # the command's pid (its Started is not sent for a task that ends at once)
    workspace: dict | None = None  # a worktree attempt: branch, base, commit, files, added, deleted, state
    checks: tuple = ()  # (command, exit code) of each check that ran, in order
    check_tail: str | None = None  # the last lines of the failing check's output
    cli: dict | None = None  # an agent-CLI attempt: runner.agents.cli_attempt.cli_fields (session, usage, ...)
    answer: str | None = None  # a review attempt: the critic's final answer, read from its own output (bounded)


def task_result(fields: dict) -> TaskResult:
    """A TaskResult from a dict holding every one of its fields in their order, without __init__.

    For a chunk's calls in the agent: ~0.4 µs against ~1.5 µs. The order matters: the outbox pickles a
    result's __dict__ values and reads them back as TaskResult's positional arguments.
    """
    res = object.__new__(TaskResult)
    res.__dict__.update(fields)
    return res


@record(frozen=True)
class TaskBatch:
    """Manager -> agent: quick callables to run one after another, under one reservation."""

    messages: tuple[TaskMessage, ...]


@record(frozen=True)
class BatchResult:
    """Agent -> manager: a TaskBatch's outcomes in order; those a Cancel stopped come back interrupted."""

    results: tuple[TaskResult, ...]


@record(frozen=True)
class ChunkReturn:
    """Agent -> manager: the chunk's tasks it has not started and gives back (one of its tasks is slow)."""

    task_ids: tuple[str, ...]
