"""Read an agent CLI's output as it arrives: session id, tokens, cost, and the CLI's own error message.

    bytes of stdout/stderr ──feed(chunk, now)──▶ OutputParser ──result()──▶ CliResult
                               │ whole lines only; a partial line waits for the rest
                               └─ last_event_at: when the last structured event arrived (stall watchdog)

| `output:`    | what the CLI prints                                  | what is read                        |
|--------------|------------------------------------------------------|-------------------------------------|
| `codex-json` | `codex exec --json`: one JSON event a line (JSONL)   | `thread.started.thread_id` → session; `turn.completed.usage` → tokens (thread totals, cumulative over `resume`); `turn.failed.error.message` → the failure; `error` lines → `last_error` only (they can be transient: "Reconnecting... 1/5"); last `item.completed` `agent_message` → final text |
| `claude-json`| `claude -p --output-format json` (one JSON object) or `stream-json` (JSONL) | `type: result`: `session_id`, `is_error`, `api_error_status`, `api_error`, `subtype`, `total_cost_usd` (a session total, cumulative over `--resume`), `usage` (this run's), `num_turns`, `permission_denials`, `result` (the error message when `is_error`, else the final text); `rate_limit_event` with `status: rejected` → `reset_at` from `resetsAt`; `system`/`assistant` events → session id, model, tokens when no result came |
| `text`       | anything                                             | nothing structured; classify() reads the log tail |

Tokens are normalised to one shape, `Usage(input, cached, output, reasoning)`: `input` counts every input
token, `cached` is the part of it read from a cache; `output` counts every output token, `reasoning` the
part of it spent on reasoning. (Claude reports cache reads and writes beside `input_tokens`, not in it:
they are added in. Codex and OpenAI count cached and reasoning tokens inside input and output already.)

A cost or a token count that is negative or not a finite number is refused: the cost is unknown (None,
never taken off the spend), the count is 0, and `refused` says why (the attempt's log gets a warning).

Anything that is not a JSON object with a string `type` is noise: node warnings, stderr log lines, a line
cut off by a kill. The last few non-JSON lines are kept as `notes` (the CLI's own diagnostics: an agent's
text reaches the output only inside JSON events); a line that starts with `{` and does not parse is
dropped, since it may be a cut-off event carrying the agent's words.
"""

from __future__ import annotations

import json
import math
from dataclasses import field, replace

from runner.model import record
from enum import Enum


class OutputFormat(str, Enum):
    CODEX_JSON = "codex-json"
    CLAUDE_JSON = "claude-json"
    TEXT = "text"


STRUCTURED = (OutputFormat.CODEX_JSON.value, OutputFormat.CLAUDE_JSON.value)  # formats with a final text

_MAX_LINE = 16 * 1024 * 1024  # a longer partial line is dropped (garbage or a runaway tool output)
_MAX_NOTES = 20  # non-JSON lines kept, the last ones
_MAX_NOTE_CHARS = 500
_MAX_ERRORS = 5  # codex `error` lines kept, the last ones


