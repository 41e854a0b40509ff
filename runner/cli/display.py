"""What the user sees while a run goes: a live board on a terminal, plain lines elsewhere, a summary.

    Run ──events(batch)──▶ Progress.count()  (pure: counts, final failures, queue, cooling agents, ETA)
        ──refresh(pool)──▶ board_lines(snapshot + progress) ──▶ a region redrawn in place (terminal)
                                                           └──▶ one plain line per event (elsewhere)

Only this module and the CLI write to the terminal. On a terminal the board (one line per agent,
the queue line, an overall progress bar) sits at the bottom and is redrawn in place: the cursor goes
back to its first line, everything below is cleared, notes (failures, retries, skips, warnings)
are written there and the board is drawn again under them, every line cut to the terminal's width
so none wraps. Off a terminal (cron, CI, `| tee`, TERM=dumb) every event worth a line is one
plain line, with no carriage return and no escape code. `--quiet`: no board, no event lines; only
the run's own messages (warnings, errors, stopping) and the final summary.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import unicodedata
from dataclasses import dataclass, field

from runner.cli.terminal import fmt_duration, one_line, visible  # noqa: F401 - fmt_duration: part of the display's API
from runner.manager.events import (
    AGENT_EXITED,
    AGENT_SPAWNED,
    QUEUE_UPDATED,
    RUN_STARTED,
    TASK_ADDED,
    TASK_FINISHED,
    TASK_QUEUED,
    TASK_RESERVED,
    TASK_RETRY,
    TASK_SKIPPED,
    TASK_STARTED,
)
from runner.manager.pool import Pool
from runner.manager.run import Reporter, RunResult

_GLYPH = {"busy": "▶", "idle": "○", "cooling": "…", "gone": "✕", "starting": "◌"}
_ROLE_ORDER = {"orchestrator": 0, "worker": 1, "critic": 2}
_TITLE_MAX = 40  # characters of a task title on the board, before the terminal's width cuts more
_DRAW_EVERY_S = 0.1  # the board is redrawn at most this often on events (refresh() always redraws)
_COOLS = re.compile(r"cools down ([0-9.]+)s")


def fmt_eta(seconds: float) -> str:
    """An estimate, so coarse: 40s, 14m, 2h05m."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{max(1, round(seconds))}s"
    if seconds < 3600:
        return f"{round(seconds / 60)}m"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h}h{m:02d}m"


# -- what is counted -----------------------------------------------------------------------------------


