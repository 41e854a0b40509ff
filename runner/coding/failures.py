r"""Why an agent-CLI attempt failed, from its structured result (or, for `output: text`, its log tail).

| class           | handling                                           | messages and signals that map to it |
|-----------------|----------------------------------------------------|-------------------------------------|
| `rate_limited`  | transient: back off, requeue, not counted          | HTTP 429, 529; "too many requests", "rate limit", `rate_limit_error`, "overloaded", "high load", "high demand", "at capacity", "temporarily unavailable"; codex "exceeded retry limit, last status: 429"; `retry-after: N` sets the wait (a wait over 15 min makes it `usage_limited`) |
| `usage_limited` | the account pauses until `reset_at`               | "You've hit your usage limit … try again at 9:40 AM" (codex), "You've hit your session limit · resets 3pm (Europe/London)", "… weekly limit …", "5-hour limit reached ∙ resets 3am", "Claude AI usage limit reached\|1760000000", "You're out of usage credits · resets …", "out of credits", "Quota exceeded", `insufficient_quota`, "Credit balance is too low"; claude `api_error: usage_limit_reached`; claude `rate_limit_event` with `status: rejected` (its `resetsAt`) |
| `auth_failed`   | the run stops: one message naming the executor     | "Not logged in · Please run /login", "Invalid API key", `authentication_error`, "401 Unauthorized", HTTP 401 / 403, "token has expired", "refresh token", "Missing environment variable: `OPENAI_API_KEY`", codex "To use Codex with your ChatGPT plan, upgrade to Plus" |
| `setup_failed`  | the run stops                                      | exit code 127 (program not found) or 126 (not executable) before any structured event; "Not inside a trusted directory" / `--skip-git-repo-check`, "untrusted directory", the CLI rejecting its own options ("unknown option", "unexpected argument", "requires --verbose"), "Access blocked by Cloudflare" |
| `failed`        | counted against the task's `retries`               | everything else, and always: "ran out of room in the model's context window", "context_length_exceeded", "prompt is too long" (with `drop_session`: resuming it would fail again), "No conversation found with session ID" (`drop_session`), claude subtypes `error_max_turns`, `error_max_budget_usd`, `error_during_execution` |

Where a parser exists (`codex-json`, `claude-json`) only the CLI's own words are read: its failure
message (`turn.failed`, a result with `is_error`), its last `error` line and its non-JSON lines, and the
whole log only when the CLI printed no structured event at all. The agent's messages are never read: an
agent that writes "HTTP 429" in its summary of a context-window failure does not make it a rate limit.
With `output: text` the log tail is all there is; bare status numbers (401, 403, 429) and generic
phrases ("command not found") are then not trusted, only the CLI-specific phrases and the executor's own
`rate_limit` regex.

Reset times are read from the same text (parse_reset): "resets 3pm (Europe/London)", "try again at
9:40 AM", "try again at Aug 8th, 2026 12:30 PM", "resets Oct 9, 10am", "in 2 hours", "in 3 days 6 hours
57 minutes", ISO timestamps, epoch seconds (or milliseconds), `retry-after: 30`. A clock time with no
date is the next one to come: "resets 3pm" read at 4pm is 3pm tomorrow.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from enum import Enum

from runner.coding.output import CliResult, OutputFormat, epoch_seconds
from runner.model import record


class FailureClass(str, Enum):
    RATE_LIMITED = "rate_limited"
    USAGE_LIMITED = "usage_limited"
    AUTH_FAILED = "auth_failed"
    SETUP_FAILED = "setup_failed"
    FAILED = "failed"

    @property
    def counts(self) -> bool:
        """Whether the attempt counts against the task's retries."""
        return self is FailureClass.FAILED

    @property
    def stops_run(self) -> bool:
        """Whether no further attempt of any task on this executor can succeed until the user acts."""
        return self in (FailureClass.AUTH_FAILED, FailureClass.SETUP_FAILED)