@record(frozen=True)
class Usage:
    """Tokens of one attempt (or a thread's totals); cached ⊆ input, reasoning ⊆ output."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.cached + other.cached,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )

    @property
    def total(self) -> int:
        return self.input + self.output

    def __bool__(self) -> bool:
        return bool(self.input or self.cached or self.output or self.reasoning)

    def since(self, previous: Usage | None) -> Usage:
        """These totals less an earlier reading of the same counters; as is when they are not later ones.

        A count lower than before means the counters started again (a new thread, not a resumed one), so
        nothing of the earlier reading is in these totals.
        """
        if previous is None:
            return self
        pairs = ((self.input, previous.input), (self.cached, previous.cached), (self.output, previous.output),
                 (self.reasoning, previous.reasoning))
        if any(now < before for now, before in pairs):
            return self
        return Usage(*(now - before for now, before in pairs))

    def as_dict(self) -> dict:
        return {"input": self.input, "cached": self.cached, "output": self.output, "reasoning": self.reasoning}


@record(frozen=True)
class CliResult:
    """What one attempt's output said, as far as it went."""

    format: str = OutputFormat.TEXT.value
    session_id: str | None = None  # codex thread id / claude session id: what a retry resumes
    usage: Usage = field(default_factory=Usage)
    usage_cumulative: bool = False  # usage is the thread's running total (codex): see attempt_usage()
    cost_usd: float | None = None  # as the CLI reported it, or estimated (pricing.with_cost)
    cost_cumulative: bool = False  # cost_usd is the session's running total (claude --resume): attempt_cost()
    cost_estimated: bool = False
    num_turns: int | None = None
    model: str | None = None  # when the output names it (claude's init event)
    completed: bool = False  # a final event came: turn.completed / turn.failed / result
    failed: bool = False  # the CLI itself said the attempt failed: turn.failed, or a result with is_error
    error_message: str | None = None  # the CLI's message for that failure; never the agent's own text
    api_status: int | None = None  # claude's api_error_status (429, 401, 529, ...)
    api_error: str | None = None  # claude's api_error / api_error_type (usage_limit_reached, rate_limit_error)
    subtype: str | None = None  # claude's result subtype (success, error_max_turns, ...)
    last_error: str | None = None  # the last codex `error` line (may have been transient)
    final_text: str | None = None  # the agent's last message
    answers: tuple[str, ...] = ()  # every text that stands as a final answer: more than one when events that
    # end a run came twice (written to the log after the answer, say); a critic's verdict reads them all
    permission_denials: tuple[str, ...] = ()  # tool names the CLI refused to run
    reset_at: float | None = None  # epoch seconds: a rejected rate_limit_event's resetsAt
    events_seen: int = 0  # structured events parsed
    notes: tuple[str, ...] = ()  # the last non-JSON lines (stderr, warnings)
    refused: tuple[str, ...] = ()  # counts refused as no count: a negative or non-finite cost or token count

    def as_dict(self) -> dict:
        return {
            "format": self.format,
            "session_id": self.session_id,
            "usage": self.usage.as_dict(),
            "cost_usd": self.cost_usd,
            "cost_estimated": self.cost_estimated,
            "num_turns": self.num_turns,
            "error": self.error_message,
            "permission_denials": list(self.permission_denials),
        }


def attempt_usage(result: CliResult, previous_totals: Usage | None) -> Usage:
    """The tokens this attempt spent: for a resumed codex thread, its totals less the previous attempt's.

    previous_totals is the usage of the last attempt on the same session that reported any (keep the
    latest non-empty one per session: a failed turn reports none). An attempt that reported nothing spent
    nothing we know of: Usage().
    """
    if not result.usage:
        return Usage()
    if result.usage_cumulative:
        return result.usage.since(previous_totals)
    return result.usage


def attempt_cost(result: CliResult, previous_total: float | None) -> float | None:
    """The USD this attempt spent: for a resumed claude session, its total less the previous attempt's.

    Claude's `total_cost_usd` (like its `modelUsage`) on `--resume` counts the whole session, while its
    `usage` counts only this run. previous_total is the cost the last attempt on the same session reported.
    A cost that is negative or not a finite number is unknown (None): it is never taken off the spend.
    """
    if not is_cost(result.cost_usd):
        return None
    if not is_cost(previous_total):
        previous_total = None
    if result.cost_cumulative and previous_total is not None and result.cost_usd >= previous_total:
        return result.cost_usd - previous_total
    return result.cost_usd


