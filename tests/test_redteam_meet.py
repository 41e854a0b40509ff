"""Where two features meet (red team, second pass): each test crosses two features a user combines.

Real git repositories in tmp_path and the real `wvo-batch` command, as in tests/test_worktrees.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, wvo
from helpers import ledger_rows
from test_worktrees import WORKTREE, _marked, git, make_repo, rows, run_json, worktrees

pytestmark = pytest.mark.timeout(120)


def _run_killed_when(args: list, flag: Path, ready, why: str = "", before_kill=None):
    """Start `wvo-batch args` in a session of its own (its processes marked with `flag`), SIGKILL its process group
    once ready() is true, and wait until nothing marked is left. before_kill(): what to read just before the kill."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)], cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "WVO_TEST_MARK": str(flag)},
    )  # fmt: skip
    seen = None
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, why or "the run never got there"
            time.sleep(0.02)
        if before_kill is not None:
            seen = before_kill()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _marked(str(flag)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in _marked(str(flag)):
            p.kill()
    return seen


def _killed_mid_landing(tmp_path: Path, check: str, settings: str = "") -> tuple[Path, Path, Path]:
    """A run of one worktree task SIGKILLed while the check on its merged result runs; (repo, runs file, flag).

    The check (after `check`) waits in the landing worktree until `flag` exists; the resume creates it."""
    flag = tmp_path / "resumed"
    runs = tmp_path / "runs.txt"
    check = f'{check}; [ -e "{flag}" ] && exit 0; case "$PWD" in */landing) touch "{flag}.hit"; exec sleep 60;; esac'
    roadmap = WORKTREE + f"  checks: ['{check}']\n" + settings + (
        f"tasks:\n  - id: only\n    command: \"echo ran >> {runs}; echo work > work.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    _run_killed_when([repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "-q"], flag,
                     Path(f"{flag}.hit").exists)  # the landing's check is running
    return repo, runs, flag


def test_resume_x_leases_a_committed_attempt_lands_with_its_port_not_run_again(tmp_path):
    # `resources:`/`uses:` hold a task's port through its landing's checks; the --resume of a run killed
    # mid-landing checked the committed attempt on the merged result with no WVO_PORT, the check failed,
    # and the task ran again (the fleet demo's own roadmap: every task there checks on $WVO_PORT).
    repo, runs, flag = _killed_mid_landing(tmp_path, '[ -n "$WVO_PORT" ] || exit 7',
                                           "resources:\n  port: {range: 18100-18199}\ndefaults:\n  uses: [port]\n")
    flag.write_text("")
    code, doc, err = run_json(repo, "--resume")
    assert code == 0, err
    assert runs.read_text() == "ran\n", f"the task ran again: {err[-1500:]}"
    assert "landed now" in err
    assert git(repo, "show", "wvo/roadmap:work.txt") == "work\n"
    assert rows(doc)["only"]["status"] == "succeeded"
    assert doc["leases"] == {"port": {}}  # the resume's lease was given back
    assert len(worktrees(repo)) == 1


def test_resume_x_landing_a_committed_attempt_that_fails_its_check_is_named_in_one_line(tmp_path):
    # The resume printed the verdict's repr: `ChecksFailed(branch=..., detail='...\n...')`, the check's whole
    # output on one line of the terminal. Now: its first line, as a landing's failure says it in a run.
    go = tmp_path / "go"
    repo, runs, flag = _killed_mid_landing(tmp_path, f'[ -e "{go}" ] && {{ echo first; echo second; exit 3; }}; true')
    go.write_text("")
    code, doc, err = run_json(repo, "--resume")
    said = [line for line in err.splitlines() if "does not land" in line]
    assert len(said) == 1 and "ChecksFailed(" not in said[0] and "\\n" not in said[0], err[-2000:]
    assert "check failed on the merged result:" in said[0]


def test_resume_x_land_branch_a_dead_runs_committed_attempt_is_not_merged(tmp_path):
    # `land: branch` keeps each success on its branch and merges nothing; the --resume of a killed run
    # merged the dead run's committed attempts into `into` all the same (and said "landed now").
    flag = tmp_path / "resumed"
    runs = tmp_path / "runs.txt"
    roadmap = WORKTREE + (
        "  land: branch\n"
        "tasks:\n"
        f"  - id: quick\n    command: \"echo quick >> {runs}; echo work > work.txt\"\n"
        f"  - id: slow\n    command: '[ -e \"{flag}\" ] && {{ echo s > s.txt; exit 0; }}; touch \"{flag}.hit\"; exec sleep 60'\n"
    )
    repo = make_repo(tmp_path, roadmap)
    state = tmp_path / "state"

    def quick_recorded() -> bool:
        if not (state / "ledger.sqlite").exists():
            return False
        return any(r["task_id"] == "quick" and r["outcome"] == "succeeded" for r in ledger_rows(state, "attempts"))

    into = _run_killed_when([repo / "roadmap.yaml", "--state-dir", state, "-q", "--agents", "2"], flag,
                            lambda: Path(f"{flag}.hit").exists() and quick_recorded(), "quick never succeeded while slow ran",
                            lambda: git(repo, "rev-parse", "wvo/roadmap"))  # fmt: skip
    flag.write_text("")
    code, doc, err = run_json(repo, "--resume")
    assert code == 0, err
    assert runs.read_text() == "quick\n"  # it succeeded in the dead run: not run again
    assert "landed now" not in err
    assert git(repo, "rev-parse", "wvo/roadmap") == into, "land: branch, yet the resume merged into `into`"
    assert "work.txt" not in git(repo, "ls-tree", "--name-only", "wvo/roadmap")
    kept = [b.strip(" *+") for b in git(repo, "branch", "--list", "wvo/*/quick").splitlines()]
    assert len(kept) == 1 and git(repo, "show", f"{kept[0]}:work.txt") == "work\n"  # its work, on its branch


# An agent CLI stand-in answering as `claude -p --output-format stream-json`: done, at $1.00 a call.
PAID_CLI = r'''
import json, os, sys
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(os.environ.get("WVO_TASK_ID", "?") + "\n")
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "done", "num_turns": 1,
                  "session_id": "s-" + os.environ.get("WVO_TASK_ID", "?"), "total_cost_usd": 1.0,
                  "usage": {"input_tokens": 10, "output_tokens": 5}}), flush=True)
'''


def _paid_roadmap(tmp_path: Path) -> tuple[Path, Path]:
    """Three tasks T0..T2 through PAID_CLI, $1 each; (roadmap, calls file: the tasks it ran, in order)."""
    cli, calls = tmp_path / "cli.py", tmp_path / "calls.txt"
    cli.write_text(PAID_CLI)
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(cli))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        f"defaults:\n  env: {{FAKE_CALLS: {json.dumps(str(calls))}}}\n"
        "tasks:\n" + "".join(f"  - {{id: T{i}, title: task {i}}}\n" for i in range(3))
    )
    return rm, calls


