"""What the user sees while a run goes: a live board on a terminal, plain lines elsewhere, a summary.

    Run ──events(batch)──▶ Progress.count()  (runner.cli.board, pure: counts, queue, ETA, task facts)
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

import os
import sys
import time

from runner.cli.board import Progress, board_lines, fit, fmt_eta  # noqa: F401 - board_lines, fmt_eta: the display's API
from runner.cli.terminal import fmt_duration, one_line, visible  # noqa: F401 - fmt_duration: part of the display's API
from runner.manager.events import (
    AGENT_EXITED,
    AGENT_SPAWNED,
    TASK_FINISHED,
    TASK_RETRY,
    TASK_SKIPPED,
    TASK_STARTED,
)
from runner.manager.pool import Pool
from runner.manager.run import Reporter, RunResult

_DRAW_EVERY_S = 0.1  # the board is redrawn at most this often on events (refresh() always redraws)
_clean = one_line


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
        self._log_handler = None  # logging.Handler, under the board

    @property
    def reads_events(self) -> bool:  # --quiet: events() reads nothing
        return not self.quiet

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
        if self._board and self._log_handler is None:
            import logging  # only under the board: a plain run does not import it

            if not logging.getLogger().handlers:
                # Warnings of the run would go to stderr through logging's last resort, across the board.
                self._log_handler = _above_board(self)
                logging.getLogger().addHandler(self._log_handler)

    def message(self, text: str) -> None:
        self._write([f"wvo-batch: {_clean(text)}"])

    def events(self, events: list[dict]) -> None:
        if self.quiet:  # no board and no event lines: nothing reads the counts (~5 µs an event)
            return
        retries = self.progress.retries_in(events)
        lines = []
        for ev in events:
            self.progress.count(ev, retries)
            if (line := self._event_line(ev, retries)) is not None:
                lines.append(line)
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
            import logging

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
        return fit("  " + text, width - 1)

    # -- the end -------------------------------------------------------------------------------------

    def _summary(self, result: RunResult) -> None:
        from runner.cli.summary import write_summary

        write_summary(self.out, result, self.quiet)


def _above_board(display: Display):
    """A logging handler that writes the manager's records above the board instead of across it."""
    import logging

    class AboveBoard(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.pid = os.getpid()  # agents are forked: in them, a plain line like logging's last resort

        def emit(self, record: logging.LogRecord) -> None:
            try:
                text = self.format(record)
                if os.getpid() == self.pid:
                    display._write(text.splitlines() or [""])
                else:
                    display.out.write(visible(text) + "\n")
            except Exception:  # noqa: BLE001 - logging must never raise into the run
                self.handleError(record)

    return AboveBoard()


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
