"""The `wvo-batch` command line as one table, and a parser for the ordinary invocation that needs no typer.

    argv, environ ──> parse() ──> Namespace ──────────────────────────> cli.run_command()
                         │ None: not sure                                    ^
                         └──> typer_app (typer, built from this table) ──────┘
                              --help, usage errors, odd values

Importing typer costs 100-250 ms, more than many runs take. `parse` reads what people type every day and
returns None for anything it cannot read exactly as typer would; typer then reads it (and writes the help
text or the usage error). The table is the only description of the options: typer's command is built from it.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from collections.abc import Mapping, Sequence  # not typing: ~2 ms of start-up

EXIT_CODES_HELP = """Exit codes: 0 every runnable task succeeded · 1 a task failed or timed out · 2 invalid roadmap
or usage (nothing ran) · 3 --status: no run in progress · 74 the ledger or an events file could not be written
mid-run · 75 another run of this roadmap holds the lock, or a usage limit resets after --max-wait
· 130 interrupted (Ctrl-C) · 143 terminated (SIGTERM)."""

COMMAND_HELP = f"Run the tasks of one or more YAML roadmaps on a pool of agent processes.\n\n{EXIT_CODES_HELP}"


class Param:
    """One parameter of the command: the positional ROADMAP... (no flags) or an option.

    A plain class, not a dataclass: building the dataclass cost ~0.5 ms of every start-up.
    """

    __slots__ = ("name", "flags", "kind", "default", "envvar", "help", "metavar")

    def __init__(self, name: str, flags: tuple[str, ...], kind: type, default: object = None, envvar: str | None = None,
                 help: str = "", metavar: str | None = None):  # noqa: A002 - the option's help text, as typer names it
        self.name = name  # what the command body reads: args.<name>
        self.flags = flags
        self.kind = kind  # str, int, float, bool, or list (of str: a repeatable option, or the positional)
        self.default = default
        self.envvar = envvar
        self.help = help
        self.metavar = metavar

    def __repr__(self) -> str:
        return f"Param({self.name!r}, {self.flags!r})"


ROADMAPS = Param("roadmaps", (), list, metavar="ROADMAP...", help="Roadmap YAML file(s).")

OPTIONS = (
    Param("agents", ("--agents", "-j"), str, None, "WVO_AGENTS",
          "Number of agent processes (>= 1; default 4): a fixed pool, so not with --roles, --min-agents or --max-agents."),
    Param(
        "state_dir",
        ("--state-dir",),
        str,
        None,
        "WVO_STATE_DIR",
        "Where logs, the ledger and events go. Default: $XDG_STATE_HOME (or ~/.local/state)"
        "/wvo-batch/<roadmap name>-<hash of its path, folders resolved>.",
    ),
    Param("check", ("--check",), bool, False, None, "Validate and print the plan; run nothing."),
    Param("json_out", ("--json",), bool, False, None, "Machine-readable output on stdout."),
    Param("strict", ("--strict",), bool, False, "WVO_STRICT", "Treat warnings as errors."),
    Param("schema", ("--schema",), bool, False, None, "Print the roadmap JSON Schema and exit."),
    Param("quiet", ("--quiet", "-q"), bool, False, "WVO_QUIET", "Only the final summary."),
    Param("resume", ("--resume",), bool, False, "WVO_RESUME", "Continue the latest unfinished run."),
    Param("history", ("--history",), bool, False, None, "List past runs of this roadmap; ROADMAP --history N: every attempt of run N."),
    Param("status", ("--status",), bool, False, None, "Print the board of the run in progress (exit 3: none)."),
    Param("watch", ("--watch",), bool, False, None, "With --status: keep following the board."),
    Param("grace", ("--grace",), float, 10.0, "WVO_GRACE", "Seconds between TERM and KILL."),
    Param("retries", ("--retries",), int, None, "WVO_RETRIES", "Retries for every task."),
    Param(
        "max_failures", ("--max-failures",), int, None, "WVO_MAX_FAILURES", "Stop handing out tasks after N failures."
    ),
    Param(
        "memfree", ("--memfree",), str, None, "WVO_MEMFREE", "Start no task while free memory is under SIZE (e.g. 1G)."
    ),
    Param("max_load", ("--max-load",), float, None, "WVO_MAX_LOAD", "Start no task while the load average is above L."),
    Param("roles", ("--roles",), str, None, "WVO_ROLES", "Explicit pool, e.g. orchestrator=1,worker=6,critic=1."),
    Param(
        "route_wait", ("--route-wait",), float, 0.5, "WVO_ROUTE_WAIT", "Seconds a task waits for its preferred role."
    ),
    Param(
        "executor",
        ("--executor",),
        str,
        None,
        "WVO_EXECUTOR",
        "Agent CLI for tasks without command: codex, claude, or a JSON argv.",
    ),
    Param("events", ("--events",), str, None, "WVO_EVENTS", "Also write events (JSON Lines) here."),
    Param("trace", ("--trace",), str, None, "WVO_TRACE", "Write a Chrome trace (Perfetto) here."),
    Param("report", ("--report",), str, None, "WVO_REPORT", "Write a self-contained HTML report."),
    Param(
        "write_back",
        ("--write-back",),
        bool,
        False,
        "WVO_WRITE_BACK",
        "Set each finished task's status in the roadmap file.",
    ),
    Param(
        "only",
        ("--only",),
        list,
        None,
        "WVO_ONLY",
        "Select tasks: id or glob, epic or milestone id, or field=value. Repeatable.",
    ),
    Param("with_deps", ("--with-deps",), bool, False, "WVO_WITH_DEPS", "Pull unfinished dependencies in."),
    Param("max_tasks", ("--max-tasks",), int, None, "WVO_MAX_TASKS", "At most N tasks a batch."),
    Param(
        "iterations",
        ("--iterations",),
        int,
        None,
        "WVO_MAX_ITERATIONS",
        "Batches to run, re-reading the roadmap (0: until none runnable).",
    ),
    Param("once", ("--once",), bool, False, "WVO_AUTOPILOT_ONCE", "Exactly one batch; wins over --iterations, with a warning."),
    Param("interval", ("--interval",), float, 0.0, "WVO_INTERVAL", "Seconds to wait between batches."),
    Param("min_agents", ("--min-agents",), int, None, "WVO_MIN_AGENTS", "Dynamic scaling: start with A agents (default 1) ..."),
    Param(
        "max_agents",
        ("--max-agents",),
        int,
        None,
        "WVO_MAX_AGENTS",
        "... add workers up to B while tasks wait, retire idle ones.",
    ),
    Param("workspace", ("--workspace",), str, None, "WVO_WORKSPACE", "worktree or shared (default: worktree for agent-CLI tasks in a git repository)."),
    Param("land", ("--land",), str, None, "WVO_LAND", "merge (land each success on --into) or branch (leave it on its branch)."),
    Param("into", ("--into",), str, None, "WVO_INTO", "The branch results land on (default: wvo/<roadmap name>)."),
    Param("keep_worktrees", ("--keep-worktrees",), bool, False, "WVO_KEEP_WORKTREES", "Keep each attempt's worktree after the run."),
    Param("land_parallel", ("--land-parallel",), int, None, "WVO_LAND_PARALLEL",
          "Landings checked at once, each merged on top of those ahead (default: the number of agents; 1: one at a time)."),
    Param("budget", ("--budget",), float, None, "WVO_BUDGET", "USD: once agent CLIs spent this, start no new attempt (exit 1)."),
    Param("budget_unknown_cost", ("--budget-unknown-cost",), str, None, "WVO_BUDGET_UNKNOWN_COST",
          "error (default) or ok: --budget with a CLI that reports no cost is refused, or runs with a warning."),
    Param("max_wait", ("--max-wait",), float, 7200.0, "WVO_MAX_WAIT", "Seconds a usage limit may pause the run; a later reset stops it (exit 75; --resume)."),
    Param("backend", ("--backend",), str, "local", "WVO_BACKEND", "local or ray."),
    Param(
        "ray_address",
        ("--ray-address",),
        str,
        None,
        "WVO_RAY_ADDRESS",
        "--backend ray: auto or ray://host:port joins a Ray cluster; none (default) starts a local one.",
    ),
)

_BY_FLAG = {flag: option for option in OPTIONS for flag in option.flags}

MAX_AGENTS = 1024  # agents of one run (--agents, --roles, --max-agents): each is an OS process of this machine
_DAY = 86400.0  # the longest wait an option sets: past ~24.8 days poll() and timers overflow
_BILLION = 10**9

# The range of every numeric option: (least, most). A value outside it, or a float that is not finite,
# is a usage error naming the limit, before anything runs.
LIMITS: dict[str, tuple[float, float]] = {
    "grace": (0.0, _DAY),
    "route_wait": (0.0, _DAY),
    "interval": (0.0, _DAY),
    "max_load": (0.01, 1e6),
    "retries": (0, 1000),
    "max_failures": (0, _BILLION),
    "max_tasks": (1, _BILLION),
    "iterations": (0, _BILLION),
    "min_agents": (1, MAX_AGENTS),
    "max_agents": (1, MAX_AGENTS),
    "budget": (0.0, 1e9),
    "max_wait": (0.0, 7 * _DAY),
    "land_parallel": (1, 64),
}


def out_of_range(args: SimpleNamespace) -> str | None:
    """The first numeric option outside LIMITS, as a message with the limit; None when all are in range."""
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is None or option.name not in LIMITS:
            continue
        lo, hi = LIMITS[option.name]
        flag = option.flags[0]
        if value != value or value in (float("inf"), float("-inf")):
            return f"{flag}: {value} is not a finite number; give {lo:g} to {hi:g}"
        if not lo <= value <= hi:
            return f"{flag}: {value} is out of range; give {lo:g} to {hi:g}"
    return None

def empty_value(args: SimpleNamespace) -> str | None:
    """The first text option given as "" on the command line, as a message; None when there is none.

    An empty variable counts as unset (parse, and typer alike), so "" can only come from the command line:
    `--state-dir "$DIR"` with DIR unset. Read as unset, it would run with the default state dir, or write no
    report, and say nothing.
    """
    for option in OPTIONS:
        if option.kind is str and getattr(args, option.name, None) == "":
            return f"{option.flags[0]}: the value is empty; give one, or leave the option out"
    return None


# Only the plainest spellings: typer (through pydantic) also takes " 3", "1_000", "1.0", "1e3", "inf", ...
# and those go to it rather than risk reading them differently.
_NUMBER = {int: re.compile(r"[0-9]+"), float: re.compile(r"[0-9]+(?:\.[0-9]+)?")}
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"", "0", "false", "f", "no", "n", "off"}


class _Unsure(Exception):
    """This command line is typer's to read."""


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> SimpleNamespace | None:
    """Every parameter's value as typer would give it (lists as lists); None if typer must read this argv."""
    try:
        given, roadmaps = _read_argv(argv)
        values = {ROADMAPS.name: roadmaps}
        from_env = set()
        for option in OPTIONS:
            if option.name in given:
                values[option.name] = given[option.name]
            elif option.envvar and environ.get(option.envvar):  # an empty variable counts as unset
                values[option.name] = _from_env(option, environ[option.envvar])
                from_env.add(option.name)
            else:
                values[option.name] = [] if option.kind is list else option.default
    except _Unsure:
        return None
    return SimpleNamespace(**values, from_env=from_env)


