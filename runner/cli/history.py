"""`--history`: the runs of a roadmap, and with a run's number every attempt of that run.

    ledger.sqlite ──Ledger.runs()──────▶ one line per run (run_lines)
                  ──Ledger.attempts()──▶ one row per attempt (attempt_rows) ──▶ attempt_lines / --json
    the run's folder: events.jsonl (the critic's verdicts) and each attempt's log (its checks), when still there

The ledger has each attempt's agent, model, outcome, tokens and cost. It has no verdict: a critic's
verdict is read from the run's events (`task:reviewed`), and when those are gone it is inferred from
the outcomes (the attempt after a `needs_review` is the critic's; `rejected` is a rejection, a landing
outcome an approval). Checks are read from the markers wvo-batch writes into the attempt's log. An
attempt whose model the ledger lacks gets the one its `task:finished` event names.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import time

from runner.cli.outcomes import class_of
from runner.cli.terminal import fmt_duration, one_line
from runner.manager.events import TASK_FINISHED, TASK_REVIEWED

# Outcomes a critic's attempt ends with once it approved: the task went on to land.
_LANDING = frozenset({"succeeded", "conflict", "check_failed"})
_CHECK_MARK = "===== wvo-batch "  # "===== wvo-batch check 1/2: make test =====", then "===== exit 0 (...) ====="
_LOG_TAIL = 1 << 20  # bytes of an attempt's log read for its checks


def run_status(run) -> str:
    """A run's status as the ledger has it; "running/crashed" for one never closed (the ledger cannot tell which)."""
    return run.status if run.status != "running" or run.ended else "running/crashed"


def run_lines(runs) -> list[str]:
    """The run list: one line per run (newest first), worktree tasks' work under it."""
    from runner.cli.summary import work_cell
    from runner.manager.accounts import usage_line

    lines = [f"{'run':>4}  {'started':<19}  {'status':<11}  {'total':>5} {'ok':>5} {'fail':>5} {'skip':>5}  makespan"]
    for r in runs:
        s = r.summary or {}
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        status = run_status(r)
        makespan = f"{s['makespan_s']:.1f}s" if "makespan_s" in s else "-"
        lines.append(
            f"{r.id:>4}  {started:<19}  {status:<11}  {s.get('total', '-'):>5} {s.get('succeeded', '-'):>5}"
            f" {s.get('failed', '-'):>5} {s.get('skipped', '-'):>5}  {makespan}"
            + (f"  (resumed run {r.resumed_from})" if r.resumed_from else "")
            + (f"  {usage_line(s['usage'])}" if s.get("usage") else "")
        )
        for task_id, info in sorted((s.get("work") or {}).items()):
            lines.append(f"        {task_id}: {info.get('branch', '-')}: {work_cell(info)}")
    return lines


