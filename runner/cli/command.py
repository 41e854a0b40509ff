"""The `wvo-batch` command: read the command line, load and check the roadmap, run it, map the outcome to an exit code.

The command line is read by runner.cli.options without typer when it can, by typer (runner.cli.typer_app) when it cannot;
both hand the values to run_command.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
import sys
from types import SimpleNamespace

from runner.cli import lazyimport

lazyimport.defer()  # before runner.errors imports dataclasses

from runner.cli import options as cliargs  # noqa: E402
from runner.cli.terminal import one_line, visible
from runner.errors import (
    EXIT_INTERRUPTED,
    EXIT_NO_RUN,
    EXIT_OK,
    EXIT_USAGE,
    BatchError,
    RoadmapError,
    StateError,
    UsageError,
)

_STATUS_TIMEOUT_S = 3.0  # --status gives up on a run that does not answer (stopped with SIGSTOP)

_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")  # what typer.echo strips when the stream is no terminal
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'1G', '512M', '100k', '4096' -> bytes; UsageError if malformed."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"--memfree: {text!r} is not a size (e.g. 512M, 2G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    size = int(float(m.group(1)) * scale)
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        total = 1 << 60
    if size > total:
        raise UsageError(f"--memfree: {text!r} is more than this machine's memory ({total >> 20}M): no task would ever start")
    return size


def parse_roles(text: str) -> dict[str, int]:
    """'orchestrator=1,worker=6,critic=1' -> {'orchestrator': 1, 'worker': 6, 'critic': 1}."""
    roles: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if not re.fullmatch(r"[A-Za-z][\w-]*", name) or not re.fullmatch(r"[0-9]+", count):
            raise UsageError(f"--roles: {part!r} is not ROLE=COUNT (e.g. orchestrator=1,worker=6,critic=1)")
        roles[name] = int(count)
        if roles[name] > cliargs.MAX_AGENTS:
            raise UsageError(f"--roles: {name}={count} is out of range; give 0 to {cliargs.MAX_AGENTS} agents")
    if sum(roles.values()) < 1:
        raise UsageError("--roles: at least one agent is needed")
    if sum(roles.values()) > cliargs.MAX_AGENTS:
        raise UsageError(f"--roles: {sum(roles.values())} agents in all; give at most {cliargs.MAX_AGENTS}")
    return roles


def run_command(args: SimpleNamespace) -> int:
    """Everything after the command line is read (runner.cli.options): the exit code; a BatchError becomes its message."""
    try:
        return _command(args)
    except RoadmapError as exc:
        for p in exc.problems:
            _echo(one_line(f"error: {p}"), err=True)
        return exc.exit_code
    except BatchError as exc:
        _echo(one_line(f"wvo-batch: {exc}"), err=True)
        return exc.exit_code


def _command(args: SimpleNamespace) -> int:
    if args.schema:
        from runner.roadmap.schema import json_schema

        _echo(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    roadmaps = args.roadmaps
    if not roadmaps:
        raise UsageError("missing ROADMAP: give one or more roadmap files (wvo-batch --help)")
    problem = cliargs.out_of_range(args) or cliargs.empty_value(args)
    if problem:
        raise UsageError(problem)
    _combinations(args)
    if args.status or args.history:
        _pool_flags(args)  # not used there, but a bad one on the command line is still refused
    if args.status:
        return _status(roadmaps, args.state_dir, args.watch, args.json_out)
    if args.history:
        return _history(roadmaps, args.state_dir, args.json_out)
    pool = _pool_settings(args)
    from runner.roadmap.loader import load

    result = load(roadmaps, strict=args.strict)
    if not result.errors and (args.budget is not None or args.budget_unknown_cost or "budget" in result.roadmap.settings):
        from runner.coding.budget import budget_check  # lazily: only a run with a budget needs it

        for warning in budget_check(result.roadmap, args.budget, _executor(args.executor), args.budget_unknown_cost):
            _echo(one_line(f"warning: {warning}"), err=True)
    if args.check:
        return _check(result, args.json_out, args.only, args.with_deps, args.max_tasks, args, pool)
    if result.errors:
        for p in result.errors:
            _echo(one_line(f"error: {p}"), err=True)
        return EXIT_USAGE
    for w in result.warnings:
        _echo(one_line(f"warning: {w}"), err=True)
    outputs = [(flag, path, append) for flag, path, append in
               (("--events", args.events, True), ("--trace", args.trace, False), ("--report", args.report, False)) if path]
    if outputs:
        _check_not_an_input(outputs, roadmaps, args.state_dir, args.executor)
    for flag, path, append in outputs:
        _check_writable(flag, path, append)
    from runner.manager.autopilot import BatchPlan

    plan = BatchPlan(
        only=args.only,
        with_deps=args.with_deps,
        max_tasks=args.max_tasks,
        iterations=1 if args.once else (args.iterations if args.iterations is not None else 1),
        interval=args.interval,
    )
    return _run(
        result,
        roadmaps,
        plan,
        strict=args.strict,
        trace=args.trace,
        report=args.report,
        write_back=args.write_back,
        **pool,
        state_dir=args.state_dir,
        json_out=args.json_out,
        quiet=args.quiet,
        resume=args.resume,
        grace=args.grace,
        retries=args.retries,
        max_failures=args.max_failures,
        memfree=parse_size(args.memfree) if args.memfree else None,
        max_load=args.max_load,
        route_wait=args.route_wait,
        executor=_executor(args.executor),
        events=args.events,
        backend=_one_of("--backend", args.backend, ("local", "ray")),
        ray_address=args.ray_address,
        workspace=_one_of("--workspace", args.workspace, ("worktree", "shared")),
        land=_one_of("--land", args.land, ("merge", "branch")),
        into=args.into,
        keep_worktrees=args.keep_worktrees,
        land_parallel=args.land_parallel,
        budget=args.budget,
        max_wait=args.max_wait,
    )


def _one_of(flag: str, value, choices: tuple[str, ...]):
    if value is not None and value not in choices:
        raise UsageError(f"{flag}: must be one of {', '.join(choices)} (got {value!r})")
    return value


def _echo(text: str, *, err: bool = False, nl: bool = True, raw: bool = False) -> None:
    """Write and flush, as typer.echo did (colour codes off a terminal go); every other control character
    is spelt out (runner.cli.terminal), unless `raw`: the command's own cursor movements. Text from a roadmap
    or a ledger is given through visible() first, so that off a terminal an escape sequence in it is spelt
    out too, not dropped as if it were a colour code (an id `a<ESC>[0mb` would read `ab`)."""
    stream = sys.stderr if err else sys.stdout
    if not stream.isatty():
        text = _ANSI.sub("", text)
    if not raw:
        text = visible(text)
    if nl:
        text += "\n"
    stream.write(text)
    stream.flush()


def _combinations(args: SimpleNamespace) -> None:
    """A flag that only makes sense with another never starts a run: it is read as meant, or refused."""
    if args.watch and not args.status:
        if args.check or args.history or args.schema:
            raise UsageError("--watch follows the board of a run in progress: it goes with --status alone")
        args.status = True  # `--watch` can only mean following the board: that is --status --watch
    if args.with_deps and not args.only and args.max_tasks is None:
        raise UsageError("--with-deps pulls unfinished dependencies into a selection: give --only (or --max-tasks) too")
    if args.ray_address and args.backend != "ray":
        raise UsageError(f"--ray-address is for --backend ray (the backend is {args.backend})")
    if args.once and args.iterations not in (None, 1):  # the original autopilot's WVO_AUTOPILOT_ONCE over MAX_ITERATIONS
        asked = "batches until none is runnable" if args.iterations == 0 else f"{args.iterations} batches"
        _echo(f"warning: --once (or WVO_AUTOPILOT_ONCE) wins over --iterations {args.iterations} ({asked}): one batch", err=True)
    # Pairs that contradict each other: one of them would be dropped without a word. A flag beats a WVO_* variable
    # (README, Options): only two of the same source contradict each other.
    env = getattr(args, "from_env", set())
    if args.agents is not None:
        pool = [name for name in ("roles", "max_agents", "min_agents") if getattr(args, name)]
        if "agents" in env and any(name not in env for name in pool):
            args.agents = None  # --roles / --min-agents / --max-agents on the command line beat WVO_AGENTS
        elif "agents" not in env:
            for name in [name for name in pool if name in env]:
                setattr(args, name, None)  # --agents on the command line beats WVO_ROLES, WVO_MIN_AGENTS, WVO_MAX_AGENTS
    if args.agents is not None:
        other = "--roles" if args.roles else "--max-agents" if args.max_agents is not None else \
            "--min-agents" if args.min_agents is not None else None
        variable = {"--roles": "WVO_ROLES", "--max-agents": "WVO_MAX_AGENTS", "--min-agents": "WVO_MIN_AGENTS"}.get(other)
        if other == "--roles":
            raise UsageError("--agents (or WVO_AGENTS) and --roles (or WVO_ROLES) both give the pool of agents: give one of them")
        if other:
            raise UsageError(f"--agents (or WVO_AGENTS) gives a fixed pool and {other} (or {variable}) a scaling one (it starts "
                             "with --min-agents, default 1): give one or the other")


def _check_not_an_input(outputs: list, roadmaps: list[str], state_dir: str | None, executor: str | None) -> None:
    """Refuse (UsageError) an output file that is a roadmap, the --executor file, the ledger, or another output:
    it would be overwritten (a report in place of the roadmap) or appended to (events in the ledger's SQLite file)."""
    ledger = os.path.join(_state_dir(roadmaps, state_dir), "ledger.sqlite")
    inputs = [(path, "a roadmap of the run") for path in roadmaps]
    if executor and os.path.isfile(executor):
        inputs.append((executor, "the --executor file"))
    inputs += [(ledger + tail, "the ledger") for tail in ("", "-wal", "-shm", "-journal")]
    seen: list[tuple[str, str]] = []  # (flag, path) of the outputs before this one
    for flag, path, _ in outputs:
        for other, what in inputs + [(p, f"also given to {f}") for f, p in seen]:
            if _same_file(path, other):
                raise UsageError(f"{flag} {path}: is {what}; give another file; nothing ran")
        seen.append((flag, path))


def _same_file(a: str, b: str) -> bool:
    """Whether paths a and b name one file: the same inode when both exist, else the same real path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_writable(flag: str, path: str, append: bool) -> None:
    """Refuse (UsageError) an output file that could not be written, before anything runs."""
    import tempfile

    path = os.path.abspath(path)
    where = os.path.dirname(path)
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory; give a file name; nothing ran")
    try:
        if append and os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            fd, probe = tempfile.mkstemp(dir=where, prefix=".wvo-probe-")  # where atomic_write puts its temp file
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot be written ({exc.strerror}); nothing ran") from None


def _agents(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UsageError(
            f"--agents: {text!r} is not a whole number; give the number of agents (>= 1), e.g. --agents 4"
        ) from None
    if not 1 <= n <= cliargs.MAX_AGENTS:
        raise UsageError(f"--agents: {n} is out of range; give 1 to {cliargs.MAX_AGENTS}")
    return n


def _pool_flags(args: SimpleNamespace) -> None:
    """UsageError for a bad pool value given on the command line; one from a variable is left alone (a WVO_ROLES
    in the environment must not break --status, which does not use it)."""
    env = getattr(args, "from_env", set())
    _pool_settings(SimpleNamespace(**{**vars(args), **{name: None for name in ("roles", "min_agents", "max_agents",
                                                                                  "agents") if name in env}}))


def _pool_settings(args: SimpleNamespace) -> dict:
    """The pool as the command line and the environment give it (None: not given), for RunOptions: agents, roles,
    min_agents, max_agents, and pool_from naming the flag or variable. runner.manager.options.decide_pool weighs
    them against the roadmap's `agents:` block; UsageError for a bad value."""
    env = getattr(args, "from_env", set())
    variables = {o.name: o.envvar for o in cliargs.OPTIONS}

    def said(name: str, flag: str, value) -> str:  # as the user wrote it: "--agents 2", or "WVO_AGENTS=2"
        return f"{variables[name]}={value}" if name in env else f"{flag} {value}"

    if args.roles:
        return {"roles": parse_roles(args.roles), "pool_from": said("roles", "--roles", args.roles)}
    if args.max_agents is not None or args.min_agents is not None:
        from runner.manager.options import DEFAULT_AGENTS

        lo = args.min_agents if args.min_agents is not None else 1
        hi = args.max_agents if args.max_agents is not None else max(lo, DEFAULT_AGENTS)
        if lo < 1 or hi < lo:
            raise UsageError(f"--min-agents/--max-agents: need 1 <= A <= B (got A={lo}, B={hi})")
        given = [said(name, f"--{name.replace('_', '-')}", getattr(args, name)) for name in ("min_agents", "max_agents")
                 if getattr(args, name) is not None]  # fmt: skip
        return {"min_agents": lo, "max_agents": hi, "pool_from": " ".join(given)}
    if args.agents is not None:
        n = _agents(args.agents)
        return {"agents": n, "pool_from": said("agents", "--agents", n)}
    return {}


def _executor(text: str | None):
    if text is None:
        return None
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--executor: not a JSON argv list ({exc.msg})") from None
    return text


def _check(result, json_out: bool, only: list[str], with_deps: bool, max_tasks: int | None, args=None,
           pool_settings: dict | None = None) -> int:
    from runner.roadmap.loader import format_plan, plan

    pool = None  # the pool the run would start, decided as the run decides it
    if result.roadmap is not None:
        from runner.manager.options import RunOptions, decide_pool

        pool = decide_pool(RunOptions(**(pool_settings or {})), result.roadmap)
        if pool.set_aside:
            _echo(one_line(f"warning: {pool.set_aside}"), err=True)

    fleet, asks = None, False  # asks: the roadmap has agent tasks, which need an executor
    if result.roadmap is not None and not result.errors and args is not None \
            and any(t.command is None and t.call is None for t in result.roadmap.tasks):  # else: no executor to ask for
        from runner.manager.accounts import fleet_of_run

        fleet, asks = fleet_of_run(result.roadmap, _executor(args.executor)), True
    spaces = _workspaces(result, args) if result.roadmap is not None and args is not None else []
    executor = _executor(args.executor) if args is not None and args.executor is not None else None
    if result.roadmap is not None:
        from runner.roadmap.fleet import copy_problems

        errors, warnings = copy_problems(result.roadmap)  # `workspace.copy` must list gitignored, untracked files
        result.errors.extend(errors)
        result.warnings.extend(warnings)
        if args is not None:
            result.errors.extend(_review_problems(result, args))

    batch = None
    if result.roadmap is not None and (only or max_tasks is not None):
        from runner.roadmap.selection import select

        try:
            sel = select(result.roadmap.tasks, only=only, with_deps=with_deps, max_tasks=max_tasks)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        batch = {"run": sel.run, "blocked": sel.blocked, "deferred": sel.deferred, "excluded": sel.excluded}
    missing = []
    if asks:
        from runner.manager.accounts import without_executor

        selected = None if batch is None else set(batch["run"])
        missing = without_executor([t for t in result.roadmap.tasks if selected is None or t.id in selected], fleet, result.blocked)
        if fleet is not None:
            result.errors.extend(_executor_problems(result, args, fleet, selected, pool.roles))
    if json_out:
        doc = plan(result, executor)
        if batch is not None:
            doc["batch"] = batch
        if spaces:
            doc["workspaces"] = spaces
        if missing:  # a run with these options stops before it starts (exit 2): the roadmap itself is valid
            doc["without_executor"] = [t.id for t in missing]
        if pool is not None:
            doc["agents"] = {"roles": pool.roles, "from": pool.source, **({"max_agents": pool.max_agents} if pool.max_agents else {})}
        _echo(json.dumps(doc, indent=2))
    else:
        # The critical path stays the roadmap's: a run given an executor follows it; this one would not start at all.
        path_note = "once an executor is given: see the note below" if missing else ""
        agents = ""
        if pool is not None:
            from runner.manager.options import describe_roles

            scaling = f", adding workers up to {pool.max_agents}" if pool.max_agents else ""
            agents = f"{describe_roles(pool.roles)}{scaling} (from {pool.source})"
        _echo(visible(format_plan(result, executor=executor, path_note=path_note, agents=agents)))
        for g in spaces:
            n = len(g["tasks"])
            if g["mode"] == "worktree":
                _echo(one_line(f"  workspace: worktree for {n} task(s) in {g['repo']}: from {g['base']}, "
                               f"landing on {g['into']} (land: {g['land']})"))  # fmt: skip
            else:
                _echo(f"  workspace: shared for {n} task(s) with files/checks (they run in their own folder)")
        if batch is not None:
            _echo("\n" + one_line(f"batch: {len(batch['run'])} task(s) would run: {', '.join(batch['run']) or '-'}"))
            for task_id, why in batch["blocked"].items():
                _echo(one_line(f"  blocked {task_id}: {why}"))
            if batch["deferred"]:
                _echo(one_line(f"  deferred by --max-tasks: {', '.join(batch['deferred'])}"))
        if missing:  # the roadmap is valid (an executor is often given on the command line); the run would refuse
            from runner.manager.accounts import no_executor

            _echo("\n" + one_line(f"note: a run with these options stops before it starts (exit 2): {no_executor(missing)}"))
    return EXIT_USAGE if result.errors else EXIT_OK


_CODING_KEYS = frozenset(("files", "checks", "allow_empty", "workspace"))  # a task key that puts it in a workspace


def _workspaces(result, args) -> list[dict]:
    roadmap = result.roadmap
    if not (args.workspace or roadmap.settings.get("workspace") or (roadmap.defaults or {}).get("workspace")
            or any(t.command is None and t.call is None or t.meta and not _CODING_KEYS.isdisjoint(t.meta) for t in roadmap.tasks)):
        return []  # plain commands and callables only: no workspace to describe (and the coding layer is not imported)
    from runner.manager.options import RunOptions
    from runner.manager.landing_queue import workspace_plan

    options = RunOptions(
        workspace=_one_of("--workspace", args.workspace, ("worktree", "shared")),
        land=_one_of("--land", args.land, ("merge", "branch")),
        into=args.into,
        blocked=dict(result.blocked) if isinstance(result.blocked, dict) else {},
    )
    return workspace_plan(result.roadmap, options)


def _review_problems(result, args) -> list:
    """--check: a `review:` the run would refuse before it starts (runner.manager.review_rounds), as errors.

    The executor is not asked for: as for a task with no command, it may be configured outside the file.
    """
    roadmap = result.roadmap
    reviewed = [t for t in roadmap.tasks if t.meta and ("review" in t.meta or "review_rounds" in t.meta)
                and t.runnable_status and t.id not in result.blocked]  # fmt: skip
    if not reviewed:
        return []
    from runner.errors import Problem
    from runner.manager.landing_queue import workspace_settings
    from runner.manager.options import RunOptions
    from runner.manager.review_rounds import decide_review

    options = RunOptions(workspace=args.workspace, land=args.land, into=args.into, blocked=dict(result.blocked))
    ws = workspace_settings(roadmap, options, reviewed)
    problems = []
    for task in reviewed:
        problem = decide_review(task, ws.get(task.id), has_executor=True)[1]
        if problem:
            problems.append(Problem(problem, task.file, task.line, task.id))
    return problems


def _executor_problems(result, args, fleet, selected: set[str] | None, roles: dict[str, int]) -> list:
    """--check: what the run would refuse about its agent tasks' executors, from the same settings and the pool
    the run would start (runner.manager.accounts.executor_problems: the one check both make)."""
    from runner.manager.accounts import executor_problems

    roadmap = result.roadmap
    tasks = roadmap.tasks if selected is None else [t for t in roadmap.tasks if t.id in selected]
    return executor_problems(tasks, fleet, roles, result.blocked, programs=args.backend != "ray")


def _run(result, paths, plan, *, strict, json_out, quiet, events, trace, report, **kw) -> int:
    from runner.manager.autopilot import run_batches
    from runner.cli.display import Display
    from runner.manager.run import RunOptions

    options = RunOptions(events_file=events, **kw)
    display = Display(quiet=quiet, json_mode=json_out)
    outcome = run_batches(result, paths, options, plan, display, strict=strict)
    if trace or report:
        _write_artifacts(outcome, trace, report)
    if json_out:
        from runner.cli.outcomes import with_classes

        _echo(json.dumps(with_classes(outcome.document()), indent=2, default=str))
    return outcome.exit_code


def _write_artifacts(outcome, trace: str | None, report: str | None) -> None:
    from runner.cli import report as reports

    events: list[dict] = []
    for batch in outcome.batches:
        with open(os.path.join(batch.folder, "events.jsonl"), encoding="utf-8") as f:
            events.extend(json.loads(line) for line in f if line.strip())
    if trace:
        reports.write_trace(events, trace)
    if report and outcome.batches:
        last = outcome.batches[-1]
        tasks = [row for b in outcome.batches for row in b.tasks]
        reports.write_report(events, last.summary, tasks, report)


def _state_dir(roadmaps: list[str], state_dir: str | None) -> str:
    from runner.manager import statedir

    return os.path.abspath(state_dir or statedir.default_state_dir(roadmaps))


def _status(roadmaps: list[str], state_dir: str | None, watch: bool, json_out: bool) -> int:
    import time
    from multiprocessing import AuthenticationError

    from runner.cli.board import board_lines, task_facts
    from runner.manager import statedir
    from runner.manager.ledger import held_run_folder
    from runner.manager.pool import BoardKeyError, read_board

    folder_root = _state_dir(roadmaps, state_dir)
    if not os.path.lexists(folder_root):
        _echo("wvo-batch: no run of this roadmap is in progress", err=True)
        return EXIT_NO_RUN
    statedir.check_private(folder_root)  # whoever else can write there could serve us any board
    lock = statedir.RunLock.of_roadmaps(folder_root, roadmaps)
    if lock.holder() is None:
        _echo("wvo-batch: no run of this roadmap is in progress", err=True)
        return EXIT_NO_RUN
    starting_until = time.monotonic() + 5.0  # a run that just started serves its board a moment later
    while True:
        holder = lock.holder()
        # this roadmap's run, as the ledger has it (`latest` may be another roadmap's run on this state dir)
        named = held_run_folder(os.path.join(folder_root, "ledger.sqlite"), roadmaps, holder) if holder else None
        folder = statedir.run_folder(folder_root, named)
        try:
            if folder is None:
                raise FileNotFoundError
            snap = read_board(folder, timeout=_STATUS_TIMEOUT_S)
        except BoardKeyError as exc:
            raise StateError(f"--status: {exc}") from None
        except AuthenticationError as exc:
            raise StateError(f"--status: {exc} (authentication failed); not reading its board") from None
        except TimeoutError:
            raise BatchError(
                f"--status: the run (PID {holder or '?'}) did not answer within {_STATUS_TIMEOUT_S:g}s:"
                " it is stopped (SIGSTOP?) or overloaded"
            ) from None
        except (OSError, EOFError, ValueError):
            if holder is None:
                _echo("wvo-batch: no run of this roadmap is in progress", err=True)
                return EXIT_NO_RUN
            if time.monotonic() < starting_until:
                time.sleep(0.1)  # the run holds its lock but is still starting: ask again
                continue
            where = f" ({folder}/board.key is missing)" if folder else ""
            _echo(f"wvo-batch: a run of this roadmap holds the lock (PID {holder}) but serves no board{where}", err=True)
            return EXIT_NO_RUN
        starting_until = 0.0
        snap.setdefault("stats", {}).update(task_facts(os.path.join(folder, "events.jsonl")))  # checks, verdicts, cost
        if json_out:
            _echo(json.dumps(snap, default=str))
        else:
            if watch and sys.stdout.isatty():
                _echo("\x1b[H\x1b[J", nl=False, raw=True)
            import shutil

            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            _echo("\n".join(board_lines(snap, width=width)))
        if not watch:
            return EXIT_OK
        time.sleep(1.0)  # a display refresh interval, not synchronisation


def _history(roadmaps: list[str], state_dir: str | None, json_out: bool) -> int:
    from runner.cli import history
    from runner.manager import statedir
    from runner.manager.ledger import Ledger

    numbers = [r for r in roadmaps if r.isdigit() and not os.path.exists(r)]  # `ROADMAP --history 3`: run 3's attempts
    if len(numbers) > 1 or numbers == roadmaps:
        raise UsageError("--history N: give the roadmap and one run number (wvo-batch ROADMAP --history 3)")
    run_id = int(numbers[0]) if numbers else None
    roadmaps = [r for r in roadmaps if r not in numbers]
    folder_root = _state_dir(roadmaps, state_dir)
    path = os.path.join(folder_root, "ledger.sqlite")
    if os.path.lexists(folder_root):
        statedir.check_private(folder_root)
    missing = "".join(f" ({r}: no such file)" for r in roadmaps if not os.path.lexists(r))  # a typo, or gone since
    if not os.path.exists(path):
        if run_id is not None:
            raise UsageError(f"--history {run_id}: no runs recorded for this roadmap (ledger: {path})")
        _echo("[]" if json_out else visible(f"no runs recorded for this roadmap{missing}"))
        return EXIT_OK
    ledger = Ledger(path, full_check=True)  # --history reads it all: check it all
    try:
        runs = ledger.runs(roadmaps, limit=50 if run_id is None else 1_000_000)
        if run_id is None and not runs and not json_out:  # as without a ledger: not an empty table
            _echo(visible(f"no runs recorded for this roadmap{missing}"))
            return EXIT_OK
        if run_id is None:
            _echo(json.dumps([r.__dict__ for r in runs], indent=2) if json_out else "\n".join(history.run_lines(runs)))
            return EXIT_OK
        run = next((r for r in runs if r.id == run_id), None)
        if run is None:
            known = ", ".join(str(r.id) for r in runs[:10]) or "none"
            raise UsageError(f"--history {run_id}: not a run of this roadmap (its latest runs: {known})")
        rows = history.attempt_rows(ledger.attempts(run_id), history.run_folder(ledger, run_id))
    finally:
        ledger.close()
    if json_out:
        _echo(json.dumps({**run.__dict__, "attempts": rows}, indent=2, default=str))
    else:
        _echo("\n".join(history.attempt_lines(run, rows)))
    return EXIT_OK


def main() -> None:
    """The console script: read the command line (with typer only when it must), run, exit with the code."""
    argv = sys.argv[1:]
    try:
        args = None if _typer_needed_anyway() else cliargs.parse(argv, os.environ)
        if args is None:
            from runner.cli.typer_app import build_app

            build_app(run_command)(args=argv, prog_name="wvo-batch")  # exits
        code = _run_command_as_typer_would(args)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:  # the machine said no (disk, permissions, limits): say what, not where in our code
        where = f" ({os.fsdecode(exc.filename)})" if exc.filename else ""
        sys.stderr.write(visible(f"wvo-batch: {exc.strerror or exc}{where}") + "\n")
        sys.exit(EXIT_USAGE)
    _exit(code)


def _exit(code: int) -> None:
    """Exit without tearing the interpreter down: ~10 ms, far more after a run of 100,000 tasks.

    Every file of the run is closed by now; the streams and the log handlers are flushed here. With
    Ray loaded, the normal exit runs, for the shutdown Ray registers with atexit.
    """
    if "ray" in sys.modules:
        sys.exit(code)
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be said
            code = code or 1
    os._exit(code)


def _typer_needed_anyway() -> bool:
    """Where typer does more than write to the streams: shell completion, or ASCII streams it writes UTF-8 to."""
    if os.environ.get("_WVO_BATCH_COMPLETE"):
        return True
    for stream in (sys.stdout, sys.stderr):
        try:
            if codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "ascii":
                return True
        except LookupError:
            return True
    return False


def _run_command_as_typer_would(args: SimpleNamespace) -> int:
    """run_command, with a closed pipe on stdout (`| head`) ending the command quietly with 1, as under typer."""
    try:
        return run_command(args)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
    devnull = os.open(os.devnull, os.O_WRONLY)  # nothing more can be said; keep the final flush from failing
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    return 1
