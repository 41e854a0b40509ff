"""Which tasks make up a batch (`--only`, `--with-deps`, `--max-tasks`): pure logic, no I/O.

Every task of the roadmap ends up in exactly one place of the `Selection`:

    tasks ──--only──► selected ──+ dependencies (with_deps)──► candidates
      │                                                         │
      └─► excluded (count)          done ◄── already succeeded ─┤
                                 blocked ◄── cannot run here ───┤
                                deferred ◄── over max_tasks ────┤
                                     run ◄── the rest ──────────┘

Rules:
- A pattern matches a task id, an epic id or a milestone id (`fnmatch` globs, case-sensitive), or is
  `field=value`: the Task attribute of that name if it has one, else `meta[field]` (`set_id` falls
  back to `affinity`, where the loader may have put it), compared as strings; the value may be a
  glob, a list field matches if any item does. A task is selected if any pattern matches it; no
  pattern selects every task.
- A task is done if its id is in `done` or its roadmap status is `done`; done tasks never run and
  satisfy the tasks that depend on them.
- `with_deps` adds the not-done dependencies of every selected task that could run, transitively.
  It does not follow the dependencies of a task whose status keeps it from running: they would
  not make it runnable.
- A task runs only if its status is runnable and each dependency is done or runs in the same batch;
  otherwise it is blocked, with a reason naming the first dependency (in the order listed) at fault.
- `max_tasks`: repeatedly take the most urgent runnable task (priority, then roadmap order) whose
  dependencies are done or already taken. That is the order in which the scheduler hands out ready
  tasks (before aging and routing), so a batch of N is what an unlimited run would start first. An
  urgent task behind a
  less urgent dependency waits until that dependency's own turn comes (priorities are not
  inherited); what does not fit is deferred to a later batch, not blocked.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import re
from collections.abc import Callable, Iterable
from dataclasses import field
from enum import Enum

from runner.errors import UsageError
from runner.model import record, Task

_GLOB = re.compile(r"[*?\[]")
_TASK_FIELDS = frozenset(f.name for f in dataclasses.fields(Task))


class PatternError(UsageError, ValueError):
    """An `--only` pattern is malformed or matches no task (usage error, exit 2)."""


@record
class Selection:
    """One batch: what runs, what cannot and why. Every list is in roadmap order."""

    run: list[str]  # task ids to run in this batch
    blocked: dict[str, str]  # selected task id -> why it cannot run in this batch
    excluded: int  # tasks not selected (by `only`, nor pulled in as a dependency)
    deferred: list[str] = field(default_factory=list)  # could run, left for a later batch by max_tasks
    done: list[str] = field(default_factory=list)  # selected, but already succeeded: not run again


def select(
    tasks: list[Task],
    *,
    only: Iterable[str] = (),
    with_deps: bool = False,
    max_tasks: int | None = None,
    done: set[str] | frozenset[str] = frozenset(),
) -> Selection:
    """Choose the batch; raises PatternError (a ValueError) for a pattern malformed or matching nothing."""
    if max_tasks is not None and max_tasks < 0:
        raise ValueError(f"max_tasks must be 0 or more, not {max_tasks}")
    roadmap = _in_roadmap_order(tasks)
    by_id = {t.id: t for t in roadmap}
    finished = set(done) | {t.id for t in roadmap if t.status == "done"}

    chosen = _match(roadmap, list(only))
    if with_deps:
        chosen = _with_dependencies(chosen, by_id, finished)

    live = [by_id[i] for i in chosen if i not in finished]
    runnable, blocked = _resolve(live, by_id, finished)
    run = set(_cap(runnable, by_id, finished, roadmap, max_tasks))

    sel = Selection(run=[], blocked={}, excluded=len(by_id) - len(chosen))
    chosen_set = set(chosen)
    for t in roadmap:
        i = t.id
        if i not in chosen_set:
            continue
        if i in run:
            sel.run.append(i)
        elif i in blocked:
            sel.blocked[i] = blocked[i]
        elif i in finished:
            sel.done.append(i)
        else:
            sel.deferred.append(i)
    return sel


def _in_roadmap_order(tasks: list[Task]) -> list[Task]:
    """The tasks by `order`, ties as listed; the loader's list already is, so usually no sort."""
    if all(a.order <= b.order for a, b in zip(tasks, tasks[1:])):
        return tasks
    return sorted(tasks, key=lambda t: t.order)


# -- patterns ---------------------------------------------------------------------------------------


def _match(tasks: list[Task], patterns: list[str]) -> list[str]:
    """Ids of the tasks any pattern matches (all of them if there is no pattern)."""
    if not patterns:
        return [t.id for t in tasks]
    tests = [_compile(p) for p in patterns]
    hit = [False] * len(tests)
    left = len(tests)  # patterns that have matched nothing yet
    chosen = []
    for t in tasks:
        picked = False
        for k, test in enumerate(tests):
            if picked and hit[k]:
                continue  # the task is in; only patterns that matched nothing yet still need a test
            if test(t):
                picked = True
                if not hit[k]:
                    hit[k] = True
                    left -= 1
            if picked and left == 0:
                break
        if picked:
            chosen.append(t.id)
    for p, h in zip(patterns, hit):
        if not h:
            what = "no task has that field value" if "=" in p else "no task, epic or milestone has that id"
            raise PatternError(f"--only {p!r} matches nothing: {what}")
    return chosen


def _text_test(pattern: str) -> Callable[[str], bool]:
    if _GLOB.search(pattern):
        return re.compile(fnmatch.translate(pattern)).match  # type: ignore[return-value]
    return pattern.__eq__


