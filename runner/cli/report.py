"""A run's record for people: a Chrome trace for Perfetto, and one self-contained HTML report.

    events ──attempts()──▶ one span per attempt (task:started … task:finished), on its agent's row
      │                          ├──▶ write_trace():  {"traceEvents": [...]}, µs from the first event
      └── queue:updated, status:updated ──┴──▶ write_report(): SVG Gantt, queue line, tables; inline only

Both are built from events alone (plus the summary and task rows for the report), so they can be
rebuilt after the run from its folder. Events of several batches may be concatenated: each
run:started opens a new run, so attempt numbers that start again at 1 are not confused.
The report loads nothing: no scripts, styles, fonts or images from anywhere (a CSP says so too),
and every string that came from a roadmap is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from dataclasses import dataclass
from urllib.parse import quote

from runner.roadmap.writeback import atomic_write

# Attempt statuses, most alarming first: a thin stripe of several attempts takes the colour of the worst.
_SEVERITY = ("failed", "timed_out", "agent_died", "rate_limited", "interrupted", "unfinished", "succeeded")
_COLOUR = {
    "succeeded": "#2a9d58",
    "failed": "#d62839",
    "timed_out": "#f08a24",
    "agent_died": "#8e44ad",
    "rate_limited": "#e9c46a",
    "interrupted": "#8d99ae",
    "unfinished": "#c9ccd1",
    "skipped": "#b0b7c3",
}
_ROLE_ORDER = {"orchestrator": 0, "worker": 1, "critic": 2}
_PRIORITY_ORDER = ("critical", "high", "medium", "low")

# Gantt geometry (SVG user units; the SVG scales to the page width).
_LABEL_W = 150
_PLOT_W = 1000
_ROW_H = 20
_BAR_H = 14
_AXIS_H = 22
_THIN = 2.0  # bars narrower than this many units are merged with touching neighbours


@dataclass
class Span:
    """One attempt, from its start to its outcome (wall-clock seconds)."""

    run: int
    task: str
    attempt: int
    agent: str
    start: float
    end: float
    status: str  # an Outcome value, or "unfinished" when the events stop before its outcome
    exit_code: int | None = None
    wait_s: float | None = None
    duration_s: float | None = None
    log: str | None = None
    error: str | None = None


def read_events(path: str) -> list[dict]:
    """Events of a JSON Lines file; a torn last line (a killed run) is ignored. Raises OSError."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def attempts(events: list[dict]) -> list[Span]:
    """One span per attempt: every task:finished, and every task:started that never finished."""
    run = 0
    open_: dict[tuple[int, str, int], dict] = {}  # (run, task, attempt) -> what is known so far
    spans: list[Span] = []
    last_ts = max((e.get("ts", 0.0) for e in events), default=0.0)
    for ev in events:
        name = ev.get("event")
        if name == "run:started":
            run += 1
            continue
        if name not in ("task:reserved", "task:started", "task:finished"):
            continue
        key = (run, str(ev.get("task")), int(ev.get("attempt") or 0))
        info = open_.setdefault(key, {})
        if name == "task:reserved":
            info["reserved"] = ev["ts"]
            info["agent"] = ev.get("agent")
            info["wait_s"] = ev.get("wait_s")
        elif name == "task:started":
            info["start"] = ev["ts"]
            info["agent"] = ev.get("agent") or info.get("agent")
        else:
            del open_[key]
            duration = ev.get("duration_s")
            start = info.get("start")
            if start is None:  # ended before it was seen to start (its agent died early)
                start = ev["ts"] - duration if duration else info.get("reserved", ev["ts"])
            spans.append(
                Span(
                    run=run,
                    task=key[1],
                    attempt=key[2],
                    agent=str(ev.get("agent") or info.get("agent") or "?"),
                    start=min(start, ev["ts"]),
                    end=ev["ts"],
                    status=str(ev.get("status") or "unfinished"),
                    exit_code=ev.get("exit_code"),
                    wait_s=ev.get("wait_s", info.get("wait_s")),
                    duration_s=duration,
                    log=ev.get("log"),
                    error=ev.get("error"),
                )
            )
    for (run_no, task, attempt), info in open_.items():
        if "start" in info:
            spans.append(
                Span(run_no, task, attempt, str(info.get("agent") or "?"), info["start"], last_ts, "unfinished",
                     wait_s=info.get("wait_s"))
            )
    spans.sort(key=lambda s: (s.start, s.agent))
    return spans


