"""Agent-CLI attempts through wvo-batch (issue 17): failure classes, account pauses, stops, sessions, spend.

Two halves. First a stand-in CLI (a Python script printing `codex exec --json` events, told what to do
by a plan file shared by every call) for the manager's handling, quick and exact. Then the REAL Codex
CLI and Claude Code (scripts/install-agent-clis.sh puts them in .agent-clis/) run by wvo-batch against
tests/mockapi.py on 127.0.0.1 with placeholder keys; skipped with the script's reason without them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from helpers import Recorder, read_events, roadmap, run, task
from mockapi import MockAPI, rate_limited, reply, stall, unauthorized, usage_limit
from runner.coding import executors
from runner.manager.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".agent-clis" / "node_modules" / ".bin"

FAKE_CLI = r'''
import fcntl, json, os, sys, time
plan_path, calls_path = os.environ["FAKE_PLAN"], os.environ["FAKE_CALLS"]
with open(calls_path, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    n = len(f.read().splitlines())
    plan = json.load(open(plan_path))
    step = plan[n] if n < len(plan) else plan[-1]
    f.write(json.dumps({"n": n, "step": step, "start": time.time(), "argv": sys.argv[1:],
                        "task": os.environ.get("WVO_TASK_ID"), "home": os.environ.get("CODEX_HOME")}) + "\n")
def out(event):
    print(json.dumps(event), flush=True)
out({"type": "thread.started", "thread_id": "thread-%d" % n})
out({"type": "turn.started"})
if step == "ok":
    out({"type": "item.completed", "item": {"type": "agent_message", "text": "HTTP 429 was mentioned here"}})
    out({"type": "turn.completed", "usage": {"input_tokens": 1000, "cached_input_tokens": 0, "output_tokens": 100}})
    sys.exit(0)
messages = {
    "usage_limit": "You\u2019ve hit your usage limit. Try again in 3 seconds.",
    "auth": "unexpected status 401 Unauthorized: Incorrect API key provided",
    "context": "Codex ran out of room in the model's context window. HTTP 429",
}
out({"type": "turn.failed", "error": {"message": messages[step]}})
sys.exit(1)
'''


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)
    calls = tmp_path / "calls.jsonl"
    plan = tmp_path / "plan.json"

    def make(steps, **settings):
        plan.write_text(json.dumps(steps))
        ex = {"command": [sys.executable, str(script), "{prompt}"], "output": "codex-json", **settings}
        env = {"FAKE_PLAN": str(plan), "FAKE_CALLS": str(calls)}
        return ex, env

    def seen():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    make.calls = seen
    return make


def attempts(result, state: Path):
    ledger = Ledger(str(state / "ledger.sqlite"))
    try:
        return ledger.attempts(result.run_id)
    finally:
        ledger.close()


# ---- the stand-in CLI: the manager's handling -----------------------------------------------------


@pytest.mark.timeout(60)
def test_agent_text_is_not_classified_and_context_window_is_a_plain_failure(tmp_path, fake):
    ex, env = fake(["context", "ok"])
    rm = roadmap([task("T1", title="t", env=env, retries=1)])
    result = run(rm, tmp_path / "s", agents=1, executor=ex)
    assert result.exit_code == 0
    rows = attempts(result, tmp_path / "s")
    # "HTTP 429" in the message does not make it a rate limit: the context window decides, and the
    # session is dropped (a resume would fail the same way): the retry starts fresh.
    assert [(a.outcome, a.failure) for a in rows] == [("failed", "failed"), ("succeeded", None)]
    assert "resume" not in fake.calls()[1]["argv"]


@pytest.mark.timeout(60)
def test_usage_limit_pauses_every_agent_of_the_account(tmp_path, fake):
    ex, env = fake(["usage_limit", "ok"])
    rm = roadmap([task(f"T{i}", title="t", env=env) for i in range(4)])
    rec = Recorder()
    result = run(rm, tmp_path / "s", rec, agents=2, executor=ex)
    assert result.exit_code == 0, result.tasks
    calls = fake.calls()
    limited = calls[0]
    events = read_events(result)
    (paused,) = [e for e in events if e["event"] == "account:paused"]
    reset = paused["until"]
    assert reset - limited["start"] == pytest.approx(3, abs=1.5)
    # Once the limit was seen, no agent was handed a task before the reset: neither the one that hit it
    # nor the other one.
    at = [i for i, e in enumerate(events) if e["event"] == "task:finished" and e["status"] == "usage_limited"][0]
    later = [e for e in events[at:] if e["event"] == "task:reserved"]
    # T0's retry and T3 at least: the other agent's first task may end before the limit is seen, and then
    # its next one goes out before it (2 of the 3 left), legitimately.
    assert len(later) >= 2 and {e["agent"] for e in later} == {"orchestrator-0", "worker-0"}
    assert all(e["ts"] >= reset - 0.05 for e in later), (reset, later)
    assert len(calls) == 5
    assert any("usage limit" in m and "pause" in m for m in rec.messages)
    assert [a.failure for a in attempts(result, tmp_path / "s")].count("usage_limited") == 1


@pytest.mark.timeout(60)
def test_usage_limit_beyond_max_wait_exits_75_and_resume_continues(tmp_path, fake):
    ex, env = fake(["usage_limit", "ok"])
    rm = roadmap([task(f"T{i}", title="t", env=env) for i in range(3)])
    rec = Recorder()
    result = run(rm, tmp_path / "s", rec, agents=1, executor=ex, max_wait=1.0)
    assert result.exit_code == 75
    assert len(fake.calls()) == 1  # nothing else started
    assert any("beyond --max-wait" in m and "--resume" in m for m in rec.messages)
    again = run(rm, tmp_path / "s", agents=1, executor=ex, resume=True)
    assert again.exit_code == 0 and {r["status"] for r in again.tasks} == {"succeeded"}


@pytest.mark.timeout(60)
def test_auth_failure_stops_the_run_after_one_attempt(tmp_path, fake):
    ex, env = fake(["auth", "ok"])
    rm = roadmap([task(f"T{i}", title="t", env=env, retries=3) for i in range(4)])
    rec = Recorder()
    result = run(rm, tmp_path / "s", rec, agents=1, executor=ex)
    assert result.exit_code == 1
    assert len(fake.calls()) == 1
    (msg,) = [m for m in rec.messages if "auth failed" in m]
    assert "executor" in msg and "codex login" in msg and "Incorrect API key" in msg
    assert result.tasks[0]["status"] == "auth_failed"
    assert {r["status"] for r in result.tasks[1:]} == {"interrupted"}


@pytest.mark.timeout(60)
def test_missing_program_is_setup_failed_and_stops(tmp_path, monkeypatch):
    # On the run's PATH when it starts (a program missing then is refused before anything runs), not on the
    # task's own: it goes missing for the attempt.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "wvo-no-such-agent-cli").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "wvo-no-such-agent-cli").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ex = {"command": ["wvo-no-such-agent-cli", "{prompt}"], "output": "claude-json"}
    rm = roadmap([task(f"T{i}", title="t", retries=2, env={"PATH": "/usr/bin:/bin"}) for i in range(3)])
    rec = Recorder()
    result = run(rm, tmp_path / "s", rec, agents=1, executor=ex)
    assert result.exit_code == 1
    assert [a.failure for a in attempts(result, tmp_path / "s")] == ["setup_failed"]
    assert any("setup failed" in m and "PATH" in m for m in rec.messages)


@pytest.mark.timeout(60)
def test_usage_and_estimated_cost_per_task_and_in_total_and_budget(tmp_path, fake):
    prices = {"default": {"input": 1000.0, "output": 1000.0}}  # $1.10 an attempt of 1000 in / 100 out
    ex, env = fake(["ok"], prices=prices)
    rm = roadmap([task(f"T{i}", title="t", env=env) for i in range(4)])
    rec = Recorder()
    result = run(rm, tmp_path / "s", rec, agents=1, executor=ex, budget=2.0)
    assert result.exit_code == 1
    assert len(fake.calls()) == 2  # the second attempt reached the budget; no third started
    assert result.summary["usage"]["input"] == 2000 and result.summary["usage"]["cost_usd"] == pytest.approx(2.2)
    assert result.summary["usage"]["cost_estimated"] is True
    assert result.tasks[0]["usage"]["output"] == 100
    assert any(m.startswith("budget reached: $2.20 of $2.00") for m in rec.messages)
    rows = attempts(result, tmp_path / "s")
    assert [a.session_id for a in rows] == ["thread-0", "thread-1"] and rows[0].cost_usd == pytest.approx(1.1)


@pytest.mark.timeout(60)
def test_affinity_continues_the_keys_session_and_fresh_opts_out(tmp_path, fake):
    ex, env = fake(["ok"])
    rm = roadmap([task("A", title="a", env=env, affinity="k"), task("B", title="b", env=env, affinity="k",
                                                                         dependencies=["A"]),
                  task("C", title="c", env=env, affinity="k", dependencies=["B"], meta={"session": "fresh"})])
    result = run(rm, tmp_path / "s", agents=1, executor=ex)
    assert result.exit_code == 0
    argvs = {c["task"]: c["argv"] for c in fake.calls()}
    assert "resume" not in argvs["A"]
    assert argvs["B"][:2] == ["resume", "thread-0"] and argvs["B"][2].startswith("Task B: b")
    assert "resume" not in argvs["C"]


def test_resume_and_limits_in_the_argv():
    codex = executors.parse("codex")
    claude = executors.parse("claude")
    t = task("T1", title="x", meta={"max_turns": 5, "max_cost": 0.5})
    argv = executors.build_argv(t, "worker", codex, session="abc", prompt="fix it")
    assert argv[-3:] == ("resume", "abc", "fix it") and argv.index("--sandbox") < argv.index("resume")
    argv = executors.build_argv(t, "worker", claude, session="s-1", prompt="fix it")
    assert argv[2] == "fix it" and argv[-6:] == ("--max-turns", "5", "--max-budget-usd", "0.5", "--resume", "s-1")
    assert "--last" not in argv and "--continue" not in argv


def test_a_version_1_ledger_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, roadmap_key TEXT NOT NULL, content_hash TEXT NOT NULL, started REAL"
        " NOT NULL, ended REAL, status TEXT NOT NULL, pid INTEGER, agents INTEGER, resumed_from INTEGER, folder TEXT,"
        " summary TEXT);"
        "CREATE TABLE run_tasks (run_id INTEGER NOT NULL, task_id TEXT NOT NULL, def_hash TEXT NOT NULL, carried"
        " INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, task_id));"
        "CREATE TABLE attempts (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, task_id TEXT NOT NULL, attempt INTEGER"
        " NOT NULL, agent TEXT, start REAL, end REAL, exit_code INTEGER, outcome TEXT NOT NULL, log_path TEXT,"
        " error TEXT, value TEXT);"
        "INSERT INTO runs VALUES (1, '[]', 'h', 1.0, 2.0, 'succeeded', 1, 1, NULL, '', NULL);"
        "INSERT INTO attempts VALUES (1, 1, 'T1', 1, 'w', 1.0, 2.0, 0, 'succeeded', NULL, NULL, NULL);"
        "PRAGMA user_version = 1;"
    )
    db.close()
    ledger = Ledger(str(path))
    (old,) = ledger.attempts(1)
    assert old.outcome == "succeeded" and old.session_id is None and old.usage is None and old.executor is None
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert ledger.unreleased_leases(1) == []  # version 3's leases table is there
    assert ledger.spent(1) == 0.0  # version 4's runs.spent_before, NULL in an old row
    ledger.close()


def test_check_refuses_an_executor_program_not_on_path(tmp_path):
    from conftest import wvo

    rm = tmp_path / "r.yaml"
    rm.write_text("executor: {command: [wvo-no-such-agent-cli, '{prompt}'], output: codex-json}\n"
                  "tasks:\n  - id: T1\n    title: t\n")
    r = wvo(rm, "--check")
    assert r.returncode == 2 and "'wvo-no-such-agent-cli' is not on PATH" in r.stdout  # among the plan's errors


# ---- the real CLIs against the mock ---------------------------------------------------------------


def _skip_reason() -> str | None:
    if (BIN / "codex").exists() and (BIN / "claude").exists():
        return None
    why = ROOT / ".agent-clis" / "REASON"
    reason = why.read_text().strip() if why.exists() else "not installed; run scripts/install-agent-clis.sh"
    return f"agent CLIs not in .agent-clis/: {reason}"


real = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture
def mock():
    with MockAPI() as api:
        yield api
        assert api.escapes() == [], "a CLI tried to reach another host"


def _env(mock: MockAPI, tmp: Path) -> dict:
    from test_cli_conformance import _base_env

    env = _base_env(mock, tmp / "home")
    env.update({"CODEX_HOME": str(tmp / "codex-home"), "CODEX_API_KEY": "sk-placeholder",
                "CLAUDE_CONFIG_DIR": str(tmp / "claude-config"), "ANTHROPIC_BASE_URL": mock.base_url,
                "ANTHROPIC_API_KEY": "sk-ant-placeholder", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_ERROR_REPORTING": "1",
                "CLAUDE_CODE_MAX_RETRIES": "0"})
    (tmp / "codex-home").mkdir(exist_ok=True)
    return env


def codex_executor(mock: MockAPI, **settings) -> dict:
    from test_cli_conformance import codex_args

    argv = [str(BIN / "codex"), "exec", "--json", "--skip-git-repo-check", *codex_args(mock, retries=0), "{prompt}"]
    return {"command": argv, "output": "codex-json", **settings}


def claude_executor(**settings) -> dict:
    argv = [str(BIN / "claude"), "-p", "{prompt}", "--output-format", "stream-json", "--verbose"]
    return {"command": argv, "output": "claude-json", **settings}


def cli_tasks(mock, tmp, n=1, **kw):
    env = _env(mock, tmp)
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    return [task(f"T{i}", title=f"task {i}", env=env, cwd=str(work), **kw) for i in range(n)]


@real
@pytest.mark.timeout(60)
@pytest.mark.parametrize("cli", ["codex", "claude"])
def test_real_cli_success_records_usage_and_session(mock, tmp_path, cli):
    mock.queue(reply("done", input_tokens=120, output_tokens=7))
    ex = codex_executor(mock) if cli == "codex" else claude_executor()
    result = run(roadmap(cli_tasks(mock, tmp_path)), tmp_path / "s", agents=1, executor=ex)
    assert result.exit_code == 0, result.tasks
    (a,) = attempts(result, tmp_path / "s")
    assert a.session_id and a.usage["input"] == 120 and a.usage["output"] == 7
    assert result.summary["usage"]["output"] == 7
    if cli == "claude":
        assert a.cost_usd and a.cost_usd > 0 and not a.cost_estimated  # claude prices it itself


@real
@pytest.mark.timeout(60)
def test_real_codex_stall_is_killed_and_the_retry_resumes_the_session(mock, tmp_path):
    mock.queue(stall(partial=True), reply("second"))
    # Two agents: the stalled one cools down (5 s, as after a rate limit); the retry goes to the other at once.
    result = run(roadmap(cli_tasks(mock, tmp_path)), tmp_path / "s", agents=2, executor=codex_executor(mock, stall_timeout=2))
    assert result.exit_code == 0, result.tasks
    first, second = attempts(result, tmp_path / "s")
    assert first.failure == "stalled" and first.outcome == "timed_out"
    assert second.outcome == "succeeded" and second.session_id == first.session_id
    texts = [c.get("text") for item in mock.model_requests()[1].body["input"] if item.get("type") == "message"
             for c in item.get("content", [])]
    assert texts[-2].startswith("Task T0: task 0")  # the earlier turn, from the resumed session
    assert texts[-1].startswith("Feedback from earlier attempts:") and "stalled" in texts[-1]


@real
@pytest.mark.timeout(60)
def test_real_claude_429_then_success(mock, tmp_path):
    mock.queue(rate_limited(retry_after=1), reply("after the 429"))
    result = run(roadmap(cli_tasks(mock, tmp_path)), tmp_path / "s", agents=2, executor=claude_executor())
    assert result.exit_code == 0, result.tasks
    rows = attempts(result, tmp_path / "s")
    assert [(a.outcome, a.failure) for a in rows] == [("rate_limited", "rate_limited"), ("succeeded", None)]


@real
@pytest.mark.timeout(60)
@pytest.mark.parametrize("cli", ["codex", "claude"])
def test_real_cli_401_stops_the_run_after_one_attempt(mock, tmp_path, cli):
    mock.default = unauthorized()
    ex = codex_executor(mock) if cli == "codex" else claude_executor()
    rec = Recorder()
    result = run(roadmap(cli_tasks(mock, tmp_path, n=3, retries=2)), tmp_path / "s", rec, agents=1, executor=ex)
    assert result.exit_code == 1
    assert len(mock.model_requests()) == 1 and len(attempts(result, tmp_path / "s")) == 1
    assert any("auth failed" in m for m in rec.messages)


@real
@pytest.mark.timeout(60)
def test_real_codex_usage_limit_pauses_all_agents_and_stops_past_max_wait(mock, tmp_path):
    mock.queue(usage_limit(resets_at=int(time.time()) + 3 * 3600))
    rec = Recorder()
    result = run(roadmap(cli_tasks(mock, tmp_path, n=3)), tmp_path / "s", rec, agents=1,
                 executor=codex_executor(mock), max_wait=600)
    assert result.exit_code == 75
    assert len(mock.model_requests()) == 1
    (a,) = attempts(result, tmp_path / "s")
    assert a.outcome == "usage_limited"
    assert any("beyond --max-wait" in m for m in rec.messages)


@real
@pytest.mark.timeout(60)
def test_real_claude_budget_stops_new_attempts(mock, tmp_path):
    rec = Recorder()
    result = run(roadmap(cli_tasks(mock, tmp_path, n=3)), tmp_path / "s", rec, agents=1, executor=claude_executor(),
                 budget=0.0000001)
    assert result.exit_code == 1
    assert len(attempts(result, tmp_path / "s")) == 1
    assert any(m.startswith("budget reached: $") for m in rec.messages)


@pytest.mark.timeout(60)
def test_accounts_are_spread_over_agents_as_config_homes(tmp_path, fake):
    ex, env = fake(["ok"], accounts=[str(tmp_path / "acct-a"), str(tmp_path / "acct-b")])
    rm = roadmap([task(f"T{i}", title="t", env=env) for i in range(6)])
    result = run(rm, tmp_path / "s", agents=2, executor=ex)
    assert result.exit_code == 0
    homes = {c["home"] for c in fake.calls()}
    assert homes == {str(tmp_path / "acct-a"), str(tmp_path / "acct-b")}
