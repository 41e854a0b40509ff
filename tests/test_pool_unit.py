"""The agent table and reservations (runner/manager/pool.py) by plain calls, then checked from outside a real run.

The pool's two invariants: an agent holds at most one reservation and only when it was idle; a task
is reserved to at most one agent. The run-level checks here do not trust the manager's bookkeeping:
the tasks themselves write what really ran (helpers.RunLog).
"""

from __future__ import annotations

import random

import pytest

from helpers import Fifo, Recorder, RunLog, check_run_log, roadmap, task
from runner.manager.events import TASK_RESERVED
from runner.manager.pool import Pool
from runner.manager.run import Run, RunOptions
from runner.manager.scheduler import InvariantError


def pool_of(*agents: str, state: str = "idle") -> Pool:
    p = Pool()
    for a in agents:
        p.add(a, "worker", pid=None, state=state)
    return p


def board(p: Pool) -> tuple:
    return dict(p.reservations), {a.id: (a.state, a.task) for a in p.agents.values()}


# -- plain calls ---------------------------------------------------------------------------------------


def test_reserve_marks_the_agent_busy_with_the_task():
    p = pool_of("w0", "w1")
    p.reserve("w0", "a", "Task a")
    assert p.reservations == {"w0": "a"}
    row = p.agents["w0"]
    assert (row.state, row.task, row.task_title) == ("busy", "a", "Task a")
    assert [r.id for r in p.idle()] == ["w1"] and p.busy_count() == 1


def test_reserve_refuses_a_busy_agent_and_changes_nothing():
    p = pool_of("w0")
    p.reserve("w0", "a")
    before = board(p)
    with pytest.raises(InvariantError, match="w0 is not idle"):
        p.reserve("w0", "b")
    assert board(p) == before
    p.agents["w0"].state = "idle"  # even a row that claims idle: the reservation itself says busy
    with pytest.raises(InvariantError, match="w0"):
        p.reserve("w0", "b")
    assert p.reservations == {"w0": "a"}


def test_reserve_refuses_a_task_already_reserved_to_another_agent():
    p = pool_of("w0", "w1")
    p.reserve("w0", "a")
    before = board(p)
    with pytest.raises(InvariantError, match="a is already reserved by w0"):
        p.reserve("w1", "a")
    assert board(p) == before and p.agents["w1"].state == "idle"


@pytest.mark.parametrize("state", ["starting", "cooling", "retiring"])
def test_reserve_refuses_an_agent_that_is_not_up_or_is_cooling_down_or_leaving(state):
    p = pool_of("w0", state=state)
    with pytest.raises(InvariantError):
        p.reserve("w0", "a")
    assert p.reservations == {}


def test_reserve_refuses_an_unknown_agent():
    with pytest.raises(InvariantError):
        pool_of("w0").reserve("ghost", "a")


def test_release_frees_the_agent_and_the_task_and_counts_the_busy_time():
    p = pool_of("w0", "w1")
    p.reserve("w0", "a")
    assert p.release("w0") == "a"
    row = p.agents["w0"]
    assert (row.state, row.task, row.tasks_run) == ("idle", None, 1) and row.busy_s >= 0
    assert p.reservations == {}
    p.reserve("w1", "a")  # the task may go anywhere again
    p.reserve("w0", "b")  # and the agent may take another
    assert p.reservations == {"w1": "a", "w0": "b"}


def test_release_of_an_agent_that_holds_nothing_is_harmless():
    p = pool_of("w0")
    assert p.release("w0") is None and p.release("ghost") is None
    assert p.agents["w0"].tasks_run == 0


def test_removing_an_agent_releases_its_task():
    p = pool_of("w0", "w1")
    p.reserve("w0", "a")
    assert p.remove("w0") == "a"
    assert "w0" not in p.agents and p.reservations == {}
    p.reserve("w1", "a")
    assert p.remove("w1") == "a" and p.remove("w1") is None


def test_a_busy_agent_cannot_be_sent_cooling_or_retiring():
    p = pool_of("w0")
    p.reserve("w0", "a")
    p.set_state("w0", "cooling")
    assert p.agents["w0"].state == "busy"
    p.release("w0")
    p.set_state("w0", "cooling")
    assert p.agents["w0"].state == "cooling" and p.idle() == []


def test_random_operations_never_break_the_invariants():
    rng = random.Random(3)
    p = pool_of(*(f"w{i}" for i in range(4)))
    tasks = [f"t{i}" for i in range(6)]
    refused = 0
    for _ in range(3000):
        agent, tid, op = rng.choice(list(p.agents) or ["w9"]), rng.choice(tasks), rng.random()
        if op < 0.5:
            legal = p.agents.get(agent) is not None and p.agents[agent].state == "idle" and tid not in p.reservations.values()
            try:
                p.reserve(agent, tid)
                assert legal, f"reserve({agent}, {tid}) accepted on {board(p)}"
            except InvariantError:
                assert not legal, f"reserve({agent}, {tid}) refused on {board(p)}"
                refused += 1
        elif op < 0.8:
            held = p.reservations.get(agent)
            assert p.release(agent) == held
        elif op < 0.9:
            p.set_state(agent, rng.choice(["idle", "cooling"]))
        elif len(p.agents) > 2:
            held = p.reservations.get(agent)
            assert p.remove(agent) == held
        else:
            p.add(f"n{rng.randrange(10**6)}", "worker", None)
        held = list(p.reservations.values())
        assert len(held) == len(set(held)), "a task on two agents"
        for a, row in p.agents.items():
            assert (row.state == "busy") == (a in p.reservations), (a, row.state)
            assert row.task == p.reservations.get(a)
        assert set(p.reservations) <= set(p.agents)
    assert refused > 100


