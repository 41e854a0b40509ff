"""The terminal display: progress counting (pure), the board, in-place redraw, plain lines, --quiet."""

from __future__ import annotations

import io
import logging
import re
import unicodedata

import pytest

from helpers import read_events, roadmap, run, task
from runner.cli.display import Display, Progress, board_lines, fmt_eta
from runner.manager.pool import Pool
from runner.manager.run import RunResult

pytestmark = pytest.mark.timeout(120)

_ESC = re.compile(r"\x1b\[(\d*)([A-Za-z])|(\r)|(\n)|(\x1b)|([^\x1b\r\n]+)")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def term(monkeypatch):
    """A fake 60-column terminal: TERM set, COLUMNS for the width (a StringIO has no terminal size)."""
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "60")
    return FakeTTY()


def screen(text: str) -> list[str]:
    """What a terminal shows after `text`; fails on any escape the display is not meant to send."""
    lines, row, col = [""], 0, 0
    for m in _ESC.finditer(text):
        num, code, cr, lf, stray, chunk = m.groups()
        if chunk:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + chunk + line[col + len(chunk):]
            col += len(chunk)
        elif lf:
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif cr:
            col = 0
        elif code == "A":
            row = max(0, row - int(num or 1))
        elif code == "J":
            del lines[row + 1:]
            lines[row] = lines[row][:col]
        elif code == "K":
            lines[row] = lines[row][:col]
        else:
            raise AssertionError(f"unexpected escape sequence {m.group(0)!r}")
    while lines and not lines[-1]:
        lines.pop()
    return lines


def cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def ev(name: str, ts: float = 100.0, **fields) -> dict:
    return {"ts": ts, "event": name, **fields}


def finished(task_id: str, status: str, attempt: int = 1, agent: str = "worker-0", ts: float = 100.0, **kw) -> dict:
    fields = {"exit_code": 0 if status == "succeeded" else 1, "duration_s": 1.0, "log": f"/l/{task_id}.log", "error": None}
    fields.update(kw)
    return ev("task:finished", ts, task=task_id, agent=agent, attempt=attempt, status=status, **fields)


def fake_result(failed: int = 0) -> RunResult:
    summary = {
        "run_id": 7,
        "status": "failed" if failed else "succeeded",
        "total": 3,
        "succeeded": 3 - failed,
        "failed": failed,
        "skipped": 0,
        "interrupted": 0,
        "makespan_s": 2.0,
        "agents": {"worker": 2},
        "folder": "run-folder",
        "telemetry": {"utilization": 0.5, "queue_wait_p95_s": 0.1},
    }
    rows = [{"task": f"t{i}", "title": "", "status": "succeeded", "agent": "worker-0", "attempts": 1,
             "duration_s": 1.0, "exit_code": 0, "log": "x.log", "reason": None, "value": None} for i in range(3)]
    return RunResult(1 if failed else 0, 7, "run-folder", summary, rows)


# -- Progress: pure counting -----------------------------------------------------------------------------


def test_a_retried_failure_is_not_a_final_failure():
    p = Progress(total=2)
    p.apply([ev("run:started"), ev("task:started", 10.0, task="a", agent="worker-0", attempt=1)])
    p.apply([finished("a", "failed"), ev("task:retry", task="a", attempt=1, delay_s=1.0, reason="failed")])
    assert (p.failed, p.retried, p.done) == (0, 1, 0)
    p.apply([finished("a", "failed", attempt=2)])
    assert (p.failed, p.done) == (1, 1)
    p.apply([finished("b", "succeeded")])
    assert (p.succeeded, p.done, p.eta_s(110.0)) == (1, 2, None)


def test_skips_count_only_once_the_run_started_and_interrupts_are_not_failures():
    p = Progress(total=3)
    p.apply([ev("task:skipped", task="blocked", reason="not in this batch"), ev("run:started")])
    assert p.skipped == 0, "a task skipped before the start was never runnable"
    p.apply([ev("task:skipped", task="dep", reason="dependency x failed"), finished("x", "interrupted")])
    assert (p.skipped, p.interrupted, p.failed, p.done) == (1, 1, 0, 2)


