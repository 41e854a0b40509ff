"""Generous sanity bounds on speed, so a gross slowdown fails a test; the real figures are `make bench`'s.

These bounds are several times the measured costs (docs/benchmarks.md) so that a loaded CI machine
passes them; they are not the performance targets.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, wvo

sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark is the package scripts/bench

from bench import cli, harness, inputs  # noqa: E402
from bench.harness import PROGRAMS  # noqa: E402
from bench.workloads.w9_worktrees import worktree_events  # noqa: E402

pytestmark = pytest.mark.timeout(120)




def test_500_noop_tasks_on_2_agents_finish_in_under_10s(tmp_path):
    roadmap = inputs.write_noop_roadmap(tmp_path / "noop.yaml", 500)
    t0 = time.monotonic()
    r = wvo(roadmap, "--agents", "2", "--quiet", "--state-dir", tmp_path / "state", timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "500 succeeded" in r.stdout + r.stderr
    assert elapsed < 10, f"500 no-op tasks took {elapsed:.1f}s"


def test_check_of_10000_tasks_with_dependencies_in_under_10s(tmp_path):
    roadmap = inputs.write_dependency_roadmap(tmp_path / "deps.yaml", 10_000)
    t0 = time.monotonic()
    r = wvo(roadmap, "--check", timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "10000" in r.stdout.replace(",", "")
    assert elapsed < 10, f"--check of 10,000 tasks took {elapsed:.1f}s"


def test_200_callables_on_2_agents_finish_in_under_10s(tmp_path):
    (tmp_path / "benchmod.py").write_text((PROGRAMS / "benchmod.py").read_text())
    roadmap = inputs.write_call_roadmap(tmp_path / "calls.yaml", 200, "benchmod:noop")
    t0 = time.monotonic()
    r = wvo(roadmap, "--agents", "2", "--quiet", "--state-dir", tmp_path / "state", env={"PYTHONPATH": str(tmp_path)})
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "200 succeeded" in r.stdout + r.stderr
    assert elapsed < 10, f"200 callables took {elapsed:.1f}s"


def test_bench_quick_run_writes_a_report_without_machine_paths(tmp_path):
    """The bench itself runs end to end (small sizes) and writes only generic paths."""
    out = tmp_path / "benchmarks.md"
    code = cli.main(
        ["--quick", "--only", "3,5", "--no-install", "--no-million", "--out", str(out), "--scratch", str(tmp_path)]
    )
    assert code == 0
    text = out.read_text()
    assert "## Targets" in text and "## Machine" in text and "--check" in text
    for path in (str(tmp_path), str(ROOT), str(Path.home())):
        assert path not in text, f"{path} leaked into the report"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(harness.SCRATCH_PREFIX)], "scratch folder left behind"


def test_loglog_slope_recovers_the_exponent():
    xs = [1_000, 10_000, 100_000]
    assert harness.loglog_slope(xs, [2e-3 * x for x in xs]) == pytest.approx(1.0)
    assert harness.loglog_slope(xs, [1e-6 * x**1.5 for x in xs]) == pytest.approx(1.5)


@pytest.mark.timeout(180)
def test_worktree_workload_runs_at_a_small_size_and_reports_its_figures(tmp_path):
    """Workload 9 end to end, smoke size (50 files, 6 tasks): both sides land every task, the report has the figures."""
    out = tmp_path / "benchmarks.md"
    code = cli.main(["--quick", "--only", "9", "--no-install", "--out", str(out), "--scratch", str(tmp_path)])
    text = out.read_text()
    assert code == 0, text
    assert "### 9. Worktrees: 6 tasks" in text and "50-file repository" in text
    assert "| wvo-batch --quiet --agents 8 |" in text and "| bash script, the same git commands, serial |" in text
    assert "9 worktree tasks: CPU per task vs a serial git script" in text
    assert "9 worktree tasks: agents idle while landing" in text
    assert "| `git worktree` |" in text  # the git-call table of the logging shim
    assert "[9] bash $BENCH/modules/worktree_tasks.sh" in text
    for path in (str(tmp_path), str(ROOT), str(Path.home())):
        assert path not in text, f"{path} leaked into the report"


def _events(path, rows):
    with open(path, "w") as f:
        for ts, name, fields in rows:
            f.write(json.dumps({"ts": ts, "event": name, **fields}) + "\n")
    return path


def test_worktree_events_count_agent_idle_time_while_landing_and_tasks_wait(tmp_path):
    """Agent a holds t0 from 0 to 1, then waits 0.5 s for t2 while t0 lands (1 to 2) and t2 waits: 0.5 s idle."""
    rows = [
        (0.0, "task:queued", {"task": "t0"}), (0.0, "task:queued", {"task": "t1"}), (0.0, "task:queued", {"task": "t2"}),
        (0.0, "task:reserved", {"task": "t0", "agent": "a", "attempt": 1}),
        (0.0, "task:reserved", {"task": "t1", "agent": "b", "attempt": 1}),
        (1.0, "task:landing", {"task": "t0", "agent": "a", "attempt": 1}),
        (1.5, "task:reserved", {"task": "t2", "agent": "a", "attempt": 1}),
        (2.0, "task:landed", {"task": "t0", "attempt": 1}),
        (2.0, "task:finished", {"task": "t0", "agent": "a", "attempt": 1, "status": "succeeded"}),
        (3.0, "task:finished", {"task": "t1", "agent": "b", "attempt": 1, "status": "failed", "error": "exit 1"}),
        (3.0, "task:landing", {"task": "t2", "agent": "a", "attempt": 1}),
        (3.5, "task:landed", {"task": "t2", "attempt": 1}),
    ]
    f = worktree_events(_events(tmp_path / "ev.jsonl", rows))
    assert f["agents"] == 2 and f["tasks"] == 3 and f["landed"] == 2
    assert f["idle_with_work_s"] == pytest.approx(0.5)
    assert f["idle_while_landing_s"] == pytest.approx(0.5)
    assert f["longest_idle_s"] == pytest.approx(0.5)
    assert f["landing_busy_s"] == pytest.approx(1.5)  # 1-2 and 3-3.5
    assert f["agent_busy_s"] == pytest.approx(1.0 + 3.0 + 1.5)
    assert f["failed"] == ["t1: failed: exit 1"]


@pytest.mark.timeout(300)
def test_worktrees_at_scale_runs_alone_at_a_small_size_and_reports_its_figures(tmp_path):
    """Workload 10 alone (`--only 10`), 300 files and 3 tasks: set-up, tear-down, disk and landing are reported."""
    out = tmp_path / "benchmarks.md"
    code = cli.main(["--quick", "--only", "10", "--files", "300", "--tasks", "3", "--no-install", "--out", str(out),
                     "--scratch", str(tmp_path)])
    text = out.read_text()
    assert code == 0, text
    assert "### 10. Worktrees at scale: 3 tasks on a 300-file repository" in text
    assert "| bash, the same git commands, serial |" in text and "| wvo-batch --quiet --agents 1 |" in text
    assert "10 worktree set-up per attempt (1 agent) vs a bare `git worktree add`" in text
    assert "10 disk per live worktree" in text and "10 landing throughput" in text
    assert "[10] bash $BENCH/modules/worktree_steps.sh" in text
    for path in (str(tmp_path), str(ROOT), str(Path.home())):
        assert path not in text, f"{path} leaked into the report"


@pytest.mark.timeout(300)
def test_landing_throughput_runs_alone_at_a_small_size_and_checks_utilisation(tmp_path):
    """Workload 11 alone, 3 tasks: makespan against the agent-limited ideal, and the summary's utilisation ≤ 100%."""
    out = tmp_path / "benchmarks.md"
    code = cli.main(["--quick", "--only", "11", "--tasks", "3", "--no-install", "--out", str(out), "--scratch", str(tmp_path)])
    text = out.read_text()
    assert code == 0, text
    assert "### 11. Landing throughput: 3 worktree tasks" in text
    assert "11 landing: makespan on 2 agents vs the agent-limited ideal" in text
    assert "| 11 landing: the summary's utilisation |" in text


