"""Tasks that join or leave a running Scheduler: the roadmap was edited while the run goes.

Functions of the scheduler's state, called through Scheduler.add_task / drop_task (the state is the
scheduler's; this module only keeps the edit rules apart). Only a task that has not started in this
run may be added, replaced or dropped; runner.manager.live decides when, from what the roadmap now says.
"""

from __future__ import annotations

from runner.model import FINAL_STATES, Task, TaskState

# `sched` below: the runner.manager.scheduler.Scheduler whose state these functions change


def can_add(sched, task_id: str) -> bool:
    """Whether add_task would take the task: it is new, or known and has not started."""
    old = sched.state.get(task_id)
    return old is None or (sched.unstarted(task_id) and old is not TaskState.SUCCEEDED)


def lease_problem(sched, task: Task) -> str | None:
    """Why the task's `uses:` cannot be leased in this run (None: it can, or it uses nothing)."""
    uses = tuple(task.meta.get("uses") or ())
    if not uses:
        return None
    gate = sched._gate
    if gate is None:
        return f"it uses {', '.join(uses)} and this run leases no resources; the next run takes it"
    unknown = [u for u in uses if u not in gate.leases.pools]
    if unknown:
        return f"it uses {', '.join(unknown)}, which this run did not start with; the next run takes it"
    return None


def add_task(sched, task: Task, now: float, files: tuple[str, ...] = (), review_rounds: int | None = None) -> bool:
    """Add a task, or take a new definition of one that has not started; False when it has started.

    It waits for its dependencies like the tasks of the set-up: one that failed, was skipped or is
    unknown skips it. A task whose status says not to run is skipped for it. Its `files:` claims, its
    review and its `uses:` leases are the new definition's (lease_problem says first whether they can be).
    """
    old = sched.state.get(task.id)
    if not can_add(sched, task.id):
        return False
    if old is not None:
        if old is TaskState.QUEUED and task.id in sched._where:
            sched._leave(task.id)
        if task.id in sched._file_waiting:
            sched._file_waiting.remove(task.id)
        if old not in FINAL_STATES:
            sched._active -= 1
        for d in sched.tasks[task.id].dependencies:
            if task.id in sched._dependents.get(d, ()):
                sched._dependents[d].remove(task.id)
    sched.tasks[task.id] = task
    _set(sched._files, task.id, tuple(files) or None)
    _set(sched.review_rounds, task.id, review_rounds)
    # its `uses:` need no entry: the lease gate reads them from sched.tasks (runner.manager.leasing.UsesOf)
    sched._prefer.pop(task.id, None)
    sched._pending.pop(task.id, None)
    sched.reason.pop(task.id, None)
    sched._dependents.setdefault(task.id, [])
    for d in task.dependencies:
        sched._dependents.setdefault(d, []).append(task.id)
    sched.state[task.id] = TaskState.WAITING  # a fresh entry, as in the set-up
    sched._active += 1
    if not task.runnable_status:
        done = task.status == "done"  # as in the set-up: its dependents may go on
        sched._end(task.id, TaskState.SKIPPED, f"status: {task.status}", cascade=not done)
        for dep in sched._dependents[task.id] if done else ():
            if sched.state.get(dep) is TaskState.WAITING:
                sched._pending[dep] -= 1
                if sched._pending[dep] == 0:
                    sched._move(dep, TaskState.QUEUED)
                    sched._enter(dep, now)
        return True
    pending = 0
    for d in task.dependencies:
        dep = sched.state.get(d)
        if dep is None:
            sched._end(task.id, TaskState.SKIPPED, f"unknown dependency {d}")
            return True
        if dep is TaskState.SUCCEEDED or (dep is TaskState.SKIPPED and sched.tasks[d].status == "done"):
            continue
        if dep in FINAL_STATES:
            sched._skip_for(task.id, d)
            return True
        pending += 1
    sched._pending[task.id] = pending
    if pending == 0:
        sched._move(task.id, TaskState.QUEUED)
        sched._enter(task.id, now)
    return True


def _set(table: dict, key: str, value) -> None:
    """table[key] = value, or no entry for None."""
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def drop_task(sched, task_id: str, reason: str) -> bool:
    """A task that has not started leaves the run, skipped for reason (its dependents for it)."""
    state = sched.state.get(task_id)
    if state not in (TaskState.WAITING, TaskState.QUEUED) or not sched.unstarted(task_id):
        return False
    if sched._where.get(task_id, None) is not None:
        sched._leave(task_id)
    if task_id in sched._file_waiting:
        sched._file_waiting.remove(task_id)
    sched._end(task_id, TaskState.SKIPPED, reason)
    return True

