"""The pool with real processes: parallelism, queueing, release on every path, death, timeouts."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from helpers import Fifo, Recorder, barrier, check_pool_invariants, read_events, roadmap, run, task, wait_for_file
from runner.manager.events import (
    AGENT_EXITED,
    AGENT_SPAWNED,
    TASK_FINISHED,
    TASK_QUEUED,
    TASK_RESERVED,
    TASK_STARTED,
)

pytestmark = pytest.mark.timeout(60)


def test_four_tasks_on_four_agents_run_at_once(tmp_path):
    # Each task waits at a barrier until all four have arrived: they pass only if they ran at the same time.
    cmd = f"{barrier(tmp_path / 'here', 4)}; echo $PPID > $WVO_TASK_ID.pid"
    rm = roadmap([task(f"s{i}", cmd, cwd=str(tmp_path)) for i in range(4)])
    result = run(rm, tmp_path / "state", agents=4)
    assert result.exit_code == 0, result.tasks
    assert result.summary["succeeded"] == 4
    agents = {r["agent"] for r in result.tasks}
    assert len(agents) == 4
    agent_pids = {(tmp_path / f"s{i}.pid").read_text().strip() for i in range(4)}
    assert len(agent_pids) == 4, "each task ran under its own agent process"


def test_queued_task_starts_as_soon_as_an_agent_is_released(tmp_path):
    # 2 agents busy with a long and a short task; the third task must start when the short one ends,
    # not when the long one does: the long one waits for the third to have run.
    third_ran = tmp_path / "third-ran"
    rm = roadmap([task("long", wait_for_file(third_ran)), task("short", "true"), task("third", f"touch {third_ran}")])
    result = run(rm, tmp_path / "state", agents=2)
    assert result.exit_code == 0, result.tasks
    ev = read_events(result)
    short_end = next(e["ts"] for e in ev if e["event"] == TASK_FINISHED and e["task"] == "short")
    third_start = next(e["ts"] for e in ev if e["event"] == TASK_STARTED and e["task"] == "third")
    # Measured on purpose (the moment an agent is released it is handed the next task), with a bound
    # generous enough for a loaded machine.
    assert third_start - short_end < 1.0
    check_pool_invariants(ev)


def test_env_tells_the_task_who_runs_it(tmp_path):
    out = tmp_path / "env.txt"
    rm = roadmap([task("who", f'echo "$WVO_TASK_ID $WVO_AGENT_ID $WVO_AGENT_ROLE $WVO_ATTEMPT" > {out}')])
    result = run(rm, tmp_path / "state", agents=1)
    assert result.exit_code == 0
    tid, agent, role, attempt = out.read_text().split()
    assert (tid, attempt) == ("who", "1")
    assert agent == result.tasks[0]["agent"] and agent.startswith(role)


def test_agent_killed_mid_task_neither_loses_the_task_nor_hangs(tmp_path):
    marker = tmp_path / "runs.txt"
    pids = tmp_path / "pids.txt"
    victim = f'echo x >> {marker}; if [ "$WVO_ATTEMPT" = 1 ]; then sleep 30 & echo $! >> {pids}; wait; fi'
    rm = roadmap([task("victim", victim)] + [task(f"t{i}", "true") for i in range(5)])
    killed = []

    def on_events(events):
        for ev in events:
            if ev["event"] == TASK_STARTED and ev["task"] == "victim" and not killed:
                agent_pid = next(a.pid for a in rec_pool[0].agents.values() if a.id == ev["agent"])
                os.kill(agent_pid, signal.SIGKILL)
                killed.append(ev["agent"])

    rec = Recorder(on_events)
    from runner.manager.run import Run, RunOptions

    r = Run(rm, RunOptions(state_dir=str(tmp_path / "state"), agents=2, grace=1.0), rec)
    rec_pool = [r.pool]
    result = r.execute()
    assert killed
    first_sleep = int(pids.read_text().split()[0])
    assert not psutil.pid_exists(first_sleep) or psutil.Process(first_sleep).status() == psutil.STATUS_ZOMBIE, (
        "the dead agent's task tree must be killed by the manager"
    )
    assert result.exit_code == 0
    assert marker.read_text().count("x") == 2  # ran again after the death, exactly once more
    names = [e["event"] for e in rec.seen]
    assert AGENT_EXITED in names
    finished = [e for e in rec.seen if e["event"] == TASK_FINISHED and e["task"] == "victim"]
    assert [f["status"] for f in finished] == ["agent_died", "succeeded"]
    assert [f["attempt"] for f in finished] == [1, 2]
    spawned = [e["agent"] for e in rec.seen if e["event"] == AGENT_SPAWNED]
    assert len(spawned) == 3  # two at start, one replacement
    check_pool_invariants(rec.seen)


@pytest.mark.parametrize("slot", [True, False], ids=["pid-slot", "subreaper-sweep"])
def test_an_agent_killed_before_its_task_was_announced_still_has_that_task_killed(tmp_path, monkeypatch, slot):
    # A command's Started is sent only after it has run a while; until then the manager knows its pid
    # from the agent's pid slot. Here Started never comes. Without the slot too (the agent died between
    # starting the task and noting its pid), the task, re-parented to the manager, is swept.
    import runner.agents.agent
    import runner.agents.local

    monkeypatch.setattr(runner.agents.agent, "ANNOUNCE_AFTER_S", 3600.0)  # inherited by the forked agents
    if not slot:
        monkeypatch.setattr(runner.agents.local.LocalBackend, "task_pid", lambda self, agent_id: None)
    fifo = Fifo(tmp_path / "up")
    victim = f'if [ "$WVO_ATTEMPT" = 1 ]; then echo $$ > {fifo.path}; exec sleep 60; fi'
    rm = roadmap([task("victim", victim)])
    killed = []

    def on_events(events):
        for ev in events:
            assert ev["event"] != TASK_STARTED or ev["attempt"] > 1, "the first attempt was never announced"
            if ev["event"] == TASK_RESERVED and not killed:
                task_pid = int(fifo.wait_lines(1)[0])
                agent_pid = next(a.pid for a in r.pool.agents.values() if a.id == ev["agent"])
                os.kill(agent_pid, signal.SIGKILL)
                killed.append(task_pid)

    from runner.manager.run import Run, RunOptions

    r = Run(rm, RunOptions(state_dir=str(tmp_path / "state"), agents=1, grace=1.0), Recorder(on_events))
    try:
        result = r.execute()
    finally:
        fifo.close()
    assert killed and result.exit_code == 0
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE


def test_a_dead_agents_task_tree_is_swept_to_the_last_grandchild_in_its_own_session(tmp_path):
    # The task puts a grandchild two sessions away, then kills its own agent: the manager (a subreaper)
    # inherits the task, kills it, then inherits and kills the grandchild in the next round.
    once, pidfile = tmp_path / "once", tmp_path / "grandchild.pid"
    cmd = (
        f"if [ ! -e {once} ]; then touch {once}; setsid sh -c 'setsid sh -c \"echo \\$$ > {pidfile}; exec sleep 300\" & wait' & "
        f"while [ ! -s {pidfile} ]; do :; done; kill -9 $PPID; exec sleep 300; fi"
    )
    result = run(roadmap([task("a", cmd)]), tmp_path / "state", agents=1)
    assert result.exit_code == 0
    grandchild = int(pidfile.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


_PROBE = """
import os, sys
marker, out = sys.argv[1] + sys.argv[2], sys.argv[3]  # in two halves: our own argv must not carry it
alive = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if marker.encode() in f.read():  # a zombie's cmdline is empty
                alive.append(pid)
    except OSError:
        pass
