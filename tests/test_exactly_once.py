"""Landing exactly once (issue 21): a SIGKILL after `into` moved and the journal said landed, before the ledger
recorded it, must not make `--resume` run the task again and land it twice.

The crash window is made deterministic by the manager's own test hook (WVO_TEST_CRASH_AT=landed: it
SIGKILLs itself right after a landing, before recording it). Real repositories, the real command.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import wvo
from runner.manager.recovery import CRASH_AT

pytestmark = pytest.mark.timeout(120)

GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=GIT_ENV).stdout


def make_repo(tmp_path: Path, runs: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "user@example.invalid")
    git(repo, "config", "user.name", "A User")
    (repo / "README").write_text("hello\n")
    (repo / "roadmap.yaml").write_text(
        "workspace:\n  mode: worktree\n"
        "tasks:\n"
        f"  - id: T1\n    command: \"echo T1 >> {runs}; echo one >> one.txt\"\n"
        f"  - id: T2\n    command: \"echo T2 >> {runs}; echo two > two.txt\"\n    dependencies: [T1]\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def _no_leftovers(marker: str) -> None:
    """The killed manager's agents go with it (they watch their parent): wait for that, with a deadline."""
    deadline = time.monotonic() + 10
    while True:
        left = []
        for p in psutil.process_iter():
            try:
                if p.environ().get("WVO_TEST_MARK") == marker and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.Error:
                pass
        if not left:
            return
        if time.monotonic() > deadline:
            for p in left:
                p.kill()
            raise AssertionError(f"processes outlived the killed run: {left}")
        time.sleep(0.05)


def test_killed_after_landing_before_the_ledger_resume_lands_nothing_twice_and_runs_nothing_again(tmp_path):
    runs = tmp_path / "runs.txt"
    repo = make_repo(tmp_path, runs)
    state = tmp_path / "state"
    mark = str(tmp_path)
    killed = wvo(repo / "roadmap.yaml", "--state-dir", state, "-q", env={CRASH_AT: "landed", "WVO_TEST_MARK": mark})
    assert killed.returncode == -9, killed.stderr  # it SIGKILLed itself in the window
    _no_leftovers(mark)
    assert runs.read_text().split() == ["T1"]
    assert git(repo, "show", "wvo/roadmap:one.txt") == "one\n"  # T1 is on `into`, the ledger does not know it

    proc = wvo(repo / "roadmap.yaml", "--state-dir", state, "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert runs.read_text().split() == ["T1", "T2"]  # T1 was not run again
    lands = [s for s in git(repo, "log", "--first-parent", "--format=%s", "wvo/roadmap").splitlines() if s.startswith("Land ")]
    assert lands == ["Land T2: T2", "Land T1: T1"]  # each once
    assert git(repo, "show", "wvo/roadmap:one.txt") == "one\n"  # T1 appends: twice would read one, one
    assert {r["task"]: r["status"] for r in doc["tasks"]} == {"T1": "succeeded", "T2": "succeeded"}
    assert "1 task(s) already succeeded are not run again" in proc.stderr
