"""A run's record for people: one self-contained HTML report (and, through runner.cli.trace, the trace).

    events ──timeline.attempts()──▶ spans ──charts──▶ SVG Gantt, queue line
      ├── timeline.details() + spans ───────────────▶ the attempts table (model, checks, verdict, cost)
      summary, task rows ─────────────────────────────▶ cards, telemetry and task tables ──▶ one page

Built from events alone (plus the summary, the task rows and, for the checks, the attempts' logs), so
it can be rebuilt after the run from its folder. Every status is drawn and counted as the one table
of runner.cli.outcomes says. The report loads nothing: no scripts, styles, fonts or images from
anywhere (a CSP says so too), and every string that came from a roadmap is HTML-escaped.
"""

from __future__ import annotations

import os
import time
from urllib.parse import quote

from runner.cli import outcomes
from runner.cli.charts import cls, esc, fmt_s, gantt, queue_chart
from runner.cli.outcomes import severity
from runner.cli.timeline import Span, agent_order, attempts, busy_series, details, queue_series
from runner.cli.trace import trace_events, write_trace  # noqa: F401 - the report's module also writes the trace
from runner.manager.events import RUN_FINISHED, RUN_STARTED
from runner.roadmap.writeback import atomic_write

_PRIORITY_ORDER = ("critical", "high", "medium", "low")


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
    runs = [e.get("run") for e in events if e.get("event") == RUN_STARTED]
    run_label = ", ".join(str(r) for r in runs) or str(summary.get("run_id", "?"))
    ended = any(e.get("event") == RUN_FINISHED for e in events)
    status = str(summary.get("status") or ("?" if ended else "unfinished"))
    counts = _counts(tasks, summary)
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>wvo-batch run {esc(run_label)}: {esc(status)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>wvo-batch {'runs' if len(runs) > 1 else 'run'} {esc(run_label)} "
        f"<span class=\"badge st-{cls(status)}\">{esc(status)}</span></h1>",
        _header(summary, counts, t0, len(spans), tasks),
    ]
    if summary.get("ledger_error"):
        parts.append(f"<p class=\"warn\">The ledger could not be written: {esc(summary['ledger_error'])}</p>")
    parts.append("<h2>Timeline</h2>")
    parts.append(_legend(spans))
    parts.append(gantt(spans, agents, t0, span_s))
    parts.append("<h2>Queue</h2>")
    parts.append(queue_chart(queue_series(events), busy_series(events), t0, span_s))
    parts.append("<h2>Telemetry</h2>")
    parts.append(_telemetry(summary, len(runs)))
    parts.append("<h2>Tasks</h2>")
    parts.append(_task_table(tasks, spans, base_dir))
    parts.append("<h2>Attempts</h2>")
    parts.append(_attempt_table(spans, details(events), base_dir))
    parts.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)


def _counts(tasks: list[dict], summary: dict) -> dict[str, int]:
    if tasks:
        return outcomes.counts(tasks)
    return {k: int(summary.get(k) or 0) for k in ("total", *outcomes.CLASSES)}


