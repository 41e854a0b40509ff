"""Where two features meet (issue 20): one test per pair, through the real `wvo-batch` command.

Each feature has its own tests; these are the places where two of them break together, silently:

| pair                          | test                                                              |
|-------------------------------|-------------------------------------------------------------------|
| worktree × ray                | test_worktree_x_ray_the_check_runs_and_only_good_work_lands        |
| usage limit × autopilot       | test_usage_limit_x_autopilot_stops_the_loop_with_75                |
| review × budget               | test_review_x_budget_counts_the_workers_and_the_critics_spend      |
| session resume × worktree     | test_session_resume_x_worktree_with_the_real_cli (codex, claude)   |
| checks × landing environment  | test_checks_x_landing_the_same_environment_in_the_worktree_and_on_the_merged_result |
| write-back × review           | test_write_back_x_review_the_file_says_done_only_once_approved     |
| resume × landing              | test_resume_x_landing_a_task_whose_merge_is_on_into_lands_once     |
| live join × worktree          | test_live_join_x_worktree_a_task_added_mid_run_runs_in_a_worktree  |

Real git repositories in tmp_path; shell or Python stand-ins as agents (the real codex and claude from
.agent-clis/ against tests/mockapi.py for sessions). Several of these fail on the code they were
written against: that is what they are for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, wvo
from helpers import ledger_rows, stop
from test_exit_codes import bounded, calls_of, usage_limited_roadmap
from test_worktrees import GIT_ENV, checkout_state, git, make_repo, rows, run_json, worktrees

pytestmark = pytest.mark.timeout(120)

WORKTREE = "workspace:\n  mode: worktree\n"

# Claude Code's stream-json, printed by a stand-in that is both worker and critic (wvo-batch sets
# WVO_REVIEW for a review attempt). Every call is a session of its own and costs COST dollars. The
# worker writes hello.txt; the critic rejects its first review and approves later ones, and notes the
# task's status in the roadmap file while it reviews.
CLAUDE_AGENT = r'''
import json, os, pathlib, sys, time
out = pathlib.Path(os.environ["AGENT_OUT"])
task, attempt = os.environ["WVO_TASK_ID"], int(os.environ["WVO_ATTEMPT"])
review = bool(os.environ.get("WVO_REVIEW"))
with open(out / "calls.txt", "a") as f:
    f.write(("critic" if review else "worker") + "\n")
if review:
    n = (out / "calls.txt").read_text().split().count("critic")
    if os.environ.get("ROADMAP"):
        status = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # written within a flush of the worker's start
            import yaml
            status = {t["id"]: t for t in yaml.safe_load(open(os.environ["ROADMAP"]))["tasks"]}[task].get("status")
            if status is not None:
                break
            time.sleep(0.05)
        with open(out / "statuses.txt", "a") as f:
            f.write(f"{status}\n")
    text = "Reviewed.\nVERDICT: " + ("REJECT the greeting must name the world" if n == 1 else "APPROVE")
else:
    pathlib.Path("hello.txt").write_text(f"hello world, attempt {attempt}\n")
    text = "wrote hello.txt"
session = f"session-{task}-{attempt}"
cost = float(os.environ.get("COST", "0"))
print(json.dumps({"type": "system", "subtype": "init", "session_id": session, "cwd": os.getcwd(), "tools": ["Write"]}))
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": text,
                  "session_id": session, "total_cost_usd": cost,
                  "usage": {"input_tokens": 1000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                            "output_tokens": 100}}))
'''


def claude_repo(tmp_path: Path, env: dict, extra: str = "") -> tuple[Path, Path]:
    """A repository whose roadmap has one reviewed agent-CLI task T1, run by the stand-in above."""
    out = tmp_path / "out"
    out.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(CLAUDE_AGENT)
    roadmap = (
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        "agents: {worker: 1, critic: 1}\n"
        "workspace: {mode: worktree}\n"
        "defaults:\n  review: true\n  review_rounds: 3\n  retries: 3\n"
        f"  env: {json.dumps({'AGENT_OUT': str(out), **env})}\n{extra}"
        "tasks:\n  - id: T1\n    title: write the greeting\n    checks: ['test -f hello.txt']\n"
    )
    return make_repo(tmp_path, roadmap), out


def ledger_attempts(state: Path) -> list[dict]:
    return ledger_rows(state, "attempts")


def first_parent_lands(repo: Path, task_id: str, into: str = "wvo/roadmap") -> int:
    subjects = git(repo, "log", "--first-parent", "--format=%s", into).splitlines()
    return sum(s.startswith(f"Land {task_id}") for s in subjects)


def _marked(marker: str) -> list:
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("WVO_TEST_MARK") == marker and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


# ---- worktree × ray ------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["ray"], indirect=True)
def test_worktree_x_ray_the_check_runs_and_only_good_work_lands(tmp_path, backend):
    roadmap = WORKTREE + (
        "tasks:\n"
        "  - id: good\n    command: \"echo good > good.txt\"\n"
        "  - id: bad\n    command: \"echo bad > bad.txt\"\n    checks: ['false']\n"
    )
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    began = time.monotonic()
    try:
        code, doc, err = run_json(repo, "--agents", "2", *backend)
    except subprocess.TimeoutExpired as exc:  # killed by run_json: what it had printed by then (as bytes)
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"the run did not end in {exc.timeout:g}s; stderr:\n{said[-3000:]}")
    # It once failed in a loaded full run with nothing kept of why: each assertion says what the run did.
    ran = _what_the_run_did(code, doc, err, time.monotonic() - began)
    after = checkout_state(repo)
    assert after == before, f"a Ray agent wrote into the user's checkout: {_changed(before, after)}\n{ran}"
    assert not (repo / "good.txt").exists() and not (repo / "bad.txt").exists(), ran
    r = rows(doc)
    good, bad = r.get("good", {}), r.get("bad", {})
    assert good.get("status") == "succeeded" and (good.get("workspace") or {}).get("landed"), ran
    assert bad.get("status") == "check_failed", ran
    # ... by its check on the Ray agent, in its worktree: a branch whose check failed there is never handed to
    # the landing queue (the merged result's re-check, in the manager, would fail it too and hide a skipped check)
    landing = [e["task"] for f in (tmp_path / "state").glob("runs/*/events.jsonl")
               for e in map(json.loads, f.read_text().splitlines()) if e.get("event") == "task:landing"]
    assert landing == ["good"], f"handed to the landing queue: {landing}\n{ran}"
    assert code == 1, ran
    landed = git(repo, "ls-tree", "--name-only", "wvo/roadmap").split()
    assert "good.txt" in landed and "bad.txt" not in landed, f"on wvo/roadmap: {landed}\n{ran}"
    assert len(worktrees(repo)) == 1, f"left registered: {worktrees(repo)}\n{ran}"


def _what_the_run_did(code: int, doc: dict, err: str, seconds: float) -> str:
    """The exit code, time, each task's row and the end of stderr: what a failure of a loaded run needs."""
    tasks = "\n".join(
        f"  {t.get('task')}: {t.get('status')} attempts={t.get('attempts')} reason={t.get('reason')!r} "
        f"exit_code={t.get('exit_code')} workspace={t.get('workspace')}" for t in doc.get("tasks", [])
    ) or "  (no --json document)"
    return f"exit {code} after {seconds:.1f}s; tasks:\n{tasks}\nstderr (end):\n{err[-3000:]}"


