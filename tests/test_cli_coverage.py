"""Options as users type them, each through a real `wvo-batch` process (the venv's console script).

--max-load, --status --watch, --events, --trace, --report, --retries N, the default pool, --resume
after an `env` or `dependencies` edit, and the default backoff schedule the README promises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from conftest import ROOT
from helpers import reaped

pytestmark = pytest.mark.timeout(120)

_SCRIPT = Path(sys.executable).with_name("wvo-batch")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "runner"]


def wvo(*args, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def start(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [*COMMAND, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def events_of(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    if lines and not lines[-1].endswith("}"):
        lines = lines[:-1]  # a line being written
    return [json.loads(line) for line in lines if line.strip()]


def poll(what, deadline_s: float = 30.0, message: str = "condition"):
    """Call what() until it returns something true; fails after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, f"never happened: {message}"
        time.sleep(0.02)  # a poll with a deadline: the run is another process, with no event to wait on


def waits_for(path: Path) -> str:
    return f"i=0; while [ ! -e {path} ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 1; sleep 0.01; done"


# -- --max-load ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0.01"])  # the smallest --max-load takes (options.LIMITS)
def test_max_load_below_the_load_average_starts_nothing_until_stopped(tmp_path, limit):
    if os.getloadavg()[0] <= float(limit):
        pytest.skip(f"the load average is not above {limit}: the gate cannot be shown closed")
    rm = tmp_path / "r.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: 'true'\n  - id: b\n    command: 'true'\n")
    events = tmp_path / "ev.jsonl"
    proc = start(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--max-load", limit, "--events", events, "--json")
    with reaped(proc):
        # Two refreshes of the board with both agents up and both tasks queued: without the gate the
        # first loop after the spawns would have handed them out.
        def gated():
            ev = events_of(events)
            assert not [e for e in ev if e["event"] == "run:finished"], f"the run ended by itself: {ev[-4:]}"
            spawned = [i for i, e in enumerate(ev) if e["event"] == "agent:spawned"]
            if len(spawned) < 2:
                return False
            later = [e for e in ev[spawned[-1]:] if e["event"] == "status:updated" and e["queue"] == 2]
            return len(later) >= 2

        poll(gated, message="the board refreshed twice with the tasks still queued")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not [e for e in events_of(events) if e["event"] == "task:started"], "a task started above --max-load"
    assert {row["status"] for row in json.loads(out)["tasks"]} == {"interrupted"}


def test_max_load_above_the_load_average_runs_everything(tmp_path):
    rm = tmp_path / "r.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: 'true'\n  - id: b\n    command: 'true'\n")
    r = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--max-load", "1000000", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["succeeded"] == 2


# -- --status --watch ------------------------------------------------------------------------------------


def test_status_watch_attaches_to_a_running_run_shows_the_board_and_ends_with_it(tmp_path):
    go = tmp_path / "go"
    rm = tmp_path / "w.yaml"
    rm.write_text(f"tasks:\n  - id: long\n    title: The long one\n    command: \"{waits_for(go)}\"\n")
    state = tmp_path / "s"
    with ExitStack() as stack:
        run = stack.enter_context(reaped(start(rm, "--agents", "2", "--state-dir", state)))
        # The run is up once its board answers --status.
        poll(lambda: wvo(rm, "--state-dir", state, "--status", timeout=30).returncode == 0, message="--status answers")
        watch = stack.enter_context(reaped(start(rm, "--state-dir", state, "--status", "--watch")))
        fd = watch.stdout.fileno()
        os.set_blocking(fd, False)
        seen = []

        def board_shown():
            try:
                seen.append(os.read(fd, 65536).decode(errors="replace"))
            except BlockingIOError:
                pass
            return "long (The long one)" in "".join(seen)

        poll(board_shown, message="the board showed the running task")
        board = "".join(seen)
        assert "idle" in board and "0/1 done" in board, board
        assert watch.poll() is None, "--watch must keep following while the run lasts"
        go.touch()
        assert run.wait(60) == 0, run.stderr.read()
        rc = watch.wait(30)  # it ends by itself once the run has ended
        assert rc in (0, 3), (rc, watch.stderr.read())