def agent_order(events: list[dict], spans: list[Span]) -> list[str]:
    """Agents as the board lists them: orchestrators, workers, critics, others; by number within a role."""
    roles: dict[str, str] = {}
    for ev in events:
        if ev.get("event") == "agent:spawned" and ev.get("agent"):
            roles.setdefault(str(ev["agent"]), str(ev.get("role") or ""))
    for s in spans:
        roles.setdefault(s.agent, s.agent.rsplit("-", 1)[0])

    def key(agent: str):
        head, _, tail = agent.rpartition("-")
        role = roles[agent] or head
        return (_ROLE_ORDER.get(role, 3), role, int(tail) if tail.isdigit() else 0, agent)

    return sorted(roles, key=key)


def queue_series(events: list[dict]) -> list[tuple[float, int]]:
    """(time, queue length): from queue:updated, or status:updated when a log has none."""
    points = [(e["ts"], int(e.get("length") or 0)) for e in events if e.get("event") == "queue:updated"]
    if not points:
        points = [(e["ts"], int(e.get("queue") or 0)) for e in events if e.get("event") == "status:updated"]
    return points


def busy_series(events: list[dict]) -> list[tuple[float, int]]:
    return [(e["ts"], int(e.get("busy") or 0)) for e in events if e.get("event") == "status:updated"]


# -- the trace -----------------------------------------------------------------------------------------


def trace_events(events: list[dict]) -> list[dict]:
    """Chrome trace events: a track per agent, a complete span per attempt, queue and busy counters."""
    if not events:
        return []
    t0 = min(e["ts"] for e in events)

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 1)

    spans = attempts(events)
    agents = agent_order(events, spans)
    tid = {a: i + 1 for i, a in enumerate(agents)}
    runs = [e.get("run") for e in events if e.get("event") == "run:started"]
    name = "wvo-batch" + (f" run {', '.join(str(r) for r in runs)}" if runs else "")
    out: list[dict] = [{"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": name}}]
    for agent, t in tid.items():
        out.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": t, "args": {"name": agent}})
        out.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": t, "args": {"sort_index": t}})
    for s in spans:
        args = {"attempt": s.attempt, "status": s.status, "exit_code": s.exit_code, "wait_s": s.wait_s}
        if s.error:
            args["error"] = s.error
        if s.log:
            args["log"] = s.log
        out.append(
            {
                "name": s.task,
                "cat": s.status,
                "ph": "X",
                "pid": 1,
                "tid": tid[s.agent],
                "ts": us(s.start),
                "dur": max(0.0, round((s.end - s.start) * 1e6, 1)),
                "args": args,
            }
        )
    for ts, length in queue_series(events):
        out.append({"name": "queue", "ph": "C", "pid": 1, "tid": 0, "ts": us(ts), "args": {"waiting": length}})
    for ts, busy in busy_series(events):
        out.append({"name": "agents busy", "ph": "C", "pid": 1, "tid": 0, "ts": us(ts), "args": {"busy": busy}})
    for ev in events:
        if ev.get("event") == "agent:exited" and ev.get("agent") in tid:
            out.append(
                {
                    "name": f"exited: {ev.get('reason', '')}",
                    "ph": "i",
                    "s": "t",
                    "pid": 1,
                    "tid": tid[ev["agent"]],
                    "ts": us(ev["ts"]),
                }
            )
    return out


def write_trace(events: list[dict], path: str) -> None:
    """Write a Chrome trace-event JSON file (opens in Perfetto and chrome://tracing). Raises OSError."""
    doc = {"traceEvents": trace_events(events), "displayTimeUnit": "ms"}
    atomic_write(path, json.dumps(doc, separators=(",", ":"), default=str))


# -- the HTML report -----------------------------------------------------------------------------------


def write_report(events: list[dict], summary: dict, tasks: list[dict], path: str) -> None:
    """Write one self-contained HTML page: timeline, queue, telemetry and tasks. Raises OSError."""
    atomic_write(path, render_report(events, summary, tasks, base_dir=os.path.dirname(os.path.abspath(path))))


