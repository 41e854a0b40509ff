"""Costs that cannot be gamed and a budget that can count (issue 21): a negative or NaN cost is unknown, never
taken off the spend; `--budget` with a CLI that reports no cost is refused unless the user accepts it.

The parser with plain calls; the rest through the real `wvo-batch` process with a stand-in CLI that prints
claude's stream-json result with the cost it is told to report.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import wvo
from runner.coding import budget, executors, output
from runner.model import Task

CLAUDE = r'''
import json, os, sys
cost = json.loads(os.environ["COST"])  # a number, or the strings "NaN" / "-Infinity" (Python's json reads them)
print(json.dumps({"type": "system", "subtype": "init", "session_id": "s-" + os.environ["WVO_TASK_ID"], "model": "m"}))
print('{"type": "result", "subtype": "success", "is_error": false, "session_id": "s-%s", "result": "done", '
      '"total_cost_usd": %s, "usage": {"input_tokens": %s, "output_tokens": 5}}'
      % (os.environ["WVO_TASK_ID"], os.environ["COST"], os.environ.get("TOKENS", "10")))
'''


def _result(cost, tokens=10) -> output.CliResult:
    line = ('{"type": "result", "subtype": "success", "is_error": false, "result": "ok", "total_cost_usd": %s, '
            '"usage": {"input_tokens": %s, "output_tokens": 5}}' % (cost, tokens))
    return output.parse("claude-json", line)


@pytest.mark.parametrize("cost", ["-3.5", "NaN", "Infinity", "-Infinity", '"0.5"'])
def test_a_cost_that_is_not_a_cost_is_unknown_and_says_so(cost):
    result = _result(cost)
    assert result.cost_usd is None
    assert result.refused and result.refused[0].startswith("total_cost_usd ") and "unknown" in result.refused[0]
    assert output.attempt_cost(result, None) is None


def test_negative_tokens_are_zero_and_said_so_and_a_good_result_refuses_nothing():
    result = _result("0.25", tokens=-1000)
    assert result.usage.input == 0 and result.cost_usd == 0.25
    assert result.refused == ("input_tokens -1000 is not a token count (a number, 0 or more): counted as 0",)
    assert _result("0.25").refused == ()


def test_a_session_total_is_never_lowered_by_a_bad_earlier_total():
    later = output.CliResult(cost_usd=2.0, cost_cumulative=True)
    assert output.attempt_cost(later, -5.0) == 2.0  # not 7.0
    assert output.attempt_cost(later, float("nan")) == 2.0
    assert output.attempt_cost(later, 0.5) == 1.5
    assert output.attempt_cost(output.CliResult(cost_usd=-1.0), None) is None


def test_which_executors_can_count_their_spend():
    tasks = [Task("t")]
    assert budget.uncounted(executors.parse("claude"), tasks) is None
    assert "no `prices:` table" in budget.uncounted(executors.parse("codex"), tasks)
    priced = executors.parse({"command": ["codex", "{prompt}"], "output": "codex-json", "models": {"default": "a"},
                              "prices": {"a": {"input": 1, "output": 1}}})
    assert budget.uncounted(priced, tasks) is None
    assert "no price for b" in budget.uncounted(priced, [Task("t", meta={"model": "b"})])
    assert "reports no cost (output: plain)" in budget.uncounted(executors.parse({"command": ["aider", "{prompt}"]}), tasks)


# -- on the process -------------------------------------------------------------------------------------------


def _roadmap(tmp_path, executor: dict, extra: str = "", cost: str = "0.5") -> str:
    path = tmp_path / "roadmap.yaml"
    path.write_text(f"executor: {json.dumps(executor)}\n{extra}"
                    f"tasks:\n  - id: T1\n    title: one\n    env: {{COST: '{cost}'}}\n"
                    f"  - id: T2\n    title: two\n    env: {{COST: '0.25'}}\n    dependencies: [T1]\n")
    return str(path)


def _claude(tmp_path) -> dict:
    script = tmp_path / "claude.py"
    script.write_text(CLAUDE)
    return {"command": [sys.executable, str(script), "{prompt}"], "output": "claude-json"}


@pytest.mark.timeout(60)
def test_a_negative_cost_is_refused_with_a_warning_in_the_log_and_not_taken_off_the_spend(tmp_path):
    rm = _roadmap(tmp_path, _claude(tmp_path), cost="-100")
    proc = wvo(rm, "--state-dir", tmp_path / "state", "--json", "--budget", "0.2")
    doc = json.loads(proc.stdout)
    rows = {r["task"]: r for r in doc["tasks"]}
    assert rows["T1"]["usage"].get("cost_usd") is None  # unknown, not -100
    assert doc["usage"]["cost_usd"] == pytest.approx(0.25)  # T2's alone: the budget still counts
    log = open(rows["T1"]["log"]).read()
    assert "wvo-batch: warning: total_cost_usd -100 is not a cost (a number, 0 or more): the attempt's cost is unknown" in log
    assert proc.returncode == 1, proc.stderr  # the budget was reached by T2's $0.25


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["flag", "roadmap"])
def test_a_budget_with_a_cli_that_reports_no_cost_is_refused_at_check_and_at_run(tmp_path, where):
    plain = {"command": [sys.executable, "-c", "print('done')", "{prompt}"]}
    rm = _roadmap(tmp_path, plain, extra="budget: 5\n" if where == "roadmap" else "")
    budget = ("--budget", "5") if where == "flag" else ()
    for mode in ("--check", "--quiet"):
        proc = wvo(rm, "--state-dir", tmp_path / "state", mode, *budget)
        assert proc.returncode == 2, (mode, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr and lines[0].startswith("wvo-batch: --budget $5.00")
        assert "$5.00: executor " in lines[0] and "reports no cost (output: plain)" in lines[0]
        assert "--budget-unknown-cost ok" in lines[0]
    assert not (tmp_path / "state" / "ledger.sqlite").exists()  # nothing ran


@pytest.mark.timeout(60)
def test_a_budget_with_no_cost_runs_with_one_warning_once_accepted(tmp_path):
    plain = {"command": [sys.executable, "-c", "print('done')", "{prompt}"]}
    rm = _roadmap(tmp_path, plain)
    proc = wvo(rm, "--state-dir", tmp_path / "state", "--quiet", "--budget", "5", "--budget-unknown-cost", "ok")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning")]
    assert warnings == [f"warning: budget $5.00: executor {sys.executable} reports no cost (output: plain); "
                        "that spend is not counted (--budget-unknown-cost ok)"]
    bad = wvo(rm, "--check", "--budget-unknown-cost", "maybe")
    assert bad.returncode == 2 and "--budget-unknown-cost: must be one of error, ok (got 'maybe')" in bad.stderr


@pytest.mark.timeout(60)
def test_a_budget_with_a_cli_that_prices_itself_or_only_commands_needs_nothing(tmp_path):
    rm = _roadmap(tmp_path, _claude(tmp_path))
    assert wvo(rm, "--check", "--budget", "5").returncode == 0
    commands = tmp_path / "commands.yaml"
    commands.write_text("budget: 1\ntasks:\n  - id: A\n    command: 'true'\n")
    proc = wvo(commands, "--state-dir", tmp_path / "s2", "--quiet")
    assert proc.returncode == 0 and "warning" not in proc.stderr