@record(frozen=True)
class Failure:
    cls: FailureClass
    reason: str  # one line: the CLI's message, or what was seen ("exit code 1")
    reset_at: float | None = None  # epoch seconds when the limit lifts, when the output said
    drop_session: bool = False  # a retry must start a fresh session: resuming this one cannot work


# A wait longer than this is a usage limit, whatever the message called it.
USAGE_LIMIT_AFTER = 15 * 60.0
# "resets 3pm" read a little after 3pm means the limit is lifting now, not tomorrow (clocks differ).
_PAST_GRACE = 5 * 60.0

_I = re.IGNORECASE


@record(frozen=True)
class _Rule:
    cls: FailureClass
    pattern: re.Pattern
    generic: bool = False  # too common in ordinary output to trust in a whole log (output: text)
    drop_session: bool = False


def _rule(cls: FailureClass, pattern: str, generic: bool = False, drop_session: bool = False) -> _Rule:
    return _Rule(cls, re.compile(pattern, _I), generic, drop_session)


F, U, A, S, R = (FailureClass.FAILED, FailureClass.USAGE_LIMITED, FailureClass.AUTH_FAILED,
                 FailureClass.SETUP_FAILED, FailureClass.RATE_LIMITED)

# In order: the first rule that matches decides. Plain failures that mention limits come first.
RULES: tuple[_Rule, ...] = (
    _rule(F, r"context window|context[_ ]length[_ ]exceeded|prompt is too long|maximum context length",
          drop_session=True),
    _rule(F, r"no conversation found with session id|no conversation with id|session .{0,40}not found",
          drop_session=True),
    _rule(U, r"usage limit|hit your \w+ limit|\b(?:5|five)-hour limit|(?:session|weekly|daily|monthly) limit"
             r" reached|out of (?:usage |extra usage )?credits|quota exceeded|insufficient_quota"
             r"|exceeded your current quota|credit balance is too low"),
    _rule(A, r"not logged in|please run /login|\bcodex login\b|invalid[ _](?:api[ _-]?key|x-api-key|bearer)"
             r"|incorrect api key|authentication_error|authentication failed|unauthori[sz]ed"
             r"|token (?:has )?expired|refresh token|missing environment variable: `?\w*api_key"
             r"|upgrade to plus"),
    _rule(A, r"\b40[13]\b|forbidden|permission_error", generic=True),
    _rule(S, r"trusted directory|skip-git-repo-check|untrusted (?:directory|workspace|folder)"
             r"|blocked by cloudflare|requires --verbose"),
    _rule(S, r"command not found|unknown option|unexpected argument|unrecognized (?:option|argument)",
          generic=True),
    _rule(R, r"too many requests|rate[ _-]?limit|overloaded|high (?:load|demand)|at capacity"
             r"|capacity constraints|temporarily unavailable"),
    _rule(R, r"\b(?:429|529)\b", generic=True),
)

_TRANSIENT_STATUS = {429: "HTTP 429", 529: "HTTP 529 (overloaded)"}
_AUTH_STATUS = {401: "HTTP 401", 403: "HTTP 403"}
_SUBTYPES = {
    "error_max_turns": "reached the maximum number of turns",
    "error_max_budget_usd": "reached its budget cap",
    "error_during_execution": "error during execution",
}


