"""Checks after an agent-CLI attempt, and the feedback a retry gets (issues 15 and 16), end to end.

A real repository in tmp_path; the agent is a small shell program run through an executor (no
`command`), so the prompt it gets is the executor's template with `{feedback}` filled in.
"""

from __future__ import annotations

import json

import pytest

from conftest import wvo
from test_worktrees import git, make_repo, rows, run_json

pytestmark = pytest.mark.timeout(120)

# The agent: keeps its prompt, WVO_FEEDBACK and its worktree variables, and does the work right only
# once its prompt carries the failing check's output (the marker is printed by the check alone).
AGENT = (
    'printf "%s" "$1" > prompt.txt; printf "%s" "$WVO_FEEDBACK" > feedback.txt; '
    'printf "%s %s %s" "$WVO_BRANCH" "$WVO_BASE_COMMIT" "$WVO_WORKTREE" > where.txt; '
    'case "$1" in *MARKER-42*) echo ok > good.txt;; *) echo bad > good.txt;; esac'
)
CHECK = "grep -q ok good.txt || { echo not good yet: MARKER-$((40 + 2)); exit 2; }"  # 42 only in its output

ROADMAP = f"""
executor:
  command: [sh, -c, {json.dumps(AGENT)}, agent, "{{prompt}}"]
defaults:
  checks: [{json.dumps(CHECK)}]
  retries: 1
tasks:
  - id: fix
    title: Make it good
"""


def test_a_failing_check_fails_the_attempt_and_the_retry_gets_its_output_in_the_prompt(tmp_path, backend):
    repo = make_repo(tmp_path, ROADMAP)
    code, doc, err = run_json(repo, "--agents", "1", *backend)
    assert code == 0, err
    row = rows(doc)["fix"]
    assert row["status"] == "succeeded" and row["attempts"] == 2
    landed = lambda name: git(repo, "show", f"wvo/roadmap:{name}")  # noqa: E731
    prompt, feedback = landed("prompt.txt"), landed("feedback.txt")
    for text in (prompt, feedback):  # the prompt's {feedback} and WVO_FEEDBACK alike
        assert "check failed: grep -q ok good.txt" in text and "exit 2" in text
        assert "MARKER-42" in text  # the check's own output (its last lines)
    assert landed("good.txt") == "ok\n"
    branch, base, worktree = landed("where.txt").split()
    assert branch.startswith("wvo/") and branch.endswith("/fix-2") and len(base) == 40 and "/worktrees/" in worktree
    # the first attempt failed its check: check_failed, its work on its own branch
    events = [json.loads(ln) for ln in open(f"{doc['folder']}/events.jsonl")]
    first = next(e for e in events if e["event"] == "task:finished" and e["attempt"] == 1)
    assert first["status"] == "check_failed" and first["error"].startswith("check failed: grep -q ok good.txt")
    with open(first["log"]) as f:  # the check's output, under its header, in the attempt's log
        assert "===== wvo-batch check 1/1" in f.read()
    # the agent's work was committed as `<id>: <title>` by wvo-batch
    log = git(repo, "log", "--format=%an %s", f"{row['workspace']['commit']}", "-1")
    assert log.strip() == "wvo-batch fix: Make it good"


def test_check_prints_the_workspace_and_refuses_an_into_that_is_checked_out(tmp_path):
    repo = make_repo(tmp_path, ROADMAP)
    proc = wvo(repo / "roadmap.yaml", "--check")
    assert proc.returncode == 0, proc.stderr
    assert f"workspace: worktree for 1 task(s) in {repo}: from main, landing on wvo/roadmap (land: merge)" in proc.stdout
    proc = wvo(repo / "roadmap.yaml", "--check", "--into", "main")
    assert proc.returncode == 2
    assert "'main' is checked out" in proc.stderr and "Traceback" not in proc.stderr
