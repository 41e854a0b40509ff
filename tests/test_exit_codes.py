"""Every exit code of the README's table, as the shell sees it: from the real `wvo-batch` process.

`Run.exit_code` is not enough (issue 20): a usage limit was printed as "exit 75" while the process exited
0. So each row of the table is a run of `python -m runner` here, and the assertion is on its return code.
The agent CLI that hits a usage limit is a stand-in printing Claude Code's stream-json, with a reset time
hours away (beyond `--max-wait`).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from conftest import ROOT, wvo
from helpers import Fifo, reaped

pytestmark = pytest.mark.timeout(120)

# Claude Code's `-p --output-format stream-json --verbose` when the subscription's 5-hour limit is hit:
# the init line, a rejected rate_limit_event carrying the reset time, then the error result. The reset is
# RESET_IN seconds from now, far beyond the --max-wait the tests give.
CLAUDE_USAGE_LIMIT = r'''
import json, os, sys, time
calls = os.environ.get("FAKE_CALLS")
if calls:
    with open(calls, "a") as f:
        f.write(json.dumps({"task": os.environ.get("WVO_TASK_ID"), "cwd": os.getcwd(), "argv": sys.argv[1:]}) + "\n")
reset = int(time.time()) + int(os.environ.get("RESET_IN", "10800"))
session = "00000000-0000-4000-8000-00000000000%d" % (len(open(calls).read().splitlines()) if calls else 1)
def out(doc):
    print(json.dumps(doc), flush=True)
out({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": session, "tools": ["Write"],
     "model": "claude-sonnet-4-5", "permissionMode": "acceptEdits", "apiKeySource": "ANTHROPIC_API_KEY"})
out({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": reset,
     "rateLimitType": "five_hour", "isUsingOverage": False}, "session_id": session})
out({"type": "result", "subtype": "success", "is_error": True, "num_turns": 1, "duration_ms": 200,
     "api_error_status": 429, "api_error": "usage_limit_reached",
     "result": "You've hit your 5-hour limit \u00b7 resets in 3 hours", "session_id": session, "total_cost_usd": 0,
     "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}})
sys.exit(1)
'''


def usage_limited_roadmap(tmp_path: Path, n: int = 3, extra: str = "") -> tuple[Path, Path]:
    """A roadmap of n agent-CLI tasks (shared mode: no repository) whose CLI always hits a usage limit."""
    script = tmp_path / "claude_stand_in.py"
    script.write_text(CLAUDE_USAGE_LIMIT)
    calls = tmp_path / "calls.jsonl"
    rm = tmp_path / "roadmap.yaml"
    tasks = "".join(f"  - id: T{i}\n    title: task {i}\n" for i in range(n))
    rm.write_text(
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        f"defaults:\n  env: {{FAKE_CALLS: {json.dumps(str(calls))}}}\n{extra}"
        f"tasks:\n{tasks}"
    )
    return rm, calls


def calls_of(calls: Path) -> list[dict]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def start(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def bounded(*args, timeout: float, cwd=None) -> tuple[int | None, str, str]:
    """Run wvo-batch; a run still going after `timeout` is killed whole and has no exit code (None)."""
    proc = subprocess.Popen([sys.executable, "-m", "runner", *map(str, args)], cwd=cwd or ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def commands(tmp_path: Path, tasks: dict[str, str], extra: str = "") -> Path:
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(extra + "tasks:\n" + "".join(f"  - id: {t}\n    command: {json.dumps(c)}\n" for t, c in tasks.items()))
    return rm


# ---- 0 ---------------------------------------------------------------------------------------------


def test_0_every_runnable_task_succeeded(tmp_path):
    rm = commands(tmp_path, {"a": "true", "b": "echo b"})
    r = wvo(rm, "--state-dir", tmp_path / "s")
    assert r.returncode == 0, r.stderr


# ---- 1 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tasks, extra, args, expected",
    [
        ({"ok": "true", "bad": "exit 3"}, "", [], {"ok": "succeeded", "bad": "failed"}),
        ({"slow": "exec sleep 30"}, "defaults:\n  timeout: 1\n", ["--grace", "0.2"], {"slow": "timed_out"}),
        ({"b1": "exit 1", "b2": "exit 1", "b3": "true"}, "", ["--max-failures", "1", "--agents", "1"],
         {"b1": "failed"}),
    ],
    ids=["a task failed", "a task timed out", "max-failures stopped the run"],
)
def test_1_a_task_failed_or_timed_out_or_max_failures(tmp_path, tasks, extra, args, expected):
    rm = commands(tmp_path, tasks, extra=extra)
    r = wvo(rm, "--state-dir", tmp_path / "s", "--json", *args)
    assert r.returncode == 1, r.stderr
    no_traceback(r)
    statuses = {row["task"]: row["status"] for row in json.loads(r.stdout)["tasks"]}
    assert {t: statuses[t] for t in expected} == expected
    if "--max-failures" in args:
        assert statuses["b3"] != "succeeded", statuses  # nothing was handed out after the first failure


# ---- 2: nothing ran ------------------------------------------------------------------------------


def _two(r, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    no_traceback(r)
    for w in words:
        assert w in r.stderr, r.stderr


def test_2_invalid_roadmap(tmp_path):
    marker = tmp_path / "ran"
    rm = commands(tmp_path, {"a": f"touch {marker}", "b": "true"}, extra="")
    rm.write_text(rm.read_text() + "  - id: a\n    command: 'true'\n")  # a second task `a`
    _two(wvo(rm, "--state-dir", tmp_path / "s"), "roadmap.yaml", "a")
    assert not marker.exists()


def test_2_usage(tmp_path):
    rm = commands(tmp_path, {"a": "true"})
    _two(wvo(rm, "--agents", "zero", "--state-dir", tmp_path / "s"), "--agents")


def test_2_state_dir_writable_by_others(tmp_path):
    rm = commands(tmp_path, {"a": f"touch {tmp_path / 'ran'}"})
    state = tmp_path / "s"
    state.mkdir()
    os.chmod(state, 0o777)
    _two(wvo(rm, "--state-dir", state), str(state))
    assert not (tmp_path / "ran").exists()


def test_2_damaged_ledger(tmp_path):
    rm = commands(tmp_path, {"a": f"echo x >> {tmp_path / 'ran'}"})
    state = tmp_path / "s"
    assert wvo(rm, "--state-dir", state).returncode == 0
    with open(state / "ledger.sqlite", "r+b") as f:  # the header and first page turned to garbage
        f.write(b"\xde\xad" * 2048)
    for suffix in ("-wal", "-shm"):
        (state / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    _two(wvo(rm, "--state-dir", state), "ledger")
    assert (tmp_path / "ran").read_text() == "x\n"


# ---- 3 ---------------------------------------------------------------------------------------------


def test_3_status_with_no_run_in_progress(tmp_path):
    rm = commands(tmp_path, {"a": "true"})
    r = wvo(rm, "--state-dir", tmp_path / "s", "--status")
    assert r.returncode == 3, r.stderr
    no_traceback(r)


# ---- 74 --------------------------------------------------------------------------------------------


def test_74_an_events_file_that_cannot_be_written(tmp_path):
    rm = commands(tmp_path, {"a": "true", "b": "true"})
    r = wvo(rm, "--state-dir", tmp_path / "s", "--events", "/dev/full")
    assert r.returncode == 74, r.stderr
    assert "events" in r.stderr
    no_traceback(r)


# ---- 75 --------------------------------------------------------------------------------------------


def test_75_another_run_holds_the_lock(tmp_path):
    fifo = Fifo(tmp_path / "ready")
    rm = commands(tmp_path, {"hold": f"echo up > {fifo.path}; exec sleep 60"})
    first = start(rm, "--state-dir", tmp_path / "s", "--grace", "0.5")
    try:
        fifo.wait_lines(1)
        second = wvo(rm, "--state-dir", tmp_path / "s")
        assert second.returncode == 75, second.stderr
        no_traceback(second)
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
        fifo.close()


def test_75_a_usage_limit_beyond_max_wait(tmp_path, backend):
    rm, calls = usage_limited_roadmap(tmp_path)
    code, out, err = bounded(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--max-wait", "60", "--json",
                             *backend, timeout=20, cwd=tmp_path)  # fmt: skip
    assert code is not None, f"still running after 20 s, {len(calls_of(calls))} calls: {err[-1500:]}"
    assert code == 75, (code, err[-2000:])
    assert "Traceback" not in err
    assert len(calls_of(calls)) == 1  # the account paused: nothing else started
    assert "--resume" in err
    assert json.loads(out)["exit_code"] == 75


def test_75_a_usage_limit_beyond_max_wait_with_iterations(tmp_path):
    rm, calls = usage_limited_roadmap(tmp_path)
    r = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--max-wait", "60", "--iterations", "3",
            "--max-tasks", "1")  # fmt: skip
    assert r.returncode == 75, (r.returncode, r.stderr[-2000:])
    no_traceback(r)
    assert len(calls_of(calls)) == 1  # no later batch started either


# ---- 130, 143 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_130_143_interrupted_or_terminated(tmp_path, sig, code):
    fifo = Fifo(tmp_path / "ready")
    rm = commands(tmp_path, {"long": f"echo up > {fifo.path}; exec sleep 60", "after": "true"})
    rm.write_text(rm.read_text() + "    dependencies: [long]\n")
    proc = start(rm, "--state-dir", tmp_path / "s", "--grace", "0.5", "--json")
    with closing(fifo), reaped(proc):
        fifo.wait_lines(1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert {row["task"]: row["status"] for row in json.loads(out)["tasks"]}["long"] == "interrupted"


def test_every_code_of_the_readme_table_is_tested_here():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("###", 1)[0]
    codes = {int(line.split("|")[1]) for line in table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    import re

    names = re.findall(r"^def test_((?:\d+_)+)", Path(__file__).read_text(), re.M)  # test_130_143_...: both
    tested = {int(n) for name in names for n in name.strip("_").split("_")}
    assert codes and codes <= tested, f"no test for exit code(s) {sorted(codes - tested)}"
