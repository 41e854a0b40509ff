"""Log files: a quick attempt that prints nothing leaves none; anything with output, or still running, has one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from helpers import Recorder, roadmap, run, task

pytestmark = pytest.mark.timeout(60)


def test_silent_tasks_leave_no_log_and_loud_ones_keep_theirs(tmp_path):
    rm = roadmap(
        [task(f"q{i}", ["true"]) for i in range(20)]
        + [task("loud", "echo hello"), task("fails", "echo why >&2; exit 3"), task("mute-fail", ["false"])]
    )
    result = run(rm, tmp_path / "state", agents=2)
    by = {r["task"]: r for r in result.tasks}
    assert all(by[f"q{i}"]["log"] is None for i in range(20))
    assert Path(by["loud"]["log"]).read_text() == "hello\n"
    assert Path(by["fails"]["log"]).read_text() == "why\n"
    assert by["mute-fail"]["status"] == "failed" and by["mute-fail"]["log"] is None
    logs = sorted(p.name for p in (Path(result.folder) / "logs").iterdir())
    assert logs == ["fails.1.log", "loud.1.log"], "no empty logs and no spare files left behind"


def test_a_running_task_log_can_be_followed_under_its_name(tmp_path):
    seen: dict[str, str] = {}

    def on_events(events):
        for ev in events:
            if ev["event"] == "task:started" and ev["task"] == "long":
                log = Path(rec_folder()) / "logs" / "long.1.log"
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not (log.exists() and log.read_text()):
                    time.sleep(0.02)  # polls a condition with a deadline: the agent names the log ~0.2 s in
                seen["text"] = log.read_text() if log.exists() else ""
                os.killpg(ev["pid"], signal.SIGTERM)

    recorder = Recorder(on_events)

    def rec_folder():
        return os.path.join(str(tmp_path / "state"), "latest")

    rm = roadmap([task("long", "echo hello; exec sleep 30")])
    result = run(rm, tmp_path / "state", recorder, agents=1)
    assert seen["text"] == "hello\n"
    assert result.tasks[0]["status"] == "failed" and result.tasks[0]["log"]


def test_callable_output_is_kept_and_silence_is_not(tmp_path):
    rm = roadmap(
        [
            task("quiet", call="os.path:join", args=["a", "b"]),
            task("talks", call="os:system", args=["echo from a callable"]),  # fd 1, as print() is outside pytest
            task("boom", call="json:loads", args=["{"]),
        ]
    )
    result = run(rm, tmp_path / "state", agents=1)
    by = {r["task"]: r for r in result.tasks}
    assert by["quiet"]["log"] is None and by["quiet"]["value"] == "a/b"
    assert Path(by["talks"]["log"]).read_text() == "from a callable\n"
    assert "JSONDecodeError" in Path(by["boom"]["log"]).read_text()


def test_a_straggler_keeps_the_log_of_the_task_that_left_it(tmp_path):
    # The task leaves a child in a session of its own, still holding the log: that log is kept even
    # though it is empty so far, so that the straggler never writes into a later attempt's log (while
    # it lives, the agent's later attempts keep theirs too: whose output it is can no longer be told).
    os.mkfifo(tmp_path / "detached")  # the task ends only once its child is in a session of its own
    leaves = "setsid sh -c 'echo up > detached; exec sleep 30' </dev/null & read up < detached"
    rm = roadmap([task("leaves", leaves, cwd=str(tmp_path)), task("after", ["true"], dependencies=["leaves"])])
    result = run(rm, tmp_path / "state", agents=1)
    by = {r["task"]: r for r in result.tasks}
    assert by["leaves"]["log"] is not None and Path(by["leaves"]["log"]).exists()
    assert by["after"]["status"] == "succeeded"


def test_a_command_that_cannot_start_fails_with_127_and_says_why_in_its_log(tmp_path):
    rm = roadmap([task("missing", ["no-such-program-wvo"]), task("elsewhere", ["pwd"], cwd=str(tmp_path))])
    result = run(rm, tmp_path / "state", agents=2)
    by = {r["task"]: r for r in result.tasks}
    assert by["missing"]["status"] == "failed" and by["missing"]["exit_code"] == 127
    assert "cannot start" in Path(by["missing"]["log"]).read_text()
    assert Path(by["elsewhere"]["log"]).read_text().strip() == str(tmp_path)  # a cwd: started through Popen


@pytest.mark.parametrize("cwd", [False, True], ids=["posix_spawn", "popen-with-cwd"])
def test_a_task_starts_with_no_signal_ignored_so_its_pipelines_end(tmp_path, cwd):
    # Python ignores SIGPIPE; an ignored signal stays ignored across exec, and `yes | head -1` would never end.
    cmd = "grep SigIgn /proc/self/status; yes | head -c 2 >/dev/null; echo done"
    rm = roadmap([task("sig", cmd, timeout=20, **({"cwd": str(tmp_path)} if cwd else {}))])
    result = run(rm, tmp_path / "state", agents=1)
    text = Path(result.tasks[0]["log"]).read_text()
    assert result.exit_code == 0 and text.endswith("done\n"), text
    ignored = int(text.split()[1], 16) & ~(0b11 << 31)  # 32 and 33 are glibc's own, out of any program's reach
    assert ignored == 0, f"signals ignored in the task: {text.split()[1]}"
