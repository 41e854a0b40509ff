"""The live roadmap × worktrees (issue 21): what joins mid-run gets the decisions of the start, what
cannot join is reported, and statuses a file could not take while invalid are written once it is fixed.

Real git repositories and real `wvo-batch` runs; tasks that edit the roadmap wait (with a deadline) on
the run's events, and the test waits on FIFOs, never on sleeps.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import wvo
from helpers import Fifo, reaped
from runner.manager import roadmap_edits
from runner.manager.leases import LeaseGate, Leases
from runner.manager.scheduler import AgentView, Scheduler
from runner.model import Outcome, Task
from runner.roadmap.fleet import NamePool
from test_compose import CLAUDE_AGENT
from test_worktrees import checkout_state, git, make_repo, rows, run_json, worktrees

pytestmark = pytest.mark.timeout(120)

# A task's helper: append text to the roadmap, then wait (with a deadline) until the run's events hold
# an event of that name for that task, so the task that added it is still running when it is read.
APPEND = textwrap.dedent(
    """
    import json, sys, time
    roadmap, events, text, name, task = sys.argv[1:6]
    with open(roadmap, "a") as f:
        f.write(text)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(events) as f:
                if any((e := json.loads(l)).get("event") in name.split("|") and e.get("task") == task for l in f if l.strip()):
                    sys.exit(0)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    sys.exit(f"never saw {name} for {task}")
    """
)

# A task's helper: wait at most SECONDS for an event of that name for that task (its absence is the
# expected case, so this bounded wait is the test's window for the bug to show).
WAIT_FOR = textwrap.dedent(
    """
    import json, sys, time
    events, name, task, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(events) as f:
            if any((e := json.loads(l)).get("event") == name and e.get("task") == task for l in f if l.strip()):
                sys.exit(0)
        time.sleep(0.05)
    """
)


def appender(tmp_path: Path, roadmap: Path, text: str, name: str, task: str) -> str:
    script = tmp_path / "append.py"
    script.write_text(APPEND)
    args = [sys.executable, str(script), str(roadmap), str(tmp_path / "events.jsonl"), text, name, task]
    return " ".join(shlex.quote(a) for a in args)


def events(tmp_path: Path, name: str) -> list[dict]:
    with open(tmp_path / "events.jsonl") as f:
        return [e for e in (json.loads(line) for line in f if line.strip()) if e["event"] == name]


def repo_with_first_task(tmp_path: Path, head: str, added: str, name: str, task: str) -> Path:
    """A repository whose roadmap's task `a` appends `added` and waits for `name` of `task`."""
    repo = make_repo(tmp_path, head + "tasks:\n  - id: a\n    command: PLACEHOLDER\n")
    roadmap = repo / "roadmap.yaml"
    cmd = appender(tmp_path, roadmap, added, name, task) + "; echo a > a.txt"
    roadmap.write_text(roadmap.read_text().replace("PLACEHOLDER", json.dumps(cmd)))
    git(repo, "commit", "-qam", "the first task adds one")
    return repo


# -- joins get the start's decisions -----------------------------------------------------------------


def test_a_joined_task_gets_its_checks_in_a_worktree_and_failing_work_does_not_land(tmp_path):
    added = "  - id: joined\n    command: \"echo bad > bad.txt\"\n    checks: ['test -f good.txt']\n    retries: 0\n"
    repo = repo_with_first_task(tmp_path, "workspace: {mode: worktree}\n", added, "task:added", "joined")
    before = checkout_state(repo)
    code, doc, err = run_json(repo, "--write-back", "--events", str(tmp_path / "events.jsonl"), "--agents", "1")
    r = rows(doc)
    assert r["joined"]["status"] == "check_failed", (r.get("joined"), err[-2000:])
    assert not (repo / "bad.txt").exists(), "the joined task wrote into the user's checkout"
    assert "bad.txt" not in git(repo, "ls-tree", "--name-only", "wvo/roadmap")
    assert r["a"]["status"] == "succeeded" and git(repo, "show", "wvo/roadmap:a.txt") == "a\n"
    assert code == 1, err[-2000:]
    assert checkout_state(repo)[:2] == before[:2]  # HEAD and its branch; the file's statuses are write-back's
    assert len(worktrees(repo)) == 1


