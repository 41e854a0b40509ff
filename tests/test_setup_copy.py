"""`workspace.setup:` and `workspace.copy:` (issue 23): each fresh worktree made ready before its task.

Real repositories, the real `wvo-batch` command on each backend, shell commands as the agents. What
a user would notice: the task finds the copied `.env` and what set-up made; neither is committed or
landed; a failing set-up ends the attempt setup_failed, its output in the log and in the next
attempt's feedback; set-up time per attempt in `--json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import wvo
from helpers import reaped
from test_worktrees import checkout_state, git, make_repo, rows

pytestmark = pytest.mark.timeout(120)


def run_json(repo: Path, *args: str, timeout: float = 90) -> tuple[int, dict, str]:
    proc = wvo(repo / "roadmap.yaml", "--state-dir", repo.parent / "state", "--json", *args, timeout=timeout, cwd=repo)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr


def events(repo: Path) -> list[dict]:
    return [json.loads(line) for path in (repo.parent / "state").glob("runs/*/events.jsonl")
            for line in path.read_text().splitlines()]


READY = """
workspace:
  mode: worktree
  copy: [.env, "config/*.local"]
  setup:
    - mkdir -p .venv && echo "$WVO_TASK_ID" > .venv/marker && echo set-up says hi
    - [sh, -c, 'test -f .env && echo "argv, no shell: $0" > .venv/argv', "it's me"]
tasks:
  - id: t
    title: Use what set-up made
    command: "cat .env config/a.local .venv/marker .venv/argv > used.txt"
"""


def test_copy_and_setup_make_the_worktree_ready_and_nothing_of_them_is_committed(tmp_path, backend):
    repo = make_repo(tmp_path, READY, {".gitignore": ".env\n*.local\n.venv/\n"})
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "config").mkdir()
    (repo / "config" / "a.local").write_text("local=a\n")
    before = checkout_state(repo)
    code, doc, err = run_json(repo, "--agents", "1", *backend)  # one task: one agent (on Ray, one actor to start)
    assert code == 0, err
    row = rows(doc)["t"]
    assert git(repo, "show", "wvo/roadmap:used.txt") == "SECRET=1\nlocal=a\nt\nargv, no shell: it's me\n"
    landed = git(repo, "ls-tree", "-r", "--name-only", "wvo/roadmap").split()
    assert sorted(landed) == [".gitignore", "README", "roadmap.yaml", "used.txt"]  # no .env, config, .venv
    ws = row["workspace"]
    assert ws["copied"] == 2 and isinstance(ws["setup_s"], float) and 0 <= ws["setup_s"] < 30
    log = Path(row["log"]).read_text()
    assert "set-up says hi" in log and "===== wvo-batch setup 2/2: sh -c" in log
    assert checkout_state(repo) == before


def test_a_failing_setup_ends_the_attempt_setup_failed_and_the_next_attempt_is_told_why(tmp_path, backend):
    once = tmp_path / "failed-once"
    roadmap = f"""
workspace:
  mode: worktree
  setup: ["test -f {once} || {{ touch {once}; echo the mirror is down; exit 3; }}"]
tasks:
  - id: t
    retries: 1
    command: 'printf "%s" "$WVO_FEEDBACK" > feedback.txt'
"""
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "1", *backend)  # one task: one agent (on Ray, one actor to start)
    assert code == 0, err
    finished = [(e["attempt"], e["status"], e.get("error")) for e in events(repo) if e["event"] == "task:finished"]
    assert finished[0][:2] == (1, "setup_failed") and finished[1][:2] == (2, "succeeded"), finished
    assert finished[0][2].startswith("setup failed: test -f") and finished[0][2].endswith("(exit 3)")
    feedback = git(repo, "show", "wvo/roadmap:feedback.txt")
    assert "setup failed" in feedback and "the mirror is down" in feedback
    first_log = next((repo.parent / "state").glob("runs/*/logs/t.1.log")).read_text()
    assert "the mirror is down" in first_log and "===== exit 3 (failed) =====" in first_log
    assert git(repo, "branch", "--list", "wvo/*/*").strip() == ""  # the set-up's branch went with its worktree
    assert len(git(repo, "worktree", "list").splitlines()) == 1


@pytest.mark.parametrize("what", ["setup", "copy"])
def test_what_setup_or_copy_leaves_that_git_does_not_ignore_is_refused_not_committed(tmp_path, what):
    made = "setup: [\"echo x > made.txt\"]" if what == "setup" else "copy: [made.txt]"
    repo = make_repo(tmp_path, f"workspace:\n  mode: worktree\n  {made}\ntasks:\n  - {{id: t, command: 'echo t > t.txt'}}\n")
    if what == "copy":
        (repo / "made.txt").write_text("x\n")  # untracked and not ignored: --check refuses it; a run refuses too
    into = git(repo, "rev-parse", "main")
    code, doc, err = run_json(repo)
    assert code == 1, err
    assert rows(doc)["t"]["status"] == "setup_failed"
    line = next(x for x in err.splitlines() if x.startswith("FAIL  t "))
    assert "setup left files git does not ignore, which the task's commit would take: made.txt" in line
    assert git(repo, "rev-parse", "wvo/roadmap") == into


def test_a_hung_setup_is_killed_at_the_attempts_timeout(tmp_path):
    pid_file = tmp_path / "setup.pid"
    roadmap = (f"workspace:\n  mode: worktree\n  setup: [\"trap '' TERM; echo $$ > {pid_file}; sleep 60 & wait\"]\n"
               "tasks:\n  - {id: t, command: 'echo t > t.txt', timeout: 1}\n")
    repo = make_repo(tmp_path, roadmap)
    began = time.monotonic()
    code, doc, err = run_json(repo, "--grace", "0.3")
    assert code == 1, err
    assert time.monotonic() - began < 30
    assert rows(doc)["t"]["status"] == "timed_out"
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_a_copy_through_a_committed_link_out_of_the_worktree_is_refused(tmp_path):
    repo = make_repo(tmp_path, "workspace:\n  mode: worktree\n  copy: [out/.env]\n"
                               "tasks:\n  - {id: t, command: 'echo t > t.txt'}\n", {".gitignore": ".env\n"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / "out").symlink_to(elsewhere)
    git(repo, "add", "out")
    git(repo, "commit", "-qm", "a link")
    (elsewhere / ".env").write_text("SECRET=1\n")
    code, doc, err = run_json(repo)
    assert code == 1, err
    assert rows(doc)["t"]["status"] == "setup_failed" and "leads out of the worktree" in err
    assert sorted(p.name for p in elsewhere.iterdir()) == [".env"]


AGENT = r'''
import json, os, pathlib, sys
out = pathlib.Path(os.environ["AGENT_OUT"])
role = "critic" if os.environ.get("WVO_REVIEW") else "worker"
seen = {"env_file": os.path.exists(".env"), "setup_made": os.path.exists(".venv"), "prompt": sys.argv[-1]}
(out / f"{role}.json").write_text(json.dumps(seen))
if role == "critic":
    print("VERDICT: APPROVE")
else:
    pathlib.Path("hello.txt").write_text(pathlib.Path(".env").read_text().replace("SECRET", "public"))
'''


def test_the_critic_sees_neither_the_copied_files_nor_what_setup_made(tmp_path):
    import sys

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "agent.py").write_text(AGENT)
    roadmap = f"""
