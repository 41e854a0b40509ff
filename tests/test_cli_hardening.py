"""The command line's edges: flags that need another never start a run, outputs checked before the run,
one lock per roadmap file however it is reached, odd paths and out-of-range numbers as usage errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, wvo
from helpers import Fifo, roadmap_file

pytestmark = pytest.mark.timeout(60)


def usage_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stderr


@pytest.fixture
def marked(tmp_path):
    marker = tmp_path / "ran"
    return roadmap_file(tmp_path, [("a", f"touch {marker}")]), marker


def test_watch_without_status_follows_the_board_and_runs_nothing(marked, tmp_path):
    rm, marker = marked
    r = wvo(rm, "--state-dir", tmp_path / "s", "--watch", timeout=30)
    assert r.returncode == 3 and "no run" in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "flags, word",
    [(["--watch", "--check"], "--status"), (["--with-deps"], "--only"), (["--ray-address", "auto"], "--backend ray")],
)
def test_a_flag_that_needs_another_never_starts_a_run(marked, tmp_path, flags, word):
    rm, marker = marked
    assert word in usage_error(wvo(rm, "--state-dir", tmp_path / "s", *flags))
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--report", "--trace", "--events"])
@pytest.mark.parametrize("where", ["missing-dir/out", "a-dir", "/proc/out"])
def test_an_unwritable_output_is_refused_before_anything_runs(marked, tmp_path, flag, where):
    rm, marker = marked
    (tmp_path / "a-dir").mkdir()
    path = where if where.startswith("/") else str(tmp_path / where)
    err = usage_error(wvo(rm, "--state-dir", tmp_path / "s", flag, path))
    assert flag in err and "nothing ran" in err
    assert not marker.exists() and not (tmp_path / "s" / "ledger.sqlite").exists()


@pytest.mark.parametrize("how", ["symlinked folder", "hard link"])
def test_one_roadmap_reached_two_ways_runs_once_at_a_time(tmp_path, how):
    real = tmp_path / "real"
    real.mkdir()
    fifo = Fifo(tmp_path / "ready")
    rm = roadmap_file(real, [("hold", f"echo go > {fifo.path}; sleep 60")])
    if how == "symlinked folder":
        (tmp_path / "alias").symlink_to(real)
        other = tmp_path / "alias" / rm.name
    else:
        other = real / "linked.yaml"
        os.link(rm, other)
    state = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "runner", str(rm), "--state-dir", str(state), "--grace", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        fifo.wait_lines(1)
        r = wvo(other, "--state-dir", state, timeout=30)
        assert r.returncode == 75, (r.returncode, r.stderr)
        assert "in progress" in r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        fifo.close()


def test_a_roadmap_path_that_is_not_utf8_with_the_default_state_dir(tmp_path):
    name = os.fsencode(str(tmp_path)) + b"/bad\xff.yaml"
    with open(name, "wb") as f:
        f.write(b'tasks:\n  - id: a\n    command: "true"\n')
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    env.pop("WVO_STATE_DIR", None)
    r = subprocess.run([sys.executable, "-m", "runner", name, "-q"], capture_output=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "runner", name, "--history"], capture_output=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 0 and b"Traceback" not in r.stderr


@pytest.mark.parametrize(
    "flags, limit",
    [
        (["--roles", "a=99999999999999999999"], "1024"),
        (["--roles", "worker=600,critic=600"], "1024"),
        (["--agents", "99999999999"], "1024"),
        (["--grace", "inf"], "86400"),
        (["--grace", "nan"], "86400"),
        (["--grace", "3000000"], "86400"),
        (["--grace", "-1"], "86400"),
        (["--route-wait", "inf"], "86400"),
        (["--route-wait", "3000000"], "86400"),
        (["--iterations", "2", "--interval", "nan"], "86400"),
        (["--iterations", "2", "--interval", "3000000"], "86400"),
        (["--max-load", "-1"], "0.01"),
        (["--max-load", "nan"], "0.01"),
        (["--retries", "99999999999999999999"], "1000"),
        (["--max-failures", "99999999999999999999"], "1e+09"),
        (["--max-tasks", "0"], "1e+09"),
        (["--iterations", "99999999999999999999"], "1e+09"),
        (["--min-agents", "1", "--max-agents", "99999999999"], "1024"),
        (["--memfree", "99999T"], "memory"),
    ],
)
def test_numbers_out_of_range_are_usage_errors_naming_the_limit(marked, tmp_path, flags, limit):
    rm, marker = marked
    err = usage_error(wvo(rm, "--state-dir", tmp_path / "s", *flags, timeout=30))
    assert flags[-2] in err and limit in err, err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
