"""What a run is given and what it gives back: its options, its result, and the Reporter it talks to.

The CLI builds RunOptions and implements Reporter; runner.manager.run.Run takes both.
"""

from __future__ import annotations

from dataclasses import field

from runner.errors import UsageError
from runner.manager.exits import Ending
from runner.model import record

def default_roles(n: int) -> dict[str, int]:
    """The original design's pool: 1 orchestrator, 1 critic when n >= 4, the rest workers."""
    if n <= 1:
        return {"worker": 1}
    critic = 1 if n >= 4 else 0
    return {"orchestrator": 1, "worker": n - 1 - critic, "critic": critic}


@record
class RunOptions:
    """How a run goes: the command line's settings, as the manager takes them."""

    agents: int = 4
    roles: dict[str, int] | None = None  # role -> count; None: default_roles(agents)
    state_dir: str | None = None
    resume: bool = False
    grace: float = 10.0  # seconds between TERM and KILL (timeouts, Ctrl-C)
    retries: int | None = None  # --retries: at least this many retries for every task
    max_failures: int | None = None
    memfree: int | None = None  # bytes; no task starts while less memory is available
    max_load: float | None = None  # no task starts while the 1-minute load average is above
    events_file: str | None = None
    executor: object | None = None  # --executor; overrides the roadmap's
    rate_limit: str | None = None  # regex; None: the executor's (commands: none)
    route_wait: float = 0.5
    affinity_wait: float = 30.0
    age_every: float = 300.0
    backoff_base: float = 1.0
    blocked: dict[str, str] = field(default_factory=dict)  # task id -> why it cannot run (from the loader)
    backend: str = "local"
    ray_address: str | None = None  # --backend ray: None starts a local Ray; auto / ray://host:port join one
    write_back: bool = False  # set each finished task's status in the roadmap file
    min_agents: int | None = None  # dynamic scaling: start with this many ...
    max_agents: int | None = None  # ... add workers up to this many while tasks wait
    scale_up_wait: float = 2.0  # a queued task waiting longer than this asks for another agent
    scale_down_idle: float = 10.0  # an agent idle longer than this is retired (down to min_agents)
    scale_max_load: float | None = None  # no agent is added while the load average is above (None: the core count)
    selected: set[str] | None = None  # a batch: only these tasks belong to the run (None: all)
    done: set[str] = field(default_factory=set)  # succeeded earlier (an earlier batch): count as satisfied
    workspace: str | None = None  # --workspace worktree|shared (None: by task kind and repository)
    land: str | None = None  # --land merge|branch
    into: str | None = None  # --into BRANCH
    keep_worktrees: bool = False  # --keep-worktrees
    land_parallel: int | None = None  # --land-parallel: landings checked at once (None: the number of agents)
    budget: float | None = None  # --budget USD (None: the roadmap's `budget:`, else none); runner.manager.accounts
    max_wait: float | None = None  # --max-wait seconds a usage limit may pause the run (None: 2 h)


@record
class RunResult:
    """What a run did: its exit code, its folder, the summary and one row per task."""

    exit_code: int
    run_id: int
    folder: str
    summary: dict
    tasks: list[dict]  # one row per task: task, title, agent, status, attempts, duration_s, exit_code, log, reason
    ending: Ending = field(default_factory=Ending)  # how it ended; exit_code is exits.decide(ending)
    carried: frozenset = frozenset()  # task ids --resume carried over as succeeded from the run it continued


class Reporter:
    """What the run tells the outside world; the CLI's display implements it. Core code never prints."""

    # False: events() reads nothing (--quiet). The run does not call it then, and may write the hot
    # events (a chunk's, the task:queued) straight to the events files as text, never built as dicts.
    reads_events = True

    def started(self, info: dict) -> None: ...

    def events(self, events: list[dict]) -> None: ...

    def refresh(self, pool) -> None: ...  # pool: runner.manager.pool.Pool

    def finished(self, result: RunResult) -> None: ...

    def message(self, text: str) -> None: ...


def make_backend(name: str, options: RunOptions):
    if name == "local":
        from runner.agents.local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from runner.agents.ray_backend import RayBackend

        return RayBackend(address=options.ray_address)
    raise UsageError(f"--backend: unknown backend {name!r} (choose local or ray)")
