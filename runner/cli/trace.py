"""The Chrome trace of a run (opens in Perfetto and chrome://tracing), from its events alone.

    events ──timeline.attempts()──▶ a track per agent, a complete span per attempt
           ──queue_series(), busy_series()──▶ counters; µs from the first event
"""

from __future__ import annotations

import json

from runner.cli.timeline import agent_order, attempts, busy_series, queue_series
from runner.manager.events import AGENT_EXITED, RUN_STARTED
from runner.roadmap.writeback import atomic_write


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
    runs = [e.get("run") for e in events if e.get("event") == RUN_STARTED]
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
        if ev.get("event") == AGENT_EXITED and ev.get("agent") in tid:
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