def _changed(before: tuple, after: tuple) -> str:
    names = ("HEAD", "branch", "status", "index")
    return "; ".join(f"{n}: {b!r} -> {a!r}" for n, b, a in zip(names, before, after) if a != b)


# ---- usage limit × autopilot ---------------------------------------------------------------------


def test_usage_limit_x_autopilot_stops_the_loop_with_75(tmp_path):
    rm, calls = usage_limited_roadmap(tmp_path, n=4)
    code, out, err = bounded(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--max-wait", "60",
                             "--iterations", "0", "--max-tasks", "1", "--json", timeout=15)  # fmt: skip
    assert code is not None, f"the autopilot loop never stopped: {len(calls_of(calls))} calls in 15 s"
    assert code == 75, (code, err[-2000:])
    doc = json.loads(out)
    assert doc["exit_code"] == 75 and len(doc["batches"]) == 1, "the loop went on past a usage limit"
    assert len(calls_of(calls)) == 1
    # --resume then continues where it stopped (here: the limit is still there, so 75 again, one more call)
    again = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--max-wait", "60", "--resume")
    assert again.returncode == 75, again.stderr[-2000:]


# ---- review × budget -----------------------------------------------------------------------------


def test_review_x_budget_counts_the_workers_and_the_critics_spend(tmp_path):
    # $1 a call: worker, critic (REJECT), worker = $3 >= $2.50, so the second review never starts. A
    # budget blind to reviewed tasks' spend runs all four calls and succeeds.
    repo, out = claude_repo(tmp_path, {"COST": "1.0"})
    code, doc, err = run_json(repo, "--budget", "2.5")
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker"], err[-2000:]
    assert code == 1, err[-2000:]
    assert "budget reached: $3.00 of $2.50" in err
    attempts = ledger_attempts(repo.parent / "state")
    assert [(a["attempt"], a["session_id"], a["cost_usd"]) for a in attempts] == [
        (1, "session-T1-1", 1.0), (2, "session-T1-2", 1.0), (3, "session-T1-3", 1.0)]
    assert all(a["usage"] for a in attempts), "tokens of an attempt were not recorded"
    assert doc["usage"]["cost_usd"] == pytest.approx(3.0) and doc["usage"]["input"] == 3000
    assert rows(doc)["T1"]["usage"]["cost_usd"] == pytest.approx(3.0)