executor: {{command: [{json.dumps(sys.executable)}, {json.dumps(str(tmp_path / "agent.py"))}, "{{prompt}}"]}}
agents: {{worker: 1, critic: 1}}
workspace:
  mode: worktree
  copy: [.env]
  setup: ["mkdir -p .venv && echo SECRET-venv > .venv/made"]
defaults: {{review: true, env: {{AGENT_OUT: {json.dumps(str(out))}}}}}
tasks:
  - {{id: T1, title: greet, description: put a greeting in hello.txt}}
"""
    repo = make_repo(tmp_path, roadmap, {".gitignore": ".env\n.venv/\n"})
    (repo / ".env").write_text("SECRET=1\n")
    code, doc, err = run_json(repo)
    assert code == 0, err
    worker, critic = (json.loads((out / f"{r}.json").read_text()) for r in ("worker", "critic"))
    assert worker["env_file"] and worker["setup_made"]
    assert not critic["env_file"] and not critic["setup_made"]
    assert "SECRET" not in critic["prompt"] and "hello.txt" in critic["prompt"]  # the diff it reviews: the work only
    assert git(repo, "show", "wvo/roadmap:hello.txt") == "public=1\n"


@pytest.mark.timeout(60)
def test_a_sigterm_of_the_run_ends_a_hung_setup_and_its_worktree_goes(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    flag = tmp_path / "setup-runs"
    repo = make_repo(tmp_path, f"workspace:\n  mode: worktree\n  setup: [\"touch {flag}; sleep 60\"]\n"
                               "tasks:\n  - {id: t, command: 'echo t > t.txt'}\n")
    argv = [sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(tmp_path / "state"),
            "--quiet", "--grace", "0.5"]
    proc = subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    with reaped(proc):
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the set-up never ran"
            time.sleep(0.02)  # polling a file the set-up makes, with a deadline
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert time.monotonic() - began < 15  # not the set-up's 60 s
    assert b"Traceback" not in err
    finished = [e["status"] for e in events(repo) if e["event"] == "task:finished"]
    assert finished == ["interrupted"]
    # the agent ended its set-up and reported: it was not killed for holding the stop up
    assert {e["reason"] for e in events(repo) if e["event"] == "agent:exited"} == {"exit code 0"}
    assert len(git(repo, "worktree", "list").splitlines()) == 1 and git(repo, "branch", "--list", "wvo/*/*") == ""


LANDING = """
workspace:
  mode: worktree
  copy: [.env]
  setup: ["mkdir -p .venv && echo ready > .venv/marker"]
tasks:
""" + "".join(f"""  - id: t{i}
    command: "echo {i} > f{i}.txt"
    checks: ["grep -q SECRET .env && test -f .venv/marker && echo checked in $WVO_WORKTREE >> .venv/seen"]
""" for i in range(3))


def test_the_merged_result_is_checked_with_the_copied_files_and_the_set_up_too(tmp_path):
    """A check that needs `.env` and what set-up made passes in the task's worktree and on the merged result:
    the landing worktree gets the same copy and set-up (once: its resets keep ignored files)."""
    repo = make_repo(tmp_path, LANDING, {".gitignore": ".env\n.venv/\n"})
    (repo / ".env").write_text("SECRET=1\n")
    code, doc, err = run_json(repo, "--agents", "2", "--land-parallel", "1")
    assert code == 0, (err, {t: r.get("reason") for t, r in rows(doc).items()})
    assert all(r["status"] == "succeeded" for r in rows(doc).values())
    assert sorted(git(repo, "ls-tree", "-r", "--name-only", "wvo/roadmap").split()) == [
        ".gitignore", "README", "f0.txt", "f1.txt", "f2.txt", "roadmap.yaml"]  # no .env, no .venv
    logs = "".join(Path(r["log"]).read_text() for r in rows(doc).values())
    assert logs.count("workspace.copy: 1 file(s) copied") == 4  # 3 task worktrees, and the landing worktree once