def _read_argv(argv: Sequence[str]) -> tuple[dict[str, object], list[str]]:
    given: dict[str, object] = {}
    roadmaps: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            roadmaps.extend(rest)
            break
        if arg == "-" or not arg.startswith("-"):
            roadmaps.append(arg)
            continue
        flag, attached = _split(arg)
        option = _BY_FLAG.get(flag)
        if option is None:
            raise _Unsure  # unknown option, --help or -h, or short flags run together (-qj4)
        if option.kind is bool:
            if attached is not None:
                raise _Unsure  # "--quiet=1": typer's "does not take a value"
            given[option.name] = True
            continue
        if attached is None:
            if not rest or rest[0].startswith("-"):
                raise _Unsure  # a missing value, or one typer would take but that looks like a slip
            attached = rest.pop(0)
        value = _convert(option, attached)
        if option.kind is list:
            given.setdefault(option.name, []).append(value)
        else:
            given[option.name] = value  # the last one wins, as in typer
    return given, roadmaps


def _split(arg: str) -> tuple[str, str | None]:
    """'--agents=4' -> ('--agents', '4'); '-j4' -> ('-j', '4'); '--quiet' -> ('--quiet', None)."""
    if arg.startswith("--"):
        flag, eq, value = arg.partition("=")
        return flag, (value if eq else None)
    short = _BY_FLAG.get(arg[:2])
    if len(arg) > 2 and short is not None and short.kind is not bool:
        return arg[:2], arg[2:]
    return arg, None


def _convert(option: Param, text: str) -> object:
    pattern = _NUMBER.get(option.kind)
    if pattern is None:
        return text
    if not pattern.fullmatch(text):
        raise _Unsure  # typer says what is wrong with it, or reads a spelling we leave alone
    return option.kind(text)


def _from_env(option: Param, text: str) -> object:
    if option.kind is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Unsure
    if option.kind is list:
        return text.split()  # whitespace-separated, as typer splits a repeatable option's variable
    return _convert(option, text)