# ---- checks × landing environment -----------------------------------------------------------------


def test_checks_x_landing_the_same_environment_in_the_worktree_and_on_the_merged_result(tmp_path):
    seen = tmp_path / "checks.txt"
    check = (f'echo "$PWD|$WVO_TASK_ID|$WVO_ATTEMPT|$WVO_BRANCH|$WVO_WORKTREE" >> {seen}; '
             'test -n "$WVO_TASK_ID" && test -f "$WVO_TASK_ID.txt"')  # fmt: skip
    roadmap = WORKTREE + f"  checks: [{json.dumps(check)}]\n" + (
        "tasks:\n  - id: t1\n    command: 'echo x > \"$WVO_TASK_ID.txt\"'\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo)
    lines = [line.split("|") for line in seen.read_text().splitlines()]
    assert len(lines) == 2, lines  # once in the attempt's worktree, once on the merged result
    (wt_pwd, *wt_env), (land_pwd, *land_env) = lines
    assert wt_env == ["t1", "1", wt_env[2], wt_pwd] and wt_env[2].startswith("wvo/")
    assert land_pwd != wt_pwd
    assert land_env == ["t1", "1", wt_env[2], land_pwd], "the merged result's check ran in another environment"
    assert code == 0, err[-2000:]
    assert rows(doc)["t1"]["status"] == "succeeded"
    assert git(repo, "show", "wvo/roadmap:t1.txt") == "x\n"


# ---- write-back × review -------------------------------------------------------------------------


def test_write_back_x_review_the_file_says_done_only_once_approved(tmp_path):
    repo, out = claude_repo(tmp_path, {}, extra="")
    roadmap = repo / "roadmap.yaml"
    text = roadmap.read_text().replace("  env: {", f"  env: {{\"ROADMAP\": {json.dumps(str(roadmap))}, ", 1)
    roadmap.write_text(text)
    git(repo, "commit", "-qam", "the critic reads the roadmap")
    code, doc, err = run_json(repo, "--write-back")
    assert code == 0, err[-2000:]
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker", "critic"]
    during = (out / "statuses.txt").read_text().split()
    assert "done" not in during, f"the file said done while the critic still had the task: {during}"
    assert len(during) == 2 and set(during) <= {"needs_review", "in_progress"}, during
    t1 = {t["id"]: t for t in yaml.safe_load(roadmap.read_text())["tasks"]}["T1"]
    assert t1["status"] == "done" and "last_error" not in t1, t1
    assert git(repo, "show", "wvo/roadmap:hello.txt") == "hello world, attempt 3\n"
    # The file is the live state: a second run finds nothing to do.
    again = wvo(roadmap, "--state-dir", tmp_path / "again", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker", "critic"]


# ---- resume × landing ----------------------------------------------------------------------------


def test_resume_x_landing_a_task_whose_merge_is_on_into_lands_once(tmp_path):
    # The window of issue 21: `into` has moved (and the journal says landed) but the ledger has not
    # recorded it when the manager dies. The test holds the ledger's write lock while the landing
    # finishes, so the manager cannot record it, then SIGKILLs it once `into` moved.
    flag, gate, runs = tmp_path / "at-landing", tmp_path / "gate", tmp_path / "runs.txt"
    os.mkfifo(gate)
    check = f'case "$PWD" in */landing) [ -e "{flag}.done" ] || {{ touch "{flag}"; read _ < "{gate}"; }};; esac; true'
    roadmap = WORKTREE + f"  checks: [{json.dumps(check)}]\n" + (
        f"tasks:\n  - id: only\n    command: \"echo ran >> {runs}; echo work > work.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    state = tmp_path / "state"
    tip = git(repo, "rev-parse", "main").strip()
    mark = str(flag)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(state), "-q"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "WVO_TEST_MARK": mark},
    )  # fmt: skip
    db = None
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():  # the merged result's check is running: nothing recorded of the landing yet
            assert proc.poll() is None and time.monotonic() < deadline, "the landing's check never ran"
            time.sleep(0.02)
        db = sqlite3.connect(state / "ledger.sqlite", timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")  # the manager's next ledger write waits on this
        with open(gate, "w") as g:
            g.write("go\n")
        while git(repo, "rev-parse", "wvo/roadmap").strip() == tip:
            assert proc.poll() is None and time.monotonic() < deadline, "into never moved"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if db is not None:
            db.execute("ROLLBACK")
            db.close()
        stop(proc, group=True)
        for p in _marked(mark):
            p.kill()
    assert first_parent_lands(repo, "only") == 1
    Path(f"{flag}.done").touch()
    code, doc, err = run_json(repo, "--resume")
    assert runs.read_text() == "ran\n", "the task ran again although its work was on into"
    assert first_parent_lands(repo, "only") == 1, "the task landed twice"
    assert code == 0, err[-2000:]
    assert git(repo, "show", "wvo/roadmap:work.txt") == "work\n"
    assert rows(doc)["only"]["status"] == "succeeded"
    assert len(worktrees(repo)) == 1


# ---- live join × worktree ------------------------------------------------------------------------

# A task's helper: append a task to the roadmap, then wait (with a deadline) until the run's events
# show it joined, so the first task is still running when it does.
JOIN = r'''
import json, sys, time
roadmap, events, text = sys.argv[1:4]
with open(roadmap, "a") as f:
    f.write(text)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with open(events) as f:
            if any(json.loads(l).get("event") == "task:added" for l in f if l.strip()):
                sys.exit(0)
    except FileNotFoundError:
        pass
    time.sleep(0.05)
sys.exit("the added task never joined")
'''


def test_live_join_x_worktree_a_task_added_mid_run_runs_in_a_worktree(tmp_path):
    script, events = tmp_path / "join.py", tmp_path / "events.jsonl"
    script.write_text(JOIN)
    added = "  - id: joined\n    command: \"echo joined > joined.txt\"\n"
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n  - id: a\n    command: PLACEHOLDER\n")
    roadmap = repo / "roadmap.yaml"
    join = " ".join(shlex.quote(x) for x in (sys.executable, str(script), str(roadmap), str(events), added))
    roadmap.write_text(roadmap.read_text().replace("PLACEHOLDER", json.dumps(join + "; echo a > a.txt")))
    git(repo, "commit", "-qam", "the first task adds one")
    code, doc, err = run_json(repo, "--write-back", "--events", str(events), "--agents", "1")
    r = rows(doc)
    assert "joined" in r, err[-2000:]
    assert not (repo / "joined.txt").exists(), "the task that joined mid-run wrote into the user's checkout"
    assert not (repo / "a.txt").exists()
    assert r["joined"]["status"] == "succeeded" and (r["joined"].get("workspace") or {}).get("landed"), r["joined"]
    assert code == 0, err[-2000:]
    assert git(repo, "show", "wvo/roadmap:joined.txt") == "joined\n"


# ---- session resume × worktree (the real CLIs) ---------------------------------------------------


def _cli_skip_reason() -> str | None:
    from test_agent_clis import _skip_reason

    return _skip_reason()


@pytest.mark.skipif(_cli_skip_reason() is not None, reason=_cli_skip_reason() or "")
@pytest.mark.parametrize("backend, cli", [("local", "codex"), ("local", "claude"),
                                          pytest.param("ray", "claude", marks=pytest.mark.ray)], indirect=["backend"])
def test_session_resume_x_worktree_with_the_real_cli(tmp_path, backend, cli):
    # Attempt 1 writes first.txt through the CLI's own tool; its check wants second.txt, so it fails.
    # Attempt 2 runs in a new worktree folder and must resume attempt 1's session there (Claude Code
    # files sessions by folder: "No conversation found with session ID"), then writes second.txt.
    from mockapi import MockAPI, reply, write_file
    from helpers import real_cli_executor

    with MockAPI() as mock:
        mock.queue(write_file("first.txt", "one\n"), reply("wrote first.txt"),
                   write_file("second.txt", "two\n"), reply("wrote second.txt"))  # fmt: skip
        argv, output, env = real_cli_executor(mock, tmp_path, cli)
        roadmap = (
            f"executor:\n  command: {json.dumps(argv)}\n  output: {output}\n"
            "workspace: {mode: worktree}\n"
            f"defaults:\n  retries: 1\n  env: {json.dumps(env)}\n  checks: ['test -f second.txt']\n"
            "tasks:\n  - id: T1\n    title: write the files\n"
        )
        repo = make_repo(tmp_path / "r", roadmap)
        code, doc, err = run_json(repo, "--agents", "1", *backend, timeout=150)
        requests = mock.model_requests()
        assert mock.escapes() == [], "a CLI tried to reach another host"
    attempts = ledger_attempts(repo.parent / "state")
    assert [a["attempt"] for a in attempts] == [1, 2], err[-3000:]
    first, second = attempts
    assert first["outcome"] == "check_failed" and first["session_id"], first
    assert second["session_id"] == first["session_id"], "the retry did not resume the first attempt's session"
    log = Path(second["log_path"]).read_text() if second["log_path"] else ""
    assert "No conversation found" not in log
    assert second["outcome"] == "succeeded", (second, log[-2000:])
    assert code == 0, err[-3000:]
    assert git(repo, "show", "wvo/roadmap:second.txt") == "two\n"  # written by the CLI's own tool
    assert len(requests) == 4
    assert "wrote first.txt" in json.dumps(requests[2].body), "the resumed turn did not carry the first turn"
    folders = [re.findall(r"/worktrees/[^\s\"\\<]+", json.dumps(r.body))[-1:] for r in (requests[0], requests[2])]
    assert folders[0] and folders[1] and folders[0] != folders[1], f"both attempts ran in one folder: {folders}"
    assert all(a["usage"] for a in attempts), "tokens of an attempt were not recorded"