def test_eta_follows_the_rate_of_finished_tasks_since_the_first_start():
    p = Progress(total=10)
    p.apply([ev("run:started", 0.0), ev("task:started", 100.0, task="a", agent="w", attempt=1)])
    assert p.eta_s(150.0) is None, "no estimate before anything finished"
    p.apply([finished(f"t{i}", "succeeded", ts=110.0) for i in range(2)])
    # 2 tasks in 20 s: 8 left take 80 s.
    assert p.eta_s(120.0) == pytest.approx(80.0)
    assert fmt_eta(80.0) == "1m" and fmt_eta(14 * 60 + 10) == "14m" and fmt_eta(7500) == "2h05m"


def test_a_rate_limited_agent_cools_down_until_it_gets_work_again():
    p = Progress(total=1)
    p.apply([
        finished("a", "rate_limited", agent="worker-1", ts=100.0),
        ev("task:retry", 100.0, task="a", attempt=1, delay_s=0.0, reason="rate limited; worker-1 cools down 30s"),
    ])
    assert p.cooling == {"worker-1": 130.0}
    assert p.stats(110.0)["cooling"] == {"worker-1": 130.0}
    assert p.stats(131.0)["cooling"] == {}
    p.apply([ev("task:reserved", 115.0, task="a", agent="worker-1", attempt=2, wait_s=0.0)])
    assert p.cooling == {}


def test_queue_moves_with_events_between_samples():
    p = Progress(total=5)
    p.apply([ev("queue:updated", 100.0, length=3, oldest_wait_s=2.0)])
    p.apply([ev("task:reserved", 100.5, task="a", agent="w", attempt=1, wait_s=1.0), ev("task:queued", 100.6, task="b")])
    st = p.stats(101.0)
    assert st["queue"] == 3 and st["oldest_wait_s"] == pytest.approx(3.0)


# -- the board ---------------------------------------------------------------------------------------------


def snapshot(agents: list[dict], **stats) -> dict:
    return {"agents": agents, "stats": stats, "time": 1000.0}


def agent(aid: str, state: str = "idle", task_id: str | None = None, title: str = "", since: float = 1000.0) -> dict:
    return {"id": aid, "role": aid.rsplit("-", 1)[0], "state": state, "task": task_id, "task_title": title, "since": since}


def test_board_matches_the_issue_layout():
    snap = snapshot(
        [
            agent("critic-0"),
            agent("worker-1", "busy", "T1.1.2", "Implement visual overlays", since=959.0),
            agent("worker-0", "busy", "T1.1.1", "Build scenario builder MVP", since=867.0),
            agent("orchestrator-0"),
        ],
        queue=7, oldest_wait_s=182.0, total=40, done=12, failed=1, eta_s=14 * 60,
    )
    assert board_lines(snap) == [
        "  ○ orchestrator-0 → idle",
        "  ▶ worker-0       → T1.1.1 (Build scenario builder MVP)   2m13s",
        "  ▶ worker-1       → T1.1.2 (Implement visual overlays)    41s",
        "  ○ critic-0       → idle",
        "  queue: 7 waiting (oldest 3m02s) · 12/40 done · 1 failed · ETA 14m",
    ]


def test_board_orders_agents_by_number_and_shows_cooling():
    agents = [agent(f"worker-{i}") for i in (10, 2, 1)]
    lines = board_lines(snapshot(agents, cooling={"worker-2": 1012.0}, total=3, done=0))
    assert [ln.split()[1] for ln in lines[:3]] == ["worker-1", "worker-2", "worker-10"]
    assert "cooling" in lines[1] and "12s left" in lines[1]


def test_board_fits_the_width_and_strips_control_characters():
    hostile = "\x1b[2J\x1b[31mred\nsecond line 日本語のとても長いタイトルです " * 3
    snap = snapshot([agent("worker-0", "busy", "T\x1b]0;x\x07", hostile, since=990.0)], queue=0, total=1, done=0)
    for width in (30, 50, 80):
        lines = board_lines(snap, width=width)
        assert all(cells(ln) <= width - 1 for ln in lines), lines
        assert not any(c in ln for ln in lines for c in "\x1b\n\r\x07")
    assert board_lines(snap, width=80)[0].endswith("10s"), "the elapsed time survives the cut"


