"""The trace (Perfetto) and the HTML report: from real runs, at scale, and rendered by a real browser."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from helpers import barrier, read_events, roadmap, run, task
from runner.cli import report

pytestmark = pytest.mark.timeout(120)

HOSTILE = "</title><script>alert('pwned')</script><img src=x onerror=alert(1)> & \"quotes\""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real run: 4 agents, a task that fails once then succeeds, one that fails for good, a hostile title."""
    tmp = tmp_path_factory.mktemp("report")
    # t0-t3 meet at a barrier, so each of the 4 agents has a track; t0 also sleeps 0.1 s for the
    # span-length check below (time measured on purpose).
    meet = barrier(tmp / "meet", 4)
    tasks = [task(f"t{i}", f"{meet}; sleep 0.1" if i == 0 else meet if i < 4 else "true", title=f"Task {i}") for i in range(10)]
    tasks.append(task("flaky", "test -f flag || { touch flag; exit 3; }", retries=2, cwd=str(tmp), title=HOSTILE))
    tasks.append(task("bad", "exit 7", priority="high"))
    tasks.append(task("after-bad", "true", dependencies=["bad"]))
    result = run(roadmap(tasks), tmp / "state", agents=4)
    return tmp, result, read_events(result)


def spans_of(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


# -- the trace ---------------------------------------------------------------------------------------------


def test_trace_has_exactly_one_span_per_attempt_on_its_agents_track(real_run):
    tmp, result, events = real_run
    path = tmp / "trace.json"
    report.write_trace(events, str(path))
    trace = json.loads(path.read_text())
    finished = [e for e in events if e["event"] == "task:finished"]
    spans = spans_of(trace)
    assert len(finished) == result.summary["telemetry"]["attempts"] == 13, "10 + flaky twice + bad"
    assert sorted((s["name"], s["args"]["attempt"]) for s in spans) == sorted((e["task"], e["attempt"]) for e in finished)
    threads = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert len(threads) == 4 and len(set(threads.values())) == 4
    by_key = {(e["task"], e["attempt"]): e for e in finished}
    for s in spans:
        ev = by_key[(s["name"], s["args"]["attempt"])]
        assert threads[s["tid"]] == ev["agent"]
        assert s["args"]["status"] == ev["status"] and s["args"]["exit_code"] == ev["exit_code"]
        assert s["ts"] >= 0 and s["dur"] >= 0
    flaky = sorted((s["args"]["attempt"], s["args"]["status"]) for s in spans if s["name"] == "flaky")
    assert flaky == [(1, "failed"), (2, "succeeded")]
    t0 = next(s for s in spans if s["name"] == "t0")
    assert 0.08e6 < t0["dur"] < 2e6, "microseconds: a 0.1 s sleep"
    counters = [e for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == "queue"]
    assert counters and all(isinstance(c["args"]["waiting"], int) for c in counters)


def test_trace_keeps_attempts_of_concatenated_batches_apart_and_shows_unfinished_ones():
    def batch(run_id: int, t0: float, finish: bool) -> list[dict]:
        out = [
            {"ts": t0, "event": "run:started", "run": run_id},
            {"ts": t0, "event": "agent:spawned", "agent": "worker-0", "role": "worker", "pid": 1},
            {"ts": t0 + 1, "event": "task:started", "task": "a", "agent": "worker-0", "attempt": 1, "pid": 2},
        ]
        if finish:
            out.append({"ts": t0 + 2, "event": "task:finished", "task": "a", "agent": "worker-0", "attempt": 1,
                        "status": "failed", "exit_code": 1, "wait_s": 0.0, "duration_s": 1.0, "log": None, "error": None})
        return out

    events = batch(1, 100.0, True) + batch(2, 200.0, False)
    spans = spans_of({"traceEvents": report.trace_events(events)})
    assert [(s["ts"], s["args"]["status"]) for s in spans] == [(1e6, "failed"), (101e6, "unfinished")]


# -- the report --------------------------------------------------------------------------------------------


def test_report_is_self_contained_and_escapes_roadmap_text(real_run):
    tmp, result, events = real_run
    path = tmp / "report.html"
    report.write_report(events, result.summary, result.tasks, str(path))
    text = path.read_text()
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(link|iframe|object|embed|img)\b|<[^>]*\bsrc\s*=|@import|url\(", text, re.IGNORECASE)
    assert "<script>alert" not in text and "<img src=x" not in text and "alert('pwned')" not in text
    assert html_escaped(HOSTILE) in text
    assert text.count("<script>") == 1, "only the report's own filter script"
    assert "default-src 'none'" in text
    for figure in ("queue wait p50", "queue wait p95", "utilisation", "throughput", "critical path", "efficiency"):
        assert figure in text
    assert text.count("<tr data-s=") == len(result.tasks) == 13
    assert text.count('class="bar st-') == 13, "one bar per attempt when none is too thin to see"
    assert 'class="bar st-failed"' in text and "queue wait by priority" in text


def html_escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def synthetic(n: int, agents: int = 8, seed: int = 1) -> tuple[list[dict], list[dict]]:
    """Events and task rows of n attempts on `agents` agents, back to back, 5% failed."""
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    events = [{"ts": t0, "event": "run:started", "run": 1, "agents": agents, "tasks": n}]
    free = [t0] * agents
    rows = []
    for i in range(n):
        a = min(range(agents), key=free.__getitem__)
        start, d = free[a], rng.uniform(0.01, 2.0)
        status = "failed" if rng.random() < 0.05 else "succeeded"
        events.append({"ts": start, "event": "task:started", "task": f"T{i}", "agent": f"worker-{a}", "attempt": 1, "pid": 1})
        events.append({"ts": start + d, "event": "task:finished", "task": f"T{i}", "agent": f"worker-{a}", "attempt": 1,
                       "status": status, "exit_code": int(status == "failed"), "wait_s": 0.1, "duration_s": d,
                       "log": f"logs/T{i}.1.log", "error": None})
        if i % 4 == 0:
            events.append({"ts": start, "event": "queue:updated", "length": n - i, "oldest_wait_s": 1.0})
        free[a] = start + d
        rows.append({"task": f"T{i}", "title": f"<b>title {i}</b>", "status": status, "agent": f"worker-{a}",
                     "attempts": 1, "duration_s": d, "exit_code": 0, "log": f"logs/T{i}.1.log", "reason": None})
    events.sort(key=lambda e: e["ts"])
    return events, rows


def test_ten_thousand_attempts_stay_small_and_fast(tmp_path):
    events, rows = synthetic(10_000)
    summary = {"run_id": 1, "status": "failed", "telemetry": {"makespan_s": 2500.0, "utilization": 0.9}}
    started = time.perf_counter()
    report.write_report(events, summary, rows, str(tmp_path / "r.html"))
    report.write_trace(events, str(tmp_path / "t.json"))
    elapsed = time.perf_counter() - started
    text = (tmp_path / "r.html").read_text()
    bars = text.count('class="bar st-')
    assert elapsed < 5.0  # measured on purpose: the report of a big run stays cheap (generous for a loaded machine)
    assert len(text) < 8_000_000
    # Thin attempts that touch share a bar at most two units wide: a 1,000-unit row holds at most
    # about 1,000 bars whatever the attempts, here ~700 for 1,250 attempts per agent.
    assert 8 <= bars <= 6_000, bars
    assert 'class="bar st-failed"' in text, "failures stay visible in merged bars"
    assert text.count("<tr data-s=") == 10_000
    assert len(spans_of(json.loads((tmp_path / "t.json").read_text()))) == 10_000


# -- in a real browser -------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    for name in (os.environ.get("WVO_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw rows without filter bytes) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)


def screenshot(chromium: str, page: Path, png: Path, profile: Path) -> None:
    """Render `page` headless into `png`; the browser's whole process group is gone afterwards."""
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,900", page.as_uri(),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers (zygote, GPU process) share its new session's group
        except ProcessLookupError:
            pass
        proc.wait()
    assert png.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}"


@pytest.mark.browser
def test_report_renders_non_blank_in_a_headless_browser(real_run, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium binary on PATH (scripts/install-browser.sh installs Debian's)")
    _, result, events = real_run
    page = tmp_path / "report.html"
    report.write_report(events, result.summary, result.tasks, str(page))
    png = tmp_path / "shot.png"
    screenshot(chromium, page, png, tmp_path / "profile")
    width, height, bpp, pixels = decode_png(png.read_bytes())
    assert (width, height) == (1200, 900)
    colours: dict[bytes, int] = {}
    for i in range(0, len(pixels), bpp):
        px = pixels[i:i + 3]
        colours[px] = colours.get(px, 0) + 1
    non_white = sum(n for px, n in colours.items() if min(px) < 235) / (width * height)
    assert len(colours) > 50, f"only {len(colours)} colours: a blank or broken page"
    assert non_white > 0.03, f"{non_white:.1%} of the page is not white"
    # The Gantt's bars are solid fills in the status colours: the SVG really rendered.
    green, red = bytes.fromhex("2a9d58"), bytes.fromhex("d62839")
    assert colours.get(green, 0) > 500, "no succeeded bars on screen"
    assert colours.get(red, 0) > 20, "no failed bar (or badge) on screen"


# -- one class, one colour, one count per outcome (issue 23) -------------------------------------------------

from runner.cli import outcomes  # noqa: E402 - with the tests that read it
from conftest import wvo  # noqa: E402
from runner.cli.display import Progress  # noqa: E402
from runner.model import Outcome, TaskState  # noqa: E402

GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def test_every_outcome_and_task_state_has_a_class_and_a_colour_and_counts_as_the_run_does():
    for status in [o.value for o in Outcome] + [s.value for s in TaskState] + ["needs_improvement", "unfinished"]:
        assert status in outcomes.OUTCOMES, f"{status} would be drawn in the unknown grey"
    # the run's summary counts a task by its state: a final failure (conflict, check_failed, ...) is
    # failed, a state the run ended before the task did (queued, running, ...) is interrupted
    manager = {TaskState.SUCCEEDED: "succeeded", TaskState.FAILED: "failed", TaskState.SKIPPED: "skipped"}
    for state in TaskState:
        assert outcomes.class_of(state.value) == manager.get(state, "interrupted"), state
    for o in Outcome:
        expected = {"succeeded": "succeeded", "needs_review": "succeeded", "interrupted": "interrupted"}.get(o.value, "failed")
        assert outcomes.class_of(o.value) == expected, o
    assert outcomes.class_of("from-a-newer-version") == "failed" and outcomes.colour("x") == outcomes.UNKNOWN.colour
    colours = [lk.colour for lk in outcomes.OUTCOMES.values()]
    assert len(set(colours)) == len(colours), "two outcomes share a colour"


@pytest.fixture(scope="module")
def conflict_runs(tmp_path_factory):
    """The same worktree roadmap run twice by the real command (--json, then on the terminal's way), each with
    --report: five tasks on four agents, two of which write the same line at the same time: one conflict."""
    tmp = tmp_path_factory.mktemp("conflict")
    out = {}
    for mode in ("json", "plain"):
        repo = tmp / mode / "repo"
        repo.mkdir(parents=True)
        meet = barrier(tmp / mode / "meet", 2)
        tasks = "".join(
            f"  - id: {tid}\n    priority: high\n    command: '{meet}; echo {tid} > line.txt'\n" for tid in ("left", "right")
        ) + "".join(f"  - id: ok{i}\n    command: 'echo {i} > f{i}.txt'\n" for i in range(3))
        (repo / "roadmap.yaml").write_text("workspace:\n  mode: worktree\ntasks:\n" + tasks)
        (repo / "line.txt").write_text("original\n")
        for argv in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["-c", "user.name=u", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "initial"]):
            subprocess.run(["git", "-C", str(repo), *argv], check=True, env=GIT_ENV)
        page = tmp / mode / "report.html"
        extra = ["--json"] if mode == "json" else []
        proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp / mode / "state", "--agents", "4", "--report", page, *extra,
                   timeout=90)
        [events] = (tmp / mode / "state" / "runs").glob("*/events.jsonl")
        out[mode] = (proc, page, [json.loads(line) for line in events.read_text().splitlines() if line.strip()])
    return out


def test_a_conflict_is_one_failure_in_the_terminal_json_report_and_board(conflict_runs):
    proc, page, events = conflict_runs["json"]
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["succeeded"], doc["failed"], doc["skipped"], doc["interrupted"]) == (4, 1, 0, 0)
    [loser] = [r for r in doc["tasks"] if r["status"] == "conflict"]
    assert loser["class"] == "failed" and doc["outcomes"] == {"conflict": 1, "succeeded": 4}
    cards = dict((label, int(n)) for n, label in re.findall(r'<div class="card[^"]*"><b>(\d+)</b><span>([^<]*)</span>',
                                                             page.read_text()))
    assert cards["succeeded"] == 4 and cards["failed (1 conflict)"] == 1 and cards["interrupted"] == 0
    board = Progress(total=5)
    board.apply(events)
    assert (board.succeeded, board.failed, board.skipped, board.interrupted) == (4, 1, 0, 0)
    plain, _, _ = conflict_runs["plain"]
    assert plain.returncode == 1
    assert "4 succeeded, 1 failed (1 conflict), 0 skipped of 5" in plain.stderr


