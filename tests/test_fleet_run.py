"""Executors by role and per task in a real run: two stand-in programs that write which one ran.

Each stand-in is its own program (a.py, b.py), so the run names its executors `a.py` and `b.py`; each
attempt writes `<task>.<program>` with the role of the agent that ran it and the model it was given.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from conftest import wvo

pytestmark = pytest.mark.timeout(120)

STAND_IN = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
out = os.environ["OUT"]
with open(os.path.join(out, os.environ["WVO_TASK_ID"] + "." + os.environ["WVO_ATTEMPT"] + "." + name), "w") as f:
    json.dump({{"executor": name, "role": sys.argv[1], "model": sys.argv[2]}}, f)
print(name, "done")
"""


def stand_in(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def ran(out: Path) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = {}
    for p in sorted(out.iterdir()):
        task, attempt, _ = p.name.split(".", 2)
        got.setdefault(task, []).append({"attempt": int(attempt), **json.loads(p.read_text())})
    return got


def test_each_role_and_a_task_of_its_own_run_their_executor(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    a, b = stand_in(tmp_path, "a.py"), stand_in(tmp_path, "b.py")
    spec = lambda p, models: json.dumps({"command": [str(p), "{role}", "{model}"], "models": models})  # noqa: E731
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        f"executors:\n  worker: {spec(a, {'default': 'a-model'})}\n  critic: {spec(b, {'default': 'b-model'})}\n"
        "agents: {worker: 1, critic: 1}\n"
        f"defaults:\n  env: {{OUT: {json.dumps(str(out))}}}\n"
        "tasks:\n"
        "  - id: plain\n    title: write the code\n"
        "  - id: look\n    title: look at it\n    role: critic\n"
        f"  - id: mine\n    title: its own\n    executor: {spec(b, {'default': 'b-model'})}\n"
        "    dependencies: [plain]\n"
    )
    proc = wvo(rm, "--state-dir", tmp_path / "s", "--json", "--route-wait", "30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = ran(out)
    assert sorted(seen) == ["look", "mine", "plain"]
    for task, attempts in seen.items():
        for at in attempts:
            want = "b.py" if task == "mine" or at["role"] == "critic" else "a.py"
            assert at["executor"] == want, (task, at)
            assert at["model"] == want[0] + "-model", (task, at)  # each executor's own models table
    assert seen["look"][0]["role"] == "critic" and seen["look"][0]["executor"] == "b.py"
    assert seen["mine"][0]["executor"] == "b.py"
    rows = {r["task"]: r for r in json.loads(proc.stdout)["tasks"]}
    assert rows["mine"]["executors"] == ["b.py"] and rows["look"]["executors"] == ["b.py"]
    assert rows["plain"]["executors"] == [seen["plain"][0]["executor"]]
    db = sqlite3.connect(f"file:{tmp_path / 's' / 'ledger.sqlite'}?mode=ro", uri=True)
    recorded = dict(db.execute("SELECT task_id, executor FROM attempts"))
    db.close()
    assert recorded == {t: seen[t][-1]["executor"] for t in seen}


def test_a_role_without_an_executor_is_refused_before_anything_runs(tmp_path):
    a = stand_in(tmp_path, "a.py")
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"executors:\n  worker: [{json.dumps(str(a))}, '{{role}}', x]\nagents: {{worker: 1, critic: 1}}\n"
                  "tasks:\n  - id: t\n    title: do it\n")
    proc = wvo(rm, "--state-dir", tmp_path / "s")
    assert proc.returncode == 2, proc.stderr
    assert "no executor for agents of role critic" in proc.stderr and "Traceback" not in proc.stderr


def test_the_critics_review_runs_with_the_critic_roles_executor(tmp_path):
    # The run's executor passes '{role}' (worker or critic); the critic role's passes 'by-critic-executor'.
    from test_review import attempts, make_repo, run_json

    agent = tmp_path / "agent.py"
    critic = json.dumps([sys.executable, str(agent), "by-critic-executor", "{prompt}"])
    repo, out = make_repo(tmp_path, "reject-once", extra=f"executors:\n  critic: {critic}\n")
    code, doc, err = run_json(repo)
    assert code == 0, err[-3000:]
    seen = attempts(out)
    assert [(n, a["role"], a["review"]) for n, a in sorted(seen.items())] == [
        (1, "worker", False), (2, "by-critic-executor", True), (3, "worker", False), (4, "by-critic-executor", True)]
    row = {r["task"]: r for r in doc["tasks"]}["T1"]
    assert row["executors"][1] == row["executors"][3] != row["executors"][0] == row["executors"][2]


def test_a_usage_limit_pauses_only_the_agents_of_the_executor_that_hit_it(tmp_path):
    # The worker's executor hits a usage limit resetting in an hour (within --max-wait): the worker pauses.
    # The critic's executor is another account: the critic goes on, and takes the limited task too.
    from test_exit_codes import CLAUDE_USAGE_LIMIT, bounded, calls_of

    out = tmp_path / "out"
    out.mkdir()
    limited = tmp_path / "limited.py"
    limited.write_text(CLAUDE_USAGE_LIMIT)
    b = stand_in(tmp_path, "b.py")
    calls = tmp_path / "calls.jsonl"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        f"executors:\n  worker: {{command: [{json.dumps(sys.executable)}, {json.dumps(str(limited))}, '-p', '{{prompt}}'],"
        " output: claude-json}\n"
        f"  critic: [{json.dumps(str(b))}, '{{role}}', m]\n"
        "agents: {worker: 1, critic: 1}\n"
        f"defaults:\n  env: {{OUT: {json.dumps(str(out))}, FAKE_CALLS: {json.dumps(str(calls))}, RESET_IN: '3600'}}\n"
        "tasks:\n  - id: first\n    title: the worker takes it\n"
        "  - id: later\n    title: after it\n    dependencies: [first]\n"
    )
    code, stdout, stderr = bounded(rm, "--state-dir", tmp_path / "s", "--json", "--max-wait", "7200", timeout=40)
    assert code == 0, stderr[-3000:]
    assert "usage limit of" in stderr
    assert len(calls_of(calls)) == 1, "the paused account was asked again"
    seen = ran(out)
    assert [a["executor"] for a in seen["first"]] == ["b.py"] and seen["first"][0]["role"] == "critic"
    assert seen["later"][0]["executor"] == "b.py"
    rows = {r["task"]: r for r in json.loads(stdout)["tasks"]}
    assert rows["first"]["executors"] == [os.path.basename(sys.executable), "b.py"]  # named by its program


def test_an_agent_cli_gets_its_leased_slots_in_its_template_and_environment(tmp_path):
    from test_leases_run import free_ports

    out = tmp_path / "out"
    out.mkdir()
    b = stand_in(tmp_path, "b.py")
    low = free_ports(1)
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        f"resources:\n  port: {{range: {low}-{low}}}\n  db: [test_a]\n"
        f"executor: [{json.dumps(str(b))}, '{{port}}', '{{db}}']\n"
        f"defaults:\n  env: {{OUT: {json.dumps(str(out))}}}\n"
        "tasks:\n  - id: api\n    title: serve\n    uses: [port, db]\n"
        "  - id: other\n    title: no pools\n"
    )
    proc = wvo(rm, "--state-dir", tmp_path / "s", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = ran(out)
    assert (seen["api"][0]["role"], seen["api"][0]["model"]) == (str(low), "test_a")  # {port}, {db}
    assert (seen["other"][0]["role"], seen["other"][0]["model"]) == ("", "")
