"""A run's record as data: one span per attempt, the agents in board order, the queue and busy series.

    events ──attempts()──▶ one span per attempt (task:started … task:finished), on its agent's row
      ├── details(): what an attempt's other events add (model, tokens and cost, the critic's verdict)
      └── queue_series(), busy_series(): (time, count) from queue:updated / status:updated

Built from events alone, so the trace (runner.cli.trace) and the report (runner.cli.report) can be
rebuilt after the run from its folder. Events of several batches may be concatenated: each
run:started opens a new run, so attempt numbers that start again at 1 are not confused.
"""

from __future__ import annotations

import json

from runner.manager.events import (
    AGENT_SPAWNED,
    QUEUE_UPDATED,
    RUN_STARTED,
    STATUS_UPDATED,
    TASK_FINISHED,
    TASK_RESERVED,
    TASK_REVIEWED,
    TASK_STARTED,
    TASK_USAGE,
)
from runner.model import record

_ROLE_ORDER = {"orchestrator": 0, "worker": 1, "critic": 2}


@record
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
        if name == RUN_STARTED:
            run += 1
            continue
        if name not in (TASK_RESERVED, TASK_STARTED, TASK_FINISHED):
            continue
        key = (run, str(ev.get("task")), int(ev.get("attempt") or 0))
        info = open_.setdefault(key, {})
        if name == TASK_RESERVED:
            info["reserved"] = ev["ts"]
            info["agent"] = ev.get("agent")
            info["wait_s"] = ev.get("wait_s")
        elif name == TASK_STARTED:
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


def details(events: list[dict]) -> dict[tuple[int, str, int], dict]:
    """(run, task, attempt) -> what the events add to a span: model, tokens and cost, the critic's verdict."""
    run = 0
    out: dict[tuple[int, str, int], dict] = {}
    for ev in events:
        name = ev.get("event")
        if name == RUN_STARTED:
            run += 1
            continue
        if name not in (TASK_FINISHED, TASK_USAGE, TASK_REVIEWED):
            continue
        info = out.setdefault((run, str(ev.get("task")), int(ev.get("attempt") or 0)), {})
        if name == TASK_FINISHED and ev.get("model"):
            info["model"] = ev["model"]
        elif name == TASK_USAGE:
            usage = ev.get("usage") or {}
            info.update(input=usage.get("input"), output=usage.get("output"), cost_usd=ev.get("cost_usd"),
                        cost_estimated=bool(ev.get("cost_estimated")))
        elif name == TASK_REVIEWED:
            info.update(verdict=ev.get("verdict"), reason=ev.get("reason"))
    return out


def agent_order(events: list[dict], spans: list[Span]) -> list[str]:
    """Agents as the board lists them: orchestrators, workers, critics, others; by number within a role."""
    roles: dict[str, str] = {}
    for ev in events:
        if ev.get("event") == AGENT_SPAWNED and ev.get("agent"):
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
    points = [(e["ts"], int(e.get("length") or 0)) for e in events if e.get("event") == QUEUE_UPDATED]
    if not points:
        points = [(e["ts"], int(e.get("queue") or 0)) for e in events if e.get("event") == STATUS_UPDATED]
    return points


def busy_series(events: list[dict]) -> list[tuple[float, int]]:
    return [(e["ts"], int(e.get("busy") or 0)) for e in events if e.get("event") == STATUS_UPDATED]