def classify(
    result: CliResult | None,
    exit_code: int | None,
    log_tail: bytes | str = b"",
    custom_regex: str | None = None,
    now: float = 0.0,
    tz: tzinfo | None = None,
) -> Failure | None:
    """The class of a failed attempt; None when it did not fail (exit 0 and no failure reported).

    result is the parser's result (None or format `text`: only log_tail is read); custom_regex is the
    executor's `rate_limit` pattern, searched case-insensitively after the built-in rules; now (epoch
    seconds) and tz (default: the local zone) date the reset times.
    """
    structured = result is not None and result.format != OutputFormat.TEXT.value
    reported = structured and result.failed
    if exit_code == 0 and not reported:
        return None
    tail = log_tail.decode("utf-8", "replace") if isinstance(log_tail, bytes) else log_tail
    if exit_code in (126, 127) and not (structured and result.events_seen):
        what = "program not found" if exit_code == 127 else "program not executable"
        return Failure(FailureClass.SETUP_FAILED, f"{what} (exit code {exit_code})")

    if structured:
        texts = [t for t in (result.error_message, result.last_error, *reversed(result.notes)) if t]
        if not result.events_seen and tail:
            texts.append(tail)  # the CLI stopped before any event: everything printed is its own
        found = _match(texts, trust_generic=True)
    else:
        texts = [tail] if tail else []
        found = _match(texts, trust_generic=False)
    main = (texts[0] if texts else "").strip()

    if structured and "usage_limit" in (result.api_error or "") and (not found or found.cls is R):
        found = _Found(U, main or result.api_error)
    if not found and structured and result.api_status in _AUTH_STATUS:
        found = _Found(A, _AUTH_STATUS[result.api_status] + (f": {main}" if main else ""))
    if not found and structured and result.api_status in _TRANSIENT_STATUS:
        found = _Found(R, _TRANSIENT_STATUS[result.api_status] + (f": {main}" if main else ""))
    if not found and custom_regex:
        found = _custom(custom_regex, texts)
    if structured and result.reset_at and (not found or found.cls in (R, U)):
        return Failure(U, _one_line(main or "usage limit reached"), result.reset_at)
    if not found:
        reason = main if structured else ""
        if structured and result.subtype in _SUBTYPES and result.subtype != "error_during_execution":
            reason = _SUBTYPES[result.subtype] + (f": {main}" if main and main != result.subtype else "")
        return Failure(F, _one_line(reason or _exit_reason(exit_code)))

    reset_at = parse_reset(found.text, now, tz) if found.cls in (R, U) else None
    cls = found.cls
    if cls is R and reset_at is not None and reset_at - now > USAGE_LIMIT_AFTER:
        cls = U
    return Failure(cls, _one_line(found.text), reset_at, found.drop_session)


@record(frozen=True)
class _Found:
    cls: FailureClass
    text: str  # the text that matched (the part of it that did, in a long log tail)
    drop_session: bool = False


def _custom(regex: str, texts: list[str]) -> _Found | None:
    try:
        pattern = re.compile(regex, _I)
    except re.error:  # the executor's parse() validated it; a bad one here only means no match
        return None
    for text in texts:
        m = pattern.search(text)
        if m:
            return _Found(R, _around(text, m) if len(text) > 400 else text)
    return None


def _match(texts: list[str], trust_generic: bool) -> _Found | None:
    """The first rule (in RULES order) that any text matches, with the text it matched in."""
    for rule in RULES:
        if rule.generic and not trust_generic:
            continue
        for text in texts:
            m = rule.pattern.search(text)
            if m:
                return _Found(rule.cls, _around(text, m) if len(text) > 400 else text, rule.drop_session)
    return None


def _around(text: str, m: re.Match) -> str:
    """The line of a long text (a log tail) that holds the match, and the next one (reset times)."""
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    end = len(text) if end < 0 else text.find("\n", end + 1)
    return text[start : len(text) if end < 0 else end]


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _exit_reason(exit_code: int | None) -> str:
    if exit_code is None:
        return "ended without an exit code"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"


# ---- reset times --------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_EPOCH = re.compile(r"(?:resets?_?at|resetsAt|reset|limit reached)[\"']?\s*[:=|]\s*[\"']?(\d{10,13})\b", _I)
_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)")
_UNIT = r"(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_RELATIVE = re.compile(
    rf"\b(?:again|reset(?:s|ting)?|retry|available|wait|lifts?)\s+in\s+"
    rf"((?:\d+(?:\.\d+)?\s*{_UNIT}\b[\s,]*(?:and\s+)?)+)",
    _I,
)
_PART = re.compile(rf"(\d+(?:\.\d+)?)\s*({_UNIT})\b", _I)
_RETRY_AFTER = re.compile(r"retry[-_ ]?after[\"']?\s*[:=]?\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?)?", _I)
_ANCHOR = re.compile(r"\b(?:resets?|try again|available again)\b(?:\s+(?:at|on))?\s*", _I)
_TZ = r"\s*(?:\((?P<tzp>[^)]{1,40})\)|(?P<tzw>UTC|GMT)\b)?"
_CLOCK = r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]\.?m\b\.?)?"
_DATED = re.compile(
    rf"(?P<mon>[a-z]{{3}})[a-z]*\.?\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s*(?P<year>\d{{4}})\b)?"
    rf"(?:[,\s]+(?:at\s+)?{_CLOCK})?{_TZ}",
    _I,
)
_TIMED = re.compile(rf"{_CLOCK}{_TZ}", _I)


