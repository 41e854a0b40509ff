"""Chunks of quick callables: one reservation, run in order, recorded as if held one by one."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
from pathlib import Path

import pytest

from helpers import check_pool_invariants, read_events, roadmap, run, task
from runner.manager.events import AGENT_EXITED, CHUNK_RETURNED, TASK_FINISHED, TASK_QUEUED, TASK_RESERVED, TASK_RETRY, TASK_STARTED
from runner.agents.agent import _run_batch
from runner.agents.execute import LogFiles
from runner.agents.messages import Cancel, ChunkReturn, TaskBatch, TaskMessage
from runner.model import Outcome, Priority, Task
from runner.manager.chunk_sizes import ChunkSizes
from runner.manager.scheduler import AgentView, Scheduler

W0, W1 = AgentView("worker-0", "worker"), AgentView("worker-1", "worker")


def call(tid: str, fn: str = "m:f", **kw) -> Task:
    if isinstance(kw.get("priority"), str):
        kw["priority"] = Priority(kw["priority"])
    return Task(id=tid, call=fn, **kw)


def sched(tasks: list[Task]) -> Scheduler:
    for i, t in enumerate(tasks):
        t.order = i
    return Scheduler(tasks, now=0.0, rng=random.Random(0))


# -- the pure parts ---------------------------------------------------------------------------------


def test_a_callable_is_chunked_only_once_it_has_been_seen_to_be_quick():
    q = ChunkSizes()
    a = call("a")
    assert not q.fits(a) and q.size(a, 1000, 2) == 1  # never seen: runs alone, and is measured
    q.observe("m:f", 0.05)  # the first call imported the module: no measure of the function
    assert not q.fits(a)
    q.observe("m:f", 0.00002)
    assert q.fits(a)
    assert q.size(a, 1000, 2) == q.max_chunk
    q.observe("m:slow", 0.5)
    q.observe("m:slow", 0.5)
    assert not q.fits(call("s", "m:slow"))
    assert not q.fits(call("t", timeout=5.0)), "a timeout needs the task alone on its agent"
    assert not q.fits(call("k", affinity="key"))
    assert not q.fits(Task(id="cmd", command=["true"]))


def test_chunk_size_leaves_most_of_a_short_queue_to_the_other_agents_and_bounds_the_time():
    q = ChunkSizes(chunk_s=0.02, max_chunk=64)
    q.observe("m:f", 0.001)
    q.observe("m:f", 0.001)  # 1 ms a call: 20 fit in 20 ms
    a = call("a")
    assert q.size(a, 1000, 2) == 20
    assert q.size(a, 9, 2) == 3  # 9 // 4 + 1
    assert q.size(a, 1, 2) == 1


def test_chunks_grow_with_a_deep_queue_and_shrink_back_as_it_drains():
    q = ChunkSizes(chunk_s=0.02, max_chunk=64, deep_chunk=256)
    q.observe("m:f", 0.00001)
    q.observe("m:f", 0.00001)  # 10 µs a call: 2,000 would fit in 20 ms
    a = call("a")
    assert q.size(a, 20000, 2) == 256, "a deep queue: the largest chunks"
    assert q.size(a, 3200, 2) == 200  # 3,200 // (8 × 2)
    assert q.size(a, 800, 2) == 64, "a shallow queue: chunks of the ordinary size"
    assert q.size(a, 9, 2) == 3


def test_assign_more_takes_the_agents_next_tasks_in_priority_order_and_stops_at_one_that_does_not_fit():
    tasks = [call("low", priority="low"), call("high", priority="high"), call("mid"), Task(id="cmd", command=["true"])]
    s = sched(tasks)
    fits = lambda t: t.call is not None  # noqa: E731
    [(agent, first)] = s.assign([W0], 0.0)
    assert first.id == "high"
    nxt = s.assign_more(agent, 0.0, fits)
    assert nxt.id == "mid"
    assert s.assign_more(agent, 0.0, fits) is None  # "cmd" is next (before "low") and does not fit
    assert s.queue_length() == 2 and s.queued_at["cmd"] == 0.0
    assert [p[1].id for p in s.assign([W1], 1.0)] == ["cmd"]  # it stayed at the head of the queue


def test_assign_more_that_refuses_a_task_leaves_its_affinity_key_with_the_old_owner():
    s = sched([call("k1", affinity="K"), call("a"), call("k2", affinity="K", dependencies=["k1"])])
    assert [p[1].id for p in s.assign([W0], 0.0)] == ["k1"]
    s.started("k1", "worker-0")
    s.finish("k1", "worker-0", Outcome.SUCCEEDED, 1.0)  # worker-0 owns K
    assert [p[1].id for p in s.assign([W1], 1.0)] == ["a"]  # k2 is held for worker-0
    s.started("a", "worker-1")
    # Past affinity_wait k2 is anyone's: worker-1's chunk looks at it, and refuses it.
    assert s.assign_more(W1, 40.0, lambda t: False) is None
    assert s._owner["K"] == "worker-0", "a task only looked at must not move its key"
    assert s.state["k2"].value == "queued" and s.queued_at["k2"] == 1.0


# -- the agent's side -------------------------------------------------------------------------------


@pytest.fixture
def only_the_calls_children(monkeypatch):
    """_run_batch run in the test process: in an agent, a live child after a call is that call's straggler
    (its log is kept, the chunk's rest given back); the test process may have children of its own (the
    session's Ray instance), which are nobody's stragglers."""
    monkeypatch.setattr("runner.agents.agent.reap_children", lambda: False)


def test_a_cancel_between_two_calls_gives_the_rest_of_the_chunk_back_unrun(tmp_path, only_the_calls_children):
    ours, theirs = multiprocessing.Pipe()
    msgs = tuple(TaskMessage(f"c{i}", 1, str(tmp_path / f"c{i}.1.log"), call="os.path:join", args=("a", str(i))) for i in range(4))
    ours.send(Cancel(1.0))  # already waiting when the first call returns
    logs = LogFiles("t")
    try:
        result, stop = _run_batch(TaskBatch(msgs), theirs, {}, logs)
    finally:
        logs.close()
    assert [r.outcome for r in result.results] == ["succeeded"] and not stop
    assert result.results[0].value == "a/0"
    assert ours.recv() == ChunkReturn(("c1", "c2", "c3")), "the unstarted rest is given back, not run"
    assert not list(tmp_path.iterdir()), "silent calls leave no log and no spare"


# -- with real processes ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_chunks_calls_each_write_to_their_own_log_and_see_their_own_environment(tmp_path, only_the_calls_children):
    """The log is redirected once per chunk, yet every call's output lands in its own log, and only there."""

    def msg(tid: str, fn: str, *args) -> TaskMessage:
        return TaskMessage(tid, 1, str(tmp_path / f"{tid}.1.log"), call=fn, args=args, env={"WVO_TASK_ID": tid})

    plan = [msg("quiet1", "os:getpid"), msg("loud1", "os:write", 1, b"out of loud1\n"), msg("quiet2", "os:getenv", "WVO_TASK_ID"),
            msg("bad", "builtins:int", "not a number"), msg("quiet3", "os:getpid"), msg("loud2", "os:write", 2, b"out of loud2\n"),
            msg("quiet4", "os:getenv", "WVO_TASK_ID")]  # fmt: skip
    ours, theirs = multiprocessing.Pipe()
    before = os.fstat(1).st_ino, os.fstat(2).st_ino, os.environ.get("WVO_TASK_ID")
    logs = LogFiles("t")
    try:
        result, _ = _run_batch(TaskBatch(tuple(plan)), theirs, {}, logs)
    finally:
        logs.close()
    by_id = {r.task_id: r for r in result.results}
    assert [r.task_id for r in result.results] == [m.task_id for m in plan]
    assert by_id["quiet2"].value == "quiet2" and by_id["quiet4"].value == "quiet4", "each call sees its own WVO_TASK_ID"
    assert by_id["bad"].outcome == "failed" and by_id["bad"].error.startswith("ValueError")
    assert {p.name for p in tmp_path.iterdir()} == {"loud1.1.log", "bad.1.log", "loud2.1.log"}, "silent calls leave no log"
    assert [by_id[t].log for t in ("quiet1", "loud1", "quiet2", "bad", "quiet3", "loud2", "quiet4")] == [False, True, False, True, False, True, False]
    assert (tmp_path / "loud1.1.log").read_text() == "out of loud1\n"
    assert (tmp_path / "loud2.1.log").read_text() == "out of loud2\n"
    bad = (tmp_path / "bad.1.log").read_text()
    assert "ValueError" in bad and "loud" not in bad
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino, os.environ.get("WVO_TASK_ID")) == before, "our own stdout, stderr and environment are back"


