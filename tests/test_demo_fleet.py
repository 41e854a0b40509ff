"""`make demo-fleet` (issue 23): the fleet demo's script and roadmap, run as a user runs them.

scripts/demo-fleet makes a scratch repository of configs/fleet-demo/project and runs
configs/fleet-demo/roadmap.yaml on four agents through scripts/fake-coder, a stand-in agent CLI that
really edits files. Real processes, real git; only the stand-in's "thinking" is shortened.
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.timeout(150)

GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of scripts/demo-fleet: (its folder, the finished process, the run's events)."""
    tmp = tmp_path_factory.mktemp("fleet")
    shim = tmp / "bin"
    shim.mkdir()
    wvo = shim / "wvo-batch"  # this checkout's wvo-batch, as the Makefile's PATH gives the venv's
    wvo.write_text(f"#!/bin/sh\nexec {json.dumps(sys.executable)} -m runner \"$@\"\n")
    wvo.chmod(0o755)
    env = {**GIT_ENV, "PATH": f"{shim}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "DEMO_DIR": str(tmp / "demo"),
           "FAKE_CODER_WORK": "0.05"}
    proc = subprocess.run(["sh", str(ROOT / "scripts" / "demo-fleet")], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp)
    [events_file] = (tmp / "demo" / "state" / "runs").glob("*/events.jsonl")
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    return tmp / "demo", proc, events


def outcomes(events: list[dict]) -> dict[str, list[str]]:
    """Task id -> the outcome of each of its attempts, in order."""
    out: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "task:finished":
            out.setdefault(e["task"], []).append(e["status"])
    return out


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=GIT_ENV).stdout


def test_the_demo_lands_all_eight_tasks_and_shows_the_graph(demo):
    folder, proc, events = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 succeeded, 0 failed, 0 skipped of 8" in proc.stderr
    repo = folder / "calc"
    landed = git(repo, "log", "--first-parent", "--format=%s", "wvo/landed").splitlines()
    assert len([s for s in landed if s.startswith("Land ")]) == 8 and landed[-1] == "calc 0.1.0"
    assert git(repo, "rev-list", "--count", "main").strip() == "1"  # the user's branch did not move
    graph = proc.stdout[proc.stdout.index("git log --graph"):]
    assert "Land release: Release calc 0.2.0" in graph and "|\\" in graph  # the merges, drawn
    assert (folder / "report.html").stat().st_size > 0
    starts = {e["task"] for e in events if e["event"] == "task:started"}
    assert len(starts) == 8 and len({e["agent"] for e in events if e["event"] == "task:started"}) == 4


def test_the_demo_shows_a_failed_check_a_rejection_and_a_conflict_each_put_right(demo):
    folder, _, events = demo
    seen = outcomes(events)
    assert seen["stats"] == ["check_failed", "succeeded"]
    assert seen["power"] == ["needs_review", "rejected", "needs_review", "succeeded"]
    assert seen["cli"] == ["needs_review", "succeeded"]
    assert sorted([seen["neg"], seen["absolute"]]) == [["conflict", "succeeded"], ["succeeded"]]
    [met] = (folder / "fake-coder" / "meet").glob("neg-absolute-*")
    assert len(list(met.iterdir())) == 2  # both first tries met, from the same commit
    assert all(seen[t] == ["succeeded"] for t in ("median", "exports", "release"))
    usage = {(e["task"], e["attempt"]): e["cost_usd"] for e in events if e["event"] == "task:usage"}
    unreviewed = {(t, n + 1) for t, got in seen.items() if t not in ("power", "cli") for n in range(len(got))}
    assert unreviewed <= set(usage) and all(usage[k] > 0 for k in unreviewed)  # tokens and cost, as the CLI said


def test_every_attempt_of_a_reviewed_task_has_its_cost(demo):
    _, _, events = demo
    costed = {(e["task"], e["attempt"]) for e in events if e["event"] == "task:usage"}
    assert {("power", n) for n in (1, 2, 3, 4)} | {("cli", 1), ("cli", 2)} <= costed


