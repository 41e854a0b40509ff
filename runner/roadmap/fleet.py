"""The fleet's keys of a roadmap, as written -> typed, and what each task gets of them.

    resources:                       # top level: named pools (runner.manager.leases)
      port: {range: 8100-8199}       #   ports; one found in use is skipped
      db: [test_a, test_b]           #   names
    executors: {orchestrator: claude, worker: codex, critic: claude}   # by the role of the agent
    session: fresh                   # top level or per task: never resume an earlier run's session
    workspace:
      setup: [uv venv, uv pip install -e .]   # run in each fresh worktree before the agent
      copy: [.env, config/local.toml]         # gitignored files copied from the user's checkout
    tasks:
      - id: api
        uses: [port, db]             # WVO_PORT / WVO_DB, {port} / {db} in executor templates
        executor: claude             # this task's own executor

Parsing is pure (problems are returned as messages for the builder to place at file:line). Where they
are kept: Roadmap.settings["resources" | "executors" | "session" | "setup" | "copy"] for the top level,
Task.meta["uses" | "executor" | "session" | "setup" | "copy"] per task (a file's `defaults.workspace`
setup and copy are copied into its tasks). copy_problems() is the --check look at `workspace.copy` in
the user's checkout, with git.
"""

from __future__ import annotations

import os
import re

from runner.errors import Problem
from runner.model import record

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*\Z")
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")  # a slot's value goes into env and argv: keep it plain
SESSIONS = ("fresh", "resume")
FLEET_WORKSPACE_KEYS = ("setup", "copy")  # taken out of `workspace:` here; runner.coding.settings reads the rest
# Template fields an executor already has: a pool cannot be named like one (runner.coding.executors.FIELDS).
_RESERVED = frozenset({
    "id", "title", "description", "exit_criteria", "prompt", "model", "role", "complexity", "complexity_score",
    "priority", "epic", "milestone", "affinity", "roadmap_dir", "feedback", "diff", "checks", "meta",
})  # fmt: skip
# Pools whose variable (WVO_<NAME>) the run sets itself in an attempt's environment: a lease would overwrite it
# (runner.manager.run, runner.agents.checks and pipeline, runner.manager.review_rounds, runner.agents.watchdog).
_RUN_VARIABLES = frozenset({
    "task_id", "attempt", "feedback", "branch", "worktree", "base_commit", "review", "review_commit", "review_error",
    "attempt_mark", "run_marks",
})  # fmt: skip


@record(frozen=True)
class PortRange:
    """`port: {range: 8100-8199}`: every port from low to high, both included."""

    low: int
    high: int

    def values(self) -> tuple[str, ...]:
        return tuple(str(p) for p in range(self.low, self.high + 1))

    def describe(self) -> str:
        return f"ports {self.low}-{self.high}"


@record(frozen=True)
class NamePool:
    """`db: [test_a, test_b]`: one of these names."""

    names: tuple[str, ...]

    def values(self) -> tuple[str, ...]:
        return self.names

    def describe(self) -> str:
        return ", ".join(self.names)


Pool = PortRange | NamePool


@record(frozen=True)
class TaskFleet:
    """What one task gets of the fleet's settings."""

    uses: tuple[str, ...]  # pools it leases a slot of, for each attempt
    executor: object | None  # its own `executor:` as written (None: its agent's role's, else the run's)
    session: str  # resume | fresh: whether --resume continues its last session
    setup: tuple  # commands run in its fresh worktree before the agent: text (a shell command) or argv tuples
    copy: tuple[str, ...]  # globs of gitignored files copied from the user's checkout into its worktree


def parse_resources(v) -> tuple[dict, list[str]]:
    """`resources:` -> ({name: PortRange | NamePool}, problems)."""
    if v is None:
        return {}, []
    if not isinstance(v, dict):
        return {}, [f"`resources:` must map names to a port range ({{range: 8100-8199}}) or a list of names; got {_kind(v)}"]
    pools, problems = {}, []
    for name, spec in v.items():
        where = f"resources.{name}"
        if type(name) is not str or not _NAME.match(name):
            problems.append(f"`resources:` name {name!r} must be lower-case letters, digits and _ (it becomes WVO_{str(name).upper()})")
            continue
        if name in _RESERVED:
            problems.append(f"`{where}`: {name!r} is a template field already; name the pool otherwise")
            continue
        if name in _RUN_VARIABLES:
            problems.append(f"`resources:` name {name!r} would be leased as WVO_{name.upper()}, which wvo-batch sets "
                            "itself for each attempt; name the pool otherwise")  # fmt: skip
            continue
        if isinstance(spec, dict):
            pool, problem = _port_range(spec, where)
        elif isinstance(spec, list):
            pool, problem = _names(spec, where)
        else:
            pool, problem = None, f"`{where}` must be {{range: LOW-HIGH}} (ports) or a list of names; got {_kind(spec)}"
        if problem:
            problems.append(problem)
        else:
            pools[name] = pool
    return pools, problems


