"""The summary's utilisation counts an agent busy only while it holds the attempt (issue 21: 156%, issue 22: 105%).

A worktree task's attempt ends for the agent when its result comes back; it then waits in the landing queue
while the agent works on other tasks. Counting it busy until it landed put the summary over 100%.
"""

from __future__ import annotations

import pytest

from runner.manager.telemetry import summarize
from test_worktrees import make_repo, run_json

pytestmark = pytest.mark.timeout(120)

ROADMAP = """\
workspace: {mode: worktree}
tasks:
""" + "".join(
    f"""  - id: t{i}
    command: ["sh", "-c", "echo {i} > f{i}.txt"]
    checks: ["sleep 0.4"]
"""
    for i in range(6)
)


def test_a_run_whose_tasks_wait_to_land_never_reports_more_than_100_percent(tmp_path):
    """6 tasks on 2 agents, each landing re-check 0.4 s: the landing queue is the limit, agents sit idle."""
    repo = make_repo(tmp_path, ROADMAP)
    code, doc, err = run_json(repo, "--agents", "2")
    assert code == 0, err
    utilisation = doc["telemetry"]["utilization"]
    assert 0 < utilisation <= 1.0, utilisation


def test_an_attempt_released_before_its_end_counts_until_its_release():
    attempts = [
        {"task": "a", "start": 0.0, "end": 3.0, "released": 1.0},  # landed at 3, the agent let go at 1
        {"task": "b", "start": 1.0, "end": 2.0},
    ]
    out = summarize(attempts, agents=1, deps={}, priorities={})
    assert out["utilization"] == pytest.approx(2.0 / 3.0, abs=1e-3)
