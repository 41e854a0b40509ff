"""Tasks that join or leave a running Scheduler: the roadmap was edited while the run goes.

Part of runner.manager.scheduler.Scheduler (a mixin: the state it changes is the scheduler's). Only a
task that has not started in this run may be added, replaced or dropped; runner.manager.live decides
when, from what the roadmap file now says.
"""

from __future__ import annotations

from runner.model import FINAL_STATES, Task, TaskState


class LiveQueue:
    """add_task / drop_task for runner.manager.live (mixed into Scheduler)."""

    def unstarted(self, task_id: str) -> bool:
        """The task is known and no attempt of it has started in this run."""
        return task_id in self.state and not self.attempts.get(task_id) and task_id not in self._holder

    def add_task(self, task: Task, now: float) -> bool:
        """Add a task, or take a new definition of one that has not started; False when it has started.

        It waits for its dependencies like the tasks of the set-up: one that failed, was skipped or is
        unknown skips it. A task whose status says not to run is skipped for it.
        """
        old = self.state.get(task.id)
        if old is not None:
            if not self.unstarted(task.id) or old is TaskState.SUCCEEDED:
                return False
            if old is TaskState.QUEUED and task.id in self._where:
                self._leave(task.id)
            if task.id in self._file_waiting:
                self._file_waiting.remove(task.id)
            if old not in FINAL_STATES:
                self._active -= 1
            for d in self.tasks[task.id].dependencies:
                if task.id in self._dependents.get(d, ()):
                    self._dependents[d].remove(task.id)
        self.tasks[task.id] = task
        self._prefer.pop(task.id, None)
        self._pending.pop(task.id, None)
        self.reason.pop(task.id, None)
        self._dependents.setdefault(task.id, [])
        for d in task.dependencies:
            self._dependents.setdefault(d, []).append(task.id)
        self.state[task.id] = TaskState.WAITING  # a fresh entry, as in the set-up
        self._active += 1
        if not task.runnable_status:
            done = task.status == "done"  # as in the set-up: its dependents may go on
            self._end(task.id, TaskState.SKIPPED, f"status: {task.status}", cascade=not done)
            for dep in self._dependents[task.id] if done else ():
                if self.state.get(dep) is TaskState.WAITING:
                    self._pending[dep] -= 1
                    if self._pending[dep] == 0:
                        self._move(dep, TaskState.QUEUED)
                        self._enter(dep, now)
            return True
        pending = 0
        for d in task.dependencies:
            dep = self.state.get(d)
            if dep is None:
                self._end(task.id, TaskState.SKIPPED, f"unknown dependency {d}")
                return True
            if dep is TaskState.SUCCEEDED or (dep is TaskState.SKIPPED and self.tasks[d].status == "done"):
                continue
            if dep in FINAL_STATES:
                self._skip_for(task.id, d)
                return True
            pending += 1
        self._pending[task.id] = pending
        if pending == 0:
            self._move(task.id, TaskState.QUEUED)
            self._enter(task.id, now)
        return True

    def drop_task(self, task_id: str, reason: str) -> bool:
        """A task that has not started leaves the run, skipped for reason (its dependents for it)."""
        state = self.state.get(task_id)
        if state not in (TaskState.WAITING, TaskState.QUEUED) or not self.unstarted(task_id):
            return False
        if self._where.get(task_id, None) is not None:
            self._leave(task_id)
        if task_id in self._file_waiting:
            self._file_waiting.remove(task_id)
        self._end(task_id, TaskState.SKIPPED, reason)
        return True