# -- the run log's own check can fail --------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, message",
    [
        ([("start", "a", "1"), ("start", "a", "2"), ("end", "a", "2"), ("end", "a", "1")], "a started"),
        ([("start", "a", "1"), ("start", "b", "2"), ("end", "a", "1"), ("end", "b", "2")], "2 tasks at once on 1"),
        ([("start", "a", "1")], "never ended"),
        ([("end", "a", "1")], "ended without"),
    ],
)
def test_the_run_log_check_catches_overlaps_overbooking_and_lost_ends(lines, message):
    with pytest.raises(AssertionError, match=message):
        check_run_log(lines, agents=1)
    ok = [("start", "a", "1"), ("start", "b", "2"), ("end", "a", "1"), ("start", "a", "3"), ("end", "b", "2"), ("end", "a", "3")]
    assert check_run_log(ok, agents=2) == 2


# -- from outside a real run -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_what_really_ran_never_overlaps_and_never_exceeds_the_agents(tmp_path):
    log = RunLog(tmp_path / "runs.log")
    # Tasks of varied length, so agents free up in every order and the queue is handed out often.
    tasks = [task(f"t{i}", log.wrap(f"sleep 0.0{i % 5}")) for i in range(60)]
    tasks += [task(f"d{i}", log.wrap("true"), dependencies=[f"t{i}", f"t{59 - i}"]) for i in range(30)]
    r = Run(roadmap(tasks), RunOptions(state_dir=str(tmp_path / "state"), agents=3, grace=1.0), Recorder())
    result = r.execute()
    assert result.exit_code == 0 and result.summary["succeeded"] == 90
    peak = log.check(agents=3)
    assert peak >= 2, "the run never had two tasks going at once: the check saw no concurrency to judge"
    assert log.started() == {t.id: 1 for t in tasks}
    assert r.pool.reservations == {}


@pytest.mark.timeout(90)
def test_every_reservation_is_released_on_every_path(tmp_path, monkeypatch):
    """Success, failure, a command's timeout, a callable's exception and timeout, the agent's death, shutdown."""
    held: dict[str, str] = {}  # agent -> task, kept by the spy from the pool's own calls
    ended: list[str] = []
    real_reserve, real_release, real_remove = Pool.reserve, Pool.release, Pool.remove

    def reserve(self, agent_id, task_id, title=""):
        real_reserve(self, agent_id, task_id, title)
        held[agent_id] = task_id

    def release(self, agent_id):
        task_id = real_release(self, agent_id)
        if task_id is not None:
            assert held.pop(agent_id) == task_id
            ended.append(task_id)
        return task_id

    def remove(self, agent_id):
        task_id = real_remove(self, agent_id)
        if task_id is not None:
            assert held.pop(agent_id) == task_id
            ended.append(task_id)
        return task_id

    monkeypatch.setattr(Pool, "reserve", reserve)
    monkeypatch.setattr(Pool, "release", release)
    monkeypatch.setattr(Pool, "remove", remove)
    once = tmp_path / "once"
    tasks = [
        task("ok", "true"),
        task("fails", "exit 4"),
        task("times-out", "sleep 30", timeout=0.3),
        task("raises", call="json:loads", args=["{"]),
        task("call-times-out", call="workloads:hang", timeout=0.3),
        task("kills-its-agent", f"if [ ! -e {once} ]; then touch {once}; kill -9 $PPID; sleep 30; fi"),
    ]
    r = Run(roadmap(tasks), RunOptions(state_dir=str(tmp_path / "s1"), agents=2, grace=0.2), Recorder())
    result = r.execute()
    by = {row["task"]: row["status"] for row in result.tasks}
    assert by == {
        "ok": "succeeded", "fails": "failed", "times-out": "timed_out", "raises": "failed",
        "call-times-out": "timed_out", "kills-its-agent": "succeeded",
    }
    assert held == {} and r.pool.reservations == {}
    assert sorted(ended) == sorted([t.id for t in tasks] + ["kills-its-agent"]), "one release per attempt"

    # Shutdown: the run is stopped while a task is running.
    fifo = Fifo(tmp_path / "up")
    stopping = []

    def on_events(events):
        if any(e["event"] == TASK_RESERVED for e in events) and not stopping:
            fifo.wait_lines(1)
            stopping.append(True)
            r2.begin_stop("test")

    r2 = Run(
        roadmap([task("long", f"echo up > {fifo.path}; exec sleep 30"), task("next", "true", dependencies=["long"])]),
        RunOptions(state_dir=str(tmp_path / "s2"), agents=1, grace=0.2),
        Recorder(on_events),
    )
    try:
        result = r2.execute()
    finally:
        fifo.close()
    assert stopping and {row["task"]: row["status"] for row in result.tasks}["long"] == "interrupted"
    assert held == {} and r2.pool.reservations == {}
