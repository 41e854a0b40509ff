"""Soak: thousands of short tasks while agents are SIGKILLed at random; every task succeeds exactly once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from pathlib import Path

import pytest

from helpers import Recorder, check_pool_invariants, read_events, roadmap, task
from runner.manager.events import (
    AGENT_EXITED,
    AGENT_SPAWNED,
    TASK_FINISHED,
    TASK_QUEUED,
    TASK_RESERVED,
    TASK_STARTED,
)
from runner.manager.run import Run, RunOptions

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(
    "chunks",
    [
        False,
        True,  # chunks: a death mid-chunk re-runs only the task it was on (the outbox, issue 14 §3)
    ],
    ids=["one-task-reservations", "chunks"],
)
def test_2000_tasks_on_16_agents_with_random_agent_kills(tmp_path, monkeypatch, chunks):
    if not chunks:
        import runner.manager.chunk_sizes

        monkeypatch.setattr(runner.manager.chunk_sizes.ChunkSizes, "fits", lambda self, task: False)
    rng = random.Random(7)
    n = 2000
    ran = tmp_path / "ran"  # each attempt appends "task attempt" (O_APPEND): what really ran, not what was recorded
    rm = roadmap([task(f"t{i}", ["sh", "-c", f'echo "$WVO_TASK_ID $WVO_ATTEMPT" >> {ran}']) for i in range(n)])
    kills = []
    holder = {}
    seen = {"started": 0}

    def on_events(events):
        pool = holder["run"].pool
        for ev in events:
            if ev["event"] != TASK_STARTED:
                continue
            seen["started"] += 1
            if seen["started"] % 50 == rng.randrange(50) and len(kills) < 40:
                row = pool.agents.get(ev["agent"])
                if row is not None and row.pid:
                    os.kill(row.pid, signal.SIGKILL)
                    kills.append(ev["agent"])

    rec = Recorder(on_events)
    r = Run(rm, RunOptions(state_dir=str(tmp_path / "s"), agents=16, grace=1.0), rec)
    holder["run"] = r
    result = r.execute()
    assert len(kills) >= 10, "the soak must actually kill agents"
    assert result.exit_code == 0, result.summary
    assert result.summary["succeeded"] == n
    events = read_events(result)
    check_pool_invariants(events)
    succeeded = {}
    for ev in events:
        if ev["event"] == TASK_FINISHED and ev["status"] == "succeeded":
            succeeded[ev["task"]] = succeeded.get(ev["task"], 0) + 1
    assert len(succeeded) == n and set(succeeded.values()) == {1}
    check_what_really_ran(ran, tmp_path / "s" / "ledger.sqlite", n)
    exited = {e["agent"] for e in events if e["event"] == AGENT_EXITED and "SIGKILL" in e["reason"]}
    assert exited == set(kills)
    spawned = [e for e in events if e["event"] == AGENT_SPAWNED]
    last_finish = max(e["ts"] for e in events if e["event"] == TASK_FINISHED)
    mid_run = [e for e in events if e["event"] == AGENT_EXITED and "SIGKILL" in e["reason"] and e["ts"] < last_finish]
    assert len(spawned) >= 16 + len(mid_run), "every agent that died while work remained is replaced"


def check_what_really_ran(ran: Path, ledger: Path, n: int) -> None:
    """Compare the tasks' own record with the ledger: an attempt recorded as succeeded really ran (to
    its last line), and an attempt that ran but is not recorded as succeeded died with its agent."""
    lines = [tuple(line.split()) for line in ran.read_text().splitlines()]
    really = {(tid, int(a)) for tid, a in lines}
    assert len(really) == len(lines), "an attempt ran twice"
    with sqlite3.connect(ledger) as db:
        outcomes = {(tid, a): o for tid, a, o in db.execute("SELECT task_id, attempt, outcome FROM attempts")}
    succeeded = {k for k, o in outcomes.items() if o == "succeeded"}
    assert len(succeeded) == n and len({tid for tid, _ in succeeded}) == n
    assert not succeeded - really, f"recorded as succeeded, never ran to the end: {sorted(succeeded - really)[:5]}"
    extra = really - succeeded
    assert all(outcomes.get(k) == "agent_died" for k in extra), {k: outcomes.get(k) for k in extra}


def test_event_log_of_500_tasks_on_8_agents_is_consistent(tmp_path):
    rm = roadmap([task(f"t{i}", ["true"], priority=["low", "medium", "high"][i % 3]) for i in range(500)])
    rec = Recorder()
    result = Run(rm, RunOptions(state_dir=str(tmp_path / "s"), agents=8), rec).execute()
    assert result.exit_code == 0
    events = read_events(result)
    check_pool_invariants(events)
    order = {}
    times = {}
    for ev in events:
        if ev["event"].startswith("task:"):
            order.setdefault(ev["task"], []).append(ev["event"])
            times.setdefault(ev["task"], {})[ev["event"]] = ev
    for tid, seq in order.items():
        assert seq == [TASK_QUEUED, TASK_RESERVED, TASK_STARTED, TASK_FINISHED], (tid, seq)
        t = times[tid]
        gap = t[TASK_RESERVED]["ts"] - t[TASK_QUEUED]["ts"]
        assert abs(t[TASK_FINISHED]["wait_s"] - gap) < 0.01
        assert t[TASK_QUEUED]["ts"] <= t[TASK_RESERVED]["ts"] <= t[TASK_STARTED]["ts"] <= t[TASK_FINISHED]["ts"]
    tel = result.summary["telemetry"]
    assert 0 < tel["utilization"] <= 1
    assert set(tel["queue_wait_by_priority"]) == {"low", "medium", "high"}
    assert tel["queue_wait_p50_s"] <= tel["queue_wait_p95_s"] <= tel["queue_wait_max_s"]