@dataclass
class Progress:
    """A run's progress from its events alone; pure, so it is tested with plain calls and fake times.

    A failed attempt is a final failure only when no task:retry for the same task and attempt comes
    in the same batch (the run emits the two back to back, before it flushes).
    """

    total: int = 0  # tasks the run accounts for: runnable when it started
    succeeded: int = 0
    failed: int = 0  # final failures (timed out and agent deaths included), not retried attempts
    skipped: int = 0  # skipped after the start (a dependency failed, --max-failures)
    interrupted: int = 0
    retried: int = 0  # attempts that failed and were queued again
    first_start: float | None = None  # wall time of the first task:started
    started: bool = False  # run:started seen: skips before it were never runnable
    cooling: dict[str, float] = field(default_factory=dict)  # agent id -> wall time its cool-down ends
    queue: int | None = None  # tasks waiting: the last queue:updated, moved by queued / reserved since
    queue_sampled: tuple[float, float] | None = None  # (ts, oldest_wait_s) of the last queue:updated
    _failed_on: dict[str, str] = field(default_factory=dict, repr=False)  # task id -> agent of the attempt to retry

    @property
    def done(self) -> int:
        """Tasks with their last word said: succeeded, failed, skipped or interrupted."""
        return self.succeeded + self.failed + self.skipped + self.interrupted

    def apply(self, events: list[dict]) -> dict[tuple[str, int], float | None]:
        """Count one batch of events; returns the (task, attempt) that will be retried -> delay (s)."""
        retries = self.retries_in(events)
        for ev in events:
            self.count(ev, retries)
        return retries

    @staticmethod
    def retries_in(events: list[dict]) -> dict[tuple[str, int], float | None]:
        """(task, attempt) -> delay of every task:retry in a batch."""
        return {(ev["task"], ev.get("attempt")): ev.get("delay_s") for ev in events if ev.get("event") == TASK_RETRY}

    def count(self, ev: dict, retries: dict) -> None:
        """Count one event of a batch whose retries_in() is `retries`."""
        name = ev.get("event")
        if name == RUN_STARTED:
            self.started = True
        elif name == QUEUE_UPDATED:
            self.queue = int(ev.get("length") or 0)
            self.queue_sampled = (ev["ts"], float(ev.get("oldest_wait_s") or 0.0))
        elif name == TASK_QUEUED and self.queue is not None:
            self.queue += 1
        elif name == TASK_ADDED:  # the roadmap was edited during the run (runner.manager.live)
            self.total += 1
        elif name in (TASK_RESERVED, TASK_STARTED):
            self.cooling.pop(ev.get("agent"), None)
            if name == TASK_RESERVED and self.queue:
                self.queue -= 1
            if name == TASK_STARTED and self.first_start is None:
                self.first_start = ev["ts"]
        elif name == TASK_FINISHED:
            status = ev.get("status")
            if status == "succeeded":
                self.succeeded += 1
            elif (ev["task"], ev.get("attempt")) in retries:
                self.retried += 1
                self._failed_on[ev["task"]] = ev.get("agent")
            elif status == "interrupted":
                self.interrupted += 1
            else:
                self.failed += 1
        elif name == TASK_RETRY:
            pause = ev.get("cooldown_s")
            if pause is None:
                m = _COOLS.search(ev.get("reason") or "")
                pause = float(m.group(1)) if m else None
            agent = self._failed_on.pop(ev["task"], None)
            if pause and agent:
                self.cooling[agent] = ev["ts"] + float(pause)
        elif name == TASK_SKIPPED and self.started:
            self.skipped += 1
        elif name == AGENT_EXITED:
            self.cooling.pop(ev.get("agent"), None)

    def rate(self, now: float) -> float | None:
        """Tasks finished per second since the first one started; None before any finished."""
        finished = self.succeeded + self.failed + self.interrupted
        if self.first_start is None or finished == 0 or now <= self.first_start:
            return None
        return finished / (now - self.first_start)

    def eta_s(self, now: float) -> float | None:
        """Seconds to the end at the rate so far; None while there is no rate to go by."""
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            return None
        rate = self.rate(now)
        return remaining / rate if rate else None

    def stats(self, now: float) -> dict:
        """The figures board_lines() reads, to merge over a pool snapshot's stats."""
        out = {}
        if self.queue is not None and self.queue_sampled is not None:
            ts, oldest = self.queue_sampled
            out["queue"] = self.queue
            out["oldest_wait_s"] = oldest + max(0.0, now - ts) if self.queue else 0.0
        return out | {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "eta_s": self.eta_s(now),
            "cooling": {a: t for a, t in self.cooling.items() if t > now},
        }


# -- the board -----------------------------------------------------------------------------------------


def board_lines(snapshot: dict, now: float | None = None, width: int | None = None) -> list[str]:
    """The agent board from a pool snapshot (also what --status prints); lines cut to `width` cells."""
    now = now or snapshot.get("time") or time.time()
    st = snapshot.get("stats") or {}
    cooling = st.get("cooling") or {}
    agents = sorted(snapshot.get("agents") or [], key=_agent_key)
    id_w = max((len(a["id"]) for a in agents), default=8)
    rows: list[tuple[dict, str]] = []
    for a in agents:
        state = a.get("state", "idle")
        if state == "idle" and cooling.get(a["id"], 0) > now:
            state = "cooling"
        rows.append((a, state))
    # The busy rows' elapsed times line up in one column: as wide as the widest task, within the width.
    labels = {}
    for a, state in rows:
        if state == "busy":
            title = _clean(a.get("task_title") or "")
            label = _clean(str(a.get("task")))
            if title:
                label += f" ({_fit(title, _TITLE_MAX)})"
            labels[a["id"]] = label
    label_w = max((_cells(s) for s in labels.values()), default=0)
    if width:
        label_w = min(label_w, max(8, width - 1 - (4 + id_w + 3) - 3 - 6))
    lines = []
    for a, state in rows:
        head = f"  {_GLYPH.get(state, '?')} {a['id']:<{id_w}} → "
        if state == "busy":
            label = _fit(labels[a["id"]], label_w)
            lines.append(f"{head}{label}{' ' * (label_w - _cells(label))}   {fmt_duration(now - (a.get('since') or now))}")
        elif state == "cooling":
            lines.append(f"{head}cooling (rate limited), {fmt_duration(cooling[a['id']] - now)} left")
        else:
            lines.append(f"{head}{state}")
    total = st.get("total", 0)
    done = st["done"] if "done" in st else max(0, total - st["active"]) if "active" in st else 0
    queue = st.get("queue", 0)
    line = f"  queue: {queue} waiting"
    if queue:
        line += f" (oldest {fmt_duration(st.get('oldest_wait_s', 0))})"
    line += f" · {done}/{total} done"
    if "failed" in st:
        line += f" · {st['failed']} failed"
    if st.get("skipped"):
        line += f" · {st['skipped']} skipped"
    if st.get("landing"):
        line += f" · {st['landing']} landing"
    if st.get("landed"):
        line += f" · last landed {_clean(str(st['landed']))}"
    if st.get("eta_s") is not None:
        line += f" · ETA {fmt_eta(st['eta_s'])}"
    lines.append(line)
    if width:
        lines = [_fit(s, width - 1) for s in lines]
    return lines


