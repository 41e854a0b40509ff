"""An agent that dies or hangs costs only the task it was on: a hung (stopped) agent is found and
killed, and what a dead agent finished of its chunk is recorded, never run again."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from helpers import check_pool_invariants, read_events, roadmap, run, task
from runner.manager.events import AGENT_HUNG, TASK_RESERVED, TASK_RETRY


def note(path: str, tid: str, die_marker: str | None = None) -> str:
    """Append tid to path; with die_marker, the first time, SIGKILL this agent right after."""
    with open(path, "a") as f:
        f.write(tid + "\n")
    if die_marker is not None and not os.path.exists(die_marker):
        open(die_marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return tid


@pytest.mark.timeout(120)
def test_an_agent_killed_mid_chunk_runs_again_only_the_task_it_was_on(tmp_path, monkeypatch):
    import runner.manager.chunk_sizes

    monkeypatch.setattr(runner.manager.chunk_sizes, "_QUICK_S", 60.0)  # a loaded machine must not make the calls look slow
    ran = tmp_path / "ran"
    fn = "test_liveness:note"
    # Called twice before, so the function is known to be quick and its tasks travel in chunks.
    tasks = [task("warm0", call=fn, args=[str(ran), "warm0"]), task("warm1", call=fn, args=[str(ran), "warm1"])]
    tasks[1].dependencies = ["warm0"]
    for i in range(60):
        args = [str(ran), f"q{i}"] + ([str(tmp_path / "died")] if i == 20 else [])
        tasks.append(task(f"q{i}", call=fn, args=args, dependencies=["warm1"]))
    result = run(roadmap(tasks), tmp_path / "state", agents=1, retries=1)
    assert result.exit_code == 0 and result.summary["succeeded"] == len(tasks)
    events = read_events(result)
    check_pool_invariants(events)
    assert any(e["event"] == TASK_RESERVED and e.get("chunk", 1) > 20 for e in events), "q20 sat deep in a chunk"
    counts = Counter(ran.read_text().split())
    assert counts.pop("q20") == 2, "the task the agent was on runs again"
    twice = sorted(t for t, n in counts.items() if n > 1)
    assert not twice, f"tasks that had finished before the agent died ran again: {twice}"
    died = [e["task"] for e in events if e["event"] == TASK_RETRY and "died" in e["reason"]]
    assert died == ["q20"]
    db = sqlite3.connect(Path(tmp_path / "state" / "ledger.sqlite"))
    attempts = dict(db.execute("SELECT task_id, COUNT(*) FROM attempts GROUP BY task_id").fetchall())
    assert attempts.pop("q20") == 2 and set(attempts.values()) == {1}


@pytest.mark.timeout(60)
def test_a_stopped_agent_is_killed_and_its_task_retried_and_the_run_ends(tmp_path):
    marker = tmp_path / "stopped"
    # The first attempt stops its own agent (hung, not dead) and finishes; nobody will report it.
    cmd = f"if [ ! -e {marker} ]; then touch {marker}; kill -STOP $PPID; fi; sleep 0.1"
    result = run(roadmap([task("t", cmd)]), tmp_path / "state", agents=1, retries=1)
    assert marker.exists()
    assert result.exit_code == 0 and result.tasks[0]["status"] == "succeeded" and result.tasks[0]["attempts"] == 2
    events = read_events(result)
    assert [e["agent"] for e in events if e["event"] == AGENT_HUNG] == ["worker-0"]
    [retry] = [e for e in events if e["event"] == TASK_RETRY]
    assert "died" in retry["reason"], "a hung agent's task counts as lost to an agent death"