def test_status_board_without_display_counts_uses_the_active_tasks():
    # `--status` reads the pool's own stats: total and active, no done.
    lines = board_lines(snapshot([agent("worker-0")], queue=0, total=10, active=4))
    assert "6/10 done" in lines[-1]


# -- the Display on a (fake) terminal ------------------------------------------------------------------


def busy_pool(n: int) -> Pool:
    pool = Pool()
    for i in range(n):
        pool.add(f"worker-{i}", "worker", 1000 + i)
        pool.reserve(f"worker-{i}", f"task-{i}", f"Title number {i} " + "x" * 60)
    pool.stats.update(queue=2, oldest_wait_s=1.0, total=10, active=10)
    return pool


def test_board_redraws_in_place_without_stale_lines(term):
    d = Display(stream=term)
    d.started({"run_id": 7, "folder": "f", "agents": {"worker": 4}, "tasks": 10, "runnable": 10})
    pool = busy_pool(4)
    d.refresh(pool)
    shown = screen(term.getvalue())
    assert sum("▶ worker-" in ln for ln in shown) == 4
    assert all(cells(ln) <= 59 for ln in shown[1:]), shown
    pool.remove("worker-3")
    pool.remove("worker-2")
    d.events([finished("task-3", "failed", agent="worker-3")])  # a final failure: printed above the board
    d.refresh(pool)
    shown = screen(term.getvalue())
    assert sum("▶ worker-" in ln for ln in shown) == 2, shown
    assert [ln for ln in shown if "queue:" in ln] == [shown[-2]], "one board, at the bottom"
    assert shown[1].startswith("FAIL  task-3 on worker-3")
    assert "1/10 done · 1 failed" in shown[-2]
    d.message("warning: something")
    shown = screen(term.getvalue())
    assert shown[2] == "wvo-batch: warning: something" and "queue:" in shown[-2]
    d.finished(fake_result())
    shown = screen(term.getvalue())
    assert not any("▶" in ln or "queue:" in ln for ln in shown), shown
    assert shown[1].startswith("FAIL  task-3") and shown[-1] == "run 7: run-folder"