def _header(summary: dict, counts: dict[str, int], t0: float, n_attempts: int, tasks: list[dict]) -> str:
    from runner.cli.summary import failed_breakdown

    cards = [
        ("tasks", str(counts["total"]), ""),
        ("succeeded", str(counts["succeeded"]), "st-succeeded"),
        ("failed" + failed_breakdown(tasks), str(counts["failed"]), "st-failed" if counts["failed"] else ""),
        ("skipped", str(counts["skipped"]), ""),
        ("interrupted", str(counts["interrupted"]), "st-interrupted" if counts["interrupted"] else ""),
        ("attempts", str(n_attempts), ""),
        ("makespan", fmt_s(summary.get("makespan_s", (summary.get("telemetry") or {}).get("makespan_s"))), ""),
    ]
    agents = summary.get("agents") or {}
    pool = ", ".join(f"{n} {r}" for r, n in agents.items() if n) if isinstance(agents, dict) else str(agents)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)) if t0 else "-"
    meta = f"started {esc(started)}"
    if pool:
        meta += f" · agents: {esc(pool)}"
    if summary.get("folder"):
        meta += f" · folder <code>{esc(summary['folder'])}</code>"
    body = "".join(f"<div class=\"card {c}\"><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v, c in cards)
    return f"<p class=\"meta\">{meta}</p><div class=\"cards\">{body}</div>"


def _legend(spans: list[Span]) -> str:
    """A swatch per status drawn in the Gantt, in the colour its bars have (runner.cli.outcomes)."""
    seen = sorted({s.status for s in spans} or {"succeeded"}, key=lambda st: (severity(st), st))
    items = [f"<span><i style=\"background:{outcomes.colour(st)}\"></i>{esc(st)}</span>" for st in seen]
    return f"<div class=\"legend\">{''.join(items)}</div>"


def _telemetry(summary: dict, n_runs: int) -> str:
    t = summary.get("telemetry") or {}
    if not t:
        return "<p class=\"empty\">No telemetry in the summary.</p>"

    def pct(v):
        return "-" if v is None else f"{v * 100:.1f}%"

    rows = [
        ("makespan", fmt_s(t.get("makespan_s")), "first attempt start to last attempt end"),
        ("attempts", str(t.get("attempts", "-")), ""),
        ("throughput", f"{t.get('throughput_per_s', 0):g} attempts/s", ""),
        ("utilisation", pct(t.get("utilization")), "busy agent time / (agents × makespan)"),
        ("queue wait p50", fmt_s(t.get("queue_wait_p50_s")), "ready to reserved"),
        ("queue wait p95", fmt_s(t.get("queue_wait_p95_s")), ""),
        ("queue wait max", fmt_s(t.get("queue_wait_max_s")), ""),
        ("critical path", fmt_s(t.get("critical_path_s")), "longest chain of dependent task durations"),
        ("lower bound", fmt_s(t.get("lower_bound_s")), "max(critical path, total work / agents)"),
        ("efficiency", pct(t.get("efficiency")), "lower bound / makespan"),
    ]
    note = ""
    if n_runs > 1:
        note = f"<p class=\"meta\">Figures of run {esc(summary.get('run_id', '?'))}, the last of {n_runs} batches.</p>"
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td><td class=\"note\">{esc(n)}</td></tr>" for k, v, n in rows)
    out = [note, f"<div class=\"twocol\"><table class=\"figures\">{body}</table>"]
    by_priority = t.get("queue_wait_by_priority") or {}
    if by_priority:
        order = sorted(by_priority, key=lambda p: (_PRIORITY_ORDER.index(p) if p in _PRIORITY_ORDER else 9, p))
        rows_p = "".join(
            f"<tr><th>{esc(p)}</th><td>{esc(fmt_s(by_priority[p].get('queue_wait_p50_s')))}</td>"
            f"<td>{esc(fmt_s(by_priority[p].get('queue_wait_p95_s')))}</td>"
            f"<td>{esc(fmt_s(by_priority[p].get('queue_wait_max_s')))}</td></tr>"
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
    statuses = sorted({str(r.get("status")) for r in tasks}, key=severity)
    options = "".join(f"<option>{esc(st)}</option>" for st in statuses)
    out = [
        "<div class=\"filter\"><input id=\"q\" type=\"search\" placeholder=\"filter tasks\" aria-label=\"filter tasks\">"
        f"<select id=\"st\" aria-label=\"status\"><option value=\"\">every status</option>{options}</select>"
        f"<span id=\"shown\">{len(tasks)} task(s)</span></div>",
        "<table id=\"tasks\" class=\"tasks\"><thead><tr><th>task</th><th>title</th><th>status</th><th>agent</th>"
        "<th>attempts</th><th>queue wait</th><th>duration</th><th>exit code</th><th>tokens · cost</th><th>log</th>"
        "</tr></thead><tbody>",
    ]
    for r in tasks:
        status = str(r.get("status"))
        reason = r.get("reason")
        status_cell = f"<span class=\"pill st-{cls(status)}\">{esc(status)}</span>"
        if reason and reason != status:
            status_cell += f"<div class=\"reason\">{esc(reason)}</div>"
        if r.get("workspace"):  # a worktree task: its branch, what it changed, where it landed
            from runner.cli.summary import work_cell

            status_cell += f"<div class=\"reason\">{esc(work_cell(r['workspace']))}</div>"
        verdicts = [v.get("verdict") for v in (r.get("review") or {}).get("verdicts") or []]
        if verdicts:  # the critic's word on each round
            status_cell += f"<div class=\"reason\">review: {esc(', '.join(map(str, verdicts)))}</div>"
        exit_code = r.get("exit_code")
        out.append(
            f"<tr data-s=\"{esc(status)}\"><td><code>{esc(r.get('task'))}</code></td><td>{esc(r.get('title') or '')}</td>"
            f"<td>{status_cell}</td><td>{esc(r.get('agent') or '-')}</td><td>{esc(r.get('attempts', 0))}</td>"
            f"<td>{esc(fmt_s(waited.get(str(r.get('task')))))}</td><td>{esc(fmt_s(r.get('duration_s')))}</td>"
            f"<td>{'-' if exit_code is None else esc(exit_code)}</td><td>{esc(_spend(r.get('usage')))}</td>"
            f"<td>{_log_link(r.get('log'), base_dir)}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _spend(usage: dict | None) -> str:
    """A task's tokens and cost over its attempts: '1.6k / 299 · $0.009'; '-' when its CLI reported none."""
    if not usage:
        return "-"
    from runner.cli.history import tokens_cell

    text = tokens_cell(usage.get("input"), usage.get("output"))
    if usage.get("cost_usd") is not None:
        text += f" · {'~' if usage.get('cost_estimated') else ''}${usage['cost_usd']:.3f}"
    return text


# Up to this many attempts the table lists them all and reads each one's log for its checks; above it,
# the attempts that did not succeed and those of tasks that took more than one (a big run's successes
# at the first try are in the task table already).
_ALL_ATTEMPTS = 500


def _attempt_table(spans: list[Span], info: dict, base_dir: str | None) -> str:
    """Every attempt: its agent, model, outcome, checks, the critic's verdict, tokens, cost and log."""
    from runner.cli.history import checks_in_log, tokens_cell

    if not spans:
        return "<p class=\"empty\">No attempt ran.</p>"
    shown = spans
    if len(spans) > _ALL_ATTEMPTS:
        retried = {(s.run, s.task) for s in spans if s.attempt > 1}
        shown = [s for s in spans if s.status != "succeeded" or (s.run, s.task) in retried]
    out = []
    if len(shown) < len(spans):
        out.append(f"<p class=\"meta\">{len(shown)} of {len(spans)} attempts: those that did not succeed and those of "
                   "tasks that took more than one.</p>")
    out.append("<table class=\"tasks attempts\"><thead><tr><th>task</th><th>#</th><th>agent</th><th>model</th>"
               "<th>outcome</th><th>checks</th><th>verdict</th><th>tokens in / out</th><th>cost</th><th>duration</th>"
               "<th>log</th></tr></thead><tbody>")
    for s in sorted(shown, key=lambda s: (s.run, s.end)):
        d = info.get((s.run, s.task, s.attempt), {})
        checks = "✗" if s.status == "check_failed" else checks_in_log(s.log) if len(spans) <= _ALL_ATTEMPTS else None
        verdict = esc(d.get("verdict") or "-")
        if d.get("reason"):
            verdict += f"<div class=\"reason\">{esc(d['reason'])}</div>"
        tokens = tokens_cell(d.get("input"), d.get("output"))
        cost = "-" if d.get("cost_usd") is None else f"{'~' if d.get('cost_estimated') else ''}${d['cost_usd']:.4f}"
        out.append(
            f"<tr><td><code>{esc(s.task)}</code></td><td>{s.attempt}</td><td>{esc(s.agent)}</td>"
            f"<td>{esc(d.get('model') or '-')}</td><td><span class=\"pill st-{cls(s.status)}\">{esc(s.status)}</span></td>"
            f"<td>{esc(checks or '-')}</td><td>{verdict}</td><td>{esc(tokens)}</td><td>{esc(cost)}</td>"
            f"<td>{esc(fmt_s(s.end - s.start))}</td><td>{_log_link(s.log, base_dir)}</td></tr>"
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
    return f"<a href=\"{esc(quote(href))}\"><code>{esc(log)}</code></a>"


_STATUS_CSS = outcomes.css()

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
    ".pill,.badge{white-space:nowrap}.attempts td{white-space:nowrap;word-break:normal}"
    ".attempts td:nth-child(7),.attempts td:nth-child(11){white-space:normal;word-break:break-word}"
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
