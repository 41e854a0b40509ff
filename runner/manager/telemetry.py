"""Events out of a run (JSON Lines) and the figures computed from its attempts."""

from __future__ import annotations

import json
import math
import os
import time


def _make_encoder():
    """One compact JSON encoder for every event; the C encoder itself when there is one (~20% faster)."""
    from json.encoder import c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:
        return json.JSONEncoder(separators=(",", ":"), default=str).encode
    encoder = c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda obj: "".join(encoder(obj, 0))


_encode = _make_encoder()
esc = _esc = json.encoder.encode_basestring_ascii  # a str as the encoder writes it (C)
_float = float.__repr__
_BIG = 1.7976931348623157e308  # past it (inf) or beside it (nan): the encoder's own spelling


def json_value(v) -> str:
    """One value as _encode writes it inside an event, byte for byte; the common types without the encoder."""
    t = type(v)
    if t is str:
        return _esc(v)
    if v is None:
        return "null"
    if t is float and -_BIG <= v <= _BIG:
        return _float(v)
    if t is int:
        return int.__repr__(v)
    return _encode(v)


class EventLog:
    """Appends events as JSON Lines to one or more files; flushed by the run loop once per turn.

    A file that cannot be opened or written (disk full, EIO, /dev/full) is dropped at once, and
    `error` says which and why: the run decides what that means. A file it creates is 0600.
    """

    def __init__(self, paths: list[str]):
        self.error: str | None = None  # the first failure: "PATH: reason"
        self._files: list[tuple[str, object]] = []  # (path, file) still written to
        for p in paths:
            try:
                fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                os.fchmod(fd, 0o600)  # whatever the umask
            except FileExistsError:
                fd = None
            except OSError as exc:
                self._failed(p, exc)
                continue
            try:
                f = open(p if fd is None else fd, "a", encoding="utf-8", buffering=1 << 16)
            except OSError as exc:
                self._failed(p, exc)
                continue
            self._files.append((p, f))

    def _failed(self, path: str, exc: OSError) -> None:
        if self.error is None:
            self.error = f"{path}: {exc.strerror or exc}"

    def _each(self, action) -> None:
        for entry in list(self._files):
            path, f = entry
            try:
                action(f)
            except OSError as exc:
                self._failed(path, exc)
                self._files.remove(entry)
                _close_quietly(f)

    def write(self, events: list) -> None:
        """Each event a dict, or the JSON lines of one or more events already written as text (str)."""
        if not events:
            return
        text = "".join([e if type(e) is str else _encode(e) + "\n" for e in events])
        self._each(lambda f: f.write(text))

    def flush(self) -> None:
        self._each(lambda f: f.flush())

    def close(self) -> None:
        self._each(lambda f: f.close())
        self._files.clear()


def _close_quietly(f) -> None:
    """Close a file whose buffer cannot be written: drop the buffer rather than raise again."""
    try:
        f.close()
    except OSError:
        try:
            os.close(f.fileno())
        except (OSError, ValueError):
            pass


def event(name: str, **fields) -> dict:
    return {"ts": time.time(), "event": name, **fields}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def critical_path_s(durations: dict[str, float], deps: dict[str, list[str]]) -> float:
    """The longest chain of task durations through the dependencies: no schedule can beat it."""
    if not deps or not any(deps.get(t) for t in durations):  # no chain: the longest task
        return max(durations.values(), default=0.0)
    finish: dict[str, float] = {}
    order = _topo(durations, deps)
    for t in order:
        finish[t] = durations[t] + max((finish.get(d, 0.0) for d in deps.get(t, ()) if d in durations), default=0.0)
    return max(finish.values(), default=0.0)


def _topo(nodes: dict, deps: dict[str, list[str]]) -> list[str]:
    indegree = {n: 0 for n in nodes}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for n in nodes:
        for d in deps.get(n, ()):
            if d in nodes:
                indegree[n] += 1
                children[d].append(n)
    ready = [n for n, k in indegree.items() if k == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return order


def summarize(attempts: list[dict], agents: int, deps: dict[str, list[str]], priorities: dict[str, str]) -> dict:
    """Queue waits, utilisation, throughput, makespan and the critical-path bound of a run.

    `attempts`: dicts with task, queued, reserved, start, end, and released when the agent let go of it
    before its end (wall-clock seconds; None when unknown). deps and priorities: by task id; a task
    missing from them has none, and medium priority. One pass over the attempts.
    """
    waits: list[float] = []
    by_priority: dict[str, list[float]] = {}
    busy_each: list[float] = []
    last_duration: dict[str, float] = {}
    first = last = None
    for a in attempts:
        reserved, queued = a.get("reserved"), a.get("queued")
        if reserved and queued:
            wait = reserved - queued
            waits.append(wait)
            if priorities:  # else every task is medium: its bucket is `waits`, made below
                p = priorities.get(a["task"], "medium")
                bucket = by_priority.get(p)
                if bucket is None:
                    bucket = by_priority[p] = []
                bucket.append(wait)
        start, end = a.get("start"), a.get("end")
        if start is not None and end is not None:
            if first is None or start < first:
                first = start
            if last is None or end > last:
                last = end
            # An agent is busy until it let go of the attempt ("released"): a worktree task's "end" is when it
            # landed, and the agent worked on other tasks while it waited in the landing queue.
            released = a.get("released")
            busy_each.append((end if not released or released >= end else released) - start)  # min(end, released or end)
            last_duration[a["task"]] = end - start
    if not priorities and waits:
        by_priority["medium"] = list(waits)
    makespan = (last - first) if busy_each else 0.0
    busy = sum(busy_each)
    out: dict = {}
    out["makespan_s"] = round(makespan, 4)
    out["attempts"] = len(attempts)
    out["throughput_per_s"] = round(len(busy_each) / makespan, 3) if makespan > 0 else 0.0
    out["utilization"] = round(busy / (agents * makespan), 4) if makespan > 0 and agents else 0.0
    ordered = sorted(waits)
    out["queue_wait_p50_s"] = round(_percentile_of_sorted(ordered, 50), 4)
    out["queue_wait_p95_s"] = round(_percentile_of_sorted(ordered, 95), 4)
    out["queue_wait_max_s"] = round(ordered[-1] if ordered else 0.0, 4)
    out["queue_wait_by_priority"] = {}
    for p, v in sorted(by_priority.items()):
        v.sort()
        out["queue_wait_by_priority"][p] = {
            "queue_wait_p50_s": round(_percentile_of_sorted(v, 50), 4),
            "queue_wait_p95_s": round(_percentile_of_sorted(v, 95), 4),
            "queue_wait_max_s": round(v[-1], 4),
        }
    critical = critical_path_s(last_duration, deps)
    bound = max(critical, busy / agents if agents else 0.0)
    out["critical_path_s"] = round(critical, 4)
    out["lower_bound_s"] = round(bound, 4)
    out["efficiency"] = round(bound / makespan, 4) if makespan > 0 else 1.0
    return out


def _percentile_of_sorted(ordered: list[float], q: float) -> float:
    """percentile() of values already sorted."""
    if not ordered:
        return 0.0
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]