@pytest.mark.parametrize("quiet", [False, True])
def test_quick_callables_go_out_in_chunks_and_each_runs_exactly_once(tmp_path, monkeypatch, quiet):
    """quiet: as --quiet, the reporter reads no events: the agents write their chunks' events as text."""
    import runner.manager.chunk_sizes
    from helpers import Recorder

    class Quiet(Recorder):
        reads_events = False

    monkeypatch.setattr(runner.manager.chunk_sizes, "_QUICK_S", 60.0)  # a loaded machine must not make the calls look slow
    n = 600
    rm = roadmap([task(f"c{i}", call="workloads:quick", args=[i]) for i in range(n)])
    result = run(rm, tmp_path / "state", Quiet() if quiet else None, agents=2)
    assert result.exit_code == 0 and result.summary["succeeded"] == n
    assert [r["value"] for r in result.tasks] == list(range(n))
    events = read_events(result)
    check_pool_invariants(events)  # a chunk is recorded as its agent holding its tasks one by one
    chunks = [e["chunk"] for e in events if e["event"] == TASK_RESERVED and "chunk" in e]
    assert chunks and max(chunks) > 1 and sum(chunks) > n // 2, "most quick calls travelled in chunks"
    for name in (TASK_QUEUED, TASK_RESERVED, TASK_STARTED, TASK_FINISHED):  # once each, with the same fields
        assert sorted(e["task"] for e in events if e["event"] == name) == sorted(f"c{i}" for i in range(n)), name
    queued = {e["task"]: e["ts"] for e in events if e["event"] == TASK_QUEUED}
    reserved = {e["task"]: e["ts"] for e in events if e["event"] == TASK_RESERVED}
    for e in events:
        if e["event"] == TASK_FINISHED:
            assert set(e) == {"ts", "event", "task", "agent", "attempt", "status", "exit_code", "wait_s", "duration_s", "log", "error"}
            assert e["wait_s"] == pytest.approx(reserved[e["task"]] - queued[e["task"]], abs=2e-6)
    db = sqlite3.connect(Path(tmp_path / "state" / "ledger.sqlite"))
    rows = db.execute("SELECT task_id, COUNT(*) FROM attempts GROUP BY task_id").fetchall()
    assert len(rows) == n and {c for _, c in rows} == {1}


