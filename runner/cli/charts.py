"""The report's two SVG charts (the Gantt of attempts per agent and the queue line) and its HTML helpers.

Pure functions of spans and series (runner.cli.timeline) to SVG text; every string that came from a
roadmap goes through esc().
"""

from __future__ import annotations

import html
import math

from runner.cli.outcomes import css_name as cls, severity  # noqa: F401 - cls: the page's name for it
from runner.cli.terminal import visible
from runner.cli.timeline import Span

# Gantt geometry (SVG user units; the SVG scales to the page width).
_LABEL_W = 150
_PLOT_W = 1000
_ROW_H = 20
_BAR_H = 14
_AXIS_H = 22
_THIN = 2.0  # bars narrower than this many units are merged with touching neighbours


def gantt(spans: list[Span], agents: list[str], t0: float, span_s: float) -> str:
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
        out.append(f"<text class=\"agent\" x=\"{_LABEL_W - 6}\" y=\"{y + _ROW_H - 6}\">{esc(a)}</text>")
    by_agent: dict[str, list[Span]] = {}
    for s in spans:
        by_agent.setdefault(s.agent, []).append(s)
    for agent, items in by_agent.items():
        y = _AXIS_H + row[agent] * _ROW_H + (_ROW_H - _BAR_H) / 2
        for group in _merge_thin(items, t0, scale):
            x0 = _LABEL_W + (group[0].start - t0) * scale
            x1 = _LABEL_W + (max(s.end for s in group) - t0) * scale
            status = min((s.status for s in group), key=severity)
            out.append(
                f"<rect class=\"bar st-{cls(status)}\" x=\"{x0:.2f}\" y=\"{y:.1f}\" "
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
        text = f"{s.task} · attempt {s.attempt} · {s.status} · {fmt_s(s.end - s.start)}"
        if s.exit_code is not None:
            text += f" · exit code {s.exit_code}"
        text += f" · {s.agent} · at {fmt_s(s.start - t0)}"
        if s.error:
            text += f"\n{s.error}"
        return esc(text)
    by_status: dict[str, int] = {}
    for s in group:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    mix = ", ".join(f"{n} {st}" for st, n in sorted(by_status.items(), key=lambda kv: severity(kv[0])))
    first, last = group[0], group[-1]
    text = (
        f"{len(group)} attempts ({mix}) · {first.task} … {last.task} · "
        f"{fmt_s(first.start - t0)} – {fmt_s(max(s.end for s in group) - t0)}"
    )
    return esc(text)


def _axis(span_s: float, y_label: float, bottom: float) -> str:
    step = _nice_step(span_s / 8)
    out = []
    k = 0
    while k * step <= span_s * 1.0001:
        x = _LABEL_W + k * step * _PLOT_W / span_s
        out.append(f"<line class=\"tick\" x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{y_label + 3}\" y2=\"{bottom}\"/>")
        out.append(f"<text class=\"tl\" x=\"{x:.1f}\" y=\"{y_label}\">{esc(fmt_s(k * step))}</text>")
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


def queue_chart(queue: list[tuple[float, int]], busy: list[tuple[float, int]], t0: float, span_s: float) -> str:
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


# -- small helpers, shared with the page -----------------------------------------------------------------


def esc(value) -> str:
    """HTML-escaped text, quotes included: for element text and attribute values. Control characters and
    bidi overrides are spelt out as on the terminal (runner.cli.terminal): the page is read with `cat` too."""
    return html.escape(visible(str(value)), quote=True)


def fmt_s(seconds) -> str:
    """Seconds as the report spells them: 0.25s, 14s, 3m05s, 2h10m; '-' for None."""
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