def _agent_key(a: dict):
    head, _, tail = a["id"].rpartition("-")
    return (_ROLE_ORDER.get(a.get("role") or head, 3), a.get("role") or head, int(tail) if tail.isdigit() else 0, a["id"])


_clean = one_line


def _cells(text: str) -> int:
    """Terminal cells `text` takes: wide East Asian characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, width: int) -> str:
    """`text` cut to `width` cells, with … where it was cut."""
    if _cells(text) <= width:
        return text
    if width <= 0:
        return ""
    out, used = [], 0
    for c in text:
        w = _cells(c)
        if used + w > width - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + "…"


# -- the reporter --------------------------------------------------------------------------------------


class Display(Reporter):
    """Terminal reporter: a live board on a terminal, plain event lines otherwise, then the summary."""

    def __init__(self, quiet: bool = False, json_mode: bool = False, stream=None):
        self.out = stream or sys.stderr
        self.live = _is_terminal(self.out)  # a board redrawn in place; else plain lines
        self.quiet = quiet
        self.json_mode = json_mode
        self.progress = Progress()
        self._pool: Pool | None = None  # from refresh(): read for the board between refreshes
        self._drawn = 0  # board lines now on screen, right above the cursor
        self._last_draw = 0.0  # monotonic time of the last redraw
        self._start = time.time()
        self._log_handler: _AboveBoard | None = None

    @property
    def _board(self) -> bool:
        return self.live and not self.quiet

    # -- run lifecycle -------------------------------------------------------------------------------

    def started(self, info: dict) -> None:
        self.progress = Progress(total=info["runnable"])
        self._start = time.time()
        agents = ", ".join(f"{n} {r}" for r, n in info["agents"].items() if n)
        self._note(
            f"wvo-batch: run {info['run_id']}: {info['runnable']} of {info['tasks']} task(s) to run on {agents}; "
            f"logs in {info['folder']}"
        )
        if self._board and self._log_handler is None and not logging.getLogger().handlers:
            # Warnings of the run would go to stderr through logging's last resort, across the board.
            self._log_handler = _AboveBoard(self)
            logging.getLogger().addHandler(self._log_handler)

    def message(self, text: str) -> None:
        self._write([f"wvo-batch: {_clean(text)}"])

    def events(self, events: list[dict]) -> None:
        retries = self.progress.retries_in(events)
        lines = []
        for ev in events:
            self.progress.count(ev, retries)
            if not self.quiet and (line := self._event_line(ev, retries)) is not None:
                lines.append(line)
        if self.quiet:
            return
        if self.live:
            now = time.monotonic()
            if lines or now - self._last_draw >= _DRAW_EVERY_S:
                self._paint(lines)
        elif lines:
            self._write(lines)

    def _event_line(self, ev: dict, retries: dict) -> str | None:
        """The line an event is worth, or None; a board shows starts and successes by itself."""
        name = ev.get("event")
        task = _clean(str(ev.get("task")))
        where = f"{task} on {ev.get('agent')}"
        if name == TASK_FINISHED:
            status = ev.get("status")
            if status == "succeeded":
                if self.live:
                    return None
                p = self.progress
                return f"done  {where} in {fmt_duration(ev.get('duration_s'))} ({p.done}/{p.total})"
            code = ev.get("exit_code")
            what = str(status) + ("" if code is None else f", exit code {code}")
            error = ev.get("error")
            if error and error not in (f"exit code {code}", status):
                what += f" ({_clean(str(error))})"
            log = f" — log: {ev.get('log')}" if ev.get("log") else " (no output)"
            if status == "needs_review":  # runner.manager.review: its checks passed, a critic is next
                return f"check {where}: checks passed, to review (attempt {ev.get('attempt')}){log}"
            if status == "rejected":
                last = "" if (ev["task"], ev.get("attempt")) in retries else "; review rounds used up: needs_improvement"
                return f"REJECT {where}: {_clean(str(error))} (attempt {ev.get('attempt')}{last}){log}"
            if status == "interrupted":
                return f"stop  {where}: {what}{log}"
            if (ev["task"], ev.get("attempt")) in retries:
                return f"fail  {where}: {what} (attempt {ev.get('attempt')}, will retry){log}"
            return f"FAIL  {where}: {what}{log}"
        if name == TASK_RETRY and str(ev.get("reason")).startswith("checks passed"):
            return None  # the `check` line said it
        if name == TASK_RETRY:
            delay = ev.get("delay_s") or 0
            when = f"in {delay:g}s" if delay else "now"
            return f"retry {task}: attempt {(ev.get('attempt') or 0) + 1} {when} ({_clean(str(ev.get('reason')))})"
        if name == TASK_SKIPPED:
            return f"skip  {task}: {_clean(str(ev.get('reason')))}"
        if name == AGENT_EXITED:
            if ev.get("reason") == "exit code 0":  # stopped at the end of the run, or retired
                return None
            return f"agent {ev.get('agent')} exited ({ev.get('reason')})"
        if self.live:
            return None
        if name == TASK_STARTED:
            return f"start {where} (attempt {ev.get('attempt')})"
        if name == AGENT_SPAWNED and self.progress.first_start is not None:
            pid = f" (pid {ev['pid']})" if ev.get("pid") else ""
            return f"agent {ev.get('agent')} started{pid}"
        return None

    def refresh(self, pool: Pool) -> None:
        self._pool = pool
        if self._board:
            self._paint([])

    def finished(self, result: RunResult) -> None:
        if self._drawn:
            self.out.write(f"\r\x1b[{self._drawn}A\x1b[J")
            self._drawn = 0
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None
        self._pool = None
        if not self.json_mode:
            self._summary(result)
        self.out.flush()

    # -- drawing -------------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        """A line that --quiet leaves out."""
        if not self.quiet:
            self._write([text])

    def _write(self, lines: list[str]) -> None:
        """Lines above the board (or plain lines); the board is drawn again under them."""
        if self._board and self._drawn:
            self._paint(lines)
        else:
            self.out.write("".join(_clean(line) + "\n" for line in lines))
            self.out.flush()

    def _paint(self, above: list[str]) -> None:
        """Back to the board's first line, clear to the end of the screen, notes, then the board."""
        width = _width(self.out)
        board = self._board_now(width) if self._board else []
        if not above and not board and not self._drawn:
            return
        parts = []
        if self._drawn:
            parts.append(f"\r\x1b[{self._drawn}A")
        parts.append("\x1b[J")
        parts.extend(_clean(line) + "\n" for line in above)
        parts.extend(_clean(line) + "\n" for line in board)
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(board)
        self._last_draw = time.monotonic()

    def _board_now(self, width: int) -> list[str]:
        if self._pool is None:
            return []
        now = time.time()
        snap = self._pool.snapshot()
        snap["stats"] = {**snap.get("stats", {}), **self.progress.stats(now)}
        lines = board_lines(snap, now, width)
        bar = self._bar(now, width)
        return lines + ([bar] if bar else [])

    def _bar(self, now: float, width: int) -> str:
        p = self.progress
        if p.total <= 0:
            return ""
        from tqdm import tqdm

        text = tqdm.format_meter(
            min(p.done, p.total), p.total, now - self._start, ncols=max(20, width - 3), unit="task", rate=p.rate(now)
        )
        return _fit("  " + text, width - 1)

    # -- the end -------------------------------------------------------------------------------------

    def _summary(self, result: RunResult) -> None:
        from runner.cli.summary import write_summary

        write_summary(self.out, result, self.quiet)


class _AboveBoard(logging.Handler):
    """Log records of the manager, written above the board instead of across it."""

    def __init__(self, display: Display):
        super().__init__(logging.WARNING)
        self.display = display
        self.pid = os.getpid()  # agents are forked: in them, a plain line like logging's last resort

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if os.getpid() == self.pid:
                self.display._write(text.splitlines() or [""])
            else:
                self.display.out.write(visible(text) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise into the run
            self.handleError(record)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def _width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        import shutil  # lazily: only a terminal needs it

        return shutil.get_terminal_size((80, 24)).columns or 80
