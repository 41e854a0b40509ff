"""The `wvo-batch` command: parse, load and validate the roadmap, run it, map the outcome to an exit code."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from typing import List, Optional

import typer

from runner.errors import (
    EXIT_NO_RUN,
    EXIT_OK,
    EXIT_USAGE,
    BatchError,
    RoadmapError,
    UsageError,
)

EXIT_CODES_HELP = """Exit codes: 0 every runnable task succeeded · 1 a task failed or timed out · 2 invalid roadmap
or usage (nothing ran) · 3 --status: no run in progress · 75 another run of this roadmap holds the lock
· 130 interrupted (Ctrl-C) · 143 terminated (SIGTERM)."""

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'1G', '512M', '100k', '4096' -> bytes; UsageError if malformed."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"--memfree: {text!r} is not a size (e.g. 512M, 2G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_roles(text: str) -> dict[str, int]:
    """'orchestrator=1,worker=6,critic=1' -> {'orchestrator': 1, 'worker': 6, 'critic': 1}."""
    roles: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if not re.fullmatch(r"[A-Za-z][\w-]*", name) or not count.isdigit():
            raise UsageError(f"--roles: {part!r} is not ROLE=COUNT (e.g. orchestrator=1,worker=6,critic=1)")
        roles[name] = int(count)
    if sum(roles.values()) < 1:
        raise UsageError("--roles: at least one agent is needed")
    return roles


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"wvo-batch: {message}", err=True)
    raise typer.Exit(code)


@app.command(help=f"Run the tasks of one or more YAML roadmaps on a pool of agent processes.\n\n{EXIT_CODES_HELP}")
def main_command(
    roadmaps: List[str] = typer.Argument(None, metavar="ROADMAP...", help="Roadmap YAML file(s)."),
    agents: str = typer.Option("4", "--agents", "-j", envvar="WVO_AGENTS", help="Number of agent processes (>= 1)."),
    state_dir: Optional[str] = typer.Option(
        None,
        "--state-dir",
        envvar="WVO_STATE_DIR",
        help="Where logs, the ledger and events go. Default: $XDG_STATE_HOME (or ~/.local/state)"
        "/wvo-batch/<roadmap name>-<hash of its absolute path>.",
    ),
    check: bool = typer.Option(False, "--check", help="Validate and print the plan; run nothing."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    strict: bool = typer.Option(False, "--strict", envvar="WVO_STRICT", help="Treat warnings as errors."),
    schema: bool = typer.Option(False, "--schema", help="Print the roadmap JSON Schema and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar="WVO_QUIET", help="Only the final summary."),
    resume: bool = typer.Option(False, "--resume", envvar="WVO_RESUME", help="Continue the latest unfinished run."),
    history: bool = typer.Option(False, "--history", help="List past runs of this roadmap."),
    status: bool = typer.Option(False, "--status", help="Print the board of the run in progress (exit 3: none)."),
    watch: bool = typer.Option(False, "--watch", help="With --status: keep following the board."),
    grace: float = typer.Option(10.0, "--grace", envvar="WVO_GRACE", help="Seconds between TERM and KILL."),
    retries: Optional[int] = typer.Option(None, "--retries", envvar="WVO_RETRIES", help="Retries for every task."),
    max_failures: Optional[int] = typer.Option(
        None, "--max-failures", envvar="WVO_MAX_FAILURES", help="Stop handing out tasks after N failures."
    ),
    memfree: Optional[str] = typer.Option(
        None, "--memfree", envvar="WVO_MEMFREE", help="Start no task while free memory is under SIZE (e.g. 1G)."
    ),
    max_load: Optional[float] = typer.Option(
        None, "--max-load", envvar="WVO_MAX_LOAD", help="Start no task while the load average is above L."
    ),
    roles: Optional[str] = typer.Option(
        None, "--roles", envvar="WVO_ROLES", help="Explicit pool, e.g. orchestrator=1,worker=6,critic=1."
    ),
    route_wait: float = typer.Option(
        0.5, "--route-wait", envvar="WVO_ROUTE_WAIT", help="Seconds a task waits for its preferred role."
    ),
    executor: Optional[str] = typer.Option(
        None, "--executor", envvar="WVO_EXECUTOR", help="Agent CLI for tasks without command: codex, claude, or a JSON argv."
    ),
    events: Optional[str] = typer.Option(None, "--events", envvar="WVO_EVENTS", help="Also write events (JSON Lines) here."),
    trace: Optional[str] = typer.Option(None, "--trace", envvar="WVO_TRACE", help="Write a Chrome trace (Perfetto) here."),
    report: Optional[str] = typer.Option(None, "--report", envvar="WVO_REPORT", help="Write a self-contained HTML report."),
    write_back: bool = typer.Option(
        False, "--write-back", envvar="WVO_WRITE_BACK", help="Set each finished task's status in the roadmap file."
    ),
    only: Optional[List[str]] = typer.Option(
        None, "--only", envvar="WVO_ONLY", help="Select tasks: id or glob, epic or milestone id, or field=value. Repeatable."
    ),
    with_deps: bool = typer.Option(False, "--with-deps", envvar="WVO_WITH_DEPS", help="Pull unfinished dependencies in."),
    max_tasks: Optional[int] = typer.Option(None, "--max-tasks", envvar="WVO_MAX_TASKS", help="At most N tasks a batch."),
    iterations: Optional[int] = typer.Option(
        None, "--iterations", envvar="WVO_MAX_ITERATIONS", help="Batches to run, re-reading the roadmap (0: until none runnable)."
    ),
    once: bool = typer.Option(False, "--once", envvar="WVO_AUTOPILOT_ONCE", help="Exactly one batch."),
    interval: float = typer.Option(0.0, "--interval", envvar="WVO_INTERVAL", help="Seconds to wait between batches."),
    min_agents: Optional[int] = typer.Option(
        None, "--min-agents", envvar="WVO_MIN_AGENTS", help="Dynamic scaling: start with A agents ..."
    ),
    max_agents: Optional[int] = typer.Option(
        None, "--max-agents", envvar="WVO_MAX_AGENTS", help="... add workers up to B while tasks wait, retire idle ones."
    ),
    backend: str = typer.Option("local", "--backend", envvar="WVO_BACKEND", help="local or ray."),
    ray_address: Optional[str] = typer.Option(
        None,
        "--ray-address",
        envvar="WVO_RAY_ADDRESS",
        help="--backend ray: auto or ray://host:port joins a Ray cluster; none (default) starts a local one.",
    ),
) -> None:
    if schema:
        from runner.schema import json_schema

        typer.echo(json.dumps(json_schema(), indent=2))
        raise typer.Exit(EXIT_OK)
    if not roadmaps:
        fail("missing ROADMAP: give one or more roadmap files (wvo-batch --help)")
    n_agents = _agents(agents)
    try:
        if status:
            raise typer.Exit(_status(roadmaps, state_dir, watch, json_out))
        if history:
            raise typer.Exit(_history(roadmaps, state_dir, json_out))
        from runner.roadmap import load

        result = load(roadmaps, strict=strict)
        if check:
            raise typer.Exit(_check(result, json_out, list(only or []), with_deps, max_tasks))
        if result.errors:
            for p in result.errors:
                typer.echo(f"error: {p}", err=True)
            raise typer.Exit(EXIT_USAGE)
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
        if max_agents is not None or min_agents is not None:
            lo = min_agents if min_agents is not None else 1
            hi = max_agents if max_agents is not None else max(lo, n_agents)
            if lo < 1 or hi < lo:
                raise UsageError(f"--min-agents/--max-agents: need 1 <= A <= B (got A={lo}, B={hi})")
            min_agents, max_agents = lo, hi
        if max_tasks is not None and max_tasks < 1:
            raise UsageError(f"--max-tasks: must be at least 1 (got {max_tasks})")
        if iterations is not None and iterations < 0:
            raise UsageError(f"--iterations: must be 0 (until nothing is runnable) or more (got {iterations})")
        from runner.autopilot import BatchPlan

        plan = BatchPlan(
            only=list(only or []),
            with_deps=with_deps,
            max_tasks=max_tasks,
            iterations=1 if once else (iterations if iterations is not None else 1),
            interval=interval,
        )
        raise typer.Exit(
            _run(
                result,
                roadmaps,
                plan,
                n_agents,
                strict=strict,
                trace=trace,
                report=report,
                write_back=write_back,
                min_agents=min_agents,
                max_agents=max_agents,
                state_dir=state_dir,
                json_out=json_out,
                quiet=quiet,
                resume=resume,
                grace=grace,
                retries=retries,
                max_failures=max_failures,
                memfree=parse_size(memfree) if memfree else None,
                max_load=max_load,
                roles=parse_roles(roles) if roles else None,
                route_wait=route_wait,
                executor=_executor(executor),
                events=events,
                backend=backend,
                ray_address=ray_address,
            )
        )
    except RoadmapError as exc:
        for p in exc.problems:
            typer.echo(f"error: {p}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except BatchError as exc:
        fail(str(exc), exc.exit_code)


def _agents(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
        fail(f"--agents: {text!r} is not a whole number; give the number of agents (>= 1), e.g. --agents 4")
    if n < 1:
        fail(f"--agents: must be at least 1 (got {n})")
    return n


def _executor(text: str | None):
    if text is None:
        return None
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--executor: not a JSON argv list ({exc.msg})") from None
    return text


def _check(result, json_out: bool, only: list[str], with_deps: bool, max_tasks: int | None) -> int:
    from runner.roadmap import format_plan, plan

    batch = None
    if result.roadmap is not None and (only or max_tasks is not None):
        from runner.select import select

        try:
            sel = select(result.roadmap.tasks, only=only, with_deps=with_deps, max_tasks=max_tasks)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        batch = {"run": sel.run, "blocked": sel.blocked, "deferred": sel.deferred, "excluded": sel.excluded}
    if json_out:
        doc = plan(result)
        if batch is not None:
            doc["batch"] = batch
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(format_plan(result))
        if batch is not None:
            typer.echo(f"\nbatch: {len(batch['run'])} task(s) would run: {', '.join(batch['run']) or '-'}")
            for task_id, why in batch["blocked"].items():
                typer.echo(f"  blocked {task_id}: {why}")
            if batch["deferred"]:
                typer.echo(f"  deferred by --max-tasks: {', '.join(batch['deferred'])}")
    return EXIT_USAGE if result.errors else EXIT_OK


def _run(
    result, paths, plan, n_agents: int, *, strict, json_out, quiet, events, trace, report, **kw
) -> int:
    from runner.autopilot import run_batches
    from runner.display import Display
    from runner.run import RunOptions

    options = RunOptions(agents=n_agents, events_file=events, **kw)
    display = Display(quiet=quiet, json_mode=json_out)
    outcome = run_batches(result, paths, options, plan, display, strict=strict)
    if trace or report:
        _write_artifacts(outcome, trace, report)
    if json_out:
        typer.echo(json.dumps(outcome.document(), indent=2, default=str))
    return outcome.exit_code


def _write_artifacts(outcome, trace: str | None, report: str | None) -> None:
    from runner import report as reports

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
    from runner import statedir

    return os.path.abspath(state_dir or statedir.default_state_dir(roadmaps))


def _status(roadmaps: list[str], state_dir: str | None, watch: bool, json_out: bool) -> int:
    import time
    from multiprocessing import AuthenticationError

    from runner import statedir
    from runner.display import board_lines
    from runner.ledger import roadmap_key
    from runner.pool import read_board

    folder_root = _state_dir(roadmaps, state_dir)
    lock = statedir.RunLock(folder_root, roadmap_key(roadmaps))
    if not os.path.isdir(folder_root) or lock.holder() is None:
        typer.echo("wvo-batch: no run of this roadmap is in progress", err=True)
        return EXIT_NO_RUN
    latest = os.path.join(folder_root, "latest")
    starting_until = time.monotonic() + 5.0  # a run that just started serves its board a moment later
    while True:
        try:
            snap = read_board(os.path.realpath(latest))
        except AuthenticationError:
            fail("--status: the run's board refused our key (authentication failed)")
        except (OSError, EOFError):
            if lock.holder() is not None and time.monotonic() < starting_until:
                time.sleep(0.1)  # the run holds its lock but is still starting: ask again
                continue
            typer.echo("wvo-batch: no run of this roadmap is in progress", err=True)
            return EXIT_NO_RUN
        if json_out:
            typer.echo(json.dumps(snap, default=str))
        else:
            if watch and sys.stdout.isatty():
                typer.echo("\x1b[H\x1b[J", nl=False)
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            typer.echo("\n".join(board_lines(snap, width=width)))
        if not watch:
            return EXIT_OK
        time.sleep(1.0)  # a display refresh interval, not synchronisation


def _history(roadmaps: list[str], state_dir: str | None, json_out: bool) -> int:
    import time

    from runner.ledger import Ledger

    path = os.path.join(_state_dir(roadmaps, state_dir), "ledger.sqlite")
    if not os.path.exists(path):
        if json_out:
            typer.echo("[]")
        else:
            typer.echo("no runs recorded for this roadmap")
        return EXIT_OK
    ledger = Ledger(path)
    runs = ledger.runs(roadmaps, limit=50)
    ledger.close()
    if json_out:
        typer.echo(json.dumps([r.__dict__ for r in runs], indent=2))
        return EXIT_OK
    typer.echo(f"{'run':>4}  {'started':<19}  {'status':<11}  {'total':>5} {'ok':>5} {'fail':>5} {'skip':>5}  makespan")
    for r in runs:
        s = r.summary or {}
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        status = r.status if r.status != "running" or r.ended else "running/crashed"
        makespan = f"{s['makespan_s']:.1f}s" if "makespan_s" in s else "-"
        typer.echo(
            f"{r.id:>4}  {started:<19}  {status:<11}  {s.get('total', '-'):>5} {s.get('succeeded', '-'):>5}"
            f" {s.get('failed', '-'):>5} {s.get('skipped', '-'):>5}  {makespan}"
            + (f"  (resumed run {r.resumed_from})" if r.resumed_from else "")
        )
    return EXIT_OK


def main() -> None:
    try:
        app(prog_name="wvo-batch")
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:  # the machine said no (disk, permissions, limits): say what, not where in our code
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"wvo-batch: {exc.strerror or exc}{where}\n")
        sys.exit(EXIT_USAGE)