# -- --events, --trace, --report -------------------------------------------------------------------------


def test_events_trace_and_report_files_describe_the_run(tmp_path):
    rm = tmp_path / "r.yaml"
    rm.write_text(
        "tasks:\n"
        "  - id: a\n    command: echo a\n"
        "  - id: b\n    command: exit 3\n    dependencies: [a]\n"
        "  - id: c\n    command: 'true'\n    dependencies: [b]\n"
    )
    ev, trace, html = tmp_path / "ev.jsonl", tmp_path / "trace.json", tmp_path / "report.html"
    r = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--events", ev, "--trace", trace, "--report", html)
    assert r.returncode == 1, r.stderr
    events = events_of(ev)
    assert all(isinstance(e["ts"], float) and e["event"] for e in events)
    names = {e["event"] for e in events}
    assert {"task:queued", "task:reserved", "task:started", "task:finished", "task:skipped", "agent:spawned", "agent:exited"} <= names
    finished = {e["task"]: e["status"] for e in events if e["event"] == "task:finished"}
    assert finished == {"a": "succeeded", "b": "failed"}
    same = [json.loads(line)["event"] for line in (tmp_path / "s" / "latest" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == same, "--events gets the same events as the run's events.jsonl"

    spans = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert sorted((s["name"], s["args"]["status"]) for s in spans) == [("a", "succeeded"), ("b", "failed")]

    text = html.read_text()
    assert text.startswith("<!DOCTYPE html") or text.lower().startswith("<!doctype html")
    assert text.count("<tr data-s=") == 3 and "skipped" in text


# -- --retries N and the default backoff -----------------------------------------------------------------


def test_retries_n_gives_every_task_that_many_more_attempts_with_the_promised_backoff(tmp_path):
    counter = tmp_path / "n"
    rm = tmp_path / "r.yaml"
    # Fails twice, then succeeds: needs --retries 2; the roadmap itself gives it none.
    flaky = f"echo x >> {counter}; [ $(wc -l < {counter}) -ge 3 ]"
    rm.write_text(f"tasks:\n  - id: flaky\n    command: \"{flaky}\"\n  - id: never\n    command: exit 5\n")
    ev = tmp_path / "ev.jsonl"
    r = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s", "--retries", "2", "--events", ev, "--json")
    assert r.returncode == 1, r.stderr
    by = {row["task"]: row for row in json.loads(r.stdout)["tasks"]}
    assert by["flaky"]["status"] == "succeeded" and by["flaky"]["attempts"] == 3
    assert by["never"]["status"] == "failed" and by["never"]["attempts"] == 3
    events = events_of(ev)
    # README: "exponential backoff with jitter between attempts (1 s, 2 s, 4 s, … capped at 60 s, each × 0.5–1)".
    for tid in ("flaky", "never"):
        retries = [e for e in events if e["event"] == "task:retry" and e["task"] == tid]
        assert [e["attempt"] for e in retries] == [1, 2]
        for e in retries:
            step = 2 ** (e["attempt"] - 1)
            assert 0.5 * step <= e["delay_s"] <= step, e
        ends = {e["attempt"]: e["ts"] for e in events if e["event"] == "task:finished" and e["task"] == tid}
        starts = {e["attempt"]: e["ts"] for e in events if e["event"] == "task:started" and e["task"] == tid}
        for e in retries:
            waited = starts[e["attempt"] + 1] - ends[e["attempt"]]
            assert waited >= e["delay_s"] - 0.05, f"attempt {e['attempt'] + 1} of {tid} started before its backoff ran out"

    r = wvo(rm, "--agents", "2", "--state-dir", tmp_path / "s2", "--json")
    assert {row["task"]: row["attempts"] for row in json.loads(r.stdout)["tasks"]} == {"flaky": 1, "never": 1}, "no retries by default"


def test_the_default_backoff_doubles_up_to_a_cap_of_60_seconds():
    # The schedule's tail (past 4 retries: minutes) is judged on the scheduler, which the command
    # line runs with RunOptions' default base, on a fake clock.
    import random

    from runner.manager.run import RunOptions
    from runner.manager.scheduler import AgentView, Scheduler
    from runner.model import Outcome, Task

    assert RunOptions().backoff_base == 1.0
    s = Scheduler([Task(id="a", command=["false"], retries=12)], now=0.0, rng=random.Random(1), backoff_base=RunOptions().backoff_base)
    agent, now, delays = AgentView("worker-0", "worker"), 0.0, []
    for _ in range(10):
        assert [t.id for _, t in s.assign([agent], now)] == ["a"]
        s.started("a", "worker-0")
        retry = s.finish("a", "worker-0", Outcome.FAILED, now)
        assert s.next_timer(now) == pytest.approx(retry.delay)
        assert not s.assign([agent], now + retry.delay - 0.001), "handed out before its backoff ran out"
        delays.append(retry.delay)
        now += retry.delay
    for k, d in enumerate(delays, 1):
        step = min(60.0, 2.0 ** (k - 1))
        assert 0.5 * step <= d <= step, (k, d, delays)
    assert delays[-1] >= 30.0, "capped at 60 s × 0.5–1, not at something smaller"


# -- the default pool ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agents, roles",
    [
        (1, {"worker": 1}),
        (2, {"orchestrator": 1, "worker": 1}),
        (3, {"orchestrator": 1, "worker": 2}),
        (4, {"orchestrator": 1, "worker": 2, "critic": 1}),
        (6, {"orchestrator": 1, "worker": 4, "critic": 1}),
    ],
)
def test_the_default_pool_is_one_orchestrator_one_critic_from_four_agents_the_rest_workers(tmp_path, agents, roles):
    rm = tmp_path / "r.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: 'true'\n")
    ev = tmp_path / "ev.jsonl"
    r = wvo(rm, "--agents", agents, "--state-dir", tmp_path / "s", "--events", ev)
    assert r.returncode == 0, r.stderr
    spawned = Counter(e["role"] for e in events_of(ev) if e["event"] == "agent:spawned")
    assert dict(spawned) == roles
    shown = ", ".join(f"{n} {role}" for role, n in roles.items())
    assert f"on {shown};" in r.stdout + r.stderr


