"""What a run is given and what it gives back: its options, its result, and the Reporter it talks to.

The CLI builds RunOptions and implements Reporter; runner.manager.run.Run takes both.
"""

from __future__ import annotations

from dataclasses import field

from runner.errors import UsageError
from runner.manager.exits import Ending
from runner.model import record

DEFAULT_AGENTS = 4  # agents when neither the command line, the environment nor the roadmap's `agents:` gives a pool


def default_roles(n: int) -> dict[str, int]:
    """The original design's pool: 1 orchestrator, 1 critic when n >= 4, the rest workers."""
    if n <= 1:
        return {"worker": 1}
    critic = 1 if n >= 4 else 0
    return {"orchestrator": 1, "worker": n - 1 - critic, "critic": critic}


@record
class RunOptions:
    """How a run goes: the command line's settings, as the manager takes them."""

    agents: int | None = None  # --agents; None: not given (decide_pool: the roadmap's `agents:`, else the default)
    roles: dict[str, int] | None = None  # --roles: role -> count
    pool_from: str | None = None  # the flag or variable that gave the pool, with its value (decide_pool's messages)
    state_dir: str | None = None
    resume: bool = False
    grace: float = 10.0  # seconds between TERM and KILL (timeouts, Ctrl-C)
    retries: int | None = None  # --retries: at least this many retries for every task
    max_failures: int | None = None
    failures_before: int = 0  # tasks the --iterations loop's earlier batches failed: counted against --max-failures
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
    spent_usd: float = 0.0  # what the --iterations loop's earlier batches spent: counted against the budget too
    max_wait: float | None = None  # --max-wait seconds a usage limit may pause the run (None: 2 h)


def describe_roles(roles: dict[str, int]) -> str:
    """{'orchestrator': 1, 'worker': 2, 'critic': 0} -> '1 orchestrator, 2 workers'."""
    return ", ".join(f"{n} {role}{'s' if n > 1 else ''}" for role, n in roles.items() if n)


@record(frozen=True)
class Pool:
    """The agents a run starts with, and what decided them (decide_pool)."""

    roles: dict[str, int]  # role -> agents at the start
    source: str  # what gave them, in the user's words: "--agents 2", "WVO_ROLES=worker=3", "`agents:` at rm.yaml:4"
    set_aside: str | None = None  # a warning when the command line or the environment beat the roadmap's `agents:`
    max_agents: int | None = None  # scaling: workers are added up to this many agents in all (None: a fixed pool)


def decide_pool(options: RunOptions, roadmap) -> Pool:
    """The run's pool; the one place that decides it (the run, each batch of the loop, --check).

    The command line beats the environment (both in `options`: --roles, --min-agents/--max-agents, --agents,
    with `pool_from` naming the flag or the variable), which beats the roadmap's `agents:` block, which beats
    default_roles(DEFAULT_AGENTS). A block that is set aside is named in `set_aside`, never dropped unsaid.
    """
    block = getattr(roadmap, "agents", None) or None  # {}: no block (the default pool)
    place = getattr(roadmap, "agents_place", None)
    if options.roles:
        roles = dict(options.roles)
    elif options.max_agents:
        roles = default_roles(options.min_agents or 1)  # scaling starts here and adds workers
    elif options.agents is not None:
        roles = default_roles(options.agents)
    elif block:
        return Pool(dict(block), f"`agents:` at {place}" if place else "`agents:`")
    else:
        return Pool(default_roles(DEFAULT_AGENTS), "the default")
    given = options.pool_from or ("--roles" if options.roles else "--min-agents/--max-agents" if options.max_agents else
                                  f"--agents {options.agents}")
    set_aside = None
    if block:
        where = f" at {place}" if place else ""
        set_aside = (f"{given} sets aside the roadmap's `agents:` block{where} (the command line and the environment "
                     f"beat the roadmap): the run starts {describe_roles(roles)}")
    return Pool(roles, given, set_aside, options.max_agents or None)


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
