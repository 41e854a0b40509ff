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
    """Manager -> agent: quick tasks to run one after another, under one reservation.

    Each of `messages` is a TaskMessage, or a row of what a chunk's quick task does not share with
    `template` (ROW_FIELDS, in that order): ~0.1 µs to build and pickle against ~2 µs for a whole
    message. batch_messages() gives them all as TaskMessages, in order.
    """

    messages: tuple
    template: TaskMessage | None = None  # the fields every row shares (its own ROW_FIELDS are not read)


# What a row of a TaskBatch gives, in order; the template gives the rest, and the environment is the
# row's, or, when the row has None there, WVO_TASK_ID and WVO_ATTEMPT alone.
ROW_FIELDS = ("task_id", "attempt", "log_path", "command", "call", "args", "kwargs", "env", "cwd", "timeout")


def batch_messages(batch: TaskBatch) -> list[TaskMessage]:
    """The batch's tasks as TaskMessages, in order."""
    out = []
    t = batch.template
    new, set_dict = object.__new__, object.__setattr__
    for item in batch.messages:
        if type(item) is not tuple:
            out.append(item)
            continue
        task_id, attempt, log_path, command, call, args, kwargs, env, cwd, timeout = item
        msg = new(TaskMessage)  # without __init__ (~2.7 µs): its fields' dict, made in place
        set_dict(msg, "__dict__", {
            "task_id": task_id, "attempt": attempt, "log_path": log_path, "command": command, "call": call, "args": args,
            "kwargs": kwargs, "env": {"WVO_TASK_ID": task_id, "WVO_ATTEMPT": str(attempt)} if env is None else env, "cwd": cwd,
            "timeout": timeout, "grace": t.grace, "rate_limit_pattern": t.rate_limit_pattern, "workspace": t.workspace,
            "checks": t.checks, "output": t.output, "stall_timeout": t.stall_timeout})  # fmt: skip
        out.append(msg)
    return out


@record(frozen=True)
class BatchResult:
    """Agent -> manager: a TaskBatch's outcomes in order; those a Cancel stopped come back interrupted.

    Each of `items` is a TaskResult or, for a task that succeeded with nothing more to tell (no retry,
    workspace, checks or CLI fields: plain_row), the row (task_id, attempt, start, end, exit_code, log,
    error, value): a quarter of the bytes, and ~6 times quicker to unpickle. `results` gives them all
    as TaskResults.
    """

    items: tuple

    @property
    def results(self) -> tuple[TaskResult, ...]:
        return tuple(item if type(item) is not tuple else plain_result(item) for item in self.items)


def plain_row(res: TaskResult) -> tuple | TaskResult:
    """A result as a BatchResult item: its row when it is plain, else itself."""
    d = res.__dict__
    if (d["outcome"] == "succeeded" and d["retry_after"] is None and d["workspace"] is None and not d["checks"]
            and d["check_tail"] is None and d["cli"] is None and d["answer"] is None):  # fmt: skip
        return (d["task_id"], d["attempt"], d["start"], d["end"], d["exit_code"], d["log"], d["error"], d["value"])
    return res


def plain_result(row: tuple) -> TaskResult:
    """The TaskResult a BatchResult row stands for (its pid is not kept: a chunk's task has no Started)."""
    task_id, attempt, start, end, exit_code, log, error, value = row
    return TaskResult(task_id, attempt, "succeeded", exit_code, start, end, value=value, error=error, log=log)


@record(frozen=True)
class ChunkReturn:
    """Agent -> manager: the chunk's tasks it has not started and gives back (one of its tasks is slow)."""

    task_ids: tuple[str, ...]
