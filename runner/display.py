"""What the user sees while a run goes: a live board on a terminal, plain lines elsewhere, a summary.

Only this module and the CLI write to the terminal. On a terminal the board (one line per agent, the
queue, progress and ETA) is redrawn in place under a tqdm bar; anything a task reports is printed
above it with tqdm.write, so nothing is garbled. Off a terminal (cron, CI, `| tee`) every event is
one plain line, with no carriage return.
"""

from __future__ import annotations

import sys
import time

from runner.pool import Pool
from runner.run import Reporter, RunResult

_GLYPH = {"busy": "▶", "idle": "○", "cooling": "…"}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def board_lines(snapshot: dict, now: float | None = None) -> list[str]:
    """The agent board from a pool snapshot (also what --status prints)."""
    now = now or snapshot.get("time") or time.time()
    lines = []
    width = max((len(a["id"]) for a in snapshot["agents"]), default=8)
    for a in sorted(snapshot["agents"], key=lambda a: (_role_order(a["role"]), a["id"])):
        glyph = _GLYPH.get(a["state"], "?")
        if a["state"] == "busy":
            title = f" ({a['task_title'][:40]})" if a.get("task_title") else ""
            lines.append(f"  {glyph} {a['id']:<{width}} → {a['task']}{title}   {fmt_duration(now - a['since'])}")
        else:
            lines.append(f"  {glyph} {a['id']:<{width}} → {a['state']}")
    st = snapshot.get("stats", {})
    total = st.get("total", 0)
    done = st.get("done", 0)
    queue = st.get("queue", 0)
    line = f"  queue: {queue} waiting"
    if queue:
        line += f" (oldest {fmt_duration(st.get('oldest_wait_s', 0))})"
    line += f" · {done}/{total} done · {st.get('failed', 0)} failed"
    if st.get("eta_s") is not None:
        line += f" · ETA {fmt_duration(st['eta_s'])}"
    lines.append(line)
    return lines


def _role_order(role: str) -> int:
    return {"orchestrator": 0, "worker": 1, "critic": 2}.get(role, 3)


