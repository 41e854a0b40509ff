"""The one table of outcomes as people see them: each status's class (the count it falls in) and colour.

The terminal summary, `--json`, the HTML report (badges, bars, legend, cards) and the board all read
it, so a `conflict` is one failure, drawn in one colour, wherever it appears. A status is an attempt's
Outcome (runner.model), a task's final status (`needs_improvement`, `skipped`), or `unfinished` (an
attempt whose events stop before its end). The order is severity, most alarming first: a bar that
stands for several attempts takes the colour of the worst.
"""

from __future__ import annotations

from runner.model import record


# The counts a run reports, in the order it reports them (runner.manager's summary has the same keys).
CLASSES = ("succeeded", "failed", "skipped", "interrupted")


@record(frozen=True)
class Look:
    """How one outcome is shown: the count it falls in and its colour."""

    cls: str  # one of CLASSES: the count a task that ended so falls in
    colour: str  # fill of its badge, bar and legend swatch (white text on it)


OUTCOMES: dict[str, Look] = {
    "failed": Look("failed", "#d62839"),
    "auth_failed": Look("failed", "#6a040f"),
    "setup_failed": Look("failed", "#9d0208"),
    "check_failed": Look("failed", "#e85d04"),
    "conflict": Look("failed", "#b5179e"),
    "needs_improvement": Look("failed", "#c9184a"),
    "rejected": Look("failed", "#ff6b6b"),
    "no_changes": Look("failed", "#a06cd5"),
    "timed_out": Look("failed", "#f08a24"),
    "agent_died": Look("failed", "#8e44ad"),
    "usage_limited": Look("failed", "#bc6c25"),
    "rate_limited": Look("failed", "#e9c46a"),
    "interrupted": Look("interrupted", "#8d99ae"),
    "unfinished": Look("interrupted", "#c9ccd1"),
    # a task the run ended before it ended (a budget, a usage limit): counted as interrupted
    "running": Look("interrupted", "#7d8597"),
    "reserved": Look("interrupted", "#979dac"),
    "queued": Look("interrupted", "#adb5bd"),
    "waiting": Look("interrupted", "#ced4da"),
    "skipped": Look("skipped", "#b0b7c3"),
    "needs_review": Look("succeeded", "#52b788"),  # checks passed, a critic is next
    "succeeded": Look("succeeded", "#2a9d58"),
}

# A status this table does not know (a newer wvo-batch's, say): counted as a failure, drawn in slate
# grey, never left unstyled.
UNKNOWN = Look("failed", "#5c677d")


def look(status) -> Look:
    return OUTCOMES.get(str(status), UNKNOWN)


def class_of(status) -> str:
    """The count a task with this final status falls in: succeeded, failed, skipped or interrupted."""
    return look(status).cls


def colour(status) -> str:
    return look(status).colour


def severity(status) -> float:
    """0 for the most alarming status; an unknown status ranks right after the known failures."""
    order = _ORDER.get(str(status))
    return order if order is not None else _UNKNOWN_RANK


def css_name(status) -> str:
    """A status as a CSS class name (`st-<this>`)."""
    return "".join(c if c.isalnum() or c == "_" else "-" for c in str(status))


def counts(rows: list[dict]) -> dict[str, int]:
    """{"total", "succeeded", "failed", "skipped", "interrupted"} of task rows, by each row's class."""
    out = {"total": len(rows), **{c: 0 for c in CLASSES}}
    for row in rows:
        out[class_of(row.get("status"))] += 1
    return out


def breakdown(rows: list[dict], cls: str | None = None) -> dict[str, int]:
    """Status -> how many rows ended so (only those of class `cls`, when given), most alarming first."""
    out: dict[str, int] = {}
    for row in rows:
        status = str(row.get("status"))
        if cls is None or class_of(status) == cls:
            out[status] = out.get(status, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: severity(kv[0])))


def with_classes(doc: dict) -> dict:
    """The --json document with each task row's `class` (the count it is in) and `outcomes`: status -> tasks."""
    tasks = doc.get("tasks")
    for row in [r for b in doc.get("batches", []) for r in b.get("tasks", [])] + (tasks or []):
        row["class"] = class_of(row.get("status"))
    if tasks is not None:
        doc["outcomes"] = breakdown(tasks)
    return doc


def css() -> str:
    """The report's status styles: badges (`.st-X`), Gantt bars (`rect.st-X`), with a fallback for unknowns."""
    rules = [f".pill,.badge{{background:{UNKNOWN.colour};color:#fff}} rect.bar{{fill:{UNKNOWN.colour}}} "]
    rules += [f".st-{css_name(st)}{{background:{lk.colour};color:#fff}} rect.st-{css_name(st)}{{fill:{lk.colour}}} "
              for st, lk in OUTCOMES.items()]
    return "".join(rules)


_ORDER = {status: i for i, status in enumerate(OUTCOMES)}
_UNKNOWN_RANK = sum(1 for lk in OUTCOMES.values() if lk.cls == "failed") - 0.5