open(out, "w").write(" ".join(alive))
"""


def _probe(marker: str, out: Path) -> list[str]:
    """argv of a task that writes to `out` every live process whose argv carries `marker`."""
    half = len(marker) // 2
    return [sys.executable, "-c", _PROBE, marker[:half], marker[half:], str(out)]


def test_a_timeout_kills_the_whole_tree_at_once_not_when_the_agent_cleans_up(tmp_path):
    # One agent: the probe runs right after the timed-out attempt has been reported, on the same agent,
    # so what it sees is what the timeout itself left (the agent's own exit would sweep it much later).
    pidfile, marker, seen = tmp_path / "grandchild.pid", f"wvo-grandchild-{os.getpid()}", tmp_path / "alive"
    # The grandchild starts its own session, so killing the process group alone would miss it.
    hang = f"setsid sh -c 'echo $$ > {pidfile}; sleep 60; : {marker}' & {wait_for_file(pidfile)}; sleep 60"
    rm = roadmap([task("hang", hang, timeout=1.0, priority="high"), task("probe", _probe(marker, seen))])
    result = run(rm, tmp_path / "state", agents=1, grace=0.5)
    by = {r["task"]: r for r in result.tasks}
    assert by["hang"]["status"] == "timed_out" and by["probe"]["status"] == "succeeded"
    assert pidfile.read_text().strip(), "the grandchild was up before the timeout"
    assert seen.read_text() == "", f"alive after the timeout: {seen.read_text().split()}"


def test_a_task_that_ignores_term_is_killed_after_the_grace_period(tmp_path):
    # The whole tree ignores TERM (an ignored signal stays ignored across exec), a grandchild in its
    # own session too; KILL must come `grace` seconds after TERM. Measured on purpose: it may not end
    # before timeout + grace (TERM did nothing), and must end within a generous margin after.
    marker, seen, up = f"wvo-stubborn-{os.getpid()}", tmp_path / "alive", tmp_path / "up"
    stubborn = f"trap '' TERM; setsid sh -c 'touch {up}; sleep 60; : {marker}' & {wait_for_file(up)}; sleep 60"
    timeout, grace = 0.5, 2.0
    rm = roadmap([task("stubborn", stubborn, timeout=timeout, priority="high"), task("probe", _probe(marker, seen))])
    result = run(rm, tmp_path / "state", agents=1, grace=grace)
    by = {r["task"]: r for r in result.tasks}
    assert by["stubborn"]["status"] == "timed_out"
    assert timeout + grace - 0.1 <= by["stubborn"]["duration_s"] < timeout + grace + 3.0, by["stubborn"]
    assert by["probe"]["status"] == "succeeded" and seen.read_text() == "", "a TERM-proof grandchild survived the KILL"


def test_a_task_that_honours_term_does_not_wait_out_the_grace_period(tmp_path):
    rm = roadmap([task("polite", "sleep 60", timeout=0.5)])
    result = run(rm, tmp_path / "state", agents=1, grace=20.0)
    row = result.tasks[0]
    assert row["status"] == "timed_out"
    assert row["duration_s"] < 10.0, "TERM was not sent first, or its effect was not waited for"


def test_one_task_per_agent_under_500_short_tasks_on_8_agents(tmp_path):
    rm = roadmap([task(f"t{i}", ["true"]) for i in range(500)])
    result = run(rm, tmp_path / "state", agents=8)
    assert result.exit_code == 0 and result.summary["succeeded"] == 500
    ev = read_events(result)
    check_pool_invariants(ev)
    per_task = {}
    for e in ev:
        if e["event"] in (TASK_QUEUED, TASK_RESERVED, TASK_STARTED, TASK_FINISHED):
            per_task.setdefault(e["task"], []).append(e["event"])
    assert all(v == [TASK_QUEUED, TASK_RESERVED, TASK_STARTED, TASK_FINISHED] for v in per_task.values())


def test_failure_skips_dependents_with_reason(tmp_path):
    rm = roadmap([task("a", "exit 3"), task("b", "true", dependencies=["a"]), task("c", "true", dependencies=["b"])])
    result = run(rm, tmp_path / "state", agents=2)
    assert result.exit_code == 1
    by = {r["task"]: r for r in result.tasks}
    assert by["a"]["status"] == "failed" and by["a"]["exit_code"] == 3
    assert by["b"]["status"] == "skipped" and "dependency a failed" in by["b"]["reason"]
    assert by["c"]["status"] == "skipped" and "dependency b" in by["c"]["reason"]
    assert result.summary["skipped"] == 2


def test_callable_runs_inside_the_agent(tmp_path):
    rm = roadmap([task("py", call="os.path:join", args=["a", "b"]), task("boom", call="json:loads", args=["{"])])
    result = run(rm, tmp_path / "state", agents=2)
    by = {r["task"]: r for r in result.tasks}
    assert by["py"]["status"] == "succeeded" and by["py"]["value"] == "a/b"
    assert by["boom"]["status"] == "failed"
    assert "JSONDecodeError" in Path(by["boom"]["log"]).read_text()


def test_output_goes_to_the_log_not_the_manager(tmp_path):
    rm = roadmap([task("loud", "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo end")])
    result = run(rm, tmp_path / "state", agents=1)
    log = Path(result.tasks[0]["log"])
    assert log.stat().st_size > 5_000_000
    assert log.read_bytes().endswith(b"end\n")


def test_two_cpu_bound_callables_on_two_agents_run_at_the_same_time(tmp_path):
    # Judged by overlap, not by wall time, so a busy test machine cannot fake or hide the result:
    # two CPU-bound callables in one process (threads, the GIL) could not overlap in CPU time.
    rm = roadmap([task("a", call="workloads:spin", args=[0.5]), task("b", call="workloads:spin", args=[0.5])])
    result = run(rm, tmp_path / "s", agents=2)
    assert result.exit_code == 0
    a, b = (r["value"] for r in result.tasks)
    assert a["pid"] != b["pid"], "each ran inside its own agent process"
    overlap = min(a["end"], b["end"]) - max(a["start"], b["start"])
    shorter = min(a["end"] - a["start"], b["end"] - b["start"])
    assert overlap > 0.5 * shorter, (a, b)


def test_callable_past_its_timeout_gets_its_agent_replaced(tmp_path):
    rec = Recorder()
    rm = roadmap([task("stuck", call="workloads:hang", timeout=0.5), task("next", call="workloads:spin", args=[0.01])])
    result = run(rm, tmp_path / "s", reporter=rec, agents=1, grace=0.2)
    by = {r["task"]: r for r in result.tasks}
    assert by["stuck"]["status"] == "timed_out"
    assert by["next"]["status"] == "succeeded"
    spawned = [e["agent"] for e in rec.seen if e["event"] == AGENT_SPAWNED]
    assert len(spawned) == 2, "the killed agent was replaced"


def test_agents_ignore_sighup(tmp_path):
    from runner.manager.run import Run, RunOptions

    hupped = []

    def on_events(events):
        for ev in events:
            if ev["event"] == TASK_STARTED:
                row = holder[0].pool.agents.get(ev["agent"])
                if row is not None and row.pid and row.id not in hupped:
                    os.kill(row.pid, signal.SIGHUP)
                    hupped.append(row.id)

    rec = Recorder(on_events)
    r = Run(roadmap([task(f"t{i}", "sleep 0.2") for i in range(4)]), RunOptions(state_dir=str(tmp_path / "s"), agents=2), rec)
    holder = [r]
    result = r.execute()
    assert len(hupped) == 2
    assert result.exit_code == 0 and result.summary["succeeded"] == 4
    assert not [e for e in rec.seen if e["event"] == AGENT_EXITED and "SIGHUP" in e["reason"]]
