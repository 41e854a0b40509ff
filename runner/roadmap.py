"""Roadmap files -> a validated Roadmap, and the --check plan of what would run.

    paths ──read (bytes, sha256)──▶ text ──_parse_yaml──▶ plain data + line tables
                                                        │  fast reader for the common subset,
                                                        │  libyaml (bounded) for everything else
                                                        ▼
             _Builder: layouts (tasks:, epics → milestones → tasks), defaults, executor, agents
                                                        ▼
             cross-file checks: duplicate ids, unknown dependencies, cycles, blocked tasks
                                                        ▼
             CheckResult ──▶ Roadmap (when valid) · plan() · format_plan()

Nothing here raises for bad input except load_roadmap(), which raises RoadmapError.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import os
import re
import stat
from collections import deque
from dataclasses import dataclass, field

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from runner.errors import Problem, RoadmapError
from runner.model import RUN_STATUSES, SKIP_STATUSES, Complexity, Priority, Roadmap, Task

MAX_FILE_BYTES = 128 * 1024 * 1024  # a roadmap bigger than this is refused before parsing
MAX_DEPTH = 100  # deepest nesting of YAML collections accepted
MAX_PROBLEMS = 1000  # per list; the rest are counted in one closing line
FREEZE_BYTES = 1 << 20  # from this much roadmap text (~10k tasks) on, load() freezes what it built (see load)

# Seconds an executor (agent CLI) task gets when neither it nor `defaults:` sets a timeout.
EXECUTOR_TIMEOUTS = {"simple": 600.0, "moderate": 1200.0, "complex": 1800.0, "very_complex": 2700.0, "unknown": 1200.0}

TASK_FIELDS = (
    "id", "title", "command", "call", "args", "kwargs", "status", "dependencies", "priority", "complexity",
    "complexity_score", "timeout", "retries", "env", "cwd", "role", "affinity", "set_id", "description",
    "exit_criteria", "epic", "milestone",
)  # fmt: skip
DEFAULTS_FIELDS = ("timeout", "retries", "priority", "env", "cwd", "executor", "role", "executor_timeouts")
TOP_FIELDS = ("tasks", "epics", "defaults", "executor", "agents")
EPIC_FIELDS = ("id", "title", "description", "status", "milestones", "tasks")
MILESTONE_FIELDS = ("id", "title", "description", "status", "tasks")
# Names people write for a field that this format spells differently; ignoring them would change what runs.
FIELD_ALIASES = {
    "depends_on": "dependencies", "depends": "dependencies", "deps": "dependencies", "requires": "dependencies",
    "needs": "dependencies", "prerequisites": "dependencies", "blocked_by": "dependencies",
    "cmd": "command", "run": "command", "script": "command",
    "timeout_s": "timeout", "timeout_seconds": "timeout", "time_limit": "timeout",
    "retry": "retries", "max_retries": "retries", "environment": "env",
    "workdir": "cwd", "working_dir": "cwd", "working_directory": "cwd", "prio": "priority",
}  # fmt: skip

_PRIORITIES = {p.value: p for p in Priority}
_STATUS_WORDS = {s: s for s in RUN_STATUSES | SKIP_STATUSES}  # statuses already in normal form
_COMPLEXITIES = {c.value: c for c in Complexity}
_CALL = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?\Z")
_NUMBER = re.compile(r"\d+(?:\.\d+)?\Z")


@dataclass
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


# ----------------------------------------------------------------------------- public API


def load(paths: list[str], *, strict: bool = False) -> CheckResult:
    """Read and validate roadmap files; never raises for bad input.

    The cyclic garbage collector is off while it works: the ~5 containers per task would otherwise set off
    full collections again and again. A big roadmap (FREEZE_BYTES of text and more) lives as long as the
    process, so its objects are then frozen (gc.freeze) after a collection beforehand: later full
    collections, and the one at interpreter exit, would each walk them again (~0.5 s per 100k tasks).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        result, size = _load([str(p) for p in paths], strict)
        if size >= FREEZE_BYTES:
            gc.freeze()
        return result
    finally:
        if was_enabled:
            gc.enable()