def _port_range(spec: dict, where: str) -> tuple[PortRange | None, str | None]:
    if set(spec) != {"range"}:
        return None, f"`{where}` must be {{range: LOW-HIGH}}, like {{range: 8100-8199}}; got keys {', '.join(map(str, spec))}"
    raw = spec["range"]
    m = _RANGE.match(raw) if type(raw) is str else None
    if m is None:
        return None, f"`{where}.range` must be LOW-HIGH, like 8100-8199; got {raw!r}"
    low, high = int(m.group(1)), int(m.group(2))
    if not 1 <= low <= high <= 65535:
        return None, f"`{where}.range` must be ports from 1 to 65535, low first; got {raw!r}"
    return PortRange(low, high), None


def _names(spec: list, where: str) -> tuple[NamePool | None, str | None]:
    if not spec:
        return None, f"`{where}` is an empty list: give at least one name"
    names = []
    for item in spec:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not _VALUE.match(str(item)):
            return None, f"`{where}`: {item!r} is not a plain name (letters, digits, _ . : -)"
        if str(item) in names:
            return None, f"`{where}`: {item!r} is listed twice"
        names.append(str(item))
    return NamePool(tuple(names)), None


def parse_uses(v) -> tuple[tuple[str, ...], str | None]:
    """A task's `uses:` -> (pool names, problem); whether the pools exist is checked once all files are read."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(type(x) is str and x for x in v):
        return (), f"`uses` must be a list of resource names, like [port, db]; got {v!r}"
    if len(set(v)) != len(v):
        return (), f"`uses` names a resource twice ({v!r}); an attempt leases one slot of each"
    return tuple(v), None


def parse_session(v, where: str = "session") -> tuple[str | None, str | None]:
    if v in SESSIONS:
        return v, None
    return None, f"`{where}` must be one of {', '.join(SESSIONS)}; got {v!r}"


def parse_setup(v, where: str) -> tuple[tuple, list[str]]:
    """`setup:` -> (commands, problems): each a shell command (text) or an argv (list of text)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        return (), [f"`{where}` must be a list of commands; got {_kind(v)}"]
    out, problems = [], []
    for i, cmd in enumerate(v):
        if type(cmd) is str and cmd.strip() and "\0" not in cmd:
            out.append(cmd)
        elif isinstance(cmd, list) and cmd and all(type(a) is str and "\0" not in a for a in cmd) and cmd[0].strip():
            out.append(tuple(cmd))
        else:
            problems.append(f"`{where}[{i}]` must be a command (text) or an argv (a list of text); got {cmd!r}")
    return tuple(out), problems


def parse_copy(v, where: str) -> tuple[tuple[str, ...], list[str]]:
    """`copy:` -> (globs relative to the checkout's top, problems)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(type(g) is str and g.strip() for g in v):
        return (), [f"`{where}` must be a list of file globs, like [.env, config/*.local]; got {v!r}"]
    problems = []
    for g in v:
        parts = g.replace("\\", "/").split("/")
        if os.path.isabs(g) or ".." in parts or "\0" in g:
            problems.append(f"`{where}`: {g!r} must be a path inside the checkout (relative, no ..)")
        elif ".git" in parts:
            problems.append(f"`{where}`: {g!r} is inside .git")
    return (tuple(v), problems) if not problems else ((), problems)


def split_workspace(raw, where: str) -> tuple[object, dict, list[str]]:
    """A `workspace:` block -> (the block without setup/copy, {setup, copy} parsed, problems)."""
    if not isinstance(raw, dict) or not any(k in raw for k in FLEET_WORKSPACE_KEYS):
        return raw, {}, []
    rest = {k: v for k, v in raw.items() if k not in FLEET_WORKSPACE_KEYS}
    out, problems = {}, []
    if "setup" in raw:
        out["setup"], more = parse_setup(raw["setup"], f"{where}.setup")
        problems += more
    if "copy" in raw:
        out["copy"], more = parse_copy(raw["copy"], f"{where}.copy")
        problems += more
    return rest, out, problems


# -- per task, at run time -----------------------------------------------------------------------------


def for_task(roadmap, task) -> TaskFleet:
    """Task settings over its file's `defaults.workspace` (copied into it at load) over the top level."""
    top, meta = roadmap.settings, task.meta
    return TaskFleet(
        uses=tuple(meta.get("uses", ())),
        executor=meta.get("executor"),
        session=meta.get("session") or top.get("session") or "resume",
        setup=meta["setup"] if "setup" in meta else top.get("setup", ()),
        copy=meta["copy"] if "copy" in meta else top.get("copy", ()),
    )