def render_report(events: list[dict], summary: dict, tasks: list[dict], base_dir: str | None = None) -> str:
    """The report's HTML text; `base_dir` (where it will live) makes log links relative to it."""
    summary = summary or {}
    spans = attempts(events)
    agents = agent_order(events, spans)
    t0 = min((e["ts"] for e in events), default=0.0)
    t1 = max([e["ts"] for e in events] + [s.end for s in spans], default=t0)
    span_s = max(t1 - t0, 1e-6)
    runs = [e.get("run") for e in events if e.get("event") == "run:started"]
    run_label = ", ".join(str(r) for r in runs) or str(summary.get("run_id", "?"))
    ended = any(e.get("event") == "run:finished" for e in events)
    status = str(summary.get("status") or ("?" if ended else "unfinished"))
    counts = _counts(tasks, summary)
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>wvo-batch run {_e(run_label)}: {_e(status)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>wvo-batch {'runs' if len(runs) > 1 else 'run'} {_e(run_label)} "
        f"<span class=\"badge st-{_cls(status)}\">{_e(status)}</span></h1>",
        _header(summary, counts, t0, len(spans)),
    ]
    if summary.get("ledger_error"):
        parts.append(f"<p class=\"warn\">The ledger could not be written: {_e(summary['ledger_error'])}</p>")
    parts.append("<h2>Timeline</h2>")
    parts.append(_legend(spans))
    parts.append(_gantt(spans, agents, t0, span_s))
    parts.append("<h2>Queue</h2>")
    parts.append(_queue_chart(queue_series(events), busy_series(events), t0, span_s))
    parts.append("<h2>Telemetry</h2>")
    parts.append(_telemetry(summary, len(runs)))
    parts.append("<h2>Tasks</h2>")
    parts.append(_task_table(tasks, spans, base_dir))
    parts.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)


def _counts(tasks: list[dict], summary: dict) -> dict[str, int]:
    if tasks:
        out = {"total": len(tasks), "succeeded": 0, "failed": 0, "skipped": 0, "interrupted": 0}
        for row in tasks:
            st = row.get("status")
            key = st if st in out else ("failed" if st in ("timed_out", "agent_died") else "interrupted")
            out[key] += 1
        return out
    return {k: int(summary.get(k) or 0) for k in ("total", "succeeded", "failed", "skipped", "interrupted")}


def _header(summary: dict, counts: dict[str, int], t0: float, n_attempts: int) -> str:
    cards = [
        ("tasks", str(counts["total"]), ""),
        ("succeeded", str(counts["succeeded"]), "st-succeeded"),
        ("failed", str(counts["failed"]), "st-failed" if counts["failed"] else ""),
        ("skipped", str(counts["skipped"]), ""),
        ("interrupted", str(counts["interrupted"]), "st-interrupted" if counts["interrupted"] else ""),
        ("attempts", str(n_attempts), ""),
        ("makespan", _fmt_s(summary.get("makespan_s", (summary.get("telemetry") or {}).get("makespan_s"))), ""),
    ]
    agents = summary.get("agents") or {}
    pool = ", ".join(f"{n} {r}" for r, n in agents.items() if n) if isinstance(agents, dict) else str(agents)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)) if t0 else "-"
    meta = f"started {_e(started)}"
    if pool:
        meta += f" · agents: {_e(pool)}"
    if summary.get("folder"):
        meta += f" · folder <code>{_e(summary['folder'])}</code>"
    body = "".join(f"<div class=\"card {c}\"><b>{_e(v)}</b><span>{_e(k)}</span></div>" for k, v, c in cards)
    return f"<p class=\"meta\">{meta}</p><div class=\"cards\">{body}</div>"


def _legend(spans: list[Span]) -> str:
    seen = {s.status for s in spans} or {"succeeded"}
    items = [
        f"<span><i style=\"background:{_COLOUR.get(st, '#999')}\"></i>{_e(st)}</span>"
        for st in _SEVERITY
        if st in seen
    ]
    items += [f"<span><i style=\"background:#999\"></i>{_e(st)}</span>" for st in sorted(seen - set(_SEVERITY))]
    return f"<div class=\"legend\">{''.join(items)}</div>"


