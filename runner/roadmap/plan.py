"""The --check plan of what would run: plan() for --json, format_plan() for people."""

from __future__ import annotations

from collections import Counter
from operator import attrgetter

from runner.model import RUN_STATUSES, Complexity, Priority, Task
from runner.roadmap.check import CheckResult


def plan(result: CheckResult, executor=None) -> dict:
    """The --check --json document. executor: the --executor setting, over the roadmap's `executor:`."""
    tasks, doc = _tally(result)
    # every task's complexity, and whether runner.roadmap.complexity inferred it
    doc["complexity"] = [
        {"task": t.id, "complexity": t.complexity.value if t.complexity else "unknown", "inferred": t.complexity_inferred}
        for t in tasks
    ]
    doc["blocked"] = [{"task": k, "reason": v} for k, v in result.blocked.items()]
    doc["critical_path"] = {"length": len(result.critical_path), "tasks": list(result.critical_path)}
    doc.update(_fleet(result, tasks, executor))
    return doc


def _tally(result: CheckResult) -> tuple[list[Task], dict]:
    """(the tasks, first definition of each id; the counts of the --json document), in C-level counting loops:
    a roadmap of 100,000 tasks is counted in a few milliseconds, not a tenth of a second."""
    tasks = result.tasks if result.valid else _unique(result.tasks)  # a repeated id is always an error
    kinds = Counter(map(attrgetter("status", "priority", "complexity", "complexity_inferred"), tasks))
    statuses: Counter = Counter()
    priorities: Counter = Counter()
    levels: Counter = Counter()
    inferred = would_run = 0
    for (status, priority, level, was_inferred), k in kinds.items():
        statuses[status or "(none)"] += k
        would_run += k if status in RUN_STATUSES else 0
        priorities[priority] += k
        levels[level] += k
        inferred += k if was_inferred else 0
    by_complexity = {c.value: levels.get(c, 0) for c in Complexity}
    if levels.get(None):
        by_complexity["unknown"] = levels[None]
    blocked = result.blocked
    return tasks, {
        "valid": result.valid,
        "tasks": result.tasks_total,
        "runnable": would_run - len(blocked),  # a blocked task is one of those with a status that runs
        "errors": [p.as_dict() for p in result.errors],
        "warnings": [p.as_dict() for p in result.warnings],
        "by_status": dict(sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_priority": {p.value: priorities.get(p, 0) for p in Priority},
        "by_complexity": by_complexity,
        "complexity_inferred": inferred,
    }


def _fleet(result: CheckResult, tasks: list[Task], executor) -> dict:
    """The fleet's part of the plan: the pools and who uses them, and which executor each agent task gets."""
    roadmap = result.roadmap
    if roadmap is None:
        return {}
    out: dict = {}
    pools = roadmap.settings.get("resources")
    if pools:
        users = {name: [t.id for t in tasks if name in t.meta.get("uses", ())] for name in pools}
        out["resources"] = {name: {"slots": pool.describe(), "used_by": users[name]} for name, pool in pools.items()}
    agent_tasks = [t for t in tasks if t.command is None and t.call is None]
    if not agent_tasks:
        return out
    from runner.coding.executors import ExecutorError
    from runner.roadmap.fleet import fleet_of

    try:
        fleet = fleet_of(roadmap, executor)
    except ExecutorError:
        return out  # a bad --executor: reported with the programs check
    if not fleet:
        return out  # no executor at all: the run says so
    out["executors"] = {
        "defined": {name: ex.source or ex.program for name, ex in fleet.executors.items()},
        "tasks": [{"task": t.id, **fleet.planned(t, t.role)} for t in agent_tasks],
    }
    return out


def format_plan(result: CheckResult, *, max_blocked: int = 20, max_tasks: int = 40, executor=None, path_note: str = "",
                agents: str = "") -> str:
    """The human --check text: counts, what is blocked and why, the critical path, the fleet, then each problem.

    path_note: said beside the critical path (the roadmap's, whatever the options) when a run with these options
    would not follow it, e.g. one that stops before it starts for want of an executor. agents: the pool a run
    with these options starts, and what gave it (runner.manager.options.decide_pool)."""
    tasks, doc = _tally(result)
    blocked = list(result.blocked.items())
    path = result.critical_path
    doc.update(_fleet(result, tasks, executor))
    files = ", ".join(result.files) or "(no file)"
    verdict = "valid" if doc["valid"] else f"INVALID ({_plural(len(result.errors), 'error')})"
    out = [f"{files}: {verdict}"]
    out.append(f"  tasks: {doc['tasks']} in the files, {doc['runnable']} would run, {len(blocked)} blocked")
    out.append("  status: " + _counts(doc["by_status"]))
    out.append("  priority: " + _counts(doc["by_priority"]))
    inferred = f" ({doc['complexity_inferred']} inferred)" if doc["complexity_inferred"] else ""
    out.append("  complexity: " + _counts(doc["by_complexity"]) + inferred)
    if tasks and doc["complexity_inferred"]:
        for t in tasks[:max_tasks]:
            level = t.complexity.value if t.complexity else "unknown"
            out.append(f"    {t.id}: {level}{' (inferred)' if t.complexity_inferred else ''}")
        if len(tasks) > max_tasks:
            out.append(f"    ... and {len(tasks) - max_tasks} more (see --json)")
    if blocked:
        out.append(f"  blocked ({len(blocked)}):")
        for task_id, reason in blocked[:max_blocked]:
            out.append(f"    {task_id}: {reason}")
        if len(blocked) > max_blocked:
            out.append(f"    ... and {len(blocked) - max_blocked} more (see --json)")
    if path:
        chain = list(path) if len(path) <= 12 else [*path[:6], "...", *path[-5:]]
        note = f", {path_note}" if path_note else ""
        out.append(f"  critical path ({_plural(len(path), 'task')}{note}): " + " -> ".join(chain))
    for name, r in doc.get("resources", {}).items():
        out.append(f"  resource {name}: {r['slots']}; used by {_plural(len(r['used_by']), 'task')}")
    if "executors" in doc:
        out.append(f"  executors ({_plural(len(doc['executors']['defined']), 'executor')}):")
        rows = doc["executors"]["tasks"]
        for e in rows[:max_tasks]:
            out.append(f"    {e['task']}: {_executor_text(e)}")
        if len(rows) > max_tasks:
            out.append(f"    ... and {len(rows) - max_tasks} more (see --json)")
    if agents:
        out.append(f"  agents: {agents}")
    for title, problems in (("errors", result.errors), ("warnings", result.warnings)):
        if problems:
            out.append(f"{title} ({len(problems)}):")
            out.extend(f"  {p}" for p in problems)
    return "\n".join(map(_one_line, out))


def _one_line(line: str) -> str:
    """Each line of the plan stays one: a newline or a tab in an id, a path or a message is spelt out (the
    CLI spells out the other control characters), so that no roadmap text reads as a line of its own."""
    return line if line.isprintable() else line.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _executor_text(e: dict) -> str:
    if "by_role" in e:
        roles = ", ".join(f"{role} {name}" for role, name in e["by_role"].items())
        return f"by the role of the agent that takes it: {roles}; any other {e['otherwise'] or '(none: an error)'}"
    if e["executor"] is None:
        return "none (give `executor:` or `executors:`)"
    why = {"task": "its own `executor:`", "run": "the run's `executor:`"}.get(e["why"], f"`executors:` for its {e['why']}")
    return f"{e['executor']} ({why})"


def _unique(tasks: list[Task]) -> list[Task]:
    """First definition of each id (duplicates are an error, but the plan still counts sensibly)."""
    ids = list(map(attrgetter("id"), tasks))
    if len(set(ids)) == len(ids):
        return tasks  # the common case, in C-level loops
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
