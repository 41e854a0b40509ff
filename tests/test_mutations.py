"""Bugs the suite once missed (issue 20): each planted on purpose left every test green. Each test here
goes through the real `wvo-batch` command and fails with its bug planted:

| bug planted                                                        | test                                            |
|--------------------------------------------------------------------|-------------------------------------------------|
| a critic's answer without a VERDICT line taken as APPROVE          | test_a_critic_without_a_verdict_never_approves   |
| the budget counting only each task's first attempt                 | test_the_budget_counts_every_attempt_of_a_task   |
| the merged-result check's output dropped from the retry's feedback | test_the_merged_results_check_output_reaches_the_retry |
| the checks on the merged result not run                            | test_the_checks_run_on_the_merged_result_that_lands |
| a critic's change to its copy or the task branch kept              | test_nothing_a_critic_does_in_its_copy_is_kept   |

The last two were caught before only by accident (a crash test's flag file; `git branch -f` failing on a
checked-out branch); here they are asserted on purpose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_compose import ledger_attempts
from test_worktrees import checkout_state, git, make_repo, rows, run_json, worktrees

pytestmark = pytest.mark.timeout(120)

# Worker and critic in one (WVO_REVIEW tells them apart), plain text output: the verdict is read from
# what the critic prints. CRITIC says how the critic behaves.
AGENT = r'''
import os, pathlib, subprocess, sys
out = pathlib.Path(os.environ["AGENT_OUT"])
attempt = int(os.environ["WVO_ATTEMPT"])
review = bool(os.environ.get("WVO_REVIEW"))
with open(out / "calls.txt", "a") as f:
    f.write(("critic" if review else "worker") + "\n")
if not review:
    pathlib.Path("hello.txt").write_text(f"hello world, attempt {attempt}\n")
    print("wrote hello.txt")
    sys.exit(0)
n = (out / "calls.txt").read_text().split().count("critic")
mode = os.environ["CRITIC"]
if mode == "silent":  # an answer, and no verdict in it
    print("Reviewed. The greeting looks fine to me.")
    sys.exit(0)
if mode == "vandal" and n == 1:
    # Edits and commits in its copy, then points the task branch at its own commit: update-ref moves a
    # branch wherever it is checked out, so nothing but wvo-batch's own check stands in the way.
    pathlib.Path("critic.txt").write_text("the critic was here\n")
    pathlib.Path("hello.txt").write_text("rewritten by the critic\n")
    git = ["git", "-c", "user.name=c", "-c", "user.email=c@example.invalid"]
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "critic"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (out / "critic-commit").write_text(head)
    subprocess.run(["git", "update-ref", "refs/heads/" + os.environ["WVO_BRANCH"], head], check=True)
print("Reviewed.\nVERDICT: APPROVE")
'''


def review_repo(tmp_path: Path, critic: str, extra: str = "") -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    roadmap = (
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, '{{prompt}}']\n"
        "agents: {worker: 1, critic: 1}\n"
        "workspace: {mode: worktree}\n"
        "defaults:\n  review: true\n  retries: 1\n"
        f"  env: {{AGENT_OUT: {json.dumps(str(out))}, CRITIC: {critic}}}\n{extra}"
        "tasks:\n  - id: T1\n    title: write the greeting\n"
    )
    return make_repo(tmp_path, roadmap), out


def test_a_critic_without_a_verdict_never_approves(tmp_path):
    repo, out = review_repo(tmp_path, "silent")
    code, doc, err = run_json(repo)
    assert code == 1, err[-2000:]
    row = rows(doc)["T1"]
    assert row["status"] != "succeeded", row
    assert "approve" not in [v["verdict"] for v in (row.get("review") or {}).get("verdicts", [])]
    assert git(repo, "rev-parse", "wvo/roadmap") == git(repo, "rev-parse", "main"), "unreviewed work landed"
    assert "critic" in (out / "calls.txt").read_text().split()


# ---- the budget ----------------------------------------------------------------------------------

# Claude Code's JSON result: the first FAIL_FIRST calls end at their turn limit (a failure that counts),
# later ones succeed; every call is a session of its own and costs $1.
CLAUDE_COSTLY = r'''
import json, os, sys
calls = os.environ["FAKE_CALLS"]
with open(calls, "a") as f:
    f.write(os.environ["WVO_TASK_ID"] + "\n")
n = len(open(calls).read().splitlines())
failed = n <= int(os.environ.get("FAIL_FIRST", "0"))
print(json.dumps({"type": "result", "subtype": "error_max_turns" if failed else "success", "is_error": failed,
                  "num_turns": 3, "result": "" if failed else "done", "session_id": f"session-{n}",
                  "total_cost_usd": 1.0, "usage": {"input_tokens": 1000, "cache_creation_input_tokens": 0,
                                                   "cache_read_input_tokens": 0, "output_tokens": 100}}))
sys.exit(1 if failed else 0)
'''


def test_the_budget_counts_every_attempt_of_a_task(tmp_path):
    # Attempts 1 and 2 fail at $1 each: $2 >= $1.50, so attempt 3 never starts. A budget that counts only
    # a task's first attempt sees $1 and lets the third run (and succeed).
    script, calls = tmp_path / "claude.py", tmp_path / "calls.txt"
    script.write_text(CLAUDE_COSTLY)
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        f"defaults:\n  retries: 3\n  env: {{FAKE_CALLS: {json.dumps(str(calls))}, FAIL_FIRST: '2'}}\n"
        "tasks:\n  - id: T1\n    title: one\n"
    )
    from conftest import wvo

    r = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--budget", "1.5", "--json", cwd=tmp_path)
    assert calls.read_text().split() == ["T1", "T1"], r.stderr[-2000:]
    assert r.returncode == 1, r.stderr[-2000:]
    assert "budget reached: $2.00 of $1.50" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["usage"]["cost_usd"] == pytest.approx(2.0)
    assert [a["cost_usd"] for a in ledger_attempts(tmp_path / "s")] == [1.0, 1.0]


# ---- checks on the merged result -------------------------------------------------------------------

# The agent keeps its prompt and does the work right only once the prompt carries the output of the
# check that failed on the merged result (the marker is printed by that check alone).
FIXER = (
    'printf "%s" "$1" > prompt.txt; '
    'case "$1" in *LANDMARK-42*) echo ok > good.txt;; *) echo bad > good.txt;; esac'
)
# Passes in the attempt's worktree; on the merged result (the landing worktree) it wants good.txt to say ok.
MERGED_ONLY = 'case "$PWD" in */landing) grep -q ok good.txt || { echo merged result not good: LANDMARK-$((40 + 2)); exit 3; };; esac'


def test_the_merged_results_check_output_reaches_the_retry(tmp_path):
    roadmap = (
        f"executor:\n  command: [sh, -c, {json.dumps(FIXER)}, agent, '{{prompt}}']\n"
        f"workspace: {{mode: worktree}}\n"
        f"defaults:\n  checks: [{json.dumps(MERGED_ONLY)}]\n  retries: 1\n"
        "tasks:\n  - id: fix\n    title: make it good\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "1")
    row = rows(doc)["fix"]
    assert row["attempts"] == 2, row
    prompt = git(repo, "show", "wvo/roadmap:prompt.txt")
    assert "LANDMARK-42" in prompt, "the retry's prompt lacks the merged-result check's output"
    assert code == 0, err[-2000:]
    assert row["status"] == "succeeded"
    assert git(repo, "show", "wvo/roadmap:good.txt") == "ok\n"


def test_the_checks_run_on_the_merged_result_that_lands(tmp_path):
    seen = tmp_path / "checks.txt"
    # Logs where it ran and on which commit; fails on a merge commit (the merged result), never in a
    # worktree, whose tip is the task's own commit.
    check = f'echo "$PWD $(git rev-parse HEAD)" >> {seen}; test -z "$(git rev-parse -q --verify HEAD^2)"'
    roadmap = "workspace:\n  mode: worktree\n" + (
        "tasks:\n"
        f"  - id: lands\n    command: \"echo a > a.txt\"\n    checks: ['echo \"$PWD $(git rev-parse HEAD)\" >> {seen}']\n"
        f"  - id: blocked\n    command: \"echo b > b.txt\"\n    checks: [{json.dumps(check)}]\n"
        "    dependencies: [lands]\n"
    )
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    code, doc, err = run_json(repo, "--agents", "1")
    r = rows(doc)
    assert r["blocked"]["status"] == "check_failed", json.dumps(r["blocked"])
    assert "merged result" in json.dumps(r["blocked"]), r["blocked"]
    assert "b.txt" not in git(repo, "ls-tree", "--name-only", "wvo/roadmap")
    assert code == 1, err[-2000:]
    # `lands` landed: its check ran twice, on its own commit in its worktree, then elsewhere on the very
    # commit that is now on into
    runs = [tuple(line.split()) for line in seen.read_text().splitlines()]
    commit, landed = r["lands"]["workspace"]["commit"], r["lands"]["workspace"]["landed"]
    assert landed == git(repo, "rev-parse", "wvo/roadmap~1").strip() or landed == git(repo, "rev-parse", "wvo/roadmap").strip()
    mine = [(folder, head) for folder, head in runs if head in (commit, landed)]
    assert [head for _, head in mine] == [commit, landed], runs
    assert mine[0][0] != mine[1][0] and mine[1][0] != str(repo)
    assert checkout_state(repo) == before
    assert len(worktrees(repo)) == 1


# ---- the critic's copy ----------------------------------------------------------------------------


def test_nothing_a_critic_does_in_its_copy_is_kept(tmp_path):
    repo, out = review_repo(tmp_path, "vandal")
    before = checkout_state(repo)
    code, doc, err = run_json(repo)
    critic_commit = (out / "critic-commit").read_text().strip()
    assert code == 0, err[-2000:]
    row = rows(doc)["T1"]
    assert row["status"] == "succeeded"
    assert [v["verdict"] for v in row["review"]["verdicts"]] == ["approve"], "the vandal's review was counted"
    landed = git(repo, "ls-tree", "--name-only", "wvo/roadmap").split()
    assert "critic.txt" not in landed, "the critic's commit landed"
    assert git(repo, "show", "wvo/roadmap:hello.txt").startswith("hello world, attempt ")
    refs = git(repo, "for-each-ref", "--contains", critic_commit, "--format=%(refname)").split()
    assert refs == [], f"the critic's commit is on {refs}"
    assert checkout_state(repo) == before
    assert len(worktrees(repo)) == 1