def _gantt(spans: list[Span], agents: list[str], t0: float, span_s: float) -> str:
    """One row per agent, one bar per attempt; bars too thin to see apart are merged (and say so)."""
    if not agents:
        return "<p class=\"empty\">No attempt ran.</p>"
    scale = _PLOT_W / span_s
    height = _AXIS_H + len(agents) * _ROW_H + 4
    width = _LABEL_W + _PLOT_W + 10
    row = {a: i for i, a in enumerate(agents)}
    out = [
        f"<svg class=\"gantt\" viewBox=\"0 0 {width} {height}\" preserveAspectRatio=\"xMinYMin meet\" "
        f"role=\"img\" aria-label=\"attempts per agent over time\">",
        _axis(span_s, _AXIS_H - 8, height),
    ]
    for a, i in row.items():
        y = _AXIS_H + i * _ROW_H
        if i % 2:
            out.append(f"<rect class=\"band\" x=\"0\" y=\"{y}\" width=\"{width}\" height=\"{_ROW_H}\"/>")
        out.append(f"<text class=\"agent\" x=\"{_LABEL_W - 6}\" y=\"{y + _ROW_H - 6}\">{_e(a)}</text>")
    by_agent: dict[str, list[Span]] = {}
    for s in spans:
        by_agent.setdefault(s.agent, []).append(s)
    for agent, items in by_agent.items():
        y = _AXIS_H + row[agent] * _ROW_H + (_ROW_H - _BAR_H) / 2
        for group in _merge_thin(items, t0, scale):
            x0 = _LABEL_W + (group[0].start - t0) * scale
            x1 = _LABEL_W + (max(s.end for s in group) - t0) * scale
            status = min((s.status for s in group), key=_severity)
            out.append(
                f"<rect class=\"bar st-{_cls(status)}\" x=\"{x0:.2f}\" y=\"{y:.1f}\" "
                f"width=\"{max(x1 - x0, 0.6):.2f}\" height=\"{_BAR_H}\"><title>{_bar_title(group, t0)}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)


def _merge_thin(items: list[Span], t0: float, scale: float) -> list[list[Span]]:
    """Consecutive thin attempts that touch (gap under one unit) share one bar, at most _THIN units wide.

    Bounds the bars to about two per unit of width per agent, whatever the number of attempts; a
    group takes the colour of its worst attempt, so a failure among thousands stays visible.
    """
    groups: list[list[Span]] = []
    thin_open = False
    start_x = end_x = -math.inf
    for s in items:
        x0 = (s.start - t0) * scale
        x1 = (s.end - t0) * scale
        thin = x1 - x0 < _THIN
        if thin and thin_open and x0 - end_x < 1.0 and x1 - start_x <= _THIN:
            groups[-1].append(s)
            end_x = max(end_x, x1)
            continue
        groups.append([s])
        thin_open = thin
        start_x, end_x = x0, x1
    return groups


def _bar_title(group: list[Span], t0: float) -> str:
    if len(group) == 1:
        s = group[0]
        text = f"{s.task} · attempt {s.attempt} · {s.status} · {_fmt_s(s.end - s.start)}"
        if s.exit_code is not None:
            text += f" · exit code {s.exit_code}"
        text += f" · {s.agent} · at {_fmt_s(s.start - t0)}"
        if s.error:
            text += f"\n{s.error}"
        return _e(text)
    by_status: dict[str, int] = {}
    for s in group:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    mix = ", ".join(f"{n} {st}" for st, n in sorted(by_status.items(), key=lambda kv: _severity(kv[0])))
    first, last = group[0], group[-1]
    text = (
        f"{len(group)} attempts ({mix}) · {first.task} … {last.task} · "
        f"{_fmt_s(first.start - t0)} – {_fmt_s(max(s.end for s in group) - t0)}"
    )
    return _e(text)


def _axis(span_s: float, y_label: float, bottom: float) -> str:
    step = _nice_step(span_s / 8)
    out = []
    k = 0
    while k * step <= span_s * 1.0001:
        x = _LABEL_W + k * step * _PLOT_W / span_s
        out.append(f"<line class=\"tick\" x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{y_label + 3}\" y2=\"{bottom}\"/>")
        out.append(f"<text class=\"tl\" x=\"{x:.1f}\" y=\"{y_label}\">{_e(_fmt_s(k * step))}</text>")
        k += 1
    return "".join(out)


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _nice_step(raw: float) -> float:
    """A tick step of at least `raw` seconds that reads well: 0.2s, 5s, 30s, 2m, 15m, 1h."""
    if raw <= 0:
        return 1.0
    if raw >= 1:
        return float(next((s for s in _TIME_STEPS if s >= raw), math.ceil(raw / 86400) * 86400))
    exp = math.floor(math.log10(raw))
    return next(m * 10**exp for m in (1, 2, 5, 10) if m * 10**exp >= raw)


def _queue_chart(queue: list[tuple[float, int]], busy: list[tuple[float, int]], t0: float, span_s: float) -> str:
    if not queue and not busy:
        return "<p class=\"empty\">No queue samples (the run ended before its first refresh).</p>"
    plot_h = 120
    height = _AXIS_H + plot_h + 18
    width = _LABEL_W + _PLOT_W + 10
    top = max([n for _, n in queue] + [n for _, n in busy] + [1])
    scale_x = _PLOT_W / span_s
    base = _AXIS_H + plot_h

    def y(n: float) -> float:
        return base - n / top * plot_h

    out = [
        f"<svg class=\"queue\" viewBox=\"0 0 {width} {height}\" preserveAspectRatio=\"xMinYMin meet\" "
        f"role=\"img\" aria-label=\"queue length over time\">",
        _axis(span_s, _AXIS_H - 8, base),
        f"<line class=\"base\" x1=\"{_LABEL_W}\" x2=\"{_LABEL_W + _PLOT_W}\" y1=\"{base}\" y2=\"{base}\"/>",
        f"<text class=\"agent\" x=\"{_LABEL_W - 6}\" y=\"{y(top) + 4:.1f}\">{top}</text>",
        f"<text class=\"agent\" x=\"{_LABEL_W - 6}\" y=\"{base:.1f}\">0</text>",
    ]
    end = t0 + span_s
    if queue:
        pts = _step_points(_downsample(queue, t0, scale_x) + [(end, queue[-1][1])], t0, scale_x, y)
        area = f"{_LABEL_W + (queue[0][0] - t0) * scale_x:.1f},{base} {pts} {pts.rsplit(' ', 1)[-1].split(',')[0]},{base}"
        out.append(f"<polygon class=\"qarea\" points=\"{area}\"/>")
        out.append(f"<polyline class=\"qline\" points=\"{pts}\"><title>tasks waiting in the queue</title></polyline>")
    if busy:
        pts = _step_points(_downsample(busy, t0, scale_x) + [(end, busy[-1][1])], t0, scale_x, y)
        out.append(f"<polyline class=\"bline\" points=\"{pts}\"><title>agents busy</title></polyline>")
    out.append("</svg>")
    legend = (
        "<div class=\"legend\"><span><i class=\"lq\"></i>tasks waiting</span>"
        + ("<span><i class=\"lb\"></i>agents busy</span>" if busy else "")
        + "</div>"
    )
    return legend + "".join(out)


def _downsample(points: list[tuple[float, int]], t0: float, scale_x: float) -> list[tuple[float, int]]:
    """At most a few samples per unit of width: the first, the highest and the last of each column."""
    if len(points) <= 2 * _PLOT_W:
        return points
    out: list[tuple[float, int]] = []
    column: list[tuple[float, int]] = []
    current = None
    for p in points:
        c = int((p[0] - t0) * scale_x)
        if c != current and column:
            out.extend(_column_keep(column))
            column = []
        current = c
        column.append(p)
    out.extend(_column_keep(column))
    return out


def _column_keep(column: list[tuple[float, int]]) -> list[tuple[float, int]]:
    peak = max(column, key=lambda p: p[1])
    keep = sorted({column[0], peak, column[-1]}, key=lambda p: p[0])
    return keep


def _step_points(points: list[tuple[float, int]], t0: float, scale_x: float, y) -> str:
    out = []
    prev = None
    for ts, n in points:
        x = _LABEL_W + (ts - t0) * scale_x
        if prev is not None:
            out.append(f"{x:.1f},{y(prev):.1f}")
        out.append(f"{x:.1f},{y(n):.1f}")
        prev = n
    return " ".join(out)


def _telemetry(summary: dict, n_runs: int) -> str:
    t = summary.get("telemetry") or {}
    if not t:
        return "<p class=\"empty\">No telemetry in the summary.</p>"

    def pct(v):
        return "-" if v is None else f"{v * 100:.1f}%"

    rows = [
        ("makespan", _fmt_s(t.get("makespan_s")), "first attempt start to last attempt end"),
        ("attempts", str(t.get("attempts", "-")), ""),
        ("throughput", f"{t.get('throughput_per_s', 0):g} attempts/s", ""),
        ("utilisation", pct(t.get("utilization")), "busy agent time / (agents × makespan)"),
        ("queue wait p50", _fmt_s(t.get("queue_wait_p50_s")), "ready to reserved"),
        ("queue wait p95", _fmt_s(t.get("queue_wait_p95_s")), ""),
        ("queue wait max", _fmt_s(t.get("queue_wait_max_s")), ""),
        ("critical path", _fmt_s(t.get("critical_path_s")), "longest chain of dependent task durations"),
        ("lower bound", _fmt_s(t.get("lower_bound_s")), "max(critical path, total work / agents)"),
        ("efficiency", pct(t.get("efficiency")), "lower bound / makespan"),
    ]
    note = ""
    if n_runs > 1:
        note = f"<p class=\"meta\">Figures of run {_e(summary.get('run_id', '?'))}, the last of {n_runs} batches.</p>"
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td><td class=\"note\">{_e(n)}</td></tr>" for k, v, n in rows)
    out = [note, f"<div class=\"twocol\"><table class=\"figures\">{body}</table>"]
    by_priority = t.get("queue_wait_by_priority") or {}
    if by_priority:
        order = sorted(by_priority, key=lambda p: (_PRIORITY_ORDER.index(p) if p in _PRIORITY_ORDER else 9, p))
        rows_p = "".join(
            f"<tr><th>{_e(p)}</th><td>{_e(_fmt_s(by_priority[p].get('queue_wait_p50_s')))}</td>"
            f"<td>{_e(_fmt_s(by_priority[p].get('queue_wait_p95_s')))}</td>"
            f"<td>{_e(_fmt_s(by_priority[p].get('queue_wait_max_s')))}</td></tr>"
            for p in order
        )
        out.append(
            "<table class=\"figures\"><caption>queue wait by priority</caption>"
            f"<tr><th>priority</th><th>p50</th><th>p95</th><th>max</th></tr>{rows_p}</table>"
        )
    out.append("</div>")
    return "".join(out)


