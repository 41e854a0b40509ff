"""Review × spend: every attempt of a reviewed task, the worker's and the critic's, records its session,
tokens and cost, and --budget counts them all; a critic without a verdict never approves.

Real git repositories in tmp_path, the real `wvo-batch` command, and one stand-in agent CLI that prints
what `claude -p --output-format stream-json` prints: a session per call, its tokens and its cost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wvo

pytestmark = pytest.mark.timeout(120)

GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

AGENT = r'''
import json, os, pathlib, sys
role = sys.argv[1]
out = pathlib.Path(os.environ["AGENT_OUT"])
task, attempt = os.environ["WVO_TASK_ID"], int(os.environ["WVO_ATTEMPT"])
critic = bool(os.environ.get("WVO_REVIEW"))
with open(out / "calls.txt", "a") as f:
    f.write(f"{task}.{attempt}.{'critic' if critic else 'worker'}\n")
session = f"{'critic' if critic else 'worker'}-{task}-{attempt}"
cost = float(os.environ["CRITIC_COST" if critic else "WORKER_COST"])
if critic:
    seen = out / f"{task}.reviews"
    n = int(seen.read_text()) + 1 if seen.exists() else 1
    seen.write_text(str(n))
    mode = os.environ.get("CRITIC", "approve")
    text = {"approve": "Reviewed.\nVERDICT: APPROVE",
            "reject-once": "Reviewed.\nVERDICT: " + ("REJECT name the world" if n == 1 else "APPROVE"),
            "silent": "Reviewed. It looks fine to me."}[mode]
else:
    pathlib.Path("hello.txt").write_text(f"hello world, attempt {attempt}\n")
    text = "wrote hello.txt"
print(json.dumps({"type": "system", "subtype": "init", "session_id": session, "model": "claude-opus-5-5"}), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": session,
                  "total_cost_usd": cost, "usage": {"input_tokens": 100, "output_tokens": 10}, "num_turns": 1}), flush=True)
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=GIT_ENV).stdout


def make_repo(tmp_path: Path, critic: str, worker_cost: float, critic_cost: float, tasks: str = "", extra: str = "") -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "user@example.invalid")
    git(repo, "config", "user.name", "A User")
    (repo / "README").write_text("hello\n")
    env = {"AGENT_OUT": str(out), "CRITIC": critic, "WORKER_COST": str(worker_cost), "CRITIC_COST": str(critic_cost)}
    (repo / "roadmap.yaml").write_text(
        "executor:\n"
        f"  command: [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, '{{role}}', '{{prompt}}']\n"
        "  output: claude-json\n"
        "agents: {worker: 1, critic: 1}\n"
        "workspace: {mode: worktree}\n"
        f"defaults:\n  review: true\n  retries: 0\n  env: {json.dumps(env)}\n{extra}"
        "tasks:\n  - {id: T1, title: write the greeting}\n" + tasks
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo, out


def run_json(repo: Path, *args: str) -> tuple[int, dict, str]:
    proc = wvo(repo / "roadmap.yaml", "--state-dir", repo.parent / "state", "--json", *args, timeout=90)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr


def ledger_rows(repo: Path) -> list[tuple]:
    db = sqlite3.connect(repo.parent / "state" / "ledger.sqlite")
    try:
        return db.execute("SELECT task_id, attempt, outcome, session_id, usage, cost_usd FROM attempts ORDER BY task_id, attempt").fetchall()
    finally:
        db.close()


def calls(out: Path) -> list[str]:
    path = out / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_every_attempt_of_a_reviewed_task_records_its_session_tokens_and_cost(tmp_path):
    repo, out = make_repo(tmp_path, "reject-once", worker_cost=0.25, critic_cost=0.5)
    code, doc, err = run_json(repo)
    assert code == 0, err
    assert calls(out) == ["T1.1.worker", "T1.2.critic", "T1.3.worker", "T1.4.critic"]
    rows = ledger_rows(repo)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (1, "needs_review", "worker-T1-1"), (2, "rejected", "critic-T1-2"),
        (3, "needs_review", "worker-T1-3"), (4, "succeeded", "critic-T1-4")]
    assert [r[5] for r in rows] == pytest.approx([0.25, 0.5, 0.25, 0.5])
    assert all(json.loads(r[4])["input"] == 100 and json.loads(r[4])["output"] == 10 for r in rows)
    row = {r["task"]: r for r in doc["tasks"]}["T1"]
    assert row["usage"]["cost_usd"] == pytest.approx(1.5) and row["usage"]["input"] == 400
    assert doc["usage"]["cost_usd"] == pytest.approx(1.5)


def test_the_budget_stops_the_run_when_only_the_critics_spend_crosses_it(tmp_path):
    # T1's worker spends $0.10 (under the $0.50 budget); its critic's $1.00 crosses it: T2 never starts.
    repo, out = make_repo(tmp_path, "approve", worker_cost=0.1, critic_cost=1.0,
                          tasks="  - {id: T2, title: next, dependencies: [T1]}\n")
    code, doc, err = run_json(repo, "--budget", "0.5")
    assert code == 1, err
    assert calls(out) == ["T1.1.worker", "T1.2.critic"]
    assert "budget reached: $1.10 of $0.50" in err
    assert doc["usage"]["cost_usd"] == pytest.approx(1.1)
    assert {r["task"]: r["status"] for r in doc["tasks"]}["T2"] != "succeeded"


def test_the_budget_counts_every_attempt_not_only_the_first(tmp_path):
    # $0.30 a worker attempt, critics free: the first attempt stays under $0.50, the rework crosses it,
    # so the second review never starts. Counting the first attempt alone would let the task finish.
    repo, out = make_repo(tmp_path, "reject-once", worker_cost=0.3, critic_cost=0.0)
    code, doc, err = run_json(repo, "--budget", "0.5")
    assert code == 1, err
    assert calls(out) == ["T1.1.worker", "T1.2.critic", "T1.3.worker"]
    assert "budget reached: $0.60 of $0.50" in err
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "wvo/roadmap")  # nothing landed


def test_a_critic_without_a_verdict_line_does_not_approve(tmp_path):
    repo, out = make_repo(tmp_path, "silent", worker_cost=0.0, critic_cost=0.0)
    code, doc, err = run_json(repo)
    assert code == 1, err
    assert calls(out) == ["T1.1.worker", "T1.2.critic"]
    rows = ledger_rows(repo)
    assert [(r[1], r[2]) for r in rows] == [(1, "needs_review"), (2, "failed")]
    row = {r["task"]: r for r in doc["tasks"]}["T1"]
    assert row["status"] != "succeeded" and row["workspace"].get("landed") is None
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "wvo/roadmap")  # nothing landed