# -- --resume after an edit ------------------------------------------------------------------------------


ROADMAP = """tasks:
  - id: a
    command: echo a >> {ran}
    env: {{GREETING: "{greeting}"}}
  - id: b
    command: echo b >> {ran}
    dependencies: [{b_deps}]
  - id: c
    command: echo c >> {ran}
  - id: d
    command: {d_command}
"""


@pytest.mark.parametrize("edit", ["env", "dependencies"])
def test_resume_runs_again_exactly_the_tasks_whose_env_or_dependencies_changed(tmp_path, edit):
    ran, rm, state = tmp_path / "ran", tmp_path / "r.yaml", tmp_path / "s"
    fields = {"ran": ran, "greeting": "hi", "b_deps": "a", "d_command": "exit 1"}
    rm.write_text(ROADMAP.format(**fields))
    first = wvo(rm, "--agents", "2", "--state-dir", state)
    assert first.returncode == 1, first.stderr  # d fails: the run is unfinished, so --resume continues it
    assert sorted(ran.read_text().split()) == ["a", "b", "c"]
    ran.unlink()
    changed = "a" if edit == "env" else "b"
    fields.update({"greeting": "hello"} if edit == "env" else {"b_deps": "c"})
    fields["d_command"] = "'true'"  # d failed: it runs again whatever
    rm.write_text(ROADMAP.format(**fields))
    again = wvo(rm, "--agents", "2", "--state-dir", state, "--resume", "--json")
    assert again.returncode == 0, again.stderr
    expected = {changed} | ({"b"} if edit == "env" else set())  # b depends on a: it may run again after a
    really = set(ran.read_text().split())
    assert changed in really and "c" not in really, really
    assert really <= expected, f"ran again though unchanged: {really - expected}"
    assert f"task {changed} changed" in again.stderr, again.stderr
