"""The run loop's component hooks are real: a gate before reservation, and fields added to the attempt.

A resource-lease component (ports, databases per attempt) will plug in through `can_start` and
`message_env`; here a one-port lease written in the test does, through a whole run of real processes.
"""

from __future__ import annotations

import pytest

from helpers import Recorder, read_events, roadmap, task
from runner.manager.events import TASK_FINISHED, TASK_STARTED
from runner.manager.components import Component
from runner.manager.run import Run, RunOptions
from runner.manager.scheduler import AgentView, Scheduler
from runner.model import Priority, Task, TaskState

W = AgentView("worker-0", "worker")


# -- the gate in the scheduler (pure, fake clock) -------------------------------------------------------


def test_a_gated_task_keeps_its_place_and_the_next_one_is_paired():
    s = Scheduler([Task("a", priority=Priority.CRITICAL), Task("b")], now=0.0)
    closed = {"a"}
    [(agent, t)] = s.assign([W], 0.0, gate=lambda task: task.id not in closed)
    assert t.id == "b" and s.state["a"] is TaskState.QUEUED
    s.started("b", "worker-0")
    s.finish("b", "worker-0", _ok(), 1.0)
    closed.clear()
    [(agent, t)] = s.assign([W], 1.0, gate=lambda task: task.id not in closed)
    assert t.id == "a"


def test_the_gate_is_asked_last_and_only_of_a_task_about_to_be_reserved():
    asked: list[str] = []
    s = Scheduler([Task("a"), Task("b"), Task("c")], now=0.0)

    def gate(task):
        asked.append(task.id)
        return True

    [(_, first)] = s.assign([W], 0.0, gate=gate)
    assert asked == [first.id]  # one agent: one task reserved, one question
    more = s.assign_more(W, 0.0, fits=lambda t: False, gate=gate)
    assert more is None and asked == [first.id]  # a task that does not fit a chunk is never asked (nor leased)
    more = s.assign_more(W, 0.0, fits=lambda t: True, gate=lambda t: False)
    assert more is None and s.queue_length() == 2  # refused: back in the queue, uncounted


def _ok():
    from runner.model import Outcome

    return Outcome.SUCCEEDED


# -- a lease through a real run ---------------------------------------------------------------------------


class OnePort(Component):
    """Tasks whose id starts with "p" need port 5000; at most one live attempt holds it."""

    def __init__(self, ctx):
        self.holder: str | None = None  # task id holding the port
        self.asked: list[str] = []

    def can_start(self, task) -> bool:
        if not task.id.startswith("p"):
            return True
        self.asked.append(task.id)
        if self.holder is not None:
            return False
        self.holder = task.id
        return True

    def message_env(self, task, attempt):
        return {"WVO_PORT": "5000"} if task.id == self.holder else {}

    def on_outcome(self, task_id, attempt, outcome, result):
        if task_id == self.holder:
            self.holder = None

    def on_returned(self, task_id):
        if task_id == self.holder:
            self.holder = None


@pytest.mark.timeout(60)
def test_a_leased_port_is_held_by_one_attempt_and_a_task_waiting_for_it_holds_back_no_other(tmp_path):
    d = tmp_path
    # p1 holds the port until q has run: q can run only if p2, waiting for the port, does not hold it back.
    # `set -C` makes `> held` fail when the file exists: two attempts holding the port at once fail.
    hold = f'set -C; : > {d}/held || exit 3; echo "$WVO_TASK_ID $WVO_PORT" >> {d}/ports; '
    release = f'rm {d}/held'
    wait_q = f'i=0; while [ ! -e {d}/q-ran ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done; [ -e {d}/q-ran ]'
    rm = roadmap([
        task("p1", f"{hold} {wait_q}; rc=$?; {release}; exit $rc", priority="critical"),
        task("p2", f"{hold} {release}", priority="high"),
        task("q", f"touch {d}/q-ran", priority="low"),
    ])
    made: list[OnePort] = []

    def plugin(ctx):
        made.append(OnePort(ctx))
        return made[-1]

    rec = Recorder()
    result = Run(rm, RunOptions(state_dir=str(tmp_path / "s"), agents=2, roles={"worker": 2}, grace=1.0), rec,
                 plugins=[plugin]).execute()
    assert result.exit_code == 0, [(r["task"], r["status"], r["reason"]) for r in result.tasks]
    assert (d / "ports").read_text().split("\n")[:2] == ["p1 5000", "p2 5000"]
    events = read_events(result)
    start = {e["task"]: i for i, e in enumerate(events) if e["event"] == TASK_STARTED}
    end = {e["task"]: i for i, e in enumerate(events) if e["event"] == TASK_FINISHED}
    assert start["q"] < end["p1"] < start["p2"]  # q went ahead of the waiting p2; p2 only once p1 gave the port back
    assert made[0].holder is None  # given back on every path