def test_the_landed_project_has_the_corrected_work_and_its_tests_pass(demo, tmp_path):
    folder, _, _ = demo
    repo = folder / "calc"
    assert "sum(xs) / len(xs)" in git(repo, "show", "wvo/landed:calc/stats.py")  # the check's fix
    assert '"""a to the power n."""' in git(repo, "show", "wvo/landed:calc/power.py")  # the critic's point
    ops = git(repo, "show", "wvo/landed:calc/ops.py")
    assert "def neg(" in ops and "def absolute(" in ops  # the conflict's loser was redone on the new tip
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "wvo/landed", str(repo), str(clone)], check=True, env=GIT_ENV)
    tests = subprocess.run([sys.executable, "-B", "-m", "unittest", "-q"], cwd=clone, capture_output=True, text=True,
                           timeout=60)
    assert tests.returncode == 0, tests.stderr
    assert "Ran 8 tests" in tests.stderr
    assert "__version__ = \"0.2.0\"" in (clone / "calc" / "__init__.py").read_text()


def test_history_of_the_run_shows_every_attempt_with_model_outcome_checks_verdict_and_cost(demo):
    from conftest import wvo

    folder, _, _ = demo
    args = (folder / "calc" / "roadmap.yaml", "--state-dir", folder / "state", "--history")
    proc = wvo(*args, "1", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["attempts"]
    assert len(rows) == 14
    power = [r for r in rows if r["task"] == "power"]
    assert [(r["outcome"], r["verdict"]) for r in power] == [
        ("needs_review", None), ("rejected", "reject"), ("needs_review", None), ("succeeded", "approve")]
    assert power[1]["reason"] == "calc/power.py: power() has no docstring"
    assert [r["checks"] for r in rows if r["task"] == "stats"] == ["✗", "✓"]
    assert all(r["model"] in ("fake-coder-small", "fake-coder-large") for r in rows)
    assert all(r["cost_usd"] > 0 and r["tokens_in"] > 0 for r in rows if r["task"] not in ("power", "cli"))
    text = wvo(*args, "1").stdout
    assert "power     2" in text and "rejected: calc/power.py: power() has no docstring" in text
    listed = wvo(*args)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[0] == "1"  # the run list, as before
    before = wvo("--history", "1", *args[:-1], "--json")  # the number may come first, as with any positional
    assert before.returncode == 0 and len(json.loads(before.stdout)["attempts"]) == 14
    two = wvo(*args, "1", "2")
    assert two.returncode == 2 and "give the roadmap and one run number" in two.stderr
    missing = wvo(*args, "99")
    assert missing.returncode == 2 and "--history 99: not a run of this roadmap" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_the_report_lists_every_attempt_with_model_checks_verdict_and_cost(demo):
    folder, _, _ = demo
    text = (folder / "report.html").read_text()
    attempts = text[text.index("<h2>Attempts</h2>"):]
    rows = re.findall(r"<tr><td><code>([^<]*)</code></td><td>(\d+)</td>(.*?)</tr>", attempts)
    assert len(rows) == 14
    by = {(task, int(n)): cells for task, n, cells in rows}
    assert 'st-check_failed">check_failed</span></td><td>✗</td>' in by[("stats", 1)]
    assert ">reject<div class=\"reason\">calc/power.py: power() has no docstring</div>" in by[("power", 2)]
    assert ">approve<" in by[("power", 4)] and "fake-coder-large" in by[("power", 4)]
    assert re.search(r"<td>1\.\dk / \d+</td><td>\$0\.0\d+</td>", by[("neg", 1)])  # tokens and cost as the CLI said
    tasks = text[text.index("<h2>Tasks</h2>"):text.index("<h2>Attempts</h2>")]
    assert "review: reject, approve" in tasks


def test_every_attempt_leased_a_port_of_its_own_and_its_checks_served_on_it(demo):
    """resources: / uses: in the demo: each attempt's lease is in the ledger, released, and never held by two
    attempts at once; the checks that passed served on the attempt's port."""
    import sqlite3

    folder, proc, events = demo
    db = sqlite3.connect(f"file:{folder / 'state' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT task_id, attempt, value, taken, released FROM leases ORDER BY taken").fetchall()
    finally:
        db.close()
    attempts = [(e["task"], e["attempt"]) for e in events if e["event"] == "task:reserved"]
    assert sorted((t, a) for t, a, *_ in rows) == sorted(attempts)  # one lease per attempt, the critic's too
    assert all(8100 <= int(port) <= 8199 and released is not None for _, _, port, _, released in rows)
    for i, (_, _, port, taken, released) in enumerate(rows):  # a port is one attempt's at a time
        assert all(not (p == port and t < released) for _, _, p, t, _ in rows[i + 1:]), port
    logs = "".join(p.read_text(errors="replace") for p in (folder / "state" / "runs").glob("*/logs/*.log"))
    assert len(re.findall(r"served on port 81\d\d", logs)) >= 8
