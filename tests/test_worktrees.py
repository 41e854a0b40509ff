"""Coding tasks in their own git worktrees, landing one at a time on `into` (issue 15), end to end.

Real git repositories in tmp_path, the real `wvo-batch` command, shell commands as the agents (they
opt in with `workspace: {mode: worktree}`, as agent-CLI tasks would have it by default).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, wvo

pytestmark = pytest.mark.timeout(120)

GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=GIT_ENV).stdout


def make_repo(tmp_path: Path, roadmap: str, files: dict[str, str] | None = None) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "user@example.invalid")
    git(repo, "config", "user.name", "A User")
    for name, text in {"README": "hello\n", **(files or {})}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "roadmap.yaml").write_text(roadmap)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def checkout_state(repo: Path) -> tuple:
    """What the user would notice of their checkout: HEAD, its branch, status, and the index's bytes."""
    index = (repo / ".git" / "index").read_bytes()
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        hashlib.sha256(index).hexdigest(),
    )


def run_json(repo: Path, *args: str, timeout: float = 90) -> tuple[int, dict, str]:
    # From the user's checkout, as a user runs it: what lands anywhere else than a worktree shows there.
    proc = wvo(repo / "roadmap.yaml", "--state-dir", repo.parent / "state", "--json", *args, timeout=timeout, cwd=repo)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr


def rows(doc: dict) -> dict[str, dict]:
    return {r["task"]: r for r in doc.get("tasks", [])}


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


WORKTREE = "workspace:\n  mode: worktree\n"


def test_eight_tasks_on_four_agents_all_land_and_the_checkout_is_untouched(tmp_path, backend):
    tasks = "".join(
        f"  - id: t{i}\n    title: write file {i}\n    command: \"echo {i} > f{i}.txt\"\n" for i in range(8)
    )
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n" + tasks)
    (repo / "scratch.txt").write_text("the user's own uncommitted file\n")  # untracked: must stay as it is
    before = checkout_state(repo)
    code, doc, err = run_json(repo, "--agents", "4", *backend)
    assert code == 0, err
    assert {r["status"] for r in doc["tasks"]} == {"succeeded"}
    landed = git(repo, "ls-tree", "--name-only", "wvo/roadmap").split()
    assert {f"f{i}.txt" for i in range(8)} <= set(landed)
    assert checkout_state(repo) == before
    assert (repo / "scratch.txt").read_text() == "the user's own uncommitted file\n"
    assert not any((repo / f"f{i}.txt").exists() for i in range(8))
    assert len(worktrees(repo)) == 1  # the user's own, nothing of ours left
    assert git(repo, "branch", "--list", "wvo/0*").strip() == ""  # landed branches deleted
    subprocess.run(["git", "-C", str(repo), "fsck", "--strict"], check=True, capture_output=True, env=GIT_ENV)
    for r in doc["tasks"]:
        ws = r["workspace"]
        assert ws["files"] == 1 and ws["added"] == 1 and ws["landed"]
    first_parents = git(repo, "log", "--first-parent", "--format=%s", "wvo/roadmap").splitlines()
    assert sum(s.startswith("Land t") for s in first_parents) == 8