def test_warnings_logged_during_the_run_go_above_the_board(term, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as outside pytest: logging's last resort
    d = Display(stream=term)
    d.started({"run_id": 7, "folder": "f", "agents": {"worker": 1}, "tasks": 1, "runnable": 1})
    d.refresh(busy_pool(1))
    logging.getLogger("runner.somewhere").warning("agent %s reported a task it does not hold", "worker-9")
    shown = screen(term.getvalue())
    assert shown[1] == "agent worker-9 reported a task it does not hold"
    assert "queue:" in shown[-2]
    d.finished(fake_result())
    assert logging.getLogger().handlers == []


def test_off_a_terminal_or_on_a_dumb_one_lines_are_plain(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    for stream in (io.StringIO(), FakeTTY()):
        d = Display(stream=stream)
        d.started({"run_id": 7, "folder": "f", "agents": {"worker": 1}, "tasks": 1, "runnable": 1})
        d.refresh(busy_pool(1))
        d.events([ev("run:started"), ev("task:started", task="a", agent="worker-0", attempt=1), finished("a", "succeeded")])
        d.finished(fake_result())
        text = stream.getvalue()
        assert "\r" not in text and "\x1b" not in text
        assert "start a on worker-0 (attempt 1)\ndone  a on worker-0 in 1.0s (1/1)\n" in text


# -- real runs ---------------------------------------------------------------------------------------------


def mixed_roadmap(tmp_path):
    """Six quick tasks, one that fails once then succeeds, one that fails for good and its dependent."""
    tasks = [task(f"t{i}", "sleep 0.05", title=f"Task {i}") for i in range(6)]
    tasks.append(task("flaky", "test -f flag || { touch flag; exit 3; }", retries=2, cwd=str(tmp_path)))
    tasks.append(task("bad", "exit 7"))
    tasks.append(task("after-bad", "true", dependencies=["bad"]))
    return roadmap(tasks)


def test_plain_run_prints_one_line_per_event(tmp_path):
    out = io.StringIO()
    result = run(mixed_roadmap(tmp_path), tmp_path / "state", agents=3, reporter=Display(stream=out))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    events = read_events(result)
    lines = text.splitlines()

    def count(prefix):
        return sum(ln.startswith(prefix) for ln in lines)

    def n(name, **match):
        return sum(e["event"] == name and all(e.get(k) == v for k, v in match.items()) for e in events)

    assert count("start ") == n("task:started")
    assert count("done  ") == n("task:finished", status="succeeded") == 7
    assert count("fail  flaky") == 1 and count("retry flaky: attempt 2") == 1
    assert count("FAIL  ") == 1 and count("FAIL  bad on ") == 1
    assert count("skip  after-bad: dependency bad failed") == 1
    assert n("agent:exited") >= 3 and count("agent ") == 0, "agents stopped at the end are no news"
    done_lines = [ln for ln in lines if ln.startswith("done  ")]
    assert done_lines[-1].endswith("(9/9)"), "the last success closes the count: every task has its last word"
    assert lines[-1].startswith("run ") and "7 succeeded, 1 failed, 1 skipped of 9" in text


def test_terminal_run_draws_the_board_and_leaves_only_notes_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "100")
    out = FakeTTY()
    result = run(mixed_roadmap(tmp_path), tmp_path / "state", agents=3, reporter=Display(stream=out))
    assert result.exit_code == 1
    raw = out.getvalue()
    assert re.search(r"  ▶ (orchestrator|worker)-\d +→ t\d \(Task \d\)", raw), "busy agents were on the board"
    assert "  queue: " in raw and re.search(r"\| *\d+/9 \[", raw), "the queue line and the progress bar"
    shown = screen(raw)
    assert not any("▶" in ln or "○" in ln or ln.startswith("  queue:") for ln in shown), "the board is cleared at the end"
    last_board = [ln for ln in screen(raw.rsplit("\x1b[J", 1)[0]) if "→" in ln or "queue:" in ln or "/9 [" in ln]
    assert len(last_board) >= 5 and all(cells(ln) <= 99 for ln in last_board), "no board line wider than the terminal"
    assert sum(ln.startswith("FAIL  bad on") for ln in shown) == 1
    assert sum(ln.startswith("fail  flaky on") for ln in shown) == 1
    assert not any(ln.startswith(("start ", "done  ")) for ln in shown), "a terminal shows progress on the board"
    assert "7 succeeded, 1 failed, 1 skipped of 9" in "\n".join(shown)


def test_quiet_shows_only_the_summary_even_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    out = FakeTTY()
    run(mixed_roadmap(tmp_path), tmp_path / "state", agents=3, reporter=Display(quiet=True, stream=out))
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.startswith("task ") and "7 succeeded, 1 failed, 1 skipped of 9" in text
    assert not re.search(r"^(start|done|fail|FAIL|retry|skip) ", text, re.MULTILINE)


def test_board_shows_what_waits_to_land_and_the_last_landing():
    lines = board_lines(snapshot([agent("worker-0")], queue=0, total=3, done=1, landing=2, landed="auth (1a2b3c4d5e)"))
    assert lines[-1] == "  queue: 0 waiting · 1/3 done · 2 landing · last landed auth (1a2b3c4d5e)"


# -- per task: checks, the critic's verdict, tokens and cost (issue 23) -------------------------------------


def test_the_board_shows_each_running_tasks_checks_verdict_tokens_and_cost_and_the_last_that_ended():
    p = Progress(total=2)
    usage = {"input": 1500, "output": 120}
    # in the order the run emits them: an attempt's usage, then its outcome, then the retry
    p.apply([ev("run:started"), ev("task:usage", task="power", attempt=1, usage=usage, cost_usd=0.0063),
             finished("power", "needs_review", 1),
             ev("task:retry", task="power", attempt=1, delay_s=0, reason="checks passed; to review")])
    p.apply([ev("task:reviewed", task="power", attempt=2, verdict="reject", reason="no docstring"),
             finished("power", "rejected", 2, agent="critic-0"),
             ev("task:retry", task="power", attempt=2, delay_s=0, reason="rejected by the critic")])
    p.apply([ev("task:usage", task="stats", attempt=1, usage=usage, cost_usd=0.01), finished("stats", "check_failed", 1),
             ev("task:started", task="power", agent="worker-0", attempt=3)])
    snap = snapshot([agent("worker-0", "busy", "power", "Add power()", since=998.0)], queue=0, **p.stats(1000.0))
    lines = board_lines(snap, now=1000.0)
    assert lines[0] == "  ▶ worker-0 → power (Add power())   2.0s  attempt 3 · checks ✓ · review: reject · 1.6k tokens · $0.006"
    assert lines[1] == "    ✗ stats: check_failed · checks ✗ · 1.6k tokens · $0.010"  # ended: no retry came with it
    assert lines[2].startswith("  queue: 0 waiting")
    p.apply([ev("task:reviewed", task="power", attempt=4, verdict="approve", reason=None),
             finished("power", "succeeded", 4, agent="critic-0")])
    assert p.work == {} and [r["task"] for r in p.recent] == ["stats", "power"]
    p.apply([ev("task:started", task="again", agent="worker-0", attempt=1), finished("again", "check_failed", 1),
             ev("task:retry", task="again", attempt=1, delay_s=0, reason="check_failed"),
             ev("task:landing", task="again", agent="worker-0", attempt=2, branch="b")])
    assert p.work["again"]["checks"] == "✓" and p.work["again"]["landing"] == "landing"  # the second try passed them
    p.apply([finished("again", "succeeded", 2)])
    assert p.recent[-1]["checks"] == "✓" and "landing" not in p.recent[-1]
    p.apply([finished(f"t{i}", "succeeded") for i in range(10)])
    assert len(p.recent) == 4 and p.recent[-1]["task"] == "t9"  # bounded, newest last
    assert p.work == {}  # nothing kept of tasks that ended: a run of 100,000 tasks holds only what runs


def test_the_board_without_task_facts_is_as_before():
    lines = board_lines(snapshot([agent("worker-0", "busy", "T1", "x", since=990.0)], queue=0, total=1, done=0), now=1000.0)
    assert lines == ["  ▶ worker-0 → T1 (x)   10s", "  queue: 0 waiting · 0/1 done"]


def test_status_from_another_shell_shows_the_running_tasks_facts(tmp_path):
    """--status reads the task facts from the run's events: a retry after a failed check says so."""
    import json
    import os
    import subprocess
    import sys
    import time

    from conftest import ROOT, wvo
    from helpers import wait_for_file

    repo, mark = tmp_path / "repo", tmp_path / "mark"
    repo.mkdir()
    mark.mkdir()
    command = (f"if [ -e {mark}/first ]; then touch {mark}/second-try {mark}/started; {wait_for_file(mark / 'go')}; fi; "
               f"touch {mark}/first; echo x >> work.txt")
    (repo / "roadmap.yaml").write_text(
        "workspace: {mode: worktree}\ntasks:\n  - id: slow\n    retries: 1\n"
        f"    checks: [\"test -e {mark}/second-try\"]\n    command: {json.dumps(command)}\n")
    git_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=u", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "initial"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=git_env)
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(state),
                             "--agents", "1", "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (mark / "started").exists():  # the second attempt runs, after its first failed its check
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
            time.sleep(0.02)
        while True:  # the events file follows the run by a group commit (50 ms at most): ask until it has them
            shown = wvo(repo / "roadmap.yaml", "--state-dir", state, "--status")
            assert shown.returncode == 0, shown.stderr
            [line] = [ln for ln in shown.stdout.splitlines() if "→ slow" in ln]
            if line.endswith("attempt 2 · checks ✗") or time.monotonic() > deadline:
                break
        assert line.endswith("attempt 2 · checks ✗"), shown.stdout
        doc = json.loads(wvo(repo / "roadmap.yaml", "--state-dir", state, "--status", "--json").stdout)
        assert doc["stats"]["work"]["slow"] == {"attempt": 2, "checks": "✗"}
    finally:
        (mark / "go").touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