def run_folder(ledger, run_id: int) -> str | None:
    """The run's folder as the ledger recorded it (a query Ledger does not have); None if unknown."""
    try:
        row = ledger.db.execute("SELECT folder FROM runs WHERE id = ?", (run_id,)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row and row[0] else None


def attempt_rows(attempts, folder: str | None) -> list[dict]:
    """One dict per attempt, in the order they ended: who, which model, outcome, checks, verdict, spend."""
    verdicts, models = _from_events(folder)
    rows: list[dict] = []
    reviewing: dict[str, bool] = {}  # task id -> its next attempt is the critic's (inferred from outcomes)
    for a in attempts:
        review = reviewing.get(a.task_id, False)
        verdict, reason = verdicts.get((a.task_id, a.attempt), (None, None))
        if verdict is None and review:
            if a.outcome == "rejected":
                verdict, reason = "reject", (a.error or "").removeprefix("rejected by the critic: ") or None
            elif a.outcome in _LANDING:
                verdict = "approve"
        if a.outcome == "needs_review":
            reviewing[a.task_id] = True
        elif review and verdict is None and a.outcome not in ("interrupted",):
            reviewing[a.task_id] = True  # a review without a verdict is retried as a review
        else:
            reviewing[a.task_id] = False
        usage = a.usage or {}
        rows.append({
            "task": a.task_id,
            "attempt": a.attempt,
            "agent": a.agent,
            "model": a.model or models.get((a.task_id, a.attempt)),
            "outcome": a.outcome,
            "class": class_of(a.outcome),
            "review": review or verdict is not None,
            "verdict": verdict,
            "reason": reason,
            "checks": checks_in_log(a.log_path),
            "tokens_in": usage.get("input"),
            "tokens_out": usage.get("output"),
            "cost_usd": a.cost_usd,
            "cost_estimated": a.cost_estimated,
            "duration_s": round(a.end - a.start, 3) if a.start is not None and a.end is not None else None,
            "exit_code": a.exit_code,
            "error": a.error,
            "log": a.log_path,
        })  # fmt: skip
    return rows


def attempt_lines(run, rows: list[dict]) -> list[str]:
    """The table of every attempt of one run, then its totals."""
    from runner.manager.accounts import usage_line

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started))
    head = f"run {run.id} · started {started} · {run_status(run)} · {len(rows)} attempt(s)"
    if not rows:
        return [head, "no attempt recorded"]
    headers = ("task", "#", "agent", "model", "outcome", "checks", "verdict", "tokens in/out", "cost", "duration")
    table = [
        (
            one_line(str(r["task"])), str(r["attempt"]), one_line(str(r["agent"] or "-")), one_line(str(r["model"] or "-")),
            r["outcome"], r["checks"] or "-", _verdict_cell(r), _tokens(r), _cost(r), fmt_duration(r["duration_s"]),
        )
        for r in rows
    ]
    widths = [min(40, max(len(h), *(len(row[i]) for row in table))) for i, h in enumerate(headers)]
    lines = [head, "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    for r in rows:
        if r["verdict"] == "reject" and r["reason"]:
            lines.append(one_line(f"  {r['task']} #{r['attempt']} rejected: {r['reason']}")[:200])
    spent = {"input": sum(r["tokens_in"] or 0 for r in rows), "output": sum(r["tokens_out"] or 0 for r in rows)}
    costs = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
    if costs:
        spent["cost_usd"] = sum(costs)
        spent["cost_estimated"] = any(r["cost_estimated"] for r in rows)
    total = usage_line(spent)
    if total:
        lines.append(total)
    return lines


def _verdict_cell(r: dict) -> str:
    if r["verdict"]:
        return r["verdict"]
    return "none" if r["review"] else "-"


def _tokens(r: dict) -> str:
    return tokens_cell(r["tokens_in"], r["tokens_out"])


def tokens_cell(tokens_in: int | None, tokens_out: int | None) -> str:
    """'1.6k / 299'; '-' when neither is known."""
    if tokens_in is None and tokens_out is None:
        return "-"
    return f"{_k(tokens_in or 0)} / {_k(tokens_out or 0)}"


def _cost(r: dict) -> str:
    if r["cost_usd"] is None:
        return "-"
    return f"{'~' if r['cost_estimated'] else ''}${r['cost_usd']:.3f}"


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def _from_events(folder: str | None) -> tuple[dict, dict]:
    """From the run's events: (task, attempt) -> (verdict, reason) of task:reviewed, and -> the model its
    task:finished names (for attempts whose CLI output the ledger did not get). ({}, {}) when they are gone."""
    verdicts: dict[tuple[str, int], tuple[str, str | None]] = {}
    models: dict[tuple[str, int], str] = {}
    if not folder:
        return verdicts, models
    try:
        with open(_regular(os.path.join(folder, "events.jsonl")), encoding="utf-8") as f:
            for line in f:
                if '"task:reviewed"' not in line and '"model"' not in line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                key = (str(ev.get("task")), int(ev.get("attempt") or 0))
                if ev.get("event") == TASK_REVIEWED:
                    verdicts[key] = (str(ev.get("verdict")), ev.get("reason"))
                elif ev.get("event") == TASK_FINISHED and ev.get("model"):
                    models[key] = str(ev["model"])
    except OSError:
        pass
    return verdicts, models


def _regular(path: str) -> int:
    """A read descriptor on a regular file of the run folder, never through a symlink nor blocking on a FIFO
    (a task can put either at its log's place); raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def checks_in_log(log: str | None) -> str | None:
    """'✓' when every check in the attempt's log passed, '✗' when one failed, None when none ran (or no log).

    wvo-batch appends the checks after the agent's output: the last MiB is read, and a result whose
    header a long check output pushed out of it still counts.
    """
    if not log:
        return None
    try:
        with open(_regular(log), "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _LOG_TAIL))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    seen = failed = in_check = False
    for line in lines if size <= _LOG_TAIL else lines[1:]:
        if not line.startswith("====="):
            continue
        if line.startswith(_CHECK_MARK + "check ") or line.startswith(_CHECK_MARK + "landing check"):
            seen = in_check = True
        elif line.startswith("===== exit ") and (in_check or not seen):
            seen = True
            failed = failed or not line.startswith("===== exit 0 ")
            in_check = False
    if not seen:
        return None
    return "✗" if failed else "✓"
