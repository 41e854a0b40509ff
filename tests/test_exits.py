"""Exit codes seen by the shell where features meet: a usage limit through the `wvo-batch` process.

The stand-in agent CLI prints what Claude Code prints (`--output-format stream-json`) when the
account's usage limit is reached; the reset it names is hours away, far beyond `--max-wait 1`.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import wvo

pytestmark = pytest.mark.timeout(120)

# One stream-json line as claude -p writes it at a usage limit (tests/fixtures/cli/claude-usage-limit.json,
# trimmed), then exit 1. Each call appends a line to CALLS, so a test sees how many attempts started.
STAND_IN = r'''
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write(os.environ.get("WVO_TASK_ID", "?") + "\n")
print(json.dumps({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-opus-5-5"}), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 429,
                  "api_error_type": "rate_limit_error", "api_error": "usage_limit_reached",
                  "result": "You've hit your 5-hour limit · resets 12pm (UTC)", "session_id": "s-1",
                  "total_cost_usd": 0, "usage": {"input_tokens": 0, "output_tokens": 0}, "num_turns": 1}), flush=True)
sys.exit(1)
'''


@pytest.fixture
def limited(tmp_path):
    script = tmp_path / "claude_stand_in.py"
    script.write_text(STAND_IN)
    calls = tmp_path / "calls.txt"
    rm = tmp_path / "roadmap.yaml"
    executor = {"command": [sys.executable, str(script), "{prompt}"], "output": "claude-json"}
    rm.write_text(
        f"executor: {json.dumps(executor)}\n"
        "tasks:\n"
        "  - {id: T1, title: first}\n"
        "  - {id: T2, title: second}\n"
    )
    return rm, tmp_path / "state", {"CALLS": str(calls)}, calls


def _started(calls) -> list[str]:
    return calls.read_text().split() if calls.exists() else []


def test_usage_limit_beyond_max_wait_exits_75_from_the_command(limited):
    rm, state, env, calls = limited
    r = wvo(rm, "--agents", "1", "--state-dir", state, "--max-wait", "1", "--json", env=env)
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert "stopping (exit 75)" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 75 and doc["status"] == "interrupted"
    assert _started(calls) == ["T1"]  # nothing else started once the limit stopped the hand-out


@pytest.mark.parametrize("loop", [["--iterations", "3"], ["--iterations", "0"], ["--once"]])
def test_usage_limit_exits_75_from_the_autopilot_loop_and_stops_it(limited, loop):
    rm, state, env, calls = limited
    r = wvo(rm, "--agents", "1", "--state-dir", state, "--max-wait", "1", "--json", *loop, env=env)
    assert r.returncode == 75, (r.returncode, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 75 and len(doc["batches"]) == 1
    assert doc["stop_reason"] == "usage limit beyond --max-wait"
    assert _started(calls) == ["T1"]  # the loop did not start a batch that would meet the same limit


# -- the decision itself (pure) ---------------------------------------------------------------------------


def test_one_decision_names_what_matters_most_when_several_things_went_wrong():
    import signal

    from runner.manager.exits import Ending, decide, status

    everything = Ending(record_failed=True, invalid_roadmap=True, usage_limited=True, failed=True)
    assert decide(Ending()) == 0 and status(Ending()) == "succeeded"
    assert decide(Ending(failed=True)) == 1 and status(Ending(failed=True)) == "failed"
    assert decide(Ending(usage_limited=True, failed=True)) == 75  # cron comes back; --resume continues
    assert status(Ending(usage_limited=True, failed=True)) == "interrupted"
    assert decide(Ending(invalid_roadmap=True, usage_limited=True)) == 2
    assert decide(everything) == 74 and status(everything) == "failed"
    assert decide(Ending(signal=signal.SIGINT).merge(everything)) == 130
    assert decide(everything.merge(Ending(signal=signal.SIGTERM))) == 143
    assert Ending(signal=signal.SIGTERM).merge(Ending(signal=signal.SIGINT)).signal == signal.SIGTERM  # the first