def test_budget_x_iterations_a_batch_stopped_by_the_budget_ends_the_loop(tmp_path):
    # `--budget 1 --iterations 0` on one agent: the first batch spends $1, the budget stops it, the two tasks
    # not started end `interrupted`. The loop ran them in the next batch with a fresh budget, and the next
    # (with a critic rejecting, it never ended: 250 batches in 5 minutes, $0.02 of budget, ~$5 spent).
    rm, calls = _paid_roadmap(tmp_path)
    r = wvo(rm, "--state-dir", tmp_path / "s", "--roles", "worker=1", "--budget", "1", "--iterations", "0", "--json",
            timeout=60)  # fmt: skip
    assert calls.read_text().split() == ["T0"], r.stderr[-2000:]
    assert r.returncode == 1, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert len(doc["batches"]) == 1 and "budget" in doc["stop_reason"]


def test_budget_x_iterations_the_budget_is_the_loops_not_each_batchs(tmp_path):
    # $1 a task, --budget 1.5, one task a batch: each batch spends $1 (under its budget), so the loop ran all
    # three and spent $3.
    rm, calls = _paid_roadmap(tmp_path)
    r = wvo(rm, "--state-dir", tmp_path / "s", "--roles", "worker=1", "--budget", "1.5", "--iterations", "0",
            "--max-tasks", "1", timeout=60)  # fmt: skip
    assert calls.read_text().split() == ["T0", "T1"], r.stderr[-2000:]
    assert r.returncode == 1


# PAID_CLI, but the call of task HANG (the environment's) hangs until the file FLAG exists, once it noted itself.
HANGING_PAID_CLI = r'''
import json, os, sys, time
task = os.environ.get("WVO_TASK_ID", "?")
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(task + "\n")
if task == os.environ["HANG"] and not os.path.exists(os.environ["FLAG"]):
    open(os.environ["FLAG"] + ".hit", "w").close()
    time.sleep(120)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "done", "num_turns": 1,
                  "session_id": "s-" + task, "total_cost_usd": 1.0, "usage": {"input_tokens": 10, "output_tokens": 5}}),
      flush=True)
'''


def _paid_run_killed_while(tmp_path: Path, hang: str, args: list[str], paid: int) -> tuple[Path, Path, Path]:
    """A run of six $1 tasks T0..T5 on one worker SIGKILLed (the manager's process group) while task `hang`
    runs, once `paid` attempts are in the ledger; (roadmap, calls file, state dir). The resume may go on."""
    cli, calls, flag, state = tmp_path / "cli.py", tmp_path / "calls.txt", tmp_path / "go", tmp_path / "s"
    cli.write_text(HANGING_PAID_CLI)
    rm = tmp_path / "roadmap.yaml"
    env = {"FAKE_CALLS": str(calls), "HANG": hang, "FLAG": str(flag)}
    rm.write_text(
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(cli))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        f"defaults:\n  env: {json.dumps(env)}\n"
        "tasks:\n" + "".join(f"  - {{id: T{i}, title: task {i}}}\n" for i in range(6))
    )

    def paid_recorded() -> int:
        if not (state / "ledger.sqlite").exists():
            return 0
        return sum(1 for r in ledger_rows(state, "attempts") if r["cost_usd"])

    _run_killed_when([rm, "--state-dir", state, "-q", "--roles", "worker=1", *args], flag,
                     lambda: Path(f"{flag}.hit").exists() and paid_recorded() >= paid, "the run never reached the hanging task")
    flag.write_text("")
    return rm, calls, state