def test_the_report_styles_the_conflict_badge_bar_and_legend_in_its_own_colour(conflict_runs):
    _, page, _ = conflict_runs["json"]
    text = page.read_text()
    c = outcomes.colour("conflict")
    assert f".st-conflict{{background:{c};" in text and f"rect.st-conflict{{fill:{c}}}" in text
    assert '<span class="pill st-conflict">conflict</span>' in text
    assert 'class="bar st-conflict"' in text
    assert f'<i style="background:{c}"></i>conflict' in text  # the legend's swatch is the bar's colour


@pytest.mark.browser
def test_the_conflict_is_drawn_in_its_colour_in_a_headless_browser(conflict_runs, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium binary on PATH (scripts/install-browser.sh installs Debian's)")
    _, page, _ = conflict_runs["json"]
    png = tmp_path / "shot.png"
    screenshot(chromium, page, png, tmp_path / "profile")
    width, height, bpp, pixels = decode_png(png.read_bytes())
    counted = {bytes.fromhex(outcomes.colour(s)[1:]): 0 for s in ("conflict", "succeeded")}
    black = 0
    for i in range(0, len(pixels), bpp):
        px = pixels[i:i + 3]
        if px in counted:
            counted[px] += 1
        elif px == b"\x00\x00\x00":
            black += 1
    conflict, succeeded = counted.values()
    assert conflict > 1000, f"{conflict} pixels in the conflict's colour: its bar, badge and swatch are not drawn in it"
    assert succeeded > 1000
    assert black < 50, f"{black} black pixels: an unstyled bar"


def test_a_big_runs_attempt_table_keeps_what_did_not_succeed(tmp_path):
    events, rows = synthetic(report._ALL_ATTEMPTS + 100)
    text = report.render_report(events, {"run_id": 1}, rows)
    attempts = text[text.index("<h2>Attempts</h2>"):]
    failed = sum(1 for r in rows if r["status"] == "failed")
    assert attempts.count("<tr><td><code>") == failed and 0 < failed < len(rows)
    assert f"{failed} of {len(rows)} attempts" in attempts
    small = report.render_report(*synthetic(20)[:1], {"run_id": 1}, synthetic(20)[1])
    assert small[small.index("<h2>Attempts</h2>"):].count("<tr><td><code>") == 20


def test_the_docs_table_of_outcomes_is_the_code_s():
    from conftest import ROOT

    text = (ROOT / "docs" / "watching.md").read_text()
    rows = dict(((st, (cl, c)) for st, cl, c in re.findall(r"^\| `(\w+)`[^|]*\| (\w+) \| `(#[0-9a-f]{6})` \|$", text, re.M)))
    assert rows == {st: (lk.cls, lk.colour) for st, lk in outcomes.OUTCOMES.items() if st in rows}
    assert len(rows) >= 15 and f"`{outcomes.UNKNOWN.colour}`" in text