@pytest.mark.parametrize("keep", [False, True], ids=["plain", "keep-worktrees"])
def test_a_run_with_checks_leaves_no_landing_tree_in_its_run_folder(tmp_path, backend, keep):
    # The landing queue's merges keep a work tree of `.gitattributes` files (ws/merge-*/tree): it was left in
    # every run folder, removed only when the Workspaces object was garbage-collected.
    roadmap = WORKTREE + "  checks: ['test -s a.txt || test -s b.txt']\n" + (
        "tasks:\n  - id: a\n    command: \"echo a > a.txt\"\n  - id: b\n    command: \"echo b > b.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "2", *(["--keep-worktrees"] if keep else []), *backend)
    assert code == 0, err
    assert {r["status"] for r in doc["tasks"]} == {"succeeded"}
    ws = Path(doc["folder"]) / "ws"
    assert (ws / "workspaces.jsonl").is_file()  # the run's workspaces were there
    left = sorted(p.name for p in ws.iterdir() if p.name.startswith(("merge-", "landing")))
    assert left == [], f"left in the run folder: {left}"
    kept = sorted(p.name for p in (ws / "worktrees").iterdir()) if (ws / "worktrees").is_dir() else []
    assert kept == (["a", "b"] if keep else []), kept  # --keep-worktrees keeps the attempts' worktrees, as documented


def test_same_line_conflicts_then_lands_on_retry_from_the_new_tip(tmp_path):
    roadmap = WORKTREE + (
        "tasks:\n"
        "  - id: left\n    command: \"echo left > line.txt; sleep 0.3\"\n"
        "  - id: right\n    command: \"echo right > line.txt; sleep 0.3\"\n"
    )
    repo = make_repo(tmp_path, roadmap, {"line.txt": "original\n"})
    code, doc, err = run_json(repo, "--agents", "2")
    assert code == 1, err
    statuses = sorted(r["status"] for r in doc["tasks"])
    assert statuses == ["conflict", "succeeded"], doc["tasks"]
    loser = next(r for r in doc["tasks"] if r["status"] == "conflict")
    assert "line.txt" in loser["reason"] or "line.txt" in (loser["workspace"].get("why") or "")
    kept = git(repo, "branch", "--list", loser["workspace"]["branch"]).strip()
    assert kept, "the conflicted branch is kept"

    repo2 = make_repo(tmp_path / "again", roadmap.replace("sleep 0.3\"\n", "sleep 0.3\"\n    retries: 1\n"),
                      {"line.txt": "original\n"})  # fmt: skip
    code, doc, err = run_json(repo2, "--agents", "2")
    assert code == 0, err
    r = rows(doc)
    assert {x["status"] for x in r.values()} == {"succeeded"}
    retried = next(x for x in r.values() if x["attempts"] == 2)
    assert git(repo2, "show", "wvo/roadmap:line.txt").strip() == retried["task"]  # the retry landed last


def test_a_dependent_task_starts_from_its_dependencys_landed_result(tmp_path, backend):
    roadmap = WORKTREE + (
        "tasks:\n"
        "  - id: base\n    command: \"echo from-base > base.txt\"\n"
        "  - id: user\n    dependencies: [base]\n    command: \"cat base.txt > copy.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "2", *backend)
    assert code == 0, err
    assert git(repo, "show", "wvo/roadmap:copy.txt") == "from-base\n"
    assert not (repo / "base.txt").exists() and not (repo / "copy.txt").exists()


def test_overlapping_files_never_run_together_and_disjoint_ones_do(tmp_path):
    tasks = "tasks:\n" + "".join(
        f"  - id: {tid}\n    files: [{glob}]\n    command: \"mkdir -p {folder} && echo {tid} > {folder}/{tid}.txt && sleep 0.4\"\n"
        for tid, glob, folder in [
            ("auth1", "src/auth/**", "src/auth"), ("auth2", "src/auth/login.py", "src/auth"),
            ("db", "src/db/**", "src/db"), ("docs", "docs/**", "docs"),
        ]
    )  # fmt: skip
    repo = make_repo(tmp_path, WORKTREE + tasks)
    events = tmp_path / "events.jsonl"
    code, doc, err = run_json(repo, "--agents", "4", "--events", str(events))
    assert code == 0, err
    spans: dict[str, list[float]] = {}
    for line in events.read_text().splitlines():
        ev = json.loads(line)
        if ev["event"] == "task:reserved":
            spans[ev["task"]] = [ev["ts"], None]
        elif ev["event"] == "task:finished":
            spans[ev["task"]][1] = ev["ts"]

    def overlap(a, b):
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    assert not overlap("auth1", "auth2")
    assert overlap("db", "docs") and (overlap("db", "auth1") or overlap("db", "auth2"))


def test_a_failing_agent_leaves_a_wip_commit_and_keep_worktrees_keeps_the_folder(tmp_path, backend):
    roadmap = WORKTREE + "tasks:\n  - id: broken\n    command: \"echo half-done > wip.txt; exit 3\"\n"
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "1", "--keep-worktrees", *backend)
    assert code == 1, err
    r = rows(doc)["broken"]
    assert r["status"] == "failed"
    branch = r["workspace"]["branch"]
    assert git(repo, "show", f"{branch}:wip.txt") == "half-done\n"
    assert git(repo, "log", "-1", "--format=%s", branch).startswith("WIP: ")
    assert any(branch.rsplit("/", 1)[1] in w for w in worktrees(repo))
    assert branch in doc["workspaces"]["kept"][0]["branch"]


def test_a_task_that_changes_nothing_is_no_changes_unless_allow_empty(tmp_path):
    roadmap = WORKTREE + (
        "tasks:\n  - id: idle\n    command: \"true\"\n"
        "  - id: fine\n    command: \"true\"\n    allow_empty: true\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "2")
    r = rows(doc)
    assert r["idle"]["status"] == "no_changes" and r["fine"]["status"] == "succeeded"
    assert code == 1


def test_worktree_mode_outside_a_repository_is_a_usage_error(tmp_path):
    path = tmp_path / "roadmap.yaml"
    path.write_text(WORKTREE + "tasks:\n  - id: a\n    command: \"true\"\n")
    proc = wvo(path, "--state-dir", tmp_path / "state")
    assert proc.returncode == 2
    assert "roadmap.yaml" in proc.stderr and "not in one" in proc.stderr and "Traceback" not in proc.stderr


def test_into_checked_out_in_the_users_checkout_is_refused_before_anything_runs(tmp_path):
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n  - id: a\n    command: \"echo x > x.txt\"\n")
    code, doc, err = run_json(repo, "--into", "main")
    assert code == 2, err
    assert "main" in err and "Traceback" not in err
    assert not (repo.parent / "state").exists() or not list((repo.parent / "state").rglob("ledger.sqlite"))


def test_land_branch_leaves_each_result_on_its_branch(tmp_path):
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n  - id: a\n    command: \"echo x > x.txt\"\n")
    code, doc, err = run_json(repo, "--land", "branch")
    assert code == 0, err
    r = rows(doc)["a"]
    assert git(repo, "show", f"{r['workspace']['branch']}:x.txt") == "x\n"
    assert "x.txt" not in git(repo, "ls-tree", "--name-only", "wvo/roadmap")


