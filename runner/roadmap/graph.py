"""Checks across tasks, on the dependency graph: unknown dependencies, cycles, blocked tasks, critical path."""

from __future__ import annotations

from collections import deque

from runner.model import record, RUN_STATUSES, SKIP_STATUSES, Task


@record
class _Graph:
    """What the dependency graph says: unknown ids, cycles, blocked tasks, the critical path."""

    unknown: dict[str, list[Task]]  # dependency id that no task has -> the tasks naming it
    cycles: list[list[str]]  # each as [a, b, ..., a]
    blocked: dict[str, str]  # task id -> reason, roadmap order
    critical_path: list[str]  # longest chain of runnable tasks, first to run first


def analyse(tasks: list[Task], index: dict[str, Task] | None = None) -> _Graph:
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
        n, why, cause = 1, None, None
        for dep in t.dependencies:
            x = state.get(dep)
            if x is None:
                if dep in index:
                    if in_order:
                        return None
                    continue  # in a cycle; reported as such
                unknown.setdefault(dep, []).append(t)
                why = why or f"depends on unknown task `{dep}`"
            elif x >= n:
                n = x + 1
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
        state[tid] = n
        if n > best_len:
            best, best_len = tid, n
    return _Graph(unknown, [], blocked, _chain(best, state, index))


def _chain(last: str | None, state: dict[str, int], index: dict[str, Task]) -> list[str]:
    """The longest chain that ends at last, first task first: from each task, the first of its dependencies
    whose chain is one shorter (the one _walk took its length from)."""
    chain = []
    while last is not None:
        chain.append(last)
        n = state[last]
        last = next((dep for dep in index[last].dependencies if state.get(dep) == n - 1), None) if n > 1 else None
    return chain[::-1]


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
