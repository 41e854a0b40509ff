"""Dynamic scaling (--min-agents / --max-agents) and resource gates, with real processes."""

from __future__ import annotations

import pytest

from helpers import Recorder, check_pool_invariants, read_events, roadmap, run, task, wait_for_file
from runner.manager.events import AGENT_EXITED, AGENT_SCALED, STATUS_UPDATED, TASK_STARTED

pytestmark = pytest.mark.timeout(60)


def test_scales_up_under_load_and_back_down_when_idle(tmp_path):
    # The wide tasks hold their agents until the pool has grown to its maximum, the tail until an idle
    # agent has been retired: the test waits on what the run does, not on how long tasks take.
    grown, shrunk = tmp_path / "grown", tmp_path / "shrunk"

    def on_events(events):
        for e in events:
            if e["event"] == AGENT_SCALED and e["direction"] == "up" and e["agents"] >= 4:
                grown.touch()
            if e["event"] == AGENT_SCALED and e["direction"] == "down":
                shrunk.touch()

    wide = [task(f"w{i}", wait_for_file(grown)) for i in range(16)]
    tail = task("tail", wait_for_file(shrunk), dependencies=[t.id for t in wide])
    result = run(
        roadmap(wide + [tail]),
        tmp_path / "s",
        reporter=Recorder(on_events),
        agents=1,
        min_agents=1,
        max_agents=4,
        scale_up_wait=0.1,
        scale_down_idle=0.3,
        scale_max_load=1e9,  # this test is about the rule, not about how busy the test machine is
    )
    assert result.exit_code == 0, result.tasks
    ev = read_events(result)
    check_pool_invariants(ev)
    ups = [e for e in ev if e["event"] == AGENT_SCALED and e["direction"] == "up"]
    downs = [e for e in ev if e["event"] == AGENT_SCALED and e["direction"] == "down"]
    assert len(ups) == 3, "grew from 1 to the maximum of 4"
    assert downs, "idle agents were retired while the tail task ran"
    assert all(e["agents"] >= 1 for e in downs)
    running_agents = {e["agent"] for e in ev if e["event"] == TASK_STARTED}
    assert len(running_agents) == 4, "every agent added took a task"
    retired = {e["agent"] for e in downs}
    exits = {e["agent"] for e in ev if e["event"] == AGENT_EXITED and e["agent"] in retired}
    assert exits == retired, "every retired agent really exited"


def test_memfree_gate_holds_tasks_back(tmp_path):
    # Ask for more free memory than any machine has: nothing may start; the run must not hang, though,
    # so stop it from a reporter hook once it is clearly waiting.
    from runner.manager.run import Run, RunOptions

    holder = {}

    def on_events(events):
        for e in events:
            if e["event"] == STATUS_UPDATED and e["queue"] == 2 and not holder.get("stopped"):
                holder["stopped"] = True
                holder["run"].begin_stop("test")

    rec = Recorder(on_events)
    r = Run(
        roadmap([task("a", "true"), task("b", "true")]),
        RunOptions(state_dir=str(tmp_path / "s"), agents=2, memfree=1 << 60, grace=0.5),
        rec,
    )
    holder["run"] = r
    result = r.execute()
    assert not [e for e in rec.seen if e["event"] == TASK_STARTED]
    assert result.summary["interrupted"] == 2