def parse_reset(text: str, now: float, tz: tzinfo | None = None) -> float | None:
    """When a limit lifts, in epoch seconds, as the text says; None when it says no time.

    now is the epoch time the text was read at; tz is the zone for times that name none (default: the
    local zone at now). A named zone ("(Europe/London)", "UTC") wins over tz.
    """
    if not text:
        return None
    zone = tz or datetime.fromtimestamp(now).astimezone().tzinfo
    m = _EPOCH.search(text)
    if m:
        return epoch_seconds(int(m.group(1)))
    m = _ISO.search(text)
    if m:
        try:
            when = datetime.fromisoformat(m.group(1).replace("Z", "+00:00").replace(" ", "T"))
        except ValueError:
            when = None
        if when is not None:
            return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()
    m = _RELATIVE.search(text)
    if m:
        return now + sum(float(n) * _unit_seconds(u) for n, u in _PART.findall(m.group(1)))
    m = _RETRY_AFTER.search(text)
    if m:
        return now + float(m.group(1)) / (1000.0 if m.group(2) else 1.0)
    for anchor in _ANCHOR.finditer(text):
        when = _clock_after(text[anchor.end() : anchor.end() + 80], now, zone)
        if when is not None:
            return when
    return None


def _unit_seconds(unit: str) -> float:
    u = unit.lower()
    if u.startswith("d"):
        return 86400.0
    if u.startswith("h"):
        return 3600.0
    if u.startswith("m"):
        return 60.0
    return 1.0


def _clock_after(rest: str, now: float, default_zone: tzinfo) -> float | None:
    m = _DATED.match(rest)
    if m and m.group("mon").lower() in _MONTHS:
        month, day = _MONTHS[m.group("mon").lower()], int(m.group("day"))
        hm = _hour_minute(m, need_marker=False) if m.group("h") else (0, 0)
    else:
        m = _TIMED.match(rest)
        if not m:
            return None
        month = day = None
        hm = _hour_minute(m, need_marker=True)
    if hm is None:
        return None
    zone = _zone(m.group("tzp") or m.group("tzw"), default_zone)
    today = datetime.fromtimestamp(now, zone).date()
    at = time(*hm)
    if month is None:
        when = _local(today, at, zone)
        if when < now - _PAST_GRACE:
            when = _local(today + timedelta(days=1), at, zone)
        return when
    year = int(m.group("year")) if m.group("year") else today.year
    try:
        when = _local(date(year, month, day), at, zone)
        if not m.group("year") and when < now - _PAST_GRACE:
            when = _local(date(year + 1, month, day), at, zone)
    except ValueError:  # Feb 30 and the like
        return None
    return when


def _hour_minute(m: re.Match, need_marker: bool) -> tuple[int, int] | None:
    """(hour, minute) from a clock match; a bare number ("resets 3") is not a time."""
    hour, minute, ampm = int(m.group("h")), int(m.group("m") or 0), m.group("ampm")
    if need_marker and not ampm and m.group("m") is None:
        return None
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm.lower().startswith("p") else 0)
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def _zone(name: str | None, default: tzinfo) -> tzinfo:
    if not name:
        return default
    name = name.strip()
    if name.upper() in ("UTC", "GMT", "Z"):
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo  # lazily: only a message that names a zone needs the database

        return ZoneInfo(name)
    except Exception:  # unknown or malformed name (ValueError, ZoneInfoNotFoundError, ...)
        return default


def _local(day: date, at: time, zone: tzinfo) -> float:
    return datetime.combine(day, at, tzinfo=zone).timestamp()