def _compile(pattern: str) -> Callable[[Task], bool]:
    """A predicate for one `--only` pattern; raises PatternError if it is malformed."""
    if "=" in pattern:
        name, _, value = pattern.partition("=")
        name, value = name.strip(), value.strip()
        if not name:
            raise PatternError(f"--only {pattern!r}: field name missing before '='")
        same = _text_test(value)
        return lambda t: any(same(v) for v in _field_texts(t, name))
    if not pattern.strip():
        raise PatternError("--only '': empty pattern")
    same = _text_test(pattern)
    return lambda t: same(t.id) or (t.epic is not None and same(t.epic)) or (
        t.milestone is not None and same(t.milestone)
    )


def _field_texts(task: Task, name: str) -> list[str]:
    """The field's value as strings to compare with: none if unset, one per item of a list."""
    if name in _TASK_FIELDS and name != "meta":
        value = getattr(task, name)
    elif name in task.meta:
        value = task.meta[name]
    elif name == "set_id":
        value = task.affinity
    else:
        return []
    items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    return [_as_text(v) for v in items if v is not None]


def _as_text(value: object) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"  # as YAML writes it
    return str(value)


# -- dependencies -----------------------------------------------------------------------------------


def _with_dependencies(chosen: list[str], by_id: dict[str, Task], finished: set[str]) -> list[str]:
    """`chosen` plus the not-done dependencies they need, transitively, in discovery order."""
    seen = set(chosen)
    out = list(chosen)
    stack = [i for i in chosen if i not in finished and by_id[i].runnable_status]
    while stack:
        for d in by_id[stack.pop()].dependencies:
            if d in seen or d in finished or d not in by_id:
                continue
            seen.add(d)
            out.append(d)
            if by_id[d].runnable_status:
                stack.append(d)
    return out


def _resolve(live: list[Task], by_id: dict[str, Task], finished: set[str]) -> tuple[list[str], dict[str, str]]:
    """Split the not-done candidates into those that can run in the batch and those blocked (why)."""
    members = {t.id for t in live}
    waiting: dict[str, int] = {}  # task id -> candidate dependencies not yet known to be runnable
    dependents: dict[str, list[str]] = {}  # task id -> candidates that depend on it (once per listing)
    stuck: set[str] = set()  # cannot run whatever else runs: bad status, or a dependency outside
    ready = []
    for t in live:
        i = t.id
        inside = 0
        ok = t.runnable_status
        for d in t.dependencies:
            if d in finished:
                continue
            if d in members:
                inside += 1
                if d in dependents:
                    dependents[d].append(i)
                else:
                    dependents[d] = [i]
            else:
                ok = False
        if not ok:
            stuck.add(i)
        elif inside:
            waiting[i] = inside
        else:
            ready.append(i)

    runnable = []
    while ready:
        i = ready.pop()
        runnable.append(i)
        for u in dependents.get(i, ()):
            if u in waiting:  # stuck tasks have no count: they never become ready
                waiting[u] -= 1
                if waiting[u] == 0:
                    ready.append(u)

    # Blocked because something upstream is stuck; the rest of the blocked hang on a cycle.
    behind_stuck = set(stuck)
    stack = list(stuck)
    while stack:
        for u in dependents.get(stack.pop(), ()):
            if u not in behind_stuck:
                behind_stuck.add(u)
                stack.append(u)

    can_run = set(runnable)
    blocked = {}
    for t in live:
        if t.id not in can_run:
            blocked[t.id] = _reason(t, by_id, finished, members, behind_stuck)
    return runnable, blocked


def _reason(t: Task, by_id: dict[str, Task], finished: set[str], members: set[str], behind_stuck: set[str]) -> str:
    if not t.runnable_status:
        return f"status is {t.status!r}"
    cycle_dep = None
    for d in t.dependencies:
        if d in finished:
            continue
        if d not in by_id:
            return f"depends on {d}, which is not in the roadmap"
        if d not in members:
            return f"depends on {d}, which is not selected and not done"
        if d in behind_stuck:
            dep = by_id[d]
            if not dep.runnable_status:
                return f"depends on {d}, whose status is {dep.status!r}"
            return f"depends on {d}, which is blocked"
        if cycle_dep is None:
            cycle_dep = d
    return f"depends on {cycle_dep}, which is blocked by a dependency cycle"


def _cap(
    runnable: list[str], by_id: dict[str, Task], finished: set[str], roadmap: list[Task], max_tasks: int | None
) -> list[str]:
    """At most `max_tasks` of the runnable tasks, most urgent first, dependencies before dependents."""
    if max_tasks is None or max_tasks >= len(runnable):
        return runnable
    waiting: dict[str, int] = {}  # task id -> dependencies not yet taken
    dependents: dict[str, list[str]] = {}  # task id -> runnable tasks that depend on it
    for i in runnable:
        inside = [d for d in by_id[i].dependencies if d not in finished]  # all runnable, or `i` would not be
        waiting[i] = len(inside)
        for d in inside:
            dependents.setdefault(d, []).append(i)
    members = set(runnable)
    place = {t.id: n for n, t in enumerate(roadmap) if t.id in members}

    def urgency(i: str) -> tuple[int, int, str]:
        return (by_id[i].priority.rank, place[i], i)

    heap = [urgency(i) for i in runnable if waiting[i] == 0]
    heapq.heapify(heap)
    taken: list[str] = []
    while heap and len(taken) < max_tasks:
        i = heapq.heappop(heap)[-1]
        taken.append(i)
        for u in dependents.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(heap, urgency(u))
    return taken
