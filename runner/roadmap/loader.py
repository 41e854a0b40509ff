"""Roadmap files -> a validated Roadmap, and the --check plan of what would run.

    paths ──read (bytes, sha256)──▶ text ──yamlread.parse_yaml──▶ Doc: plain data + line tables
                                                        │  yamlfast for the common subset,
                                                        │  yamllib: libyaml (bounded) for everything else,
                                                        │  PyYAML imported only then
                                                        ▼
             build.Builder: layouts (tasks:, epics → milestones → tasks), defaults, executor, agents;
                            buildtask.TaskBuilder: each task's fields
                                                        ▼
             graph.analyse: unknown dependencies, cycles, blocked tasks, critical path
                                                        ▼
             check.CheckResult ──▶ Roadmap (when valid) · plan.plan() · plan.format_plan()

Nothing here raises for bad input except load_roadmap(), which raises RoadmapError. The public names of
the modules above are importable from here, as they were when all of this was one module.
"""

from __future__ import annotations

import gc
import os
import stat

from runner.roadmap.hashing import sha256
from runner.errors import RoadmapError
from runner.model import Roadmap, Task
from runner.roadmap.plan import format_plan, plan
from runner.roadmap.build import Builder
from runner.roadmap.check import MAX_PROBLEMS, CheckResult, Problems
from runner.roadmap.fields import (
    DEFAULTS_FIELDS,
    EPIC_FIELDS,
    EXECUTOR_TIMEOUTS,
    FIELD_ALIASES,
    MILESTONE_FIELDS,
    TASK_FIELDS,
    TOP_FIELDS,
)
from runner.roadmap.fields import parse_duration as _duration  # noqa: F401  (tests)
from runner.roadmap.graph import analyse
from runner.roadmap.graph import analyse as _analyse  # noqa: F401  (tests)
from runner.roadmap.yamlfast import MAX_DEPTH
from runner.roadmap.yamlfast import Bail as _Bail, Doc as _Doc, FastReader as _FastReader, fast_ok as _fast_ok  # noqa: F401
from runner.roadmap.yamlread import parse_yaml

__all__ = [
    "CheckResult", "DEFAULTS_FIELDS", "EPIC_FIELDS", "EXECUTOR_TIMEOUTS", "FIELD_ALIASES", "FREEZE_BYTES", "HASH_BYTES",
    "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_PROBLEMS", "MILESTONE_FIELDS", "TASK_FIELDS", "TOP_FIELDS",
    "blocked_tasks", "format_plan", "load", "load_roadmap", "plan",
]  # fmt: skip

MAX_FILE_BYTES = 128 * 1024 * 1024  # a roadmap bigger than this is refused before parsing
FREEZE_BYTES = 1 << 18  # from this much roadmap text (~6k plain tasks) on, load() freezes what it built (see load):
#                        the collection beforehand costs ~2 ms; 20,000 `call:` tasks (0.8 MB) save ~25 ms of collections
HASH_BYTES = 1 << 20  # from this much on, the text is hashed by OpenSSL's sha256 (its import costs ~3 ms)


def __getattr__(name: str):
    if name == "_LineLoader":  # for tests; imported on demand, as it imports PyYAML
        from runner.roadmap.yamllib import LineLoader

        return LineLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    problems = Problems()
    if not paths:
        problems.error("no roadmap file given")
    builder = Builder(problems)
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
    if size >= HASH_BYTES:
        import hashlib  # OpenSSL's: ~3 ms to import, then 4 times faster (6 ms instead of 20 for 100,000 tasks)

        digest = hashlib.sha256()
    else:
        digest = sha256()
    files.reverse()
    while files:  # each file's bytes and document are let go once its tasks are built: ~20 MB at 100,000 tasks
        path, data = files.pop()
        digest.update(data)
        doc = parse_yaml(data, path, problems)
        del data
        if doc is not None:
            builder.add_file(path, doc)
        del doc
    builder.rate_unrated()
    builder.finish()
    graph = analyse(builder.tasks, builder.first_seen)
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
            agents_place=builder.agents_place and "{}:{}".format(*builder.agents_place),
            settings=builder.settings,
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
    return analyse(tasks).blocked


# ----------------------------------------------------------------------------- reading files


def _read(path: str, problems: Problems) -> bytes | None:
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