def test_budget_x_resume_the_resumed_run_counts_what_the_killed_one_spent(tmp_path):
    # $4 of a $5 budget spent, the manager SIGKILLed, --resume: the resumed run counted from $0 and ran the
    # last two tasks ($6 in all). Every attempt counts: T4 runs again, reaches $5, and T5 never starts.
    rm, calls, state = _paid_run_killed_while(tmp_path, "T4", ["--budget", "5"], paid=4)
    assert calls.read_text().split() == ["T0", "T1", "T2", "T3", "T4"]
    r = wvo(rm, "--state-dir", state, "--roles", "worker=1", "--budget", "5", "--resume", "--json", timeout=60)
    assert calls.read_text().split() == ["T0", "T1", "T2", "T3", "T4", "T4"], r.stderr[-2000:]
    assert r.returncode == 1
    assert "budget reached: $5.00 of $5.00" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["spent_before_usd"] == 4.0 and doc["usage"]["cost_usd"] == 1.0
    assert {t["task"]: t["status"] for t in doc["tasks"]}["T5"] == "interrupted"


def test_budget_x_resume_a_resumed_run_already_over_its_budget_starts_nothing(tmp_path):
    rm, calls, state = _paid_run_killed_while(tmp_path, "T4", ["--budget", "5"], paid=4)
    r = wvo(rm, "--state-dir", state, "--roles", "worker=1", "--budget", "3.5", "--resume", "--json", timeout=60)
    assert calls.read_text().split() == ["T0", "T1", "T2", "T3", "T4"], r.stderr[-2000:]  # nothing more started
    assert r.returncode == 1 and "budget reached: $4.00 of $3.50" in r.stderr


def test_budget_x_iterations_x_resume_the_resumed_loop_counts_its_earlier_batches(tmp_path):
    # One task a batch: batches 1-4 spent $4 of $5, the fifth (T4) was killed; `--resume` of the loop counted
    # from $0 and ran T4 and T5.
    loop = ["--budget", "5", "--max-tasks", "1", "--iterations", "0"]
    rm, calls, state = _paid_run_killed_while(tmp_path, "T4", loop, paid=4)
    r = wvo(rm, "--state-dir", state, "--roles", "worker=1", *loop, "--resume", "--json", timeout=60)
    assert calls.read_text().split() == ["T0", "T1", "T2", "T3", "T4", "T4"], r.stderr[-2000:]
    assert r.returncode == 1
    assert "budget reached: $5.00 of $5.00" in r.stderr
    doc = json.loads(r.stdout)
    assert "budget" in doc["stop_reason"] and doc["batches"][-1]["spent_before_usd"] == 4.0


def test_resume_x_landing_leaves_no_merge_tree_in_either_run_folder(tmp_path):
    # The run killed mid-landing left its merge work tree (ws/merge-*) in its folder, and the resume that landed
    # its committed attempt there made another one beside it; both stayed.
    repo, runs, flag = _killed_mid_landing(tmp_path, "true")
    killed = sorted((tmp_path / "state" / "runs").iterdir())
    assert [p.name for p in (killed[0] / "ws").iterdir() if p.name.startswith("merge-")], "the kill left none to clean"
    flag.write_text("")
    code, doc, err = run_json(repo, "--resume")
    assert code == 0 and "landed now" in err, err[-2000:]
    left = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "state" / "runs").glob("*/ws*/merge-*"))
    assert left == [], left


def test_resume_x_max_tasks_the_resumed_batch_continues_the_killed_one(tmp_path):
    # One task a batch; killed while the third batch's T2 runs. `--resume --max-tasks 1` selected T0 again (it
    # succeeded in batch 1, so it is carried over), ran nothing, exited 0 and closed the run as succeeded:
    # T2 is never continued, and the next --resume starts a fresh run.
    ran, flag = tmp_path / "ran.txt", tmp_path / "go"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n" + "".join(f'  - {{id: T{i}, command: "echo T{i} >> {ran}"}}\n' for i in (0, 1)) +
                  f'  - {{id: T2, command: "echo T2 >> {ran}; [ -e {flag} ] || {{ touch {flag}.hit; exec sleep 60; }}"}}\n'
                  f'  - {{id: T3, command: "echo T3 >> {ran}"}}\n')  # fmt: skip
    state = tmp_path / "s"
    _run_killed_when([rm, "--state-dir", state, "-q", "--agents", "1", "--max-tasks", "1", "--iterations", "0"], flag,
                     Path(f"{flag}.hit").exists)
    flag.write_text("")
    r = wvo(rm, "--state-dir", state, "--agents", "1", "--max-tasks", "1", "--resume", "--json", timeout=60)
    assert ran.read_text().split() == ["T0", "T1", "T2", "T2"], r.stderr[-2000:]
    assert r.returncode == 0, r.stderr[-2000:]