class Display(Reporter):
    """Terminal reporter: a live board on a TTY, plain event lines otherwise, then the summary."""

    def __init__(self, quiet: bool = False, json_mode: bool = False, stream=None):
        self.out = stream or sys.stderr
        self.tty = self.out.isatty()
        self.quiet = quiet
        self.json_mode = json_mode
        self.bar = None
        self._board_lines = 0
        self.total = 0
        self.finished_count = 0
        self.failed = 0
        self._start = time.monotonic()

    # -- run lifecycle -------------------------------------------------------------------------------

    def started(self, info: dict) -> None:
        self.total = info["runnable"]
        self._runnable = info["runnable"]
        agents = ", ".join(f"{n} {r}" for r, n in info["agents"].items() if n)
        self._say(
            f"wvo-batch: run {info['run_id']}: {info['runnable']} of {info['tasks']} task(s) to run on {agents}; "
            f"logs in {info['folder']}"
        )
        if self.tty and not self.quiet:
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread: we fork agents
            self.bar = tqdm(total=self.total, file=self.out, unit="task", dynamic_ncols=True, leave=True)

    def message(self, text: str) -> None:
        self._say(f"wvo-batch: {text}", force=True)

    def events(self, events: list[dict]) -> None:
        for ev in events:
            name = ev["event"]
            if name == "task:finished":
                self._finished(ev)
            elif name == "task:skipped" and self.finished_count:
                self._line(f"skip  {ev['task']}: {ev['reason']}")
            elif name == "task:started" and not self.tty:
                self._line(f"start {ev['task']} on {ev['agent']} (attempt {ev['attempt']})")
            elif name == "task:retry":
                self._line(f"retry {ev['task']} in {ev['delay_s']:g}s ({ev['reason']})")
            elif name == "agent:exited" and ev.get("reason", "").startswith("killed"):
                self._line(f"agent {ev['agent']} {ev['reason']}")
            elif name == "agent:spawned" and self.finished_count and not self.tty:
                self._line(f"agent {ev['agent']} started (pid {ev['pid']})")

    def _finished(self, ev: dict) -> None:
        status = ev["status"]
        final = status == "succeeded" or not ev.get("retrying")
        if status == "succeeded":
            self.finished_count += 1
            if self.bar is not None:
                self.bar.update(1)
            if not self.tty:
                self._line(f"done  {ev['task']} on {ev['agent']} in {fmt_duration(ev['duration_s'])}")
        else:
            if final:
                pass
            code = "" if ev.get("exit_code") is None else f", exit code {ev['exit_code']}"
            self._line(f"FAIL  {ev['task']} on {ev['agent']}: {status}{code} — log: {ev.get('log')}", force=True)

    def refresh(self, pool: Pool) -> None:
        if self.bar is None:
            return
        snap = pool.snapshot()
        busy = sum(1 for a in snap["agents"] if a["state"] == "busy")
        st = snap["stats"]
        self.bar.set_postfix_str(f"{busy}/{len(snap['agents'])} busy · queue {st.get('queue', 0)}", refresh=False)
        self._draw_board(snap)

    def _draw_board(self, snap: dict) -> None:
        from tqdm import tqdm

        st = snap["stats"]
        st["done"] = self.finished_count
        st["failed"] = self.failed
        if self.bar is not None and self.bar.format_dict.get("rate"):
            remaining = max(0, self.total - self.bar.n)
            st["eta_s"] = remaining / self.bar.format_dict["rate"]
        lines = board_lines(snap)
        with tqdm.get_lock():
            self.bar.clear()
            self.out.write("\x1b[J" + "\n".join(lines) + "\n")
            self.out.write(f"\x1b[{len(lines)}A")
            self.bar.refresh()
        self._board_lines = len(lines)

    def finished(self, result: RunResult) -> None:
        if self.bar is not None:
            self.bar.clear()
            self.out.write("\x1b[J")
            self.bar.close()
            self.bar = None
        if self.json_mode:
            return
        self._summary(result)

    # -- output helpers ------------------------------------------------------------------------------

    def _say(self, text: str, force: bool = False) -> None:
        if self.quiet and not force:
            return
        self._line(text, force=True)

    def _line(self, text: str, force: bool = False) -> None:
        if self.quiet and not force:
            return
        if self.bar is not None:
            from tqdm import tqdm

            self.bar.clear()
            self.out.write("\x1b[J")
            tqdm.write(text, file=self.out)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def _summary(self, result: RunResult) -> None:
        rows = result.tasks
        shown = [r for r in rows if r["status"] != "succeeded" or len(rows) <= 40]
        shown = [r for r in shown if not (r["status"] == "skipped" and (r.get("reason") or "").startswith("status: done"))]
        out = self.out
        if shown:
            headers = ("task", "agent", "status", "duration", "log")
            table = [
                (
                    r["task"],
                    r.get("agent") or "-",
                    r["status"] + (f" ({r['reason']})" if r.get("reason") and r["reason"] != r["status"] else ""),
                    fmt_duration(r.get("duration_s")),
                    r.get("log") or "-",
                )
                for r in shown
            ]
            widths = [min(60, max(len(h), *(len(str(row[i])) for row in table))) for i, h in enumerate(headers)]
            out.write("\n" + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip() + "\n")
            for row in table:
                out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
            if len(shown) < len(rows):
                out.write(f"({len(rows) - len(shown)} more task(s) not shown: done before this run, or succeeded)\n")
        s = result.summary
        t = s["telemetry"]
        out.write(
            f"\n{s['succeeded']} succeeded, {s['failed']} failed, {s['skipped']} skipped"
            + (f", {s['interrupted']} interrupted" if s["interrupted"] else "")
            + f" of {s['total']} · makespan {fmt_duration(s['makespan_s'])}"
            + f" · utilisation {t['utilization'] * 100:.0f}% · queue wait p95 {fmt_duration(t['queue_wait_p95_s'])}\n"
        )
        out.write(f"run {s['run_id']}: {s['folder']}\n")
        out.flush()