class OutputParser:
    """Base of the parsers: splits what arrives into lines, hands JSON objects to on_event()."""

    format = OutputFormat.TEXT

    def __init__(self) -> None:
        self._partial = b""  # bytes after the last newline, waiting for the rest of their line
        self._dropping = False  # inside an over-long line: skip to its end
        self._notes: list[str] = []
        self._refused: list[str] = []  # why a reported count was not taken (see CliResult.refused)
        self.events_seen = 0
        self.last_event_at: float | None = None  # `now` of the feed() that brought the last event

    def feed(self, data: bytes | str, now: float | None = None) -> int:
        """Take the next chunk of output (any size, cut anywhere); returns how many events it completed."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        before = self.events_seen
        for line in lines:
            if self._dropping:
                self._dropping = False
                continue
            self._line(line)
        if len(self._partial) > _MAX_LINE:
            self._partial, self._dropping = b"", True
        if self.events_seen > before and now is not None:
            self.last_event_at = now
        return self.events_seen - before

    def finish(self, now: float | None = None) -> CliResult:
        """The output ended: read a last line without its newline, and return the result."""
        if self._partial and not self._dropping:
            before = self.events_seen
            self._line(self._partial)
            if self.events_seen > before and now is not None:
                self.last_event_at = now
        self._partial, self._dropping = b"", False
        return self.result()

    def result(self) -> CliResult:
        """What the output has said so far (callable at any time)."""
        return CliResult(format=self.format.value, events_seen=self.events_seen, notes=tuple(self._notes),
                         refused=tuple(dict.fromkeys(self._refused))[-_MAX_ERRORS:])

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except ValueError:
                return  # a cut-off or garbled event: it may hold the agent's text, so it is not a note
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                self.events_seen += 1
                self.on_event(event)
            return
        self._notes.append(text[:_MAX_NOTE_CHARS])
        del self._notes[:-_MAX_NOTES]

    def on_event(self, event: dict) -> None:
        """One structured event (a dict with a string `type`)."""


class TextParser(OutputParser):
    """No structure: only notes are kept (the classifier reads the log tail instead)."""

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if text:
            self._notes.append(text[:_MAX_NOTE_CHARS])
            del self._notes[:-_MAX_NOTES]


class CodexParser(OutputParser):
    """`codex exec --json` events."""

    format = OutputFormat.CODEX_JSON

    def __init__(self) -> None:
        super().__init__()
        self._thread_id: str | None = None
        self._usage = Usage()
        self._turns = 0
        self._completed = False
        self._failed = False
        self._error: str | None = None
        self._errors: list[str] = []
        self._final: str | None = None
        self._answer: str | None = None  # the last agent message before the turn ended
        self._late: list[str] = []  # agent messages after the turn ended (`codex exec` runs one turn)

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "thread.started":
            self._thread_id = _str(event.get("thread_id")) or self._thread_id
        elif kind == "turn.completed":
            self._turns += 1
            self._ended()
            self._completed = True
            usage = event.get("usage")
            if isinstance(usage, dict):
                # Thread totals, not the turn's: the last report holds everything before it.
                self._usage = Usage(
                    input=_count(usage, "input_tokens", self._refused),
                    cached=_count(usage, "cached_input_tokens", self._refused),
                    output=_count(usage, "output_tokens", self._refused),
                    reasoning=_count(usage, "reasoning_output_tokens", self._refused),
                )
        elif kind == "turn.failed":
            self._turns += 1
            self._ended()
            self._completed = self._failed = True
            error = event.get("error")
            message = _str(error.get("message")) if isinstance(error, dict) else _str(error)
            self._error = message or (self._errors[-1] if self._errors else "turn failed")
        elif kind == "error":
            message = _str(event.get("message"))
            if message:
                self._errors.append(message[:2000])
                del self._errors[:-_MAX_ERRORS]
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message":
                self._final = _str(item.get("text")) or self._final
                if self._completed and _str(item.get("text")):
                    self._late.append(item["text"])

    def _ended(self) -> None:
        if not self._completed:
            self._answer = self._final

    def result(self) -> CliResult:
        return replace(
            super().result(),
            session_id=self._thread_id,
            usage=self._usage,
            usage_cumulative=True,
            num_turns=self._turns or None,
            completed=self._completed,
            failed=self._failed,
            error_message=self._error,
            last_error=self._errors[-1] if self._errors else None,
            final_text=self._final,
            answers=tuple(a for a in (self._answer if self._completed else self._final, *self._late) if a),
        )


class ClaudeParser(OutputParser):
    """`claude -p --output-format json` (one object, possibly over several lines) or `stream-json`."""

    format = OutputFormat.CLAUDE_JSON

    def __init__(self) -> None:
        super().__init__()
        self._session: str | None = None
        self._model: str | None = None
        self._result: dict | None = None
        self._reset_at: float | None = None
        self._streamed: dict[str, Usage] = {}  # assistant message id -> its usage (repeated per block)
        self._last_text: str | None = None
        self._results: list[dict] = []  # every `result` event: one, unless something else wrote to the output
        self._pending: list[str] = []  # lines of a JSON document printed over several lines
        self._pending_size = 0

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if self._pending or text in ("{", "["):
            self._collect(text)
            return
        super()._line(raw)

    def _collect(self, text: str) -> None:
        # A pretty-printed document: gather it, then read it whole once it parses.
        self._pending.append(text)
        self._pending_size += len(text)
        if self._pending_size > _MAX_LINE:
            self._pending, self._pending_size = [], 0
            return
        if not text.startswith(("}", "]")):
            return
        try:
            doc = json.loads("\n".join(self._pending))
        except ValueError:
            return
        self._pending, self._pending_size = [], 0
        for event in doc if isinstance(doc, list) else [doc]:
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                self.events_seen += 1
                self.on_event(event)

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        self._session = _str(event.get("session_id")) or self._session
        if kind == "result":
            self._result = event
            self._results.append(event)
        elif kind == "system":
            self._model = _str(event.get("model")) or self._model
        elif kind == "assistant":
            message = event.get("message")
            if isinstance(message, dict):
                usage = message.get("usage")
                if isinstance(usage, dict):
                    key = _str(message.get("id")) or f"#{len(self._streamed)}"
                    self._streamed[key] = _claude_usage(usage, self._refused)
                for block in message.get("content") or ():
                    if isinstance(block, dict) and block.get("type") == "text" and _str(block.get("text")):
                        self._last_text = block["text"]
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info")
            if isinstance(info, dict) and info.get("status") == "rejected":
                self._reset_at = epoch_seconds(info.get("resetsAt")) or self._reset_at

    def result(self) -> CliResult:
        base = replace(super().result(), session_id=self._session, model=self._model, reset_at=self._reset_at)
        r = self._result
        if r is None:
            streamed = Usage()
            for usage in self._streamed.values():
                streamed = streamed + usage
            return replace(base, usage=streamed, final_text=self._last_text,
                           answers=(self._last_text,) if self._last_text else ())
        subtype = _str(r.get("subtype"))
        # Some versions mark error_max_turns with is_error false: the subtype is enough.
        failed = r.get("is_error") is True or (subtype or "").startswith("error")
        text = _str(r.get("result"))
        error = None
        if failed:
            errors = [e for e in r.get("errors") or () if isinstance(e, str) and e.strip()]
            error = text or "; ".join(errors) or subtype or "error"
        cost = r.get("total_cost_usd", r.get("cost_usd"))
        refused = list(base.refused)
        if cost is not None and not is_cost(cost):
            refused.append(f"total_cost_usd {cost!r} is not a cost (a number, 0 or more): "
                           "the attempt's cost is unknown")
            cost = None
        usage = r.get("usage")
        usage = _claude_usage(usage, refused) if isinstance(usage, dict) else Usage()
        return replace(
            base,
            usage=usage,
            refused=tuple(dict.fromkeys(refused))[-_MAX_ERRORS:],
            cost_usd=float(cost) if cost is not None else None,
            cost_cumulative=True,
            num_turns=_int(r.get("num_turns")) if _is_number(r.get("num_turns")) else None,
            completed=True,
            failed=failed,
            error_message=error,
            api_status=_int(r.get("api_error_status")) if _is_number(r.get("api_error_status")) else None,
            subtype=subtype,
            api_error=_str(r.get("api_error")) or _str(r.get("api_error_type")),
            final_text=None if failed else text,
            answers=tuple(_str(e.get("result")) for e in self._results
                          if e.get("is_error") is not True and _str(e.get("result"))),
            permission_denials=_denials(r.get("permission_denials")),
        )


PARSERS: dict[str, type[OutputParser]] = {
    OutputFormat.CODEX_JSON.value: CodexParser,
    OutputFormat.CLAUDE_JSON.value: ClaudeParser,
    OutputFormat.TEXT.value: TextParser,
}


def parser_for(output: str) -> OutputParser:
    """A fresh parser for an `output:` name. Raises ValueError naming the known ones."""
    try:
        return PARSERS[output]()
    except KeyError:
        raise ValueError(f"output: unknown format {output!r} (known: {', '.join(PARSERS)})") from None


def parse(output: str, data: bytes | str) -> CliResult:
    """All of one attempt's output at once."""
    parser = parser_for(output)
    parser.feed(data)
    return parser.finish()