@pytest.mark.timeout(120)
def test_an_agent_dying_mid_chunk_costs_only_the_task_it_was_on_and_the_rest_run_again(tmp_path, monkeypatch):
    import runner.manager.chunk_sizes

    monkeypatch.setattr(runner.manager.chunk_sizes, "_QUICK_S", 60.0)  # a loaded machine must not make the calls look slow
    (tmp_path / "seen").touch()
    # Called twice before, so it is known to be quick and may travel in a chunk.
    tasks = [task(f"warm{i}", call="workloads:die_unless", args=[str(tmp_path / "seen")]) for i in range(2)]
    tasks[1].dependencies = ["warm0"]
    tasks += [task(f"q{i}", call="workloads:quick", args=[i], dependencies=["warm1"]) for i in range(200)]
    tasks += [task("dies", call="workloads:die_unless", args=[str(tmp_path / "marker")], dependencies=["warm1"])]
    tasks += [task(f"r{i}", call="workloads:quick", args=[i], dependencies=["warm1"]) for i in range(200)]
    result = run(roadmap(tasks), tmp_path / "state", agents=2)
    assert result.exit_code == 0 and result.summary["succeeded"] == len(tasks)
    events = read_events(result)
    check_pool_invariants(events)
    died = [e["task"] for e in events if e["event"] == TASK_RETRY and "died" in e["reason"]]
    assert died == ["dies"], "only the task the agent was on counts as lost to its death"
    returned = [e for e in events if e["event"] == CHUNK_RETURNED and "died" in e["reason"]]
    assert returned and returned[0]["tasks"] >= 1, "the rest of its chunk went back to the queue"
    assert any(e["event"] == AGENT_EXITED and "exit code 9" in e["reason"] for e in events)


