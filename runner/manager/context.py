"""What the loop and the components of a run share: one object, each attribute naming its owner.

Only the owner changes an attribute; everyone may read it. The loop (runner.manager.run) owns the
agent table, the reservations and the scheduler, as DESIGN.md asks: a component changes them only
through the calls the loop would make (reserve, release, finish), on the loop's own thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runner.manager.events import TASK_QUEUED, TASK_SKIPPED
from runner.manager.pool import Pool
from runner.manager.telemetry import esc, event, json_value
from runner.model import Priority, Task, TaskState

# A task:queued line's end, by priority, as the encoder writes it.
_QUEUED_TAILS = {p: f',"priority":{json_value(p.value)}}}\n' for p in Priority}

# At most this many characters of feedback go into a retry's prompt and WVO_FEEDBACK.
FEEDBACK_CAP = 6000


class RunContext:
    """The shared state of one run."""

    def __init__(self, roadmap, options, reporter, executor, roles: dict[str, int]):
        self.roadmap = roadmap  # the roadmap; the live roadmap component appends and replaces tasks
        self.tasks: dict[str, Task] = roadmap.by_id()  # task id -> Task; the live roadmap component edits it
        self.opt = options  # runner.manager.options.RunOptions; nobody changes it
        self.reporter = reporter  # the CLI's Reporter; everyone reports through it, nobody prints
        self.executor = executor  # coding.executors.Executor or None; nobody changes it
        self.roles = roles  # role -> agents at the start; nobody changes it
        self.pool = Pool()  # agent table + reservations (agent id -> task id); the loop
        self.backend = None  # agents.backend interface (local or ray); set and stopped by the loop
        self.sched = None  # runner.manager.scheduler.Scheduler; built and driven by the loop
        self.ledger = None  # runner.manager.ledger.Ledger; outcomes (records, commits, closes)
        self.run_id = 0  # the ledger's id of this run; the loop
        self.folder = ""  # the run folder in the state dir; the loop
        self.logs = ""  # its logs/ folder; the loop
        self.ws: dict = {}  # task id -> coding.settings.Workspace, worktree/checks/files tasks; the landing queue,
        #                     and the live roadmap for a task that joins (the same decision, landing_queue.workspace_settings)
        self.ws_info: dict[str, dict] = {}  # task id -> what its last attempt's workspace did; landing queue, review
        self.records: dict[tuple[str, int], dict] = {}  # (task, attempt) -> its times, for telemetry; the loop, outcomes
        self.queued_at: dict[str, float] = {}  # task id -> wall time it last entered the queue; note_change
        self.cooling: dict[str, float] = {}  # agent id -> monotonic end of its cool-down; set by outcomes and
        #                                       accounts, lifted by the loop's hand-out
        self.interrupted_by: int | None = None  # the first SIGINT / SIGTERM; the loop's signal handling
        self.total = 0  # tasks the run accounts for; the loop, the live roadmap adds joiners
        self.released = False  # a task became ready since the last commit; note_change sets, the loop clears
        # events emitted and not yet written; emit appends, the loop flushes. Each a dict, or, when the reporter
        # reads no events (Reporter.reads_events), possibly a str: the JSON lines of events written as text
        self.pending: list = []
        self.pending_since = 0.0  # monotonic time the oldest pending event was emitted; emit
        self._feedback: dict[str, list[tuple[int, str]]] = {}  # task id -> (attempt, why it failed); feedback_note
        self.outcomes = None  # runner.manager.outcomes.Outcomes: records an attempt's end; the loop
        self.flush: Callable[[], None] = lambda: None  # commit, then report what is pending; the loop
        self.wake: Callable[[], None] = lambda: None  # wake the loop from another thread; the loop

    def members(self) -> list[Task]:
        """The tasks this run accounts for: the whole roadmap, or the selected batch."""
        if self.opt.selected is None:
            return self.roadmap.tasks
        return [t for t in self.roadmap.tasks if t.id in self.opt.selected]

    def emit(self, name: str, ts: float | None = None, **fields) -> None:
        """An event, written and reported at the next group commit (after the ledger's)."""
        if not self.pending:
            self.pending_since = time.monotonic()
        ev = event(name, **fields)
        if ts is not None:
            ev["ts"] = ts  # the moment the figures in the event were taken, so wait_s matches the timestamps
        self.pending.append(ev)

    def note_changes(self, wall: float | None = None, only: set[str] | frozenset[str] | None = None) -> None:
        """Announce every task the scheduler newly queued or skipped (of `only`, when given)."""
        changes = self.sched.drain_changes()
        if not changes:
            return
        wall = time.time() if wall is None else wall
        state_of, queued_at, tasks, pending = self.sched.state, self.queued_at, self.tasks, self.pending
        queued = TaskState.QUEUED
        # Nobody reads the dicts: each task:queued is written as its line, as the encoder would write it.
        head = None if self.reporter.reads_events else f'{{"ts":{json_value(wall)},"event":"{TASK_QUEUED}","task":'
        tails = _QUEUED_TAILS
        for task_id in changes:
            if only is not None and task_id not in only:
                continue
            if state_of[task_id] is queued:  # the common case, inlined: a task queued (20,000 at a large run's start)
                self.released = True
                queued_at[task_id] = wall
                if not pending:
                    self.pending_since = time.monotonic()
                if head is None:
                    pending.append({"ts": wall, "event": TASK_QUEUED, "task": task_id, "priority": tasks[task_id].priority.value})
                else:
                    pending.append(f'{head}{esc(task_id) if type(task_id) is str else json_value(task_id)}{tails[tasks[task_id].priority]}')
            else:
                self.note_change(task_id, wall)

    def note_change(self, task_id: str, wall: float) -> None:
        state = self.sched.state[task_id]
        if state is TaskState.QUEUED:
            self.released = True
            self.queued_at[task_id] = wall
            self.emit(TASK_QUEUED, ts=wall, task=task_id, priority=self.tasks[task_id].priority.value)
        elif state is TaskState.SKIPPED:
            self.emit(TASK_SKIPPED, task=task_id, reason=self.sched.reason.get(task_id, ""))

    def feedback_note(self, task_id: str, attempt: int, text: str) -> None:
        """Why an attempt failed, for every later attempt of the task ({feedback}, WVO_FEEDBACK)."""
        self._feedback.setdefault(task_id, []).append((attempt, text))

    def has_feedback(self) -> bool:
        """Some attempt of the run failed with a note for the task's next attempts."""
        return bool(self._feedback)

    def feedback_text(self, task_id: str) -> str:
        """What the next attempt is told of the earlier ones: one block each, the newest kept when cut."""
        notes = self._feedback.get(task_id)
        if not notes:
            return ""
        blocks = [f"Attempt {n} did not succeed: {text.strip()}" for n, text in notes]
        text = "\n\n".join(blocks)
        if len(text) > FEEDBACK_CAP:
            text = "[earlier feedback cut]\n" + text[-FEEDBACK_CAP:]
        return "Feedback from earlier attempts:\n" + text