def epoch_seconds(value) -> float | None:
    """A number as epoch seconds; milliseconds (anything past the year 5000) are divided down."""
    if not _is_number(value) or value <= 0:
        return None
    value = float(value)
    return value / 1000.0 if value > 1e11 else value


def _claude_usage(usage: dict, refused: list) -> Usage:
    cache_read = _count(usage, "cache_read_input_tokens", refused)
    cache_write = _count(usage, "cache_creation_input_tokens", refused)
    return Usage(
        input=_count(usage, "input_tokens", refused) + cache_read + cache_write,
        cached=cache_read,
        output=_count(usage, "output_tokens", refused),
    )


def _count(usage: dict, key: str, refused: list) -> int:
    """A token count; one that is there but negative or not a finite number is 0, and why goes to `refused`."""
    value = usage.get(key)
    if value is None:
        return 0
    if not _is_number(value) or value < 0:
        refused.append(f"{key} {value!r} is not a token count (a number, 0 or more): counted as 0")
        return 0
    return int(value)


def is_cost(value) -> bool:
    """A cost in USD we take: a finite number, 0 or more."""
    return _is_number(value) and value >= 0


def _denials(value) -> tuple[str, ...]:
    names = []
    for denial in value or ():
        if isinstance(denial, dict):
            names.append(_str(denial.get("tool_name")) or _str(denial.get("toolName")) or "?")
        elif isinstance(denial, str):
            names.append(denial)
    return tuple(names)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> int:
    return int(value) if _is_number(value) and value > 0 else 0


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None
