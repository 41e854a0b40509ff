"""Shared fixtures: every test runs with a clean state dir and fails if it leaves a process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_ROADMAPS = ROOT.parent / "shared" / "roadmaps"


def _descendants() -> dict[int, str]:
    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = " ".join(p.cmdline())[:120]
        except psutil.Error:
            pass
    return out


def _wvo_tagged() -> dict[int, str]:
    """Processes anywhere that carry a WVO_TASK_ID from this test session (escaped the tree)."""
    tag = os.environ.get("WVO_TEST_SESSION")
    out = {}
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("WVO_TEST_SESSION") == tag and p.pid != os.getpid() and not _is_ancestor(p.pid):
                out[p.pid] = " ".join(p.cmdline())[:120]
        except psutil.Error:
            pass
    return out


def _is_ancestor(pid: int) -> bool:
    return any(a.pid == pid for a in psutil.Process().parents())


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fail the test if any process it started (or a task's orphan) is still alive afterwards."""
    before = set(_descendants())
    yield
    deadline = time.monotonic() + 5.0
    leftovers = {}
    while time.monotonic() < deadline:
        leftovers = {pid: cmd for pid, cmd in {**_descendants(), **_wvo_tagged()}.items() if pid not in before}
        if not leftovers:
            return
        time.sleep(0.05)  # processes that were just killed need a moment to disappear from /proc
    for pid in leftovers:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    pytest.fail(f"test left processes behind: {leftovers}")


@pytest.fixture(autouse=True, scope="session")
def _tag_session():
    os.environ["WVO_TEST_SESSION"] = f"{os.getpid()}"
    yield


@pytest.fixture
def state_dir(tmp_path) -> Path:
    d = tmp_path / "state"
    return d


def write_roadmap(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def wvo(*args: str, timeout: float = 60, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the wvo-batch command as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )
