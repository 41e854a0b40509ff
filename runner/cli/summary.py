"""The end of a run on the terminal: the table of tasks, the totals, what was kept."""

from __future__ import annotations

from runner.cli import outcomes
from runner.cli.terminal import fmt_duration, one_line as _clean


def write_summary(out, result, quiet: bool) -> None:
    """The table of tasks (those that did not succeed, for a large run), the totals and the run folder."""
    rows = result.tasks
    shown = [r for r in rows if r["status"] != "succeeded" or len(rows) <= 40]
    shown = [r for r in shown if not (r["status"] == "skipped" and (r.get("reason") or "").startswith("status: done"))]
    if shown:
        headers = ("task", "agent", "status", "duration", "log (in the run folder below)")
        table = [
            (
                _clean(str(r["task"])),
                _clean(str(r.get("agent") or "-")),
                r["status"] + (f" ({_clean(r['reason'])})" if r.get("reason") and r["reason"] != r["status"] else "")
                + (f" [denied: {', '.join(r['permission_denials'])}]" if r.get("permission_denials") else ""),
                fmt_duration(r.get("duration_s")),
                _clean(_relative(r.get("log"), result.folder)),
            )
            for r in shown
        ]
        if any(r.get("workspace") for r in shown):  # worktree tasks: where their work went
            headers += ("work (branch, landed commit or why not)",)
            table = [row + (work_cell(r.get("workspace")),) for row, r in zip(table, shown)]
        widths = [min(60, max(len(h), *(len(str(row[i])) for row in table))) for i, h in enumerate(headers)]
        out.write(("" if quiet else "\n") + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip() + "\n")
        for row in table:
            out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
        if len(shown) < len(rows):
            out.write(f"({len(rows) - len(shown)} more task(s) not shown: done before this run, or succeeded)\n")
    s = result.summary
    t = s["telemetry"]
    out.write(
        f"\n{s['succeeded']} succeeded, {s['failed']} failed{failed_breakdown(rows) if s['failed'] else ''}, {s['skipped']} skipped"
        + (f", {s['interrupted']} interrupted" if s["interrupted"] else "")
        + f" of {s['total']} · makespan {fmt_duration(s['makespan_s'])}"
        + f" · utilisation {t['utilization'] * 100:.0f}% · queue wait p95 {fmt_duration(t['queue_wait_p95_s'])}\n"
    )
    if s.get("usage"):  # agent CLIs: "tokens 12.3k in / 2.1k out · $0.42" (runner.manager.accounts)
        from runner.manager.accounts import usage_line

        budget = f" of ${s['budget_usd']:.2f} budget" if s.get("budget_usd") is not None else ""
        out.write(usage_line(s["usage"]) + budget + "\n")
    ws = s.get("workspaces")
    if ws and (ws.get("kept") or ws.get("worktrees_kept")):
        kept = ", ".join(f"{k['branch']} ({k['state']})" for k in ws["kept"][:10])
        more = f" and {len(ws['kept']) - 10} more" if len(ws["kept"]) > 10 else ""
        out.write(_clean(f"branches kept: {kept}{more}") + "\n" if ws.get("kept") else "")
        if ws.get("worktrees_kept"):
            out.write(f"worktrees kept (--keep-worktrees): {len(ws['worktrees_kept'])}\n")
    out.write(f"run {s['run_id']}: {_clean(str(s['folder']))}\n")
    out.flush()


def failed_breakdown(rows: list[dict]) -> str:
    """' (1 conflict, 2 check_failed)': how the failed tasks ended, when not all plainly `failed`."""
    ways = outcomes.breakdown(rows, "failed")
    if not ways or list(ways) == ["failed"]:
        return ""
    return " (" + ", ".join(f"{n} {_clean(st)}" for st, n in ways.items()) + ")"


def work_cell(ws: dict | None) -> str:
    """A worktree task's result in a cell: `+3 -1 in 2 files, landed 1a2b3c4` or the branch it was kept on."""
    if not ws:
        return "-"
    change = f"+{ws.get('added', 0)} -{ws.get('deleted', 0)} in {ws.get('files', 0)} file(s)"
    if ws.get("landed"):
        return f"{change}, landed {str(ws['landed'])[:10]}"
    why = ws.get("why") or ws.get("state") or "not landed"
    return _clean(f"{change}, kept on {ws.get('branch')} ({why})")


def _relative(log: str | None, folder: str) -> str:
    """A log path as the table shows it: relative to the run folder printed below the table."""
    if not log:
        return "-"
    prefix = folder.rstrip("/") + "/"
    return log[len(prefix):] if log.startswith(prefix) else log
