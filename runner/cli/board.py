"""The board: a run's progress counted from its events, and the lines that show it (live and --status).

    events ──Progress.count()──▶ counts, final failures, queue, cooling agents, ETA, each running
                                 task's facts (checks, verdict, tokens, cost), the last tasks that ended
    pool snapshot + Progress.stats() ──board_lines()──▶ one line per agent, the recent tasks, the queue line

Pure: tested with plain calls and fake times. runner.cli.display draws it; `--status` prints it.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import field

from runner.cli.outcomes import class_of
from runner.cli.terminal import fmt_duration, one_line
from runner.manager.events import (
    AGENT_EXITED,
    QUEUE_UPDATED,
    RUN_STARTED,
    TASK_ADDED,
    TASK_FINISHED,
    TASK_LANDING,
    TASK_QUEUED,
    TASK_RESERVED,
    TASK_RETRY,
    TASK_REVIEWED,
    TASK_SKIPPED,
    TASK_STARTED,
    TASK_USAGE,
)
from runner.model import record

_GLYPH = {"busy": "▶", "idle": "○", "cooling": "…", "gone": "✕", "starting": "◌"}
_ROLE_ORDER = {"orchestrator": 0, "worker": 1, "critic": 2}
_TITLE_MAX = 40  # characters of a task title on the board, before the terminal's width cuts more
_COOLS = re.compile(r"cools down ([0-9.]+)s")
_RECENT = 4  # tasks that ended, listed under the agents


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


@record
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
    # task id -> what the board shows of it (checks, verdict, landing, tokens, cost), while it is not done
    work: dict[str, dict] = field(default_factory=dict)
    recent: list[dict] = field(default_factory=list)  # the last tasks that ended, newest last (at most _RECENT)

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
            if name == TASK_STARTED:
                self.work.setdefault(ev["task"], {})["attempt"] = ev.get("attempt")
                if self.first_start is None:
                    self.first_start = ev["ts"]
        elif name == TASK_FINISHED:
            status = ev.get("status")
            kind = class_of(status)  # the count the summary, --json and the report put it in
            retried = (ev["task"], ev.get("attempt")) in retries and status != "succeeded"
            self._note_work(ev, status, final=not retried)
            if status == "succeeded":
                self.succeeded += 1
            elif retried:
                self.retried += 1
                self._failed_on[ev["task"]] = ev.get("agent")
            elif kind == "interrupted":
                self.interrupted += 1
            elif kind == "succeeded":
                self.succeeded += 1
            elif kind == "skipped":
                self.skipped += 1
            else:
                self.failed += 1
        elif name == TASK_USAGE:
            w = self.work.setdefault(ev["task"], {})
            usage = ev.get("usage") or {}
            w["tokens"] = w.get("tokens", 0) + int(usage.get("input") or 0) + int(usage.get("output") or 0)
            if ev.get("cost_usd") is not None:
                w["cost_usd"] = w.get("cost_usd", 0.0) + float(ev["cost_usd"])
                w["estimated"] = w.get("estimated", False) or bool(ev.get("cost_estimated"))
        elif name == TASK_REVIEWED:
            self.work.setdefault(ev["task"], {})["verdict"] = ev.get("verdict")
        elif name == TASK_LANDING:
            w = self.work.setdefault(ev["task"], {})
            w["landing"] = "landing"
            if "checks" in w:  # its checks passed in the worktree; the landing runs them again
                w["checks"] = "✓"
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

    def _note_work(self, ev: dict, status, final: bool) -> None:
        """What the attempt says of its task's checks; a task that ended moves to the recent list."""
        w = self.work.setdefault(ev["task"], {})
        w["attempt"] = ev.get("attempt")
        if status == "check_failed":
            w["checks"] = "✗"
        elif status == "needs_review" or (status == "succeeded" and "checks" in w):  # a task with checks got past them
            w["checks"] = "✓"
        w.pop("landing", None)
        if final:
            self.recent.append({"task": ev["task"], "status": status, **self.work.pop(ev["task"])})
            del self.recent[:-_RECENT]

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
            "work": self.work,
            "recent": self.recent,
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
                label += f" ({fit(title, _TITLE_MAX)})"
            labels[a["id"]] = label
    label_w = max((_cells(s) for s in labels.values()), default=0)
    if width:
        label_w = min(label_w, max(8, width - 1 - (4 + id_w + 3) - 3 - 6))
    work = st.get("work") or {}
    lines = []
    for a, state in rows:
        head = f"  {_GLYPH.get(state, '?')} {a['id']:<{id_w}} → "
        if state == "busy":
            label = fit(labels[a["id"]], label_w)
            facts = work_facts(work.get(str(a.get("task"))) or {})
            lines.append(f"{head}{label}{' ' * (label_w - _cells(label))}   {fmt_duration(now - (a.get('since') or now))}"
                         + (f"  {facts}" if facts else ""))
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
    for r in st.get("recent") or ():  # the last tasks that ended: how, and what they cost
        mark = {"succeeded": "✓", "failed": "✗"}.get(class_of(r.get("status")), "·")
        facts = work_facts(r)
        lines.append(f"    {mark} {_clean(str(r.get('task')))}: {_clean(str(r.get('status')))}" + (f" · {facts}" if facts else ""))
    lines.append(line)
    held = [f"{name} " + ", ".join(f"{_clean(str(v))} → {_clean(str(t))}" for v, t in slots.items())
            for name, slots in (st.get("leases") or {}).items() if slots]  # runner.manager.leasing
    if held:
        lines.append("  leases: " + " · ".join(held))
    if width:
        lines = [fit(s, width - 1) for s in lines]
    return lines


def work_facts(w: dict) -> str:
    """A task's facts for the board: 'attempt 3 · checks ✓ · review: reject · 3.3k tokens · $0.016'."""
    parts = []
    if (w.get("attempt") or 0) > 1:
        parts.append(f"attempt {w['attempt']}")
    if w.get("checks"):
        parts.append(f"checks {w['checks']}")
    if w.get("verdict"):
        parts.append(f"review: {_clean(str(w['verdict']))}")
    if w.get("landing"):
        parts.append("landing")
    if w.get("tokens"):
        n = w["tokens"]
        parts.append(f"{n / 1000:.1f}k tokens" if n >= 1000 else f"{n} tokens")
    if w.get("cost_usd") is not None:
        parts.append(f"{'~' if w.get('estimated') else ''}${w['cost_usd']:.3f}")
    return " · ".join(parts)


def _agent_key(a: dict):
    head, _, tail = a["id"].rpartition("-")
    return (_ROLE_ORDER.get(a.get("role") or head, 3), a.get("role") or head, int(tail) if tail.isdigit() else 0, a["id"])


_clean = one_line


def _cells(text: str) -> int:
    """Terminal cells `text` takes: wide East Asian characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fit(text: str, width: int) -> str:
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


# What the board shows of each task, for `--status`, from the tail of the run's events file: the run
# serves its agents and counts, and the events hold the rest. The last MiB is ~5,000 events: a running
# task's facts from before that are not shown.
_TAIL_BYTES = 1 << 20


def task_facts(events_path: str, max_bytes: int = _TAIL_BYTES) -> dict:
    """{"work": task -> facts, "recent": [...]} from the last `max_bytes` of an events file; {} if unreadable."""
    import json

    try:
        with open(events_path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except OSError:
        return {}
    lines = data.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first is cut
    events = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a torn last line, or an empty one
        if isinstance(ev, dict) and str(ev.get("event", "")).startswith("task:") and "task" in ev:
            events.append(ev)
    p = Progress()
    p.apply(events)
    return {"work": p.work, "recent": p.recent}