def test_manager_sigkilled_mid_landing_then_resume_lands_without_running_again(tmp_path):
    flag = tmp_path / "resumed"
    runs = tmp_path / "runs.txt"
    check = (
        f'[ -e "{flag}" ] && exit 0; case "$PWD" in */landing) touch "{flag}.hit"; exec sleep 60;; esac'
    )
    roadmap = WORKTREE + (
        f"  checks: ['{check}']\n"
        "tasks:\n"
        f"  - id: only\n    command: \"echo ran >> {runs}; echo work > work.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(tmp_path / "state"), "-q"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "WVO_TEST_MARK": str(flag)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{flag}.hit").exists():  # the landing's check is running: into is mid-landing
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        tip_before = git(repo, "rev-parse", "wvo/roadmap")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5  # the landing's check dies with the run too (the watchdog)
        while _marked(str(flag)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _marked(str(flag)), "the landing's check outlived the run"
    finally:
        for p in _marked(str(flag)):
            p.kill()
    assert git(repo, "rev-parse", "wvo/roadmap") == tip_before  # before the merge, never half
    subprocess.run(["git", "-C", str(repo), "fsck", "--strict"], check=True, capture_output=True, env=GIT_ENV)
    flag.write_text("")
    code, doc, err = run_json(repo, "--resume")
    assert code == 0, err
    assert runs.read_text() == "ran\n"  # its committed attempt landed; the task did not run again
    assert git(repo, "show", "wvo/roadmap:work.txt") == "work\n"
    assert len(worktrees(repo)) == 1
    assert "landed now" in err


def _marked(marker: str) -> list:
    """Processes the killed run left (the landing's check), known by their environment."""
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("WVO_TEST_MARK") == marker and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_history_shows_each_worktree_tasks_branch_and_landed_commit(tmp_path):
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n  - id: a\n    command: \"echo x > x.txt\"\n"
                     "  - id: b\n    command: \"exit 4\"\n")  # fmt: skip
    code, doc, err = run_json(repo, "--agents", "2")
    landed = rows(doc)["a"]["workspace"]["landed"]
    proc = wvo(repo / "roadmap.yaml", "--state-dir", repo.parent / "state", "--history")
    assert proc.returncode == 0, proc.stderr
    line_a = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("a: "))
    assert "wvo/" in line_a and f"landed {landed[:10]}" in line_a and "+1 -0 in 1 file(s)" in line_a
    line_b = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("b: "))
    assert "kept on" in line_b


def test_many_quick_worktree_tasks_are_never_chunked_past_their_worktree(tmp_path):
    # Quick commands are handed out in chunks (runner.manager.chunk_sizes); a worktree task must never be,
    # or it runs in the roadmap's folder instead of its worktree, and nothing lands.
    n = 48  # a queue deep enough for chunks of several on 8 agents (3 at the start), were they allowed
    tasks = "".join(f"  - id: q{i}\n    command: \"echo {i} > q{i}.txt\"\n" for i in range(n))
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n" + tasks)
    code, doc, err = run_json(repo, "--agents", "8")
    assert code == 0, err
    assert all(r["workspace"]["landed"] for r in doc["tasks"])
    assert {f"q{i}.txt" for i in range(n)} <= set(git(repo, "ls-tree", "--name-only", "wvo/roadmap").split())
    assert not any((repo / f"q{i}.txt").exists() for i in range(n))