def _task_table(tasks: list[dict], spans: list[Span], base_dir: str | None) -> str:
    if not tasks:
        return "<p class=\"empty\">No tasks.</p>"
    waited: dict[str, float] = {}
    for s in spans:
        if s.wait_s:
            waited[s.task] = waited.get(s.task, 0.0) + float(s.wait_s)
    statuses = sorted({str(r.get("status")) for r in tasks}, key=_severity)
    options = "".join(f"<option>{_e(st)}</option>" for st in statuses)
    out = [
        "<div class=\"filter\"><input id=\"q\" type=\"search\" placeholder=\"filter tasks\" aria-label=\"filter tasks\">"
        f"<select id=\"st\" aria-label=\"status\"><option value=\"\">every status</option>{options}</select>"
        f"<span id=\"shown\">{len(tasks)} task(s)</span></div>",
        "<table id=\"tasks\" class=\"tasks\"><thead><tr><th>task</th><th>title</th><th>status</th><th>agent</th>"
        "<th>attempts</th><th>queue wait</th><th>duration</th><th>exit code</th><th>log</th></tr></thead><tbody>",
    ]
    for r in tasks:
        status = str(r.get("status"))
        reason = r.get("reason")
        status_cell = f"<span class=\"pill st-{_cls(status)}\">{_e(status)}</span>"
        if reason and reason != status:
            status_cell += f"<div class=\"reason\">{_e(reason)}</div>"
        exit_code = r.get("exit_code")
        out.append(
            f"<tr data-s=\"{_e(status)}\"><td><code>{_e(r.get('task'))}</code></td><td>{_e(r.get('title') or '')}</td>"
            f"<td>{status_cell}</td><td>{_e(r.get('agent') or '-')}</td><td>{_e(r.get('attempts', 0))}</td>"
            f"<td>{_e(_fmt_s(waited.get(str(r.get('task')))))}</td><td>{_e(_fmt_s(r.get('duration_s')))}</td>"
            f"<td>{'-' if exit_code is None else _e(exit_code)}</td><td>{_log_link(r.get('log'), base_dir)}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _log_link(log: str | None, base_dir: str | None) -> str:
    if not log:
        return "-"
    href = log
    if base_dir and os.path.isabs(log):
        try:
            href = os.path.relpath(log, base_dir)
        except ValueError:
            href = log
    return f"<a href=\"{_e(quote(href))}\"><code>{_e(log)}</code></a>"


# -- small helpers -------------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _cls(status: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "-" for c in str(status))


def _severity(status: str) -> int:
    return _SEVERITY.index(status) if status in _SEVERITY else len(_SEVERITY)


def _fmt_s(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        text = f"{seconds:.2f}".rstrip("0").rstrip(".")
        return f"{text or '0'}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


_STATUS_CSS = "".join(
    f".st-{st}{{background:{c};color:#fff}} rect.st-{st}{{fill:{c}}} " for st, c in _COLOUR.items()
)

_CSS = (
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px auto;"
    "max-width:1280px;padding:0 16px;color:#1d2330;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e6eb}"
    ".meta{color:#5b6372;margin:4px 0}code{font:12px ui-monospace,'DejaVu Sans Mono',monospace}"
    ".badge,.pill{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;vertical-align:middle}"
    ".cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}"
    ".card{border:1px solid #e3e6eb;border-radius:8px;padding:8px 14px;min-width:90px;background:#f7f8fa;color:#1d2330}"
    ".card b{display:block;font-size:20px}.card span{font-size:12px;opacity:.85}"
    ".warn{background:#fdecea;border:1px solid #d62839;padding:8px;border-radius:6px}"
    ".legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;margin:4px 0}"
    ".legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}"
    ".legend i.lq{background:#3a86ff}.legend i.lb{background:#fb8500}"
    "svg{width:100%;height:auto;display:block;background:#fff}"
    "svg text{font:11px system-ui,'DejaVu Sans',sans-serif;fill:#39404d}"
    "svg text.agent{text-anchor:end}svg text.tl{text-anchor:middle;fill:#7a8291}"
    "svg .tick{stroke:#eceef2}svg .band{fill:#f7f8fa}svg .base{stroke:#9aa1ad}"
    "svg rect.bar:hover{stroke:#1d2330;stroke-width:1}"
    "svg .qarea{fill:#3a86ff;fill-opacity:.18}svg .qline{fill:none;stroke:#3a86ff;stroke-width:1.5}"
    "svg .bline{fill:none;stroke:#fb8500;stroke-width:1.2;stroke-dasharray:4 2}"
    ".twocol{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}"
    "table{border-collapse:collapse}th,td{padding:3px 8px;text-align:left;vertical-align:top}"
    ".figures th{font-weight:600;color:#39404d}.figures .note{color:#7a8291;font-size:12px}"
    ".figures caption{text-align:left;font-weight:600;padding:3px 8px}"
    ".tasks{width:100%;font-size:13px}.tasks thead th{position:sticky;top:0;background:#eef0f4}"
    ".tasks tbody tr:nth-child(even){background:#f7f8fa}.tasks td{word-break:break-word}"
    ".tasks td:nth-child(4),.tasks td:nth-child(3){white-space:nowrap;word-break:normal}"
    ".reason{font-size:11px;color:#5b6372}.filter{display:flex;gap:10px;align-items:center;margin:6px 0}"
    ".filter input{padding:4px 8px;min-width:240px}.empty{color:#7a8291}" + _STATUS_CSS
)

_JS = (
    "(function(){var q=document.getElementById('q'),s=document.getElementById('st'),"
    "n=document.getElementById('shown'),t=document.getElementById('tasks');if(!t)return;"
    "var rows=t.tBodies[0].rows;function f(){var w=q.value.toLowerCase(),v=s.value,k=0;"
    "for(var i=0;i<rows.length;i++){var r=rows[i],ok=(!v||r.getAttribute('data-s')===v)&&"
    "(!w||r.textContent.toLowerCase().indexOf(w)>=0);r.style.display=ok?'':'none';if(ok)k++}"
    "n.textContent=k+' of '+rows.length+' task(s)'}q.addEventListener('input',f);s.addEventListener('change',f)})();"
)