def test_a_slow_task_in_a_chunk_gives_the_unstarted_rest_back(tmp_path):
    ours, theirs = multiprocessing.Pipe()
    msgs = (
        # Slow: longer than ANNOUNCE_AFTER_S, after which the agent judges a chunk's task slow (a time
        # rule, so measured on purpose).
        TaskMessage("slow", 1, str(tmp_path / "slow.1.log"), command=("sleep", "0.3")),
        TaskMessage("q1", 1, str(tmp_path / "q1.1.log"), command=("true",)),
        TaskMessage("q2", 1, str(tmp_path / "q2.1.log"), command=("true",)),
    )
    logs = LogFiles("t")
    try:
        result, stop = _run_batch(TaskBatch(msgs), theirs, dict(os.environ), logs)
    finally:
        logs.close()
    assert [r.task_id for r in result.results] == ["slow"] and result.results[0].outcome == "succeeded"
    assert ours.poll(0) and ours.recv() == ChunkReturn(("q1", "q2"))
    assert not ours.poll(0), "no Started for a chunk's task: its rest is given back instead"


@pytest.mark.timeout(120)
def test_quick_commands_travel_in_chunks_and_a_misjudged_slow_one_holds_nobody_up(tmp_path, monkeypatch):
    import runner.manager.chunk_sizes

    monkeypatch.setattr(runner.manager.chunk_sizes, "_QUICK_S", 60.0)  # every `sh` counts as quick once seen
    # The slow one waits until every other task has run: were any stuck behind it in its chunk, it
    # would wait out its deadline and fail.
    ran = tmp_path / "ran"
    quick = ["sh", "-c", f"echo $WVO_TASK_ID >> {ran}"]
    tasks = [task(f"a{i}", quick) for i in range(150)]
    slow = f'i=0; until [ "$(wc -l < {ran})" -ge 300 ]; do i=$((i+1)); [ $i -gt 6000 ] && exit 1; sleep 0.01; done'
    tasks += [task("slow", ["sh", "-c", f"touch {ran}; {slow}"])]
    tasks += [task(f"b{i}", quick) for i in range(150)]
    result = run(roadmap(tasks), tmp_path / "state", agents=2)
    assert result.exit_code == 0 and result.summary["succeeded"] == len(tasks)
    events = read_events(result)
    check_pool_invariants(events)
    assert any(e["event"] == TASK_RESERVED and e.get("chunk", 1) > 1 for e in events)
    returned = [e for e in events if e["event"] == CHUNK_RETURNED]
    # Unless the slow task happened to end its chunk, its agent gave the rest back: then no task of the
    # same chunk follows it (a continuation is recorded right after it, stamped no later than it ended).
    i = next(k for k, e in enumerate(events) if e["event"] == TASK_FINISHED and e["task"] == "slow")
    agent, done_at = events[i]["agent"], events[i]["ts"]
    after = next((e for e in events[i + 1 :] if e.get("agent") == agent), None)
    continued = after is not None and after["event"] == TASK_RESERVED and after["ts"] <= done_at
    assert returned or not continued, "tasks of the slow task's chunk waited behind it on its agent"
    # The rest of the slow task's chunk went to the other agent: everything else was done before it.
    ends = {e["task"]: e["ts"] for e in events if e["event"] == TASK_FINISHED}
    last_other = max(ts for t, ts in ends.items() if t != "slow")
    assert last_other < ends["slow"], "a task waited behind the slow one in its chunk"
    db = sqlite3.connect(Path(tmp_path / "state" / "ledger.sqlite"))
    assert {c for _, c in db.execute("SELECT task_id, COUNT(*) FROM attempts GROUP BY task_id")} == {1}
