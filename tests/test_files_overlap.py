"""`files:` globs in the scheduler: overlapping tasks never held at once, disjoint ones in parallel.

Plain calls and a fake clock; no processes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.manager.routing import globs_overlap
from runner.manager.scheduler import LANDING, AgentView, Scheduler
from runner.model import Outcome, Task, TaskState

AGENTS = [AgentView(f"worker-{i}", "worker") for i in range(4)]


def sched(tasks, files):
    for i, t in enumerate(tasks):
        t.order = i
    return Scheduler(tasks, now=0.0, roles={"worker"}, rng=random.Random(0), files=files)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (("src/auth/**",), ("src/auth/login.py",), True),
        (("src/auth/**",), ("src/db/*.py",), False),
        (("src/a*.py",), ("src/b.py",), False),
        (("*.py",), ("docs/x.md",), True),  # unsure: overlap
        (("README.md",), ("README.md",), True),
        (("README.md",), ("README.mdx",), False),
        (("src",), ("src/x.py",), True),  # a folder holds its files
        (("./src/x.py",), ("src/x.py",), True),
        (("a.py", "b.py"), ("c.py", "b.py"), True),
    ],
)
def test_globs_overlap(a, b, expected):
    assert globs_overlap(a, b) is expected
    assert globs_overlap(b, a) is expected


def test_overlapping_tasks_take_turns_and_disjoint_ones_run_together():
    tasks = [Task(id="a"), Task(id="b"), Task(id="c"), Task(id="d")]
    files = {"a": ("src/auth/**",), "b": ("src/auth/login.py",), "c": ("docs/**",)}
    s = sched(tasks, files)
    pairs = s.assign(AGENTS, 0.0)
    held = {t.id for _, t in pairs}
    assert held == {"a", "c", "d"}  # b overlaps a: it waits, and holds no agent
    assert s.state["b"] is TaskState.QUEUED and s.queue_length() == 1
    agent_of = {t.id: a for a, t in pairs}
    for tid in held:
        s.started(tid, agent_of[tid].id)
    assert s.assign([AGENTS[3]], 1.0) == []  # still held back while a runs
    s.finish("a", agent_of["a"].id, Outcome.SUCCEEDED, 2.0)
    pairs = s.assign([AGENTS[3]], 2.0)
    assert [t.id for _, t in pairs] == ["b"]


def test_a_task_waiting_to_land_keeps_its_files():
    tasks = [Task(id="a"), Task(id="b")]
    s = sched(tasks, {"a": ("x.py",), "b": ("x.py",)})
    (agent, task), = s.assign(AGENTS[:1], 0.0)
    s.started("a", agent.id)
    s.hand_over("a", agent.id)
    assert s.assign(AGENTS[:1], 1.0) == []  # the agent is free, but b overlaps a, which is landing
    s.finish("a", LANDING, Outcome.SUCCEEDED, 2.0)
    assert [t.id for _, t in s.assign(AGENTS[:1], 2.0)] == ["b"]


def test_a_failed_overlapping_task_lets_the_other_run_and_is_retried_after():
    tasks = [Task(id="a", retries=1), Task(id="b")]
    s = sched(tasks, {"a": ("x.py",), "b": ("x.py",)})
    (agent, _), = s.assign(AGENTS[:2], 0.0)
    s.started("a", agent.id)
    s.finish("a", agent.id, Outcome.FAILED, 1.0)  # retried after backoff; b may go meanwhile
    assert [t.id for _, t in s.assign(AGENTS[:2], 1.0)] == ["b"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a/**", "a/x.py", "b/*", "c.py", None]), min_size=2, max_size=8), st.randoms())
def test_never_two_overlapping_tasks_held_at_once(globs, rnd):
    tasks = [Task(id=f"t{i}") for i in range(len(globs))]
    files = {f"t{i}": (g,) for i, g in enumerate(globs) if g}
    s = sched(tasks, files)
    now, holding = 0.0, {}
    while not s.finished():
        free = [a for a in AGENTS if a.id not in holding.values()]
        for agent, task in s.assign(free, now):
            holding[task.id] = agent.id
            s.started(task.id, agent.id)
        held = [t for t in holding if t in files]
        for i, x in enumerate(held):
            for y in held[i + 1:]:
                assert not globs_overlap(files[x], files[y]), (x, y)
        assert holding, "nothing runs, yet the scheduler is not finished"
        done = rnd.choice(sorted(holding))
        s.finish(done, holding.pop(done), Outcome.SUCCEEDED, now)
        now += 1.0