def test_the_agent_limited_ideal_and_the_landing_service_time(tmp_path):
    """16 tasks of 2 s + a 1 s check on 8 agents: 2 rounds of 3 s, then the last merged check: 7 s. A landing that
    waited behind the one before is charged from that one's end, not from its own hand-over."""
    from bench.workloads.w10_worktrees_at_scale import attempt_spans
    from bench.workloads.w11_landing import ideal_s

    assert ideal_s(16, 8, 2.0, 1.0) == 7.0 and ideal_s(16, 16, 2.0, 1.0) == 4.0
    rows = [
        (0.0, "task:reserved", {"task": "a", "attempt": 1}), (0.0, "task:reserved", {"task": "b", "attempt": 1}),
        (0.5, "task:started", {"task": "a", "attempt": 1}), (0.7, "task:started", {"task": "b", "attempt": 1}),
        (1.0, "task:landing", {"task": "a", "attempt": 1}), (1.1, "task:landing", {"task": "b", "attempt": 1}),
        (2.0, "task:landed", {"task": "a", "attempt": 1}), (2.5, "task:landed", {"task": "b", "attempt": 1}),
    ]
    f = attempt_spans(_events(tmp_path / "ev.jsonl", rows))
    assert f["setup_s"] == pytest.approx(0.6) and f["teardown_s"] == pytest.approx(0.45)
    assert f["landing_s"] == pytest.approx(0.75)  # a: 1.0 -> 2.0; b: from 2.0 (a's end), not 1.1, -> 2.5
    assert f["landed"] == 2


def test_run_phases_split_a_run_into_start_up_stagger_tasks_and_exit(tmp_path):
    """Workload 2's account of where the time goes, from a run folder's events (two agents, three tasks)."""
    from bench.context import run_phases

    events = [
        {"ts": 100.0, "event": "run:started"},
        {"ts": 100.5, "event": "task:started", "agent": "a0", "task": "t0"},
        {"ts": 100.7, "event": "task:started", "agent": "a1", "task": "t1"},
        {"ts": 101.5, "event": "task:finished", "agent": "a0", "task": "t0"},
        {"ts": 101.6, "event": "task:started", "agent": "a0", "task": "t2"},
        {"ts": 102.0, "event": "task:finished", "agent": "a1", "task": "t1"},
        {"ts": 102.6, "event": "task:finished", "agent": "a0", "task": "t2"},
    ]
    folder = tmp_path / "runs" / "0001-x"
    folder.mkdir(parents=True)
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    got = run_phases(tmp_path, 99.9, 102.7)
    assert got == pytest.approx({"start-up": 0.6, "stagger": 0.2, "tasks": 1.9, "exit": 0.1})
    assert run_phases(tmp_path / "nothing", 0.0, 1.0) == {}