def test_a_joined_agent_task_is_reviewed_by_the_critic_before_it_lands(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(CLAUDE_AGENT)
    head = (
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        "agents: {worker: 1, critic: 1}\n"
        "workspace: {mode: worktree}\n"
        f"defaults:\n  retries: 3\n  env: {json.dumps({'AGENT_OUT': str(out)})}\n"
    )
    added = "  - id: T1\n    title: write the greeting\n    review: true\n    review_rounds: 3\n    checks: ['test -f hello.txt']\n"
    repo = repo_with_first_task(tmp_path, head, added, "task:added", "T1")
    code, doc, err = run_json(repo, "--write-back", "--events", str(tmp_path / "events.jsonl"))
    r = rows(doc)
    assert "T1" in r, err[-2000:]
    verdicts = [v["verdict"] for v in (r["T1"].get("review") or {}).get("verdicts", [])]
    assert verdicts == ["reject", "approve"], (r["T1"], err[-2000:])
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker", "critic"]
    assert r["T1"]["status"] == "succeeded" and (r["T1"].get("workspace") or {}).get("landed")
    assert code == 0, err[-2000:]
    assert git(repo, "show", "wvo/roadmap:hello.txt") == "hello world, attempt 3\n"
    assert not (repo / "hello.txt").exists()


def test_a_joined_task_with_files_waits_for_the_running_task_that_claims_them(tmp_path):
    # `a` claims src/**; the joined task claims src/x and must not start while `a` runs, on 2 agents
    marker = tmp_path / "joined-ran-while-a-ran"
    added = (f"  - id: joined\n    files: ['src/x']\n    command: {json.dumps(f'test -f {tmp_path}/a-running && touch {marker}; true')}\n")
    roadmap = tmp_path / "r.yaml"
    wait = tmp_path / "wait.py"
    wait.write_text(WAIT_FOR)
    started = " ".join(shlex.quote(str(a)) for a in (sys.executable, wait, tmp_path / "events.jsonl", "task:started", "joined", 3))
    cmd = f"touch {tmp_path}/a-running; {appender(tmp_path, roadmap, added, 'task:added', 'joined')}; {started}; rm {tmp_path}/a-running"
    roadmap.write_text(f"tasks:\n  - id: a\n    files: ['src/**']\n    command: {json.dumps(cmd)}\n  - id: b\n    command: 'true'\n")
    r = wvo(roadmap, "--state-dir", tmp_path / "s", "--write-back", "--events", tmp_path / "events.jsonl",
            "--agents", "2", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert {t["task"]: t["status"] for t in json.loads(r.stdout)["tasks"]}["joined"] == "succeeded"
    assert not marker.exists(), "the joined task ran while the task claiming its files ran"


# -- what cannot join is reported ----------------------------------------------------------------------


def test_a_task_that_needs_a_worktree_the_run_did_not_open_is_reported_once_with_why(tmp_path):
    # No task of the start uses a worktree: the run opened none. The added task asks for one.
    added = "  - id: wants-tree\n    workspace: {mode: worktree}\n    command: \"echo x > x.txt\"\n"
    repo = repo_with_first_task(tmp_path, "", added, "task:refused", "wants-tree")
    # a second edit of the file (the run's own status writes) must not report it again
    code, doc, err = run_json(repo, "--write-back", "--events", str(tmp_path / "events.jsonl"), "--agents", "1")
    assert code == 0, err[-2000:]
    assert err.count("task wants-tree was added but") == 1, err
    assert "needs a worktree" in err and "the next run takes it" in err
    (refused,) = events(tmp_path, "task:refused")
    assert refused["task"] == "wants-tree" and "worktree" in refused["reason"]
    assert "wants-tree" not in rows(doc)
    assert not (repo / "x.txt").exists(), "it ran in the user's checkout"


def test_a_task_joining_with_resources_the_run_does_not_lease_is_reported(tmp_path):
    roadmap = tmp_path / "r.yaml"
    added = "  - id: leased\n    uses: [db]\n    command: 'true'\n"
    # the appender waits for the task's task:added or task:refused, whichever comes
    cmd = appender(tmp_path, roadmap, added, "task:added|task:refused", "leased")
    roadmap.write_text(f"resources:\n  db: [test_a]\ntasks:\n  - id: a\n    command: {json.dumps(cmd)}\n")
    r = wvo(roadmap, "--state-dir", tmp_path / "s", "--write-back", "--events", tmp_path / "events.jsonl",
            "--agents", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    refused = [e for e in events(tmp_path, "task:refused") if e["task"] == "leased"]
    ran = {t["task"] for t in json.loads(r.stdout)["tasks"]}
    # Either the run leases `db` (the task joins and holds test_a) or it does not (reported): never ignored.
    if refused:
        assert "leased" not in ran and "db" in refused[0]["reason"]
        assert r.stderr.count("task leased was added but") == 1
    else:
        assert "leased" in ran


def test_joined_uses_are_registered_with_the_lease_gate_and_unknown_pools_refused():
    from runner.manager.leasing import UsesOf

    tasks = {"a": Task("a", meta={"uses": ["db"]})}  # the run's task table, which the live roadmap edits
    gate = LeaseGate(Leases({"db": NamePool(("test_a",))}), UsesOf(tasks))
    s = Scheduler([tasks["a"]], now=0.0, leases=gate)
    w0, w1 = AgentView("worker-0", "worker", 0.0), AgentView("worker-1", "worker", 0.0)
    (_, first), *_ = s.assign([w0], 0.0)
    s.started(first.id, w0.id)
    joined = Task("b", meta={"uses": ["db"]})
    assert roadmap_edits.lease_problem(s, joined) is None
    tasks["b"] = joined  # as the live roadmap's join does (ctx.tasks)
    assert s.add_task(joined, 0.0)
    assert s.assign([w1], 0.0) == [], "the joined task took the slot `a` holds"
    s.finish("a", w0.id, Outcome.SUCCEEDED, 1.0)
    (_, second), *_ = s.assign([w1], 1.0)
    assert second.id == "b"
    assert "cache" in roadmap_edits.lease_problem(s, Task("c", meta={"uses": ["cache"]}))
    bare = Scheduler([Task("a")], now=0.0)
    assert "leases no resources" in roadmap_edits.lease_problem(bare, Task("c", meta={"uses": ["db"]}))


# -- statuses written while the file was invalid ----------------------------------------------------

# Task b: wait until a's outcome is in the events (its status write was tried: statuses are written
# before the events of the same commit), tell the test, wait for its go, then wait until the file shows
# a as done (written by the run while it goes, not at its end).
WAIT_THEN_WATCH = textwrap.dedent(
    """
    import json, sys, time, yaml
    roadmap, events, ready, go = sys.argv[1:5]
    deadline = time.monotonic() + 30
    def finished():
        try:
            with open(events) as f:
                return any((e := json.loads(l))["event"] == "task:finished" and e.get("task") == "a" for l in f if l.strip())
        except FileNotFoundError:
            return False
    while not finished():
        if time.monotonic() > deadline:
            sys.exit("a never finished")
        time.sleep(0.05)
    with open(ready, "w") as f:
        f.write("tried\\n")
    with open(go) as f:
        f.readline()
    while time.monotonic() < deadline:
        try:
            tasks = {t["id"]: t for t in yaml.safe_load(open(roadmap))["tasks"]}
            if tasks["a"].get("status") == "done":
                sys.exit(0)
        except Exception:
            pass
        time.sleep(0.05)
    sys.exit("a's status never landed while the run went on")
    """
)


# Task a: wait until the file shows it in_progress (the run writes it), then break the file.
BREAK_AFTER_IN_PROGRESS = textwrap.dedent(
    """
    import sys, time, yaml
    roadmap, tail = sys.argv[1:3]
    deadline = time.monotonic() + 30
    while ({t["id"]: t for t in yaml.safe_load(open(roadmap))["tasks"]}["a"].get("status") != "in_progress"):
        if time.monotonic() > deadline:
            sys.exit("never saw in_progress")
        time.sleep(0.05)
    with open(roadmap, "a") as f:
        f.write(tail)
    """
)


def test_a_status_held_while_the_file_was_invalid_is_written_once_it_is_fixed(tmp_path):
    roadmap = tmp_path / "r.yaml"
    ready, go = Fifo(tmp_path / "ready"), Fifo(tmp_path / "go")
    script = tmp_path / "watch.py"
    script.write_text(WAIT_THEN_WATCH)
    watch = " ".join(shlex.quote(str(a)) for a in (sys.executable, script, roadmap, tmp_path / "events.jsonl", ready.path, go.path))
    good = (
        "tasks:\n  - id: a\n    command: BREAK\n"
        f"  - id: b\n    command: {json.dumps(watch)}\n"
    )
    broken_tail = "  - id: [unclosed\n"  # not YAML any more: nothing can be written to the file
    breaker = tmp_path / "break.py"
    breaker.write_text(BREAK_AFTER_IN_PROGRESS)
    break_it = " ".join(shlex.quote(str(a)) for a in (sys.executable, breaker, roadmap, broken_tail))
    roadmap.write_text(good.replace("BREAK", json.dumps(break_it)))
    import subprocess

    from conftest import ROOT

    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(roadmap), "--state-dir", str(tmp_path / "s"), "--write-back", "--agents", "2",
         "--events", str(tmp_path / "events.jsonl"), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with closing(go), closing(ready), reaped(proc):
        ready.wait_lines(1)
        text = roadmap.read_text()
        assert text.endswith(broken_tail)
        assert "status: done" not in text
        roadmap.write_text(text[: -len(broken_tail)])  # fixed: the user takes the bad line out
        with open(go.path, "w") as f:
            f.write("go\n")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    tasks = {t["id"]: t for t in yaml.safe_load(roadmap.read_text())["tasks"]}
    assert tasks["a"]["status"] == "done" and tasks["b"]["status"] == "done", tasks
    assert err.count("held until the file changes") == 1, err
    assert "statuses held meanwhile are written" in err
    assert "never written" not in err
    assert "changed but" not in err, err  # the statuses it wrote itself, once read again, are not edits


def test_statuses_still_held_at_the_end_are_named(tmp_path):
    roadmap = tmp_path / "r.yaml"
    broken_tail = "  - id: [unclosed\n"
    break_it = f"printf %s {shlex.quote(broken_tail)} >> {shlex.quote(str(roadmap))}"
    roadmap.write_text(f"tasks:\n  - id: a\n    command: {json.dumps(break_it)}\n")
    r = wvo(roadmap, "--state-dir", tmp_path / "s", "--write-back", "--agents", "1")
    assert r.returncode == 0, r.stderr
    assert "status(es) never written to" in r.stderr and "a: done" in r.stderr, r.stderr
    assert roadmap.read_text().endswith(broken_tail)  # left as the user made it


class _Said:
    def __init__(self):
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_held_statuses_are_written_before_the_fixed_file_is_read_again_so_they_are_not_edits(tmp_path):
    from runner.manager.live import LiveRoadmap
    from runner.roadmap.loader import load

    path = tmp_path / "r.yaml"
    path.write_text("tasks:\n  - id: a\n    command: 'true'\n")
    roadmap = load([str(path)]).roadmap
    sched = Scheduler(roadmap.tasks, now=0.0)
    said = _Said()
    ctx = SimpleNamespace(
        opt=SimpleNamespace(write_back=True, selected=None), tasks=roadmap.by_id(), roadmap=roadmap, sched=sched,
        reporter=said, emit=lambda *a, **k: None, note_changes=lambda wall=None: None, flush=lambda: None, ws={},
        executor=None,
    )  # fmt: skip
    live = LiveRoadmap(ctx)
    live.start()
    w = AgentView("worker-0", "worker", 0.0)
    (_, task), *_ = sched.assign([w], 0.0)
    sched.started("a", w.id)
    live.status("a", "in_progress")
    live.on_commit()
    assert by_status(path) == {"a": "in_progress"}
    good = path.read_text()
    path.write_text(good + "  - id: [unclosed\n")  # a task of the run breaks the file
    sched.finish("a", w.id, Outcome.SUCCEEDED, 1.0)
    live.status("a", "done")
    live.on_commit()
    assert sum("held until the file changes" in s for s in said.lines) == 1, said.lines
    path.write_text(good)  # fixed: a says in_progress again, and nothing is committed any more
    live.tick(1e9)  # the watch's timer: the held status first, then the file is read again
    assert by_status(path) == {"a": "done"}
    assert not [s for s in said.lines if "changed but" in s], said.lines
    live.finish()
    assert not [s for s in said.lines if "never written" in s], said.lines


def by_status(path: Path) -> dict[str, str | None]:
    return {t["id"]: t.get("status") for t in yaml.safe_load(path.read_text())["tasks"]}


def test_a_task_added_while_the_run_stops_is_reported_not_left_waiting(tmp_path):
    # a fails and --max-failures 1 stops the hand-out; b, still running, then adds a task
    roadmap = tmp_path / "r.yaml"
    wait = tmp_path / "wait.py"
    wait.write_text(WAIT_FOR)
    failed = " ".join(shlex.quote(str(a)) for a in (sys.executable, wait, tmp_path / "events.jsonl", "task:finished", "a", 30))
    added = "  - id: late\n    command: 'true'\n"
    cmd = f"{failed}; {appender(tmp_path, roadmap, added, 'task:added|task:refused', 'late')}"
    roadmap.write_text(f"tasks:\n  - id: a\n    command: 'exit 3'\n  - id: b\n    command: {json.dumps(cmd)}\n")
    r = wvo(roadmap, "--state-dir", tmp_path / "s", "--write-back", "--events", tmp_path / "events.jsonl",
            "--agents", "2", "--max-failures", "1", "--json")  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "no task can be scheduled" not in r.stderr, r.stderr
    (refused,) = [e for e in events(tmp_path, "task:refused") if e["task"] == "late"]
    assert "stopping" in refused["reason"]
    rows = {t["task"]: t["status"] for t in json.loads(r.stdout)["tasks"]}
    assert rows["b"] == "succeeded" and "late" not in rows, rows


def test_a_task_the_file_cannot_show_does_not_hold_back_the_statuses_of_the_others(tmp_path):
    from runner.manager.live import LiveRoadmap

    path = tmp_path / "r.yaml"
    path.write_text("tasks:\n  - {id: flow, command: 'true'}\n  - id: a\n    command: 'true'\n")
    flow, a = Task("flow", file=str(path)), Task("a", file=str(path))
    said = _Said()
    ctx = SimpleNamespace(opt=SimpleNamespace(write_back=True, selected=None), tasks={"flow": flow, "a": a},
                          roadmap=SimpleNamespace(tasks=[flow, a], files=[str(path)]), reporter=said, ws={})  # fmt: skip
    live = LiveRoadmap(ctx)
    live.status("flow", "in_progress")
    live.status("a", "in_progress")
    live.on_commit()
    live.status("a", "done")
    live.on_commit()
    assert by_status(path) == {"flow": None, "a": "done"}
    assert sum("task flow not found" in s for s in said.lines) == 1, said.lines
    live.finish()
    assert [s for s in said.lines if "never written" in s] == [
        f"warning: --write-back: 1 status(es) never written to {path} (flow: in_progress): not found as a block mapping"]