def lease_uses(roadmap) -> dict[str, tuple[str, ...]]:
    """Task id -> pools it uses, for runner.manager.leases.LeaseGate (tasks with none left out)."""
    return {t.id: tuple(t.meta["uses"]) for t in roadmap.tasks if t.meta.get("uses")}


def fleet_of(roadmap, run_executor=None):
    """The run's runner.coding.executors.Fleet: `executor:` (or --executor), `executors:`, tasks' own."""
    from runner.coding.executors import Fleet

    own = {t.id: t.meta["executor"] for t in roadmap.tasks if t.meta.get("executor") is not None}
    spec = run_executor if run_executor is not None else roadmap.executor
    return Fleet(spec, roadmap.settings.get("executors") or {}, own, tuple(roadmap.settings.get("resources") or ()))


def run_fleet(roadmap, run_executor=None):
    """fleet_of for a run: None when it has no executor at all."""
    fleet = fleet_of(roadmap, run_executor)
    return fleet if fleet else None


# -- --check: `workspace.copy` in the user's checkout -------------------------------------------------------


def copy_problems(roadmap, git=None) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) about each `workspace.copy` glob in the checkout it copies from.

    A file it matches must be ignored by git and not tracked: a tracked file is in the worktree already,
    and one that is not ignored would be committed with the task's work. A glob that matches nothing is
    a warning (the file may be made later, by a set-up command, say).
    """
    wanted: dict[tuple[str, str], tuple[str, int | None, str | None]] = {}  # (folder, glob) -> its place
    top = roadmap.settings
    if top.get("copy"):
        file, line = top.get("copy_place", (roadmap.files[0] if roadmap.files else "", None))
        for g in top["copy"]:
            wanted.setdefault((_repo_dir(top.get("workspace"), file), g), (file, line, None))
    for t in roadmap.tasks:
        for g in t.meta.get("copy", ()):
            wanted.setdefault((_repo_dir(t.meta.get("workspace"), t.file), g), (t.file, t.line, t.id))
    if not wanted:
        return [], []
    from runner.coding.git import Git

    git = git or Git()
    errors, warnings = [], []
    tops: dict[str, str | None] = {}
    for (folder, glob), (file, line, task) in wanted.items():
        if folder not in tops:
            proc = git.run(folder, "rev-parse", "--show-toplevel", check=False) if os.path.isdir(folder) else None
            tops[folder] = proc.stdout.strip() if proc is not None and proc.returncode == 0 else None
        repo = tops[folder]
        if repo is None:
            errors.append(Problem(f"`workspace.copy`: {folder} is not in a git repository", file, line, task))
            continue
        for message, is_error in _glob_problems(git, repo, glob):
            (errors if is_error else warnings).append(Problem(message, file, line, task))
    return errors, warnings


def _repo_dir(block, file: str) -> str:
    folder = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
    repo = block.get("repo") if isinstance(block, dict) else None
    return os.path.normpath(os.path.join(folder, os.path.expanduser(repo))) if type(repo) is str else folder


def _glob_problems(git, repo: str, glob: str) -> list[tuple[str, bool]]:
    import glob as globbing

    matches = sorted(
        p for p in globbing.glob(glob, root_dir=repo, recursive=True, include_hidden=True)
        if os.path.isfile(os.path.join(repo, p))
    )  # fmt: skip
    if not matches:
        return [(f"`workspace.copy`: {glob!r} matches no file in {repo}", False)]
    # Names as they are, * and all: literal pathspecs for ls-files; check-ignore takes paths, not pathspecs.
    tracked = set(git.run(repo, "--literal-pathspecs", "ls-files", "-z", "--", *matches, check=False).stdout.split("\0"))
    ignored = set(git.run(repo, "-c", "core.quotePath=false", "check-ignore", "--", *matches, check=False).stdout.splitlines())
    out = []
    for path in matches:
        if path in tracked:
            out.append((f"`workspace.copy`: {path} is tracked by git; copy lists gitignored files only "
                        "(a tracked file is in every worktree already)", True))  # fmt: skip
        elif path not in ignored:
            out.append((f"`workspace.copy`: {path} is not ignored by git, so the task's commit would take it; "
                        "add it to .gitignore", True))  # fmt: skip
    return out


def _kind(v) -> str:
    from runner.roadmap.fields import kind_of

    return kind_of(v)