def _load(paths: list[str], strict: bool) -> tuple[CheckResult, int]:
    """(the result, bytes of roadmap text read)."""
    problems = _Problems()
    if not paths:
        problems.error("no roadmap file given")
    digest = hashlib.sha256()
    builder = _Builder(problems)
    seen: dict[str, str] = {}  # real path -> path as given
    files: list[tuple[str, bytes]] = []
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            problems.warn(f"given twice (also as {seen[key]}); read once", path)
            continue
        seen[key] = path
        data = _read(path, problems)
        if data is not None:
            files.append((path, data))
    size = sum(len(data) for _, data in files)
    if size >= FREEZE_BYTES:
        gc.collect()  # so that the freeze after loading pins no garbage
    for path, data in files:
        digest.update(data)
        doc = _parse_yaml(data, path, problems)
        if doc is not None:
            builder.add_file(path, doc)
    del files
    graph = _analyse(builder.tasks, builder.first_seen)
    for dep, waiting in graph.unknown.items():
        first = waiting[0]
        names = ", ".join(w.id for w in waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
        msg = f"unknown dependency `{dep}`: no task has this id (needed by {names})"
        if any(w.id in builder.mapping_deps for w in waiting):
            msg += "; `dependencies:` is a mapping there, whose keys are read as task ids: write a list"
        problems.warn(msg, first.file, first.line, first.id)
    for cycle in graph.cycles:
        t = builder.first_seen[cycle[0]]
        problems.error(f"dependency cycle: {' -> '.join(cycle)}", t.file, t.line, t.id)
    errors, warnings = problems.finish(strict)
    files = list(seen.values())
    roadmap = None
    if not errors:
        roadmap = Roadmap(
            files=files,
            tasks=builder.tasks,
            defaults=builder.merged_defaults,
            executor=builder.executor,
            agents=builder.agents,
            content_hash=digest.hexdigest(),
            warnings=list(warnings),
        )
    result = CheckResult(
        roadmap, builder.total, errors, warnings, graph.blocked, builder.tasks, files, graph.critical_path
    )
    return result, size


def load_roadmap(paths: list[str], *, strict: bool = False) -> Roadmap:
    """Read and validate roadmap files. Raises RoadmapError carrying every problem when invalid."""
    result = load(paths, strict=strict)
    if result.roadmap is None:
        raise RoadmapError(result.errors)
    return result.roadmap


def blocked_tasks(tasks: list[Task]) -> dict[str, str]:
    """Tasks with a runnable status that cannot run in this run, each with the reason, in roadmap order."""
    return _analyse(tasks).blocked


@dataclass
class _Graph:
    unknown: dict[str, list[Task]]  # dependency id that no task has -> the tasks naming it
    cycles: list[list[str]]  # each as [a, b, ..., a]
    blocked: dict[str, str]  # task id -> reason, roadmap order
    critical_path: list[str]  # longest chain of runnable tasks, first to run first


def _analyse(tasks: list[Task], index: dict[str, Task] | None = None) -> _Graph:
    """Unknown dependencies, cycles, blocked tasks and the critical path; linear time."""
    if index is None:
        index = {}
        for t in tasks:
            index.setdefault(t.id, t)
    unique = tasks if len(index) == len(tasks) else list(index.values())
    walked = _walk(unique, index, in_order=True)
    if walked is not None:
        return walked
    # Some task depends on one written after it: sort first; what cannot be sorted is in or after a cycle.
    order, leftover = _kahn(unique)
    cycles: list[list[str]] = []
    members: set[str] = set()
    if leftover:
        cycles, members = _cycles({t.id: t for t in leftover})
        after = [t for t in leftover if t.id not in members]
        order += [t for t in leftover if t.id in members] + _kahn(after)[0]
    graph = _walk(order, index, in_order=False, cycle_members=members)
    graph.cycles = cycles
    for waiting in graph.unknown.values():
        waiting.sort(key=lambda t: t.order)
    graph.blocked = {t.id: graph.blocked[t.id] for t in unique if t.id in graph.blocked}
    return graph


_DONE, _SKIPPED, _BLOCKED = 0, -1, -2  # values in _walk's state besides chain lengths (>= 1)


def _walk(
    order: list[Task], index: dict[str, Task], in_order: bool, cycle_members: set[str] = frozenset()
) -> _Graph | None:
    """One pass in dependency order; None when in_order and a task depends on a later one."""
    state: dict[str, int] = {}  # task id -> chain length if it would run, else _DONE / _SKIPPED / _BLOCKED
    root: dict[str, str] = {}  # blocked task id -> the first cause, carried to its dependents
    blocked: dict[str, str] = {}
    prev: dict[str, str | None] = {}
    unknown: dict[str, list[Task]] = {}
    best, best_len = None, 0
    run = RUN_STATUSES
    for t in order:
        tid, st = t.id, t.status
        if cycle_members and tid in cycle_members:
            if st in run:
                blocked[tid] = root[tid] = "in a dependency cycle"
            state[tid] = _BLOCKED if st in run else _DONE if st == "done" else _SKIPPED
            for dep in t.dependencies:
                if dep not in index:
                    unknown.setdefault(dep, []).append(t)
            continue
        if st not in run:
            for dep in t.dependencies:
                if dep not in state:
                    if dep in index:
                        if in_order:
                            return None
                    else:
                        unknown.setdefault(dep, []).append(t)
            state[tid] = _DONE if st == "done" else _SKIPPED
            continue
        n, p, why, cause = 1, None, None, None
        for dep in t.dependencies:
            x = state.get(dep)
            if x is None:
                if dep in index:
                    if in_order:
                        return None
                    continue  # in a cycle; reported as such
                unknown.setdefault(dep, []).append(t)
                why = why or f"depends on unknown task `{dep}`"
            elif x > n - 1:
                n, p = x + 1, dep
            elif x >= 1 or x == _DONE:
                continue
            elif why is not None:
                continue
            elif x == _SKIPPED:
                dst = index[dep].status
                why = f"dependency `{dep}` has {'status' if dst in SKIP_STATUSES else 'unknown status'} `{dst}`"
            else:
                cause = root[dep]
                why = f"via `{dep}`: {cause}"
        if why is not None:
            blocked[tid] = why
            root[tid] = cause or why
            state[tid] = _BLOCKED
            continue
        state[tid], prev[tid] = n, p
        if n > best_len:
            best, best_len = tid, n
    chain = []
    while best is not None:
        chain.append(best)
        best = prev[best]
    return _Graph(unknown, [], blocked, chain[::-1])


def _kahn(unique: list[Task]) -> tuple[list[Task], list[Task]]:
    """Dependencies-first order and the tasks left in or after cycles (Kahn's algorithm on positions)."""
    pos = {t.id: i for i, t in enumerate(unique)}
    indegree = [0] * len(unique)
    dependents: list[list[int] | None] = [None] * len(unique)
    for i, t in enumerate(unique):
        k = 0
        for dep in t.dependencies:
            j = pos.get(dep)
            if j is not None:
                k += 1
                waiting = dependents[j]
                if waiting is None:
                    dependents[j] = [i]
                else:
                    waiting.append(i)
        indegree[i] = k
    order = [i for i, k in enumerate(indegree) if not k]
    for i in order:  # grows while it is walked
        waiting = dependents[i]
        if waiting:
            for j in waiting:
                indegree[j] -= 1
                if not indegree[j]:
                    order.append(j)
    done = [unique[i] for i in order]
    if len(done) == len(unique):
        return done, []
    return done, [unique[i] for i, k in enumerate(indegree) if k]


def plan(result: CheckResult) -> dict:
    """The --check --json document."""
    tasks = _unique(result.tasks)
    by_status: dict[str, int] = {}
    by_priority = {p.value: 0 for p in Priority}
    by_complexity = {c.value: 0 for c in Complexity} | {"unknown": 0}
    for t in tasks:
        status = t.status or "(none)"
        by_status[status] = by_status.get(status, 0) + 1
        by_priority[t.priority.value] += 1
        by_complexity[t.complexity.value if t.complexity else "unknown"] += 1
    runnable = sum(1 for t in tasks if t.status in RUN_STATUSES and t.id not in result.blocked)
    path = result.critical_path
    return {
        "valid": result.valid,
        "tasks": result.tasks_total,
        "runnable": runnable,
        "errors": [p.as_dict() for p in result.errors],
        "warnings": [p.as_dict() for p in result.warnings],
        "by_status": dict(sorted(by_status.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_priority": by_priority,
        "by_complexity": by_complexity,
        "blocked": [{"task": k, "reason": v} for k, v in result.blocked.items()],
        "critical_path": {"length": len(path), "tasks": list(path)},
    }


def format_plan(result: CheckResult, *, max_blocked: int = 20) -> str:
    """The human --check text: counts, what is blocked and why, the critical path, then each problem."""
    doc = plan(result)
    files = ", ".join(result.files) or "(no file)"
    verdict = "valid" if doc["valid"] else f"INVALID ({_plural(len(result.errors), 'error')})"
    out = [f"{files}: {verdict}"]
    out.append(f"  tasks: {doc['tasks']} in the files, {doc['runnable']} would run, {len(doc['blocked'])} blocked")
    out.append("  status: " + _counts(doc["by_status"]))
    out.append("  priority: " + _counts(doc["by_priority"]))
    out.append("  complexity: " + _counts(doc["by_complexity"]))
    if doc["blocked"]:
        out.append(f"  blocked ({len(doc['blocked'])}):")
        for b in doc["blocked"][:max_blocked]:
            out.append(f"    {b['task']}: {b['reason']}")
        if len(doc["blocked"]) > max_blocked:
            out.append(f"    ... and {len(doc['blocked']) - max_blocked} more (see --json)")
    cp = doc["critical_path"]
    if cp["length"]:
        chain = cp["tasks"] if cp["length"] <= 12 else [*cp["tasks"][:6], "...", *cp["tasks"][-5:]]
        out.append(f"  critical path ({_plural(cp['length'], 'task')}): " + " -> ".join(chain))
    for title, problems in (("errors", result.errors), ("warnings", result.warnings)):
        if problems:
            out.append(f"{title} ({len(problems)}):")
            out.extend(f"  {p}" for p in problems)
    return "\n".join(out)


def _unique(tasks: list[Task]) -> list[Task]:
    """First definition of each id (duplicates are an error, but the plan still counts sensibly)."""
    seen: set[str] = set()
    out = []
    for t in tasks:
        if t.id not in seen:
            seen.add(t.id)
            out.append(t)
    return out


def _counts(d: dict) -> str:
    return " · ".join(f"{k} {v}" for k, v in d.items() if v) or "none"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ----------------------------------------------------------------------------- problems


class _Problems:
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


# ----------------------------------------------------------------------------- reading files


def _read(path: str, problems: _Problems) -> bytes | None:
    problems.file_order.setdefault(path, len(problems.file_order))
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            problems.error("is a directory, not a roadmap file", path)
            return None
        if not stat.S_ISREG(st.st_mode):
            problems.error("not a regular file", path)
            return None
        if st.st_size > MAX_FILE_BYTES:
            problems.error(f"file too large ({st.st_size} bytes; at most {MAX_FILE_BYTES})", path)
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:  # it grew since stat()
            problems.error(f"file too large (at most {MAX_FILE_BYTES} bytes)", path)
            return None
        return data
    except FileNotFoundError:
        problems.error("file not found", path)
    except PermissionError:
        problems.error("cannot read: permission denied", path)
    except OSError as e:
        problems.error(f"cannot read: {e.strerror or e}", path)
    return None


# ----------------------------------------------------------------------------- YAML


class _Doc:
    """Parsed YAML plus where each mapping and sequence item started (1-based lines)."""

    __slots__ = ("data", "map_lines", "seq_lines", "dup_keys")

    def __init__(self, data, map_lines: dict, seq_lines: dict, dup_keys: dict):
        self.data = data
        self.map_lines = map_lines  # id(dict) -> line
        self.seq_lines = seq_lines  # id(list) -> [line of each item] or the composed SequenceNode
        self.dup_keys = dup_keys  # id(dict) -> [(key, line of the later one)]

    def line(self, mapping) -> int | None:
        return self.map_lines.get(id(mapping))

    def item_line(self, seq: list, i: int, default: int | None) -> int | None:
        info = self.seq_lines.get(id(seq))
        if info is None:
            return default
        if isinstance(info, list):
            return info[i] if i < len(info) else default
        return info.value[i].start_mark.line + 1 if i < len(info.value) else default


def _parse_yaml(data: bytes, path: str, problems: _Problems) -> _Doc | None:
    """YAML bytes -> _Doc, or None after recording the problem. Bounded in time and memory."""
    nul = data.find(b"\x00")
    if nul >= 0:
        problems.error("binary file (contains NUL bytes), not YAML text", path, data.count(b"\n", 0, nul) + 1)
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        problems.error(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} cannot be decoded; save the file as UTF-8", path, line
        )
        return None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        if _fast_ok(data, text):
            try:
                return _FastReader(text).read()
            except (_Bail, IndexError):
                pass
        return _libyaml(data, text, path, problems)
    except RecursionError:
        problems.error(f"nesting too deep (more than {MAX_DEPTH} levels)", path)
    except MemoryError:
        problems.error("out of memory while reading the file", path)
    except Exception as e:  # a last guard: a bad file must give a problem, never a traceback
        problems.error(f"cannot read YAML: {type(e).__name__}: {' '.join(str(e).split())}", path)
    return None


# Characters the fast reader accepts anywhere; anything else (tabs, CR, odd line breaks, control
# characters, a BOM inside the text) sends the file to libyaml, which knows every rule about them.
_ASCII_OK = bytes(range(0x20, 0x7F)) + b"\n"
_UNICODE_BAD = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def _fast_ok(data: bytes, text: str) -> bool:
    if text.isascii():
        return not data.translate(None, _ASCII_OK)
    return _UNICODE_BAD.search(text) is None


class _Bail(Exception):
    """The fast reader met YAML outside its subset; libyaml reads the file instead."""


_SC = SafeConstructor()
_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers  # first character -> [(tag, regexp)]
_NUMERIC_FIRST = frozenset("0123456789+-.")  # may start an int, float or timestamp
_WORDS = {  # the other plain scalars YAML 1.1 does not read as text
    **dict.fromkeys(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("~", "null", "Null", "NULL"), None),
}
_NOT_PLAIN_FIRST = frozenset("?:,[]{}#&*!|>'\"%@`<=")  # '<' and '=' start YAML's merge and value keys
# First characters after which a one-line plain scalar is text, unless it is one of _WORDS.
_PLAIN_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_/$()^;")
_SINGLE = re.compile(r"'([^']*(?:''[^']*)*)'(?: +#.*)? *\Z")  # a whole single-quoted value, maybe a comment
_DOUBLE = re.compile(r'"([^"\\]*)"(?: +#.*)? *\Z')  # the same, double-quoted without escapes

# Inside a one-line flow collection: plain text stops at , [ ] { } : # (the reader bails on the last two).
_FLOW_PLAIN = re.compile(r"(?:[^\s\[\]{},:#'\"?&*!|>%@`<=-]|-(?=[^\s\[\]{},]))[^\[\]{},:#]*")
_FLOW_SINGLE = re.compile(r"'([^']*(?:''[^']*)*)'")
_FLOW_DOUBLE = re.compile(r'"([^"\\]*)"')
_FLOW_FIRST_BAD = frozenset("[]{},:#'\"?&*!|>%@`<=")
_FLOW_MAP_HARD = re.compile(r"[{}#'\"]")  # for _FastReader._flow_map: leave these to the full flow reader
_FLOW_SEQ_HARD = re.compile(r"[\[{}#:]")  # the same for _FastReader._flow_seq
_FLOW_NESTED = re.compile(r"\[[^\]]*\[|\][^\[]*\]")  # a list inside a list, or a stray ]
_FLOW_LIST = re.compile(r"\[[^\]]*\]")


def _protect_commas(m: re.Match) -> str:
    return m.group().replace(",", "\x00")  # NUL cannot occur in the text (_fast_ok)


class _FastReader:
    """Reads the YAML that roadmaps are written in, line by line, into plain data, 3-4x faster than libyaml.

    Block mappings and sequences; plain scalars, also over several lines; single-quoted ones, also over
    several lines; double-quoted ones without escapes; flow collections on one line. It accepts only what
    it reads exactly as libyaml would (property tests compare the two, also on broken text) and raises
    _Bail on anything else: anchors, aliases, tags, block scalars, escapes, multi-line flow, odd indents.
    """

    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.n = len(self.lines)
        self.map_lines: dict[int, int] = {}
        self.seq_lines: dict[int, list[int]] = {}
        self.dup_keys: dict[int, list] = {}
        self.keys: dict[str, object] = {}  # key as written -> key
        self.numbers: dict[str, object] = {}  # plain scalar starting like a number -> its value
        self.lists: dict[str, tuple] = {}  # one-line list as written -> items (commands repeat: ["true"])

    def read(self) -> _Doc:
        i = self._next(0)
        if i == self.n:
            raise _Bail
        line = self.lines[i]
        s = line.lstrip(" ")
        if s.startswith("---"):
            if line != s or s != "---" and (s[3] != " " or s[3:].lstrip(" ")[:1] not in ("", "#")):
                raise _Bail
            i = self._next(i + 1)
            if i == self.n:
                raise _Bail
            line = self.lines[i]
            s = line.lstrip(" ")
        if s[0] == "-" and (len(s) == 1 or s[1] == " "):
            raise _Bail
        data, i = self._map(i, len(line) - len(s), None, 1)
        if self._next(i) != self.n:
            raise _Bail
        return _Doc(data, self.map_lines, self.seq_lines, self.dup_keys)

    def _next(self, i: int) -> int:
        lines, n = self.lines, self.n
        while i < n:
            s = lines[i].lstrip(" ")
            if s and s[0] != "#":
                return i
            i += 1
        return i

    def _block(self, i: int, indent: int, seq_same_indent: bool, depth: int):
        """The value that starts on the line after a `key:` or `-` with nothing after it."""
        j = self._next(i)
        if j == self.n:
            return None, j
        line = self.lines[j]
        s = line.lstrip(" ")
        ind = len(line) - len(s)
        is_item = s[0] == "-" and (len(s) == 1 or s[1] == " ")
        if ind > indent:
            return self._seq(j, ind, depth) if is_item else self._map(j, ind, None, depth)
        if ind == indent and is_item and seq_same_indent:
            return self._seq(j, ind, depth)
        return None, j

    def _map(self, i: int, indent: int, first: str | None, depth: int):
        if depth > MAX_DEPTH:
            raise _Bail
        lines, n, keys, plain_first, words = self.lines, self.n, self.keys, _PLAIN_FIRST, _WORDS
        m: dict = {}
        self.map_lines[id(m)] = i + 1
        s = first
        last = None  # (key, text, line index) of the last plain value, which may go on over more lines
        while True:
            if s is None:
                while i < n:
                    line = lines[i]
                    s = line.lstrip(" ")
                    if s and s[0] != "#":
                        break
                    i += 1
                else:
                    return m, i
                ind = len(line) - len(s)
                if ind != indent:
                    if ind < indent:
                        return m, i
                    if last is None:
                        raise _Bail
                    m[last[0]], i = self._plain_lines(last[1], last[2] + 1, indent + 1)
                    last = s = None
                    continue
                if s[0] == "-" and (len(s) == 1 or s[1] == " "):
                    return m, i
            p = s.find(": ")
            if p < 0:
                if s[-1] != ":":
                    raise _Bail
                raw_key, rest = s[:-1], ""
            else:
                raw_key, rest = s[:p], s[p + 2 :].lstrip(" ")
            key = keys.get(raw_key, _Bail)
            if key is _Bail:
                key = self._key(raw_key)
            if key in m:
                self.dup_keys.setdefault(id(m), []).append((key, i + 1))
            s = last = None
            if not rest or rest[0] == "#":
                m[key], i = self._block(i + 1, indent, True, depth + 1)
                continue
            if rest[0] in plain_first:  # the common case, inlined: plain text
                if " #" in rest:
                    rest = rest[: rest.find(" #")].rstrip(" ")
                else:
                    if rest[-1] == " ":
                        rest = rest.rstrip(" ")
                    last = (key, rest, i)
                if rest[-1] == ":" or ": " in rest:
                    raise _Bail
                m[key] = words.get(rest, rest) if len(rest) <= 5 else rest
                i += 1
            elif rest[0] == "[" and (flow := self._flow_seq(rest)) is not None:
                m[key] = flow
                i += 1
            else:
                m[key], text, i = self._value(rest, i, indent + 1)
                if text is not None:
                    last = (key, text, i - 1)

    def _seq(self, i: int, indent: int, depth: int):
        if depth > MAX_DEPTH:
            raise _Bail
        lines, n = self.lines, self.n
        seq: list = []
        item_lines: list[int] = []
        self.seq_lines[id(seq)] = item_lines
        last = None  # (text, line index) of the last plain item, which may go on over more lines
        while i < n:
            line = lines[i]
            s = line.lstrip(" ")
            if not s or s[0] == "#":
                i += 1
                continue
            ind = len(line) - len(s)
            if ind != indent:
                if ind < indent:
                    break
                if last is None:
                    raise _Bail
                seq[-1], i = self._plain_lines(last[0], last[1] + 1, indent + 1)
                last = None
                continue
            if s[0] != "-" or (len(s) > 1 and s[1] != " "):
                break
            rest = s[1:].lstrip(" ")
            item_lines.append(i + 1)
            last = None
            if not rest or rest[0] == "#":
                value, i = self._block(i + 1, indent, False, depth + 1)
            elif rest[0] == "-" and (len(rest) == 1 or rest[1] == " "):
                raise _Bail
            elif rest[0] not in "[{'\"" and (": " in rest or rest[-1] == ":"):
                value, i = self._map(i, indent + len(s) - len(rest), rest, depth + 1)
            else:
                value, text, i = self._value(rest, i, indent + 1)
                if text is not None:
                    last = (text, i - 1)
            seq.append(value)
        return seq, i

    def _key(self, raw: str):
        if not raw or raw[0] in _NOT_PLAIN_FIRST or raw[0] in " -" or raw[-1] == " " or " #" in raw:
            raise _Bail
        key = self._plain(raw)
        self.keys[raw] = key
        return key

    def _value(self, rest: str, i: int, min_col: int):
        """A value that starts on line i after its key or dash -> (value, its text if plain and open, next line)."""
        c = rest[0]
        if c == "[" or c == "{":
            return self._flow(rest, i + 1), None, i + 1
        if c == "'":
            m = _SINGLE.match(rest)
            if m is None:
                value, i = self._single_lines(rest[1:], i, min_col)
                return value, None, i
            return m.group(1).replace("''", "'"), None, i + 1
        if c == '"':
            m = _DOUBLE.match(rest)
            if m is None:
                raise _Bail
            return m.group(1), None, i + 1
        if c in _NOT_PLAIN_FIRST or c == "-" and (len(rest) == 1 or rest[1] == " "):
            raise _Bail
        text = rest
        if " #" in rest:
            rest, text = rest[: rest.find(" #")], None
        rest = rest.rstrip(" ")
        if rest[-1] == ":" or ": " in rest:
            raise _Bail
        return self._plain(rest), text and rest, i + 1

    def _plain_lines(self, text: str, i: int, min_col: int):
        """A plain scalar that goes on over lines i... indented at least min_col -> (value, next line)."""
        lines, n = self.lines, self.n
        parts = [text]
        breaks = 0
        end = i
        while i < n:
            line = lines[i]
            s = line.lstrip(" ")
            if not s:
                breaks += 1
                i += 1
                continue
            if len(line) - len(s) < min_col or s[0] == "#":
                break
            s = s.rstrip(" ")
            if " #" in s or ": " in s or s[-1] == ":":
                raise _Bail
            parts.append("\n" * breaks if breaks else " ")
            parts.append(s)
            breaks = 0
            i = end = i + 1
        return self._plain("".join(parts)), end

    def _single_lines(self, first: str, i: int, min_col: int):
        """A single-quoted scalar opened on line i and closed on a later line -> (value, next line)."""
        if first.replace("''", "").find("'") >= 0:
            raise _Bail  # closed on its first line after all, with something after it
        lines, n = self.lines, self.n
        parts = [first.rstrip(" ")]
        breaks = 0
        i += 1
        while i < n:
            line = lines[i]
            s = line.strip(" ")
            if not s:
                breaks += 1
                i += 1
                continue
            if len(line) - len(line.lstrip(" ")) < min_col:
                raise _Bail
            parts.append("\n" * breaks if breaks else " ")
            breaks = 0
            close = s.find("'")
            while close >= 0 and s[close + 1 : close + 2] == "'":
                close = s.find("'", close + 2)
            if close < 0:
                parts.append(s)
                i += 1
                continue
            after = s[close + 1 :]
            if after and (after[0] != " " or after.lstrip(" ")[0] != "#"):
                raise _Bail
            parts.append(s[:close])
            return "".join(parts).replace("''", "'"), i + 1
        raise _Bail

    def _flow(self, text: str, line: int):
        """A flow collection written on one line, like [a, b] or {id: a, deps: [b]}."""
        simple = self._flow_map(text, line) if text[0] == "{" else self._flow_seq(text)
        if simple is not None:
            return simple
        value, pos = self._flow_node(text, 0, line, 0)
        tail = text[pos:]
        if tail and (tail[0] != " " or tail.lstrip(" ")[:1] not in ("", "#")):
            raise _Bail
        return value

    def _flow_seq(self, text: str) -> list | None:
        """The common one-line list, [a, b] or ["true"], read with a split; None for anything else."""
        seen = self.lists.get(text)
        if seen is not None:
            return list(seen)
        close = text.find("]")
        tail = text[close + 1 :]
        if close < 0 or tail and (tail[0] != " " or tail.lstrip(" ")[:1] not in ("", "#")):
            return None
        inner = text[1:close]
        if _FLOW_SEQ_HARD.search(inner):
            return None
        if not inner or inner.isspace():
            return []
        plain_first, words, bad_first = _PLAIN_FIRST, _WORDS, _FLOW_FIRST_BAD
        out = []
        for item in inner.split(","):
            item = item.strip(" ")
            if not item:
                return None
            c = item[0]
            if c in plain_first:
                out.append(words.get(item, item) if len(item) <= 5 else item)
            elif c == '"':
                body = item[1:-1]
                if len(item) < 2 or item[-1] != '"' or '"' in body or "\\" in body:
                    return None
                out.append(body)
            elif c == "'":
                body = item[1:-1]
                if len(item) < 2 or item[-1] != "'" or "'" in body.replace("''", ""):
                    return None
                out.append(body.replace("''", "'"))
            elif c in bad_first or c == "-" and (len(item) == 1 or item[1] == " "):
                return None
            else:
                out.append(self._plain(item))
        if len(self.lists) < 4096:
            self.lists[text] = tuple(out)
        return out

    def _flow_map(self, text: str, line: int) -> dict | None:
        """The common one-line task, {id: a, title: Some text, dependencies: [b, c]}, read with splits;
        None when it holds anything else (quotes, nesting, comments), for _flow_node to read."""
        close = text.rfind("}")
        inner = text[1:close]
        tail = text[close + 1 :]
        if tail and (tail[0] != " " or tail.lstrip(" ")[:1] not in ("", "#")) or _FLOW_MAP_HARD.search(inner):
            return None
        lists = "[" in inner
        if lists:
            if _FLOW_NESTED.search(inner):
                return None
            inner = _FLOW_LIST.sub(_protect_commas, inner)
        m: dict = {}
        self.map_lines[id(m)] = line
        if not inner or inner.isspace():
            return m
        keys, plain_first, words, bad_first = self.keys, _PLAIN_FIRST, _WORDS, _FLOW_FIRST_BAD
        for part in inner.split(","):
            raw_key, colon, value = part.partition(":")
            if not colon or value[:1] != " ":
                return None
            raw_key = raw_key.strip(" ")
            value = value.strip(" ")
            if not value or ":" in value or "]" in raw_key or "[" in raw_key:
                return None
            key = keys.get(raw_key, _Bail)
            if key is _Bail:
                key = self._key(raw_key)
            if key in m:
                self.dup_keys.setdefault(id(m), []).append((key, line))
            c = value[0]
            if c == "[":
                if not lists or value[-1] != "]":
                    return None
                body = value[1:-1]
                if not body or body.isspace():
                    m[key] = []
                    continue
                items = []
                for item in body.split("\x00"):
                    item = item.strip(" ")
                    if not item or item[0] in bad_first or item[0] == "-" and (len(item) == 1 or item[1] == " "):
                        return None
                    items.append(self._plain(item))
                m[key] = items
            elif c in plain_first:
                if "]" in value:
                    return None
                m[key] = words.get(value, value) if len(value) <= 5 else value
            elif c in bad_first or c == "-" and (len(value) == 1 or value[1] == " ") or "]" in value:
                return None
            else:
                m[key] = self._plain(value)
        return m

    def _flow_node(self, text: str, pos: int, line: int, depth: int):
        n = len(text)
        while pos < n and text[pos] == " ":
            pos += 1
        if pos == n:
            raise _Bail
        c = text[pos]
        if c == "[" or c == "{":
            if depth >= MAX_DEPTH:
                raise _Bail
            closing = "]" if c == "[" else "}"
            out: list | dict = [] if c == "[" else {}
            if c == "{":
                self.map_lines[id(out)] = line
            pos += 1
            while pos < n and text[pos] == " ":
                pos += 1
            if pos < n and text[pos] == closing:
                return out, pos + 1
            while True:
                if c == "[":
                    item, pos = self._flow_node(text, pos, line, depth + 1)
                    out.append(item)
                else:
                    key, pos = self._flow_node(text, pos, line, depth + 1)
                    if isinstance(key, (list, dict)) or text[pos : pos + 2] != ": ":
                        raise _Bail
                    if key in out:
                        self.dup_keys.setdefault(id(out), []).append((key, line))
                    out[key], pos = self._flow_node(text, pos + 2, line, depth + 1)
                while pos < n and text[pos] == " ":
                    pos += 1
                if pos == n:
                    raise _Bail
                if text[pos] == closing:
                    return out, pos + 1
                if text[pos] != ",":
                    raise _Bail
                pos += 1
        if c == "'":
            m = _FLOW_SINGLE.match(text, pos)
            if m is None:
                raise _Bail
            return m.group(1).replace("''", "'"), m.end()
        if c == '"':
            m = _FLOW_DOUBLE.match(text, pos)
            if m is None:
                raise _Bail
            return m.group(1), m.end()
        m = _FLOW_PLAIN.match(text, pos)
        if m is None:
            raise _Bail
        raw = m.group().rstrip(" ")
        return self._plain(raw), pos + len(raw)

    def _plain(self, v: str):
        """Resolve a plain scalar exactly as PyYAML's SafeLoader does."""
        if v[0] in _NUMERIC_FIRST:
            known = self.numbers.get(v, _Bail)
            if known is not _Bail:
                return known
            value = v
            for tag, regexp in _IMPLICIT[v[0]]:
                if regexp.match(v):
                    try:
                        value = _SC.yaml_constructors[tag](_SC, ScalarNode(tag, v))
                    except (ValueError, OverflowError):
                        raise _Bail from None
                    break
            self.numbers[v] = value
            return value
        return _WORDS.get(v, v) if len(v) <= 5 else v


_BaseLoader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class _LineLoader(_BaseLoader):
    """SafeLoader that remembers where each mapping and sequence started."""

    def __init__(self, stream):
        super().__init__(stream)
        self.map_lines: dict[int, int] = {}
        self.seq_lines: dict[int, SequenceNode] = {}
        self.dup_keys: dict[int, list] = {}

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as e:  # e.g. `!!int abc`, `!!bool maybe`, a date like 2025-02-30
            value = node.value if isinstance(node, ScalarNode) else node.tag
            raise ConstructorError(None, None, f"cannot read value {value!r}: {e}", node.start_mark) from None


def _construct_map(loader: _LineLoader, node: MappingNode):
    data: dict = {}
    loader.map_lines[id(data)] = node.start_mark.line + 1
    yield data
    merges = any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value)
    value = loader.construct_mapping(node)
    if not merges and len(value) < len(node.value):
        seen: set = set()
        for k, _ in node.value:
            key = loader.construct_object(k)
            if key in seen:
                loader.dup_keys.setdefault(id(data), []).append((key, k.start_mark.line + 1))
            seen.add(key)
    data.update(value)


def _construct_seq(loader: _LineLoader, node: SequenceNode):
    data: list = []
    loader.seq_lines[id(data)] = node
    yield data
    data.extend(loader.construct_sequence(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)

_PAIR = re.compile(rb"[\[{][\]}]")
_BRACKETS_DELETE = bytes(b for b in range(256) if b not in b"[]{}")
_COMPACT_RUN = re.compile(rb"[ ?-]{1000}")


def _may_be_deep(data: bytes) -> bool:
    """False when cheap byte scans prove the nesting stays under about 4000 levels."""
    brackets = data.translate(None, _BRACKETS_DELETE)
    passes = 0
    while brackets:
        shorter = _PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):
            break
        if passes == 64 or len(brackets) - len(shorter) < len(brackets) // 8:
            return True  # peeling pairs is not getting far: let the exact check decide
        brackets, passes = shorter, passes + 1
    flow = passes + brackets.count(b"[") + brackets.count(b"{")
    # Each block level needs a deeper column, reached by indentation or a run of `- ` / `? ` indicators:
    # without a 1000-character run of those, block nesting stays under about 2000 levels.
    return flow > 2000 or _COMPACT_RUN.search(data) is not None


def _libyaml(data: bytes, text: str, path: str, problems: _Problems) -> _Doc | None:
    try:
        if _may_be_deep(data):  # libyaml's C composer recurses: keep it far from the end of the C stack
            deep = _too_deep_at(text)
            if deep is not None:
                problems.error(f"nesting deeper than {MAX_DEPTH} levels", path, deep)
                return None
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                problems.error("empty roadmap: expected a mapping with `tasks:` or `epics:`", path, 1)
                return None
            bad = _check_nodes(node)
            if bad is not None:
                problems.error(bad[0], path, bad[1])
                return None
            value = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        problems.error(_yaml_message(e, text), path, e.problem_mark.line + 1 if e.problem_mark else None)
        return None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        problems.error(f"invalid YAML: character {e.character!r} is not allowed ({e.reason})", path, line)
        return None
    except yaml.YAMLError as e:
        problems.error(f"invalid YAML: {' '.join(str(e).split())}", path)
        return None
    return _Doc(value, loader.map_lines, loader.seq_lines, loader.dup_keys)


def _too_deep_at(text: str) -> int | None:
    """Line where the event stream nests deeper than MAX_DEPTH, or None. libyaml's parser does not recurse."""
    loader = _BaseLoader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    finally:
        loader.dispose()
    return None


def _check_nodes(root) -> tuple[str, int | None] | None:
    """Refuse recursive aliases, documents that aliases blow up ("billion laughs") and deep nesting."""
    state: dict[int, int] = {id(root): 1}  # node id -> 1 on the current path, 2 finished
    height: dict[int, int] = {}
    size: dict[int, int] = {}

    def kids(node):
        if isinstance(node, SequenceNode):
            return node.value
        if isinstance(node, MappingNode):
            return [n for pair in node.value for n in pair]
        return ()

    stack = [(root, iter(kids(root)))]
    while stack:
        node, it = stack[-1]
        for child in it:
            s = state.get(id(child))
            if s == 1:
                return "recursive alias (a value contains itself)", child.start_mark.line + 1
            if s is None:
                state[id(child)] = 1
                stack.append((child, iter(kids(child))))
                break
        else:
            stack.pop()
            children = kids(node)
            h = 1 + max((height[id(c)] for c in children), default=0)
            if h > MAX_DEPTH + 1:
                return f"nesting deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
            height[id(node)] = h
            n = size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if n > 10 * len(state) + 100_000:
                message = f"aliases expand this value to {n} values, from {len(state)} written; refusing"
                return f"{message} (a 'billion laughs' document?)", node.start_mark.line + 1
            state[id(node)] = 2
    return None


def _yaml_message(e: yaml.MarkedYAMLError, text: str) -> str:
    problem = " ".join((e.problem or str(e)).split())
    mark = e.problem_mark
    msg = f"invalid YAML: {problem}"
    if mark is not None:
        msg += f" (column {mark.column + 1})"
    if isinstance(e, ConstructorError) and "could not determine a constructor" in problem:
        tag = re.search(r"'([^']*)'", problem)
        tag = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "?"
        msg = f"unsupported YAML tag `{tag}`: roadmaps are read safely and tags that build objects are refused"
    elif "cannot start any token" in problem and mark is not None:
        lines = text.split("\n", mark.line + 1)
        ch = lines[mark.line][mark.column : mark.column + 1] if mark.line < len(lines) else ""
        if ch:
            msg += f"; a plain value cannot start with {ch!r}: quote the value"
    elif e.context and e.context_mark is not None and e.context_mark.line != getattr(mark, "line", None):
        msg += f"; {' '.join(e.context.split())} at line {e.context_mark.line + 1}"
    return msg


# ----------------------------------------------------------------------------- building tasks


class _Builder:
    """Turns parsed files into Tasks, applying each file's defaults and recording every problem."""

    def __init__(self, problems: _Problems):
        self.p = problems
        self.tasks: list[Task] = []
        self.total = 0  # task items seen, valid or not
        self.first_seen: dict[str, Task] = {}  # task id -> its first definition
        self.merged_defaults: dict = {}
        self.executor: object | None = None
        self.executor_place: str | None = None
        self.agents: dict[str, int] | None = None
        self.mapping_deps: set[str] = set()  # ids of tasks whose `dependencies:` was a mapping
        self._suggestions: dict[tuple, str | None] = {}
        # per file, set by add_file
        self.file = ""
        self.doc: _Doc | None = None
        self.defaults: dict = {}
        self._folders: dict[str, str] = {}  # cwd as written -> folder, for the current file

    # -- files and layouts

    def add_file(self, path: str, doc: _Doc) -> None:
        self.file, self.doc = path, doc
        self._folders = {}
        root = doc.data
        if not isinstance(root, dict):
            self.p.error(f"the file must be a mapping with `tasks:` or `epics:`, not {_kind(root)}", path, 1)
            return
        line = doc.line(root) or 1
        self._unknown_keys(root, TOP_FIELDS, "top-level key", line)
        self.defaults = self._defaults(root.get("defaults"), line)
        if "executor" in root:
            self._executor(root["executor"], line, "executor")
        elif "executor" in self.defaults:
            self._executor(self.defaults["executor"], line, "defaults.executor")
        if "agents" in root:
            self._agents(root["agents"], line)
        if not any(k in root for k in TOP_FIELDS):
            self.p.warn("no `tasks:` or `epics:` in this file", path, line)
        for key, value in root.items():
            if key == "tasks":
                self._task_list(value, line, None, None, "`tasks:`")
            elif key == "epics":
                self._epics(value, line)

    def _epics(self, epics, line: int) -> None:
        if epics is None:
            return
        if not isinstance(epics, list):
            self.p.error(f"`epics:` must be a list of epics, not {_kind(epics)}", self.file, line)
            return
        for i, epic in enumerate(epics):
            eline = self.doc.item_line(epics, i, line)
            if not isinstance(epic, dict):
                self.p.error(
                    f"epic #{i + 1} must be a mapping with `id:` and `milestones:`, not {_kind(epic)}", self.file, eline
                )
                continue
            eline = self.doc.line(epic) or eline
            eid = self._group_id(epic, "epic", i, eline)
            self._unknown_keys(epic, EPIC_FIELDS, "epic key", eline)
            for key, value in epic.items():  # in the order written: that is the roadmap order
                if key == "tasks":
                    self._task_list(value, eline, eid, None, f"`tasks:` of epic {eid}")
                elif key == "milestones":
                    self._milestones(value, eid, eline)

    def _milestones(self, milestones, eid: str | None, eline: int) -> None:
        if milestones is None:
            return
        if not isinstance(milestones, list):
            self.p.error(f"`milestones:` of epic {eid} must be a list, not {_kind(milestones)}", self.file, eline)
            return
        for j, ms in enumerate(milestones):
            mline = self.doc.item_line(milestones, j, eline)
            if not isinstance(ms, dict):
                self.p.error(f"milestone #{j + 1} of epic {eid} must be a mapping, not {_kind(ms)}", self.file, mline)
                continue
            mline = self.doc.line(ms) or mline
            mid = self._group_id(ms, "milestone", j, mline)
            self._unknown_keys(ms, MILESTONE_FIELDS, "milestone key", mline)
            self._task_list(ms.get("tasks"), mline, eid, mid, f"`tasks:` of milestone {mid}")

    def _group_id(self, group: dict, kind: str, i: int, line: int) -> str | None:
        gid = group.get("id")
        if gid is None or isinstance(gid, (dict, list)) or gid == "":
            self.p.error(f"{kind} #{i + 1} has no `id:`", self.file, line)
            return None
        return str(gid)

    def _task_list(self, items, line: int, epic: str | None, milestone: str | None, what: str) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            self.p.error(f"{what} must be a list of tasks, not {_kind(items)}", self.file, line)
            return
        doc = self.doc
        map_lines = doc.map_lines
        append = self.tasks.append
        order = self.total
        self.total += len(items)
        for i, raw in enumerate(items, order):
            if type(raw) is not dict:
                tline = doc.item_line(items, i - order, line)
                self.p.error(f"task #{i - order + 1} of {what} must be a mapping, not {_kind(raw)}", self.file, tline)
                continue
            task = self._task(raw, map_lines.get(id(raw)) or doc.item_line(items, i - order, line), epic, milestone, i)
            if task is not None:
                append(task)

    # -- one task

    def _task(self, raw: dict, line: int | None, epic, milestone, order: int) -> Task | None:
        file, err = self.file, self.p.error
        tid = raw.get("id")
        if type(tid) is not str or not tid.strip():
            if tid is None or tid == "":
                err("task has no `id:`", file, line)
            elif isinstance(tid, str):
                err("task id is blank", file, line)
            elif isinstance(tid, (int, float)) and not isinstance(tid, bool):
                err(f"task id must be a string; write id: '{tid}'", file, line)
            else:
                err(f"task id must be a string, not {_kind(tid)}", file, line)
            return None
        t = Task(id=tid, file=file, line=line, order=order, epic=epic, milestone=milestone)
        first = self.first_seen.setdefault(tid, t)
        if first is not t:
            err(f"duplicate task id (first defined at {first.place()})", file, line, tid)
        if self.doc.dup_keys:
            for key, kline in self.doc.dup_keys.get(id(raw), ()):
                self.p.warn(
                    f"field `{key}` is given twice (again at line {kline}); the last one is used", file, line, tid
                )
        handlers, statuses, priorities = _FIELD_HANDLERS, _STATUS_WORDS, _PRIORITIES
        for key, value in raw.items():
            if type(value) is str:  # the usual values, read here without a call
                if key == "id":
                    continue
                if key == "title" or key == "description":
                    setattr(t, key, value)
                    continue
                if key == "command" and value and not value.isspace():
                    t.command = value
                    continue
                if key == "status" and value in statuses:
                    t.status = value
                    continue
                if key == "priority" and value in priorities:
                    t.priority = priorities[value]
                    continue
            handler = handlers.get(key)
            if handler is not None:
                handler(self, t, value)
            elif key != "id":
                t.meta[key] = value
                if type(key) is str:
                    hint = self._suggest(key, TASK_FIELDS)
                    if hint:
                        self.p.warn(f"unknown field `{key}` (kept as data); did you mean `{hint}`?", file, line, tid)
        self._finish_task(t, raw)
        return t

    def _finish_task(self, t: Task, raw: dict) -> None:
        d = self.defaults
        get = raw.get
        if d:  # None in the task means "not set" too
            if get("timeout") is None and "timeout" in d:
                t.timeout = d["timeout"]
            if get("retries") is None and "retries" in d:
                t.retries = d["retries"]
            if get("priority") is None and "priority" in d:
                t.priority = d["priority"]
            if get("cwd") is None and "cwd" in d:
                t.cwd = d["cwd"]
            if get("role") is None and "role" in d:
                t.role = d["role"]
            if d.get("env"):
                t.env = {**d["env"], **t.env}
        if t.complexity_score is not None:
            derived = _complexity_of(t.complexity_score)
            if t.complexity is None:
                t.complexity = derived
            elif t.complexity is not derived:
                self.p.warn(
                    f"complexity `{t.complexity.value}` disagrees with complexity_score {t.complexity_score} "
                    f"({derived.value}); `complexity` is used for routing, the score for the timeout",
                    t.file, t.line, t.id,
                )  # fmt: skip
        if t.command is None and t.call is None and get("timeout") is None and "timeout" not in d:
            t.timeout = self._executor_timeout(t)
        if t.cwd is not None:
            folder = self._folders.get(t.cwd)
            if folder is None:
                folder = self._folders[t.cwd] = os.path.join(os.path.dirname(t.file), os.path.expanduser(t.cwd))
            t.cwd = folder
        if t.call is not None:
            if t.command is not None:
                self.p.error("has both `command` and `call`; a task runs one of them", t.file, t.line, t.id)
        elif t.args or t.kwargs:
            self.p.warn("`args`/`kwargs` only apply to `call:` tasks (ignored)", t.file, t.line, t.id)

    def _executor_timeout(self, t: Task) -> float:
        table = self.defaults.get("executor_timeouts") or EXECUTOR_TIMEOUTS
        score = t.complexity_score
        if score is not None:
            bucket = (
                "simple" if score <= 3 else "moderate" if score <= 6 else "complex" if score <= 8 else "very_complex"
            )
        else:
            bucket = t.complexity.value if t.complexity else "unknown"
        return table.get(bucket, EXECUTOR_TIMEOUTS[bucket])

    def _bad(self, t: Task, message: str) -> None:
        self.p.error(message, t.file, t.line, t.id)

    def f_title(self, t: Task, v) -> None:
        t.title = v if type(v) is str else self._text(t, "title", v)

    def f_description(self, t: Task, v) -> None:
        t.description = v if type(v) is str else self._text(t, "description", v)

    def _text(self, t: Task, name: str, v) -> str:
        if type(v) is str:
            return v
        if v is None:
            return ""
        if isinstance(v, (dict, list)):
            self._bad(t, f"`{name}` must be text, not {_kind(v)}")
            return ""
        return str(v)

    def f_command(self, t: Task, v) -> None:
        if type(v) is str:
            if not v or v.isspace():
                self._bad(t, "`command` is empty")
            t.command = v
        elif type(v) is list and v:
            for bad in v:
                if type(bad) is not str:
                    hint = f"; quote it: '{bad}'" if isinstance(bad, (int, float)) else ""
                    self._bad(t, f"`command` list items must be strings; {bad!r} is {_kind(bad)}{hint}")
                    return
            t.command = v
        elif v == []:
            self._bad(t, "`command` is an empty list")
        else:
            self._bad(t, f"`command` must be a string (run by the shell) or a list of strings (argv), not {_kind(v)}")

    def f_call(self, t: Task, v) -> None:
        if type(v) is not str or not _CALL.match(v):
            self._bad(t, f"`call` must look like 'package.module:function', got {v!r}")
            return
        t.call = v

    def f_args(self, t: Task, v) -> None:
        if isinstance(v, list):
            t.args = v
        elif v is not None:
            self._bad(t, f"`args` must be a list, not {_kind(v)}")

    def f_kwargs(self, t: Task, v) -> None:
        if isinstance(v, dict) and all(type(k) is str for k in v):
            t.kwargs = v
        elif v is not None:
            self._bad(t, f"`kwargs` must be a mapping with string keys, not {_kind(v)}")

    def f_status(self, t: Task, v) -> None:
        s = _STATUS_WORDS.get(v) if type(v) is str else None
        if s is not None:
            t.status = s
            return
        if v is None:
            return
        if isinstance(v, (dict, list)):
            self._bad(t, f"`status` must be text, not {_kind(v)}")
            return
        s = "_".join(str(v).lower().replace("-", " ").split())
        t.status = s
        if s not in RUN_STATUSES and s not in SKIP_STATUSES:
            self.p.warn(f"unknown status '{s}' (task skipped)", t.file, t.line, t.id)

    def f_dependencies(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is list:
            for bad in v:
                if type(bad) is not str:
                    hint = f"; task ids are strings: write '{bad}'" if isinstance(bad, (int, float)) else ""
                    self._bad(t, f"`dependencies` items must be task ids (strings); {bad!r} is {_kind(bad)}{hint}")
                    return
            t.dependencies = v if len(v) < 2 or len(set(v)) == len(v) else list(dict.fromkeys(v))
        elif type(v) is dict and all(type(k) is str for k in v):
            # Seen in the wild as `dependencies: {depends_on: [...]}`: its keys are read as task ids, and the
            # unknown-dependency warning that follows says so.
            t.dependencies = list(v)
            self.mapping_deps.add(t.id)
        else:
            self._bad(t, f"`dependencies` must be a list of task ids, not {_kind(v)}")

    def f_priority(self, t: Task, v) -> None:
        if v is None:
            return
        p = _PRIORITIES.get(v) or _PRIORITIES.get(v.strip().lower()) if type(v) is str else None
        if p is None:
            self._bad(t, f"`priority` must be one of {', '.join(_PRIORITIES)}; got {v!r}")
        else:
            t.priority = p

    def f_complexity(self, t: Task, v) -> None:
        if v is None:
            return
        c = _COMPLEXITIES.get(v.strip().lower()) if type(v) is str else None
        if c is None:
            self._bad(
                t, f"`complexity` must be one of {', '.join(_COMPLEXITIES)} (or give complexity_score 1-10); got {v!r}"
            )
        else:
            t.complexity = c

    def f_complexity_score(self, t: Task, v) -> None:
        if type(v) is int and 1 <= v <= 10:
            t.complexity_score = v
        elif v is not None:
            self._bad(t, f"`complexity_score` must be a whole number from 1 to 10; got {v!r}")

    def f_timeout(self, t: Task, v) -> None:
        if v is None:
            return
        seconds, problem = _duration(v)
        if problem:
            self._bad(t, f"`timeout` {problem}")
        else:
            t.timeout = seconds

    def f_retries(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is int and v >= 0:
            t.retries = v
        else:
            self._bad(t, f"`retries` must be a whole number >= 0; got {v!r}")

    def f_env(self, t: Task, v) -> None:
        env, problem = _env(v)
        if problem:
            self._bad(t, f"`env` {problem}")
        else:
            t.env = env

    def f_cwd(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is str and v:
            t.cwd = v
        else:
            self._bad(t, f"`cwd` must be a folder path (text); got {v!r}")

    def f_role(self, t: Task, v) -> None:
        if type(v) is str and v.strip():
            t.role = v
        elif v is not None:
            self._bad(t, f"`role` must be a name (text); got {v!r}")

    def f_affinity(self, t: Task, v) -> None:
        if v is None:
            return
        if isinstance(v, (dict, list)):
            self._bad(t, f"`affinity` must be a name, not {_kind(v)}")
        else:
            t.affinity = str(v)  # wins over `set_id`, whichever comes first

    def f_set_id(self, t: Task, v) -> None:
        if v is None:
            return
        if isinstance(v, (dict, list)):
            self._bad(t, f"`set_id` must be a name, not {_kind(v)}")
        elif t.affinity is None:
            t.affinity = str(v)

    def f_exit_criteria(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is str:
            t.exit_criteria = [v]
        elif type(v) is list:
            t.exit_criteria = [c if type(c) is str else _criterion_text(c) for c in v]
        else:
            self._bad(t, f"`exit_criteria` must be a list of text, not {_kind(v)}")

    def f_epic(self, t: Task, v) -> None:
        if t.epic is None and v is not None and not isinstance(v, (dict, list)):
            t.epic = str(v)
        else:
            t.meta["epic"] = v

    def f_milestone(self, t: Task, v) -> None:
        if t.milestone is None and v is not None and not isinstance(v, (dict, list)):
            t.milestone = str(v)
        else:
            t.meta["milestone"] = v

    # -- file-level settings

    def _defaults(self, d, line: int) -> dict:
        file = self.file
        if d is None:
            return {}
        if not isinstance(d, dict):
            self.p.error(f"`defaults:` must be a mapping, not {_kind(d)}", file, line)
            return {}
        line = self.doc.line(d) or line
        out: dict = {}
        for key, v in d.items():
            where = f"defaults.{key}"
            if key == "timeout":
                seconds, problem = _duration(v)
                if problem:
                    self.p.error(f"`{where}` {problem}", file, line)
                else:
                    out["timeout"] = seconds
            elif key == "retries":
                if type(v) is int and v >= 0:
                    out["retries"] = v
                else:
                    self.p.error(f"`{where}` must be a whole number >= 0; got {v!r}", file, line)
            elif key == "priority":
                p = _PRIORITIES.get(v.strip().lower()) if type(v) is str else None
                if p is None:
                    self.p.error(f"`{where}` must be one of {', '.join(_PRIORITIES)}; got {v!r}", file, line)
                else:
                    out["priority"] = p
            elif key == "env":
                env, problem = _env(v)
                if problem:
                    self.p.error(f"`{where}` {problem}", file, line)
                else:
                    out["env"] = env
            elif key in ("cwd", "role"):
                if type(v) is str and v.strip():
                    out[key] = v
                else:
                    self.p.error(f"`{where}` must be text; got {v!r}", file, line)
            elif key == "executor":
                out["executor"] = v
            elif key == "executor_timeouts":
                table = self._executor_timeouts(v, line)
                if table is not None:
                    out["executor_timeouts"] = table
            else:
                hint = self._suggest(key, DEFAULTS_FIELDS) if type(key) is str else None
                more = f"; did you mean `{hint}`?" if hint else f"; known keys: {', '.join(DEFAULTS_FIELDS)}"
                self.p.warn(f"unknown key `{where}` (ignored){more}", file, line)
        for key, v in out.items():
            if key == "env":
                self.merged_defaults["env"] = {**self.merged_defaults.get("env", {}), **v}
            else:
                self.merged_defaults[key] = v
        return out

    def _executor_timeouts(self, v, line: int) -> dict | None:
        if not isinstance(v, dict):
            self.p.error(
                f"`defaults.executor_timeouts` must be a mapping like {{simple: 10m}}, not {_kind(v)}", self.file, line
            )
            return None
        table = dict(EXECUTOR_TIMEOUTS)
        ok = True
        for key, value in v.items():
            if key not in EXECUTOR_TIMEOUTS:
                self.p.error(
                    f"`defaults.executor_timeouts` key {key!r} must be one of {', '.join(EXECUTOR_TIMEOUTS)}",
                    self.file,
                    line,
                )
                ok = False
                continue
            seconds, problem = _duration(value)
            if problem:
                self.p.error(f"`defaults.executor_timeouts.{key}` {problem}", self.file, line)
                ok = False
            else:
                table[key] = seconds
        return table if ok else None

    def _executor(self, v, line: int, where: str) -> None:
        """Checked by the executors module, which reads it at run time: a bad one is reported now, with its place."""
        from runner import executors

        line = self._line_of(v, line)
        try:
            executors.parse(v, where=where)
        except Exception as e:  # ExecutorError: one line naming the setting
            self.p.error(" ".join(str(e).split()) or type(e).__name__, self.file, line)
            return
        if self.executor is not None and self.executor != v:
            self.p.warn(f"`executor` is also defined at {self.executor_place}; this one is used", self.file, line)
        self.executor, self.executor_place = v, f"{self.file}:{line}"

    def _line_of(self, v, default: int) -> int:
        if isinstance(v, dict):
            return self.doc.line(v) or default
        if isinstance(v, list) and v:
            return self.doc.item_line(v, 0, default) or default
        return default

    def _agents(self, v, line: int) -> None:
        line = self._line_of(v, line)
        if not isinstance(v, dict):
            self.p.error(
                f"`agents:` must map roles to agent counts, like {{worker: 4}}, not {_kind(v)}", self.file, line
            )
            return
        agents = {}
        for role, n in v.items():
            if type(role) is not str or type(n) is not int or n < 0:
                self.p.error(
                    f"`agents:` entry {role!r}: {n!r} must be a role name and a whole number >= 0", self.file, line
                )
            else:
                agents[role] = n
        self.agents = {**(self.agents or {}), **agents}

    # -- checks across tasks

    def _unknown_keys(self, mapping: dict, known: tuple, what: str, line: int) -> None:
        """Other keys are allowed and ignored; only one that looks like a misspelt known key is warned."""
        for key in mapping:
            if key in known or type(key) is not str:
                continue
            hint = self._suggest(key, known)
            if hint:
                self.p.warn(f"unknown {what} `{key}`; did you mean `{hint}`?", self.file, line)

    def _suggest(self, key: str, known: tuple) -> str | None:
        cached = self._suggestions.get((key, known), _Bail)
        if cached is not _Bail:
            return cached
        low = key.lower()
        hint = FIELD_ALIASES.get(low) if known is TASK_FIELDS else None
        if hint is None and low != key and low in known:
            hint = low
        if hint is None:
            close = difflib.get_close_matches(low, known, n=1, cutoff=0.8)
            hint = close[0] if close else None
        self._suggestions[(key, known)] = hint
        return hint


_FIELD_HANDLERS = {name: getattr(_Builder, f"f_{name}") for name in TASK_FIELDS if hasattr(_Builder, f"f_{name}")}


def _cycles(index: dict[str, Task]) -> tuple[list[list[str]], set[str]]:
    """One cycle per strongly connected group of tasks, each as [a, b, ..., a], and every task in one.

    Iterative Tarjan, so a long chain cannot exhaust the stack."""
    num: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for start in index:
        if start in num:
            continue
        work = [(start, iter(index[start].dependencies))]
        num[start] = low[start] = len(num)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for dep in it:
                if dep not in index:
                    continue
                if dep not in num:
                    num[dep] = low[dep] = len(num)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(index[dep].dependencies)))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], num[dep])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == num[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in index[node].dependencies:
                        groups.append(group)
    cycles = []
    members: set[str] = set()
    for group in groups:
        members.update(group)
        first = min(group, key=lambda tid: index[tid].order)
        cycles.append(_shortest_cycle(first, set(group), index))
    cycles.sort(key=lambda c: index[c[0]].order)
    return cycles, members


def _shortest_cycle(start: str, members: set[str], index: dict[str, Task]) -> list[str]:
    if start in index[start].dependencies:
        return [start, start]
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for dep in index[node].dependencies:
            if dep == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start]
            if dep in members and dep not in prev and dep != start:
                prev[dep] = node
                queue.append(dep)
    return [start, start]  # unreachable for a strongly connected group


# ----------------------------------------------------------------------------- value checks


def _duration(v) -> tuple[float | None, str | None]:
    """A timeout as written -> (seconds or None for `off`, problem)."""
    if v is False:
        return None, None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v > 0 and v != float("inf"):
            return float(v), None
        return None, f"must be a positive number of seconds (use `timeout: off` for none); got {v!r}"
    if type(v) is str:
        s = v.replace(" ", "").lower()
        if s in ("off", "none"):
            return None, None
        if _NUMBER.match(s):
            seconds = float(s)
        else:
            m = _DURATION.match(s) if s else None
            if m is None or not any(m.groups()):
                return None, f"must be seconds or a duration like 90s, 10m, 2h, 1h30m; got {v!r}"
            d, h, mi, se = (float(g) if g else 0.0 for g in m.groups())
            seconds = d * 86400 + h * 3600 + mi * 60 + se
        if seconds > 0:
            return seconds, None
        return None, f"must be positive (use `timeout: off` for none); got {v!r}"
    return None, f"must be seconds or a duration like 90s, 10m, 2h, 1h30m, not {_kind(v)}"


def _env(v) -> tuple[dict[str, str], str | None]:
    if v is None:
        return {}, None
    if not isinstance(v, dict):
        return {}, f"must be a mapping of NAME: value, not {_kind(v)}"
    env = {}
    for k, val in v.items():
        if type(k) is not str or not k or "=" in k or "\x00" in k:
            return {}, f"name {k!r} is not a valid environment variable name"
        if type(val) is str:
            env[k] = val
        elif isinstance(val, bool):
            env[k] = "true" if val else "false"
        elif isinstance(val, (int, float)):
            env[k] = str(val)
        else:
            return {}, f"value of {k} must be text or a number, not {_kind(val)} (quote it)"
    return env, None


def _complexity_of(score: int) -> Complexity:
    return Complexity.SIMPLE if score <= 3 else Complexity.MODERATE if score <= 6 else Complexity.COMPLEX


def _criterion_text(c) -> str:
    if isinstance(c, dict):
        return "; ".join(f"{k}: {v}" for k, v in c.items())
    return "" if c is None else str(c)


def _kind(v) -> str:
    if v is None:
        return "empty (null)"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "text"
    if isinstance(v, (int, float)):
        return "a number"
    return f"a {type(v).__name__}"
