"""The roadmap as live shared state (--write-back): statuses as tasks move, edits that join the run."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from types import SimpleNamespace

import pytest
import yaml

from runner.manager.events import ROADMAP_INVALID, ROADMAP_READ, TASK_ADDED, TASK_REMOVED
from runner.manager.live import LiveRoadmap
from runner.manager.scheduler import AgentView, Scheduler
from runner.model import Outcome, Task, TaskState

from conftest import wvo

W = AgentView("worker-0", "worker", 0.0)

# A task's helper: edit the roadmap, then wait (polling with a deadline) until the run's events show
# it saw the edit, so the test does not depend on when the watch's timer fires.
EDIT = textwrap.dedent(
    """
    import json, sys, time
    roadmap, events = sys.argv[1], sys.argv[2]
    steps = json.loads(sys.argv[3])

    def count(name, **match):
        try:
            with open(events) as f:
                evs = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return 0
        return sum(1 for e in evs if e["event"] == name and all(e.get(k) == v for k, v in match.items()))

    for mode, text, name, match, n in steps:
        with open(roadmap, "a" if mode == "append" else "w") as f:
            f.write(text)
        deadline = time.monotonic() + 30
        while count(name, **match) < n:
            if time.monotonic() > deadline:
                sys.exit(f"never saw {n} x {name} {match}")
            time.sleep(0.05)
    """
)


def by_id(path) -> dict[str, dict]:
    return {t["id"]: t for t in yaml.safe_load(path.read_text())["tasks"]}


def edit_command(tmp_path, roadmap, steps) -> str:
    script = tmp_path / "edit.py"
    script.write_text(EDIT)
    args = [sys.executable, str(script), str(roadmap), str(tmp_path / "events.jsonl"), json.dumps(steps)]
    return " ".join(shlex.quote(a) for a in args)


def run(tmp_path, roadmap, *extra):
    return wvo(
        roadmap, "--state-dir", tmp_path / "s", "--write-back", "--events", tmp_path / "events.jsonl",
        "--agents", "1", "--json", *extra,
    )  # fmt: skip


# -- the scheduler's side, with a fake clock ----------------------------------------------------------


def test_a_task_added_to_a_running_scheduler_waits_for_its_dependencies():
    s = Scheduler([Task("a"), Task("b")], now=0.0)
    assert s.add_task(Task("c", dependencies=["a"]), 0.0)
    assert s.state["c"] is TaskState.WAITING
    (agent, task), *_ = s.assign([W], 0.0)
    assert task.id == "a"
    s.started("a", W.id)
    s.finish("a", W.id, Outcome.SUCCEEDED, 1.0)
    assert s.state["c"] is TaskState.QUEUED
    assert s.add_task(Task("d", dependencies=["nope"]), 1.0) and s.state["d"] is TaskState.SKIPPED
    assert not s.add_task(Task("a"), 1.0)  # ran already: not again
    assert s.active() == 2  # b and c


def test_dropping_an_unstarted_task_skips_it_and_its_dependents_but_not_a_started_one():
    s = Scheduler([Task("a"), Task("b"), Task("c", dependencies=["b"])], now=0.0)
    (agent, task), *_ = s.assign([W], 0.0)
    s.started(task.id, W.id)
    assert not s.drop_task(task.id, "removed")
    assert s.drop_task("b", "removed from the roadmap")
    assert s.state["b"] is TaskState.SKIPPED and s.state["c"] is TaskState.SKIPPED
    assert "removed from the roadmap" in s.reason["c"]
    s.finish(task.id, W.id, Outcome.SUCCEEDED, 1.0)
    assert s.finished() and s.assign([W], 1.0) == []


def test_a_changed_unstarted_task_takes_its_new_definition_and_done_releases_dependents():
    s = Scheduler([Task("a"), Task("b", dependencies=["a"])], now=0.0)
    assert s.add_task(Task("a", status="done"), 0.0)  # a person marked it done: b may go
    assert s.state["b"] is TaskState.QUEUED
    assert s.add_task(Task("b", title="new"), 0.0)
    (agent, task), *_ = s.assign([W], 0.0)
    assert task.title == "new" and s.active() == 1


def test_statuses_by_outcome_include_the_review_hooks():
    task = Task("t", file="r.yaml")
    ctx = SimpleNamespace(opt=SimpleNamespace(write_back=True, selected=None), tasks={"t": task},
                          roadmap=SimpleNamespace(tasks=[task], files=["r.yaml"]),
                          sched=SimpleNamespace(state={"t": TaskState.FAILED}))
    live = LiveRoadmap(ctx)
    out = live._pending
    live.status("t", "needs_review")  # what the review calls while a critic has the task
    assert out == {"r.yaml": {"t": ("needs_review", None)}}
    live.end("t", "needs_improvement", "rejected twice")
    assert out["r.yaml"]["t"] == ("needs_improvement", "rejected twice")
    live.end("t", Outcome.CHECK_FAILED.value, "check failed")
    assert out["r.yaml"]["t"] == ("blocked", "check failed")


# -- whole runs ------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_task_appended_to_the_roadmap_by_a_task_of_the_run_runs_in_that_run(tmp_path):
    roadmap = tmp_path / "r.yaml"
    mark = tmp_path / "b-ran"
    added = f"  - id: b\n    dependencies: [a]\n    command: {json.dumps(f'echo b > {mark}')}\n"
    steps = [["append", added, TASK_ADDED, {"task": "b"}, 1]]
    roadmap.write_text(f"tasks:\n  - id: a\n    command: {json.dumps(edit_command(tmp_path, roadmap, steps))}\n")
    r = run(tmp_path, roadmap)
    assert r.returncode == 0, r.stderr
    assert mark.read_text() == "b\n"
    doc = json.loads(r.stdout)
    assert (doc["total"], doc["succeeded"]) == (2, 2)
    assert "task b joined the run" in r.stderr
    assert "task a changed" not in r.stderr  # its own status writes are not edits
    assert {k: t["status"] for k, t in by_id(roadmap).items()} == {"a": "done", "b": "done"}


@pytest.mark.timeout(90)
def test_a_task_removed_before_it_started_is_dropped(tmp_path):
    roadmap = tmp_path / "r.yaml"
    mark = tmp_path / "c-ran"
    c = f"  - id: c\n    dependencies: [a]\n    command: {json.dumps(f'echo c > {mark}')}\n"
    head = "tasks:\n  - id: a\n    command: {cmd}\n"
    steps = [["write", head.format(cmd="'true'"), TASK_REMOVED, {"task": "c"}, 1]]
    roadmap.write_text(head.format(cmd=json.dumps(edit_command(tmp_path, roadmap, steps))) + c)
    r = run(tmp_path, roadmap)
    assert r.returncode == 0, r.stderr
    assert not mark.exists()
    rows = {t["task"]: t for t in json.loads(r.stdout)["tasks"]}
    assert rows["c"]["status"] == "skipped" and rows["c"]["reason"] == "removed from the roadmap"
    assert "task c was removed" in r.stderr


@pytest.mark.timeout(90)
def test_an_invalid_edit_is_reported_once_and_ignored_until_fixed(tmp_path):
    roadmap = tmp_path / "r.yaml"
    mark = tmp_path / "d-ran"
    twin = "  - id: a\n    command: 'true'\n"  # a second `a`: the whole file is invalid
    d = f"  - id: d\n    command: {json.dumps(f'echo d > {mark}')}\n"
    head = "tasks:\n  - id: a\n    command: {cmd}\n"
    steps = [
        ["append", twin, ROADMAP_INVALID, {}, 1],
        ["append", "# still the same error\n", ROADMAP_READ, {"valid": False}, 2],
        ["write", head.format(cmd="'true'") + d, TASK_ADDED, {"task": "d"}, 1],
    ]
    roadmap.write_text(head.format(cmd=json.dumps(edit_command(tmp_path, roadmap, steps))))
    r = run(tmp_path, roadmap)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("roadmap edit ignored") == 1, r.stderr
    assert "duplicate task id" in r.stderr and "valid again" in r.stderr
    assert mark.read_text() == "d\n"


@pytest.mark.timeout(90)
def test_the_file_shows_in_progress_while_a_task_runs_then_done_or_blocked(tmp_path):
    roadmap = tmp_path / "r.yaml"
    seen = tmp_path / "seen"
    watch = textwrap.dedent(
        f"""
        import sys, time, yaml
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = {{t["id"]: t for t in yaml.safe_load(open({str(roadmap)!r}))["tasks"]}}
            if tasks["a"].get("status") == "in_progress":
                open({str(seen)!r}, "w").write("in_progress")
                sys.exit(0)
            time.sleep(0.05)
        sys.exit("never saw in_progress")
        """
    )
    script = tmp_path / "watch.py"
    script.write_text(watch)
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    roadmap.write_text(
        f"tasks:\n  - id: a\n    status: pending\n    command: {json.dumps(cmd)}\n"
        "  - id: b\n    dependencies: [a]\n    command: exit 3\n"
    )
    r = run(tmp_path, roadmap)
    assert r.returncode == 1, r.stderr
    assert seen.read_text() == "in_progress"
    tasks = by_id(roadmap)
    assert tasks["a"]["status"] == "done" and "last_error" not in tasks["a"]
    assert tasks["b"]["status"] == "blocked" and "exit code 3" in tasks["b"]["last_error"]


@pytest.mark.timeout(90)
def test_an_interrupted_task_gets_its_status_back(tmp_path):
    import signal
    import subprocess
    import time
    from contextlib import closing

    from conftest import ROOT
    from helpers import Fifo, reaped

    roadmap = tmp_path / "r.yaml"
    fifo = Fifo(tmp_path / "ready")
    roadmap.write_text(f"tasks:\n  - id: a\n    status: planned\n    command: 'echo go > {fifo.path}; sleep 60'\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(roadmap), "--state-dir", str(tmp_path / "s"), "--write-back", "--grace", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with closing(fifo), reaped(proc):
        fifo.wait_lines(1)
        deadline = time.monotonic() + 30
        while by_id(roadmap)["a"].get("status") != "in_progress":  # written within a flush of its start
            assert time.monotonic() < deadline, "never saw in_progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    assert by_id(roadmap)["a"]["status"] == "planned"
