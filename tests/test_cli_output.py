"""The agent-CLI output parsers, the failure classifier and the prices table, on recorded-style output.

Pure logic: no processes; the clock is a number passed in, and zones are named.
"""

from __future__ import annotations

import json
import os
import random
from datetime import datetime

import pytest

from runner.coding.failures import FailureClass, classify, parse_reset
from runner.coding.output import CliResult, Usage, attempt_cost, attempt_usage, parse, parser_for
from runner.coding.pricing import Price, PricingError, cost, parse_prices, with_cost
from runner.errors import UsageError

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "cli", "parsers")

try:
    from zoneinfo import ZoneInfo

    LONDON = ZoneInfo("Europe/London")
    NEW_YORK = ZoneInfo("America/New_York")
except Exception:  # no time-zone database on this machine
    LONDON = NEW_YORK = None
needs_tz = pytest.mark.skipif(LONDON is None, reason="no time-zone database (zoneinfo) on this machine")


def read(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def at(y, mo, d, h, mi=0, zone=None) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=zone or LONDON).timestamp()


def local(ts: float, zone=None) -> datetime:
    return datetime.fromtimestamp(ts, zone or LONDON).replace(tzinfo=None)


# ---- codex ---------------------------------------------------------------------------------------


def test_codex_success_gives_thread_usage_and_final_message():
    r = parse("codex-json", read("codex_success.jsonl"))
    assert r.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert r.usage == Usage(input=24763, cached=24448, output=122, reasoning=64)
    assert r.usage_cumulative
    assert r.completed and not r.failed and r.error_message is None
    assert r.final_text.startswith("Added retries")
    assert r.events_seen == 8
    assert r.notes == ("Reading prompt from stdin...",)
    assert classify(r, 0) is None


def test_codex_resumed_thread_usage_is_counted_once():
    first = parse("codex-json", read("codex_success.jsonl"))
    second = parse("codex-json", read("codex_resume.jsonl"))
    assert second.session_id == first.session_id
    delta = attempt_usage(second, first.usage)
    assert delta == Usage(input=51210 - 24763, cached=48896 - 24448, output=301 - 122, reasoning=128 - 64)
    assert attempt_usage(first, None) + delta == second.usage
    # A fresh thread's counters are lower than the old totals: nothing to subtract.
    fresh = parse("codex-json", read("codex_reconnect_then_ok.jsonl"))
    assert attempt_usage(fresh, second.usage) == fresh.usage
    # A failed turn reports no usage: it adds nothing, whatever came before.
    failed = parse("codex-json", read("codex_usage_limit.jsonl"))
    assert attempt_usage(failed, second.usage) == Usage()


def test_claude_usage_is_not_cumulative():
    r = parse("claude-json", read("claude_success.json"))
    assert attempt_usage(r, Usage(input=10**6)) == r.usage


def test_codex_context_window_failure_is_not_a_rate_limit_although_the_agent_wrote_429():
    r = parse("codex-json", read("codex_context_window.jsonl"))
    assert r.failed and "context window" in r.error_message
    assert "429" in r.final_text  # the agent's own words ...
    f = classify(r, 1, read("codex_context_window.jsonl"), r"\b429\b|rate[ _-]?limit|too many requests", now=0)
    assert f.cls is FailureClass.FAILED  # ... are never read
    assert f.drop_session  # resuming a full context would fail the same way
    assert "context window" in f.reason


def test_codex_error_lines_alone_are_not_a_failure():
    r = parse("codex-json", read("codex_reconnect_then_ok.jsonl"))
    assert not r.failed and r.completed
    assert r.last_error.startswith("Reconnecting... 2/5")
    assert classify(r, 0) is None


@needs_tz
def test_codex_usage_limit_pauses_until_the_time_it_names():
    r = parse("codex-json", read("codex_usage_limit.jsonl"))
    now = at(2026, 3, 10, 16, 0)
    f = classify(r, 1, now=now, tz=LONDON)
    assert f.cls is FailureClass.USAGE_LIMITED
    assert local(f.reset_at) == datetime(2026, 3, 11, 9, 40)  # 9:40 AM has passed today: tomorrow's
    f = classify(r, 1, now=at(2026, 3, 10, 8, 0), tz=LONDON)
    assert local(f.reset_at) == datetime(2026, 3, 10, 9, 40)


def test_codex_quota_exceeded_is_a_usage_limit_without_a_time():
    f = classify(parse("codex-json", read("codex_quota.jsonl")), 1, now=1000.0)
    assert f.cls is FailureClass.USAGE_LIMITED and f.reset_at is None
    assert f.reason == "Quota exceeded. Check your plan and billing details."


def test_codex_retry_limit_on_429_is_transient():
    f = classify(parse("codex-json", read("codex_429_retries.jsonl")), 1, now=1000.0)
    assert f.cls is FailureClass.RATE_LIMITED
    assert not f.cls.counts and not f.cls.stops_run


def test_codex_401_stops_the_run():
    f = classify(parse("codex-json", read("codex_401.jsonl")), 1, now=0)
    assert f.cls is FailureClass.AUTH_FAILED and f.cls.stops_run
    assert f.reason.startswith("unexpected status 401 Unauthorized")


def test_codex_untrusted_directory_is_a_setup_failure():
    r = parse("codex-json", read("codex_untrusted.txt"))
    assert r.events_seen == 0 and r.notes
    f = classify(r, 1, read("codex_untrusted.txt"))
    assert f.cls is FailureClass.SETUP_FAILED and f.cls.stops_run


def test_program_not_found_is_a_setup_failure():
    for output in ("codex-json", "claude-json", "text"):
        r = parse(output, b"")
        assert classify(r, 127).cls is FailureClass.SETUP_FAILED
        assert classify(r, 127).reason == "program not found (exit code 127)"


def test_stall_shows_when_the_last_event_came():
    p = parser_for("codex-json")
    lines = read("codex_stall.jsonl").splitlines(keepends=True)
    assert p.feed(lines[0], now=10.0) == 1
    assert p.feed(lines[1], now=11.0) == 1
    for t, line in enumerate(lines[2:], start=100):  # the reconnect loop prints only noise
        assert p.feed(line, now=float(t)) == 0
    assert p.last_event_at == 11.0
    assert "Reconnecting" in p.result().notes[-1]


# ---- claude --------------------------------------------------------------------------------------


def test_claude_json_success():
    r = parse("claude-json", read("claude_success.json"))
    assert r.session_id == "4f0d6a1e-8c2b-4e57-9a3d-2b1c7e9f0a64"
    assert r.cost_usd == pytest.approx(0.10457895) and not r.cost_estimated
    # cache reads and writes are input too; reads are the cached part
    assert r.usage == Usage(input=12 + 13368 + 7924, cached=13368, output=933)
    assert r.num_turns == 4 and r.subtype == "success"
    assert r.final_text.startswith("Added retries") and not r.failed
    assert r.permission_denials == ()
    assert classify(r, 0) is None


def test_claude_permission_denials_are_read_and_are_not_a_failure():
    r = parse("claude-json", read("claude_permission_denials.json"))
    assert r.permission_denials == ("Bash",)
    assert classify(r, 0) is None


@needs_tz
def test_claude_session_limit_resets_tomorrow_when_read_after_the_hour():
    r = parse("claude-json", read("claude_session_limit.json"))
    assert r.failed and r.api_status == 429
    f = classify(r, 1, now=at(2026, 3, 10, 16, 0), tz=NEW_YORK)  # the message names its own zone
    assert f.cls is FailureClass.USAGE_LIMITED  # a subscription limit, though it came as a 429
    assert local(f.reset_at) == datetime(2026, 3, 11, 15, 0)
    f = classify(r, 1, now=at(2026, 3, 10, 14, 0), tz=NEW_YORK)
    assert local(f.reset_at) == datetime(2026, 3, 10, 15, 0)


@needs_tz
def test_claude_out_of_credits_with_a_date():
    f = classify(parse("claude-json", read("claude_out_of_credits.json")), 1, now=at(2026, 3, 10, 16), tz=LONDON)
    assert f.cls is FailureClass.USAGE_LIMITED
    assert local(f.reset_at) == datetime(2026, 3, 14, 9, 0)


@pytest.mark.parametrize("name", ["claude_not_logged_in.json", "claude_invalid_key.json"])
def test_claude_auth_failures(name):
    f = classify(parse("claude-json", read(name)), 1, now=0)
    assert f.cls is FailureClass.AUTH_FAILED
    assert f.reason in ("Not logged in · Please run /login", "Invalid API key · Fix external API key")


def test_claude_api_status_alone_decides_when_the_message_says_nothing_known():
    r = CliResult(format="claude-json", failed=True, error_message="API Error", api_status=401, events_seen=1)
    assert classify(r, 1).cls is FailureClass.AUTH_FAILED
    r = CliResult(format="claude-json", failed=True, error_message="API Error", api_status=529, events_seen=1)
    assert classify(r, 1).cls is FailureClass.RATE_LIMITED


def test_claude_overloaded_is_transient_and_max_turns_is_a_plain_failure():
    f = classify(parse("claude-json", read("claude_overloaded.json")), 1, now=0)
    assert f.cls is FailureClass.RATE_LIMITED and f.reset_at is None
    r = parse("claude-json", read("claude_max_turns.json"))
    f = classify(r, 1, now=0)
    assert f.cls is FailureClass.FAILED and f.cls.counts
    assert f.reason == "reached the maximum number of turns"


def test_claude_stream_json():
    r = parse("claude-json", read("claude_stream.jsonl"))
    assert r.session_id == "4f0d6a1e-8c2b-4e57-9a3d-2b1c7e9f0a64"
    assert r.model == "claude-sonnet-4-5-20250929"
    assert r.events_seen == 7 and r.completed and not r.failed
    assert r.reset_at is None  # an allowed_warning is not a limit
    assert r.cost_usd == pytest.approx(0.10457895)
    # the agent's text mentions 429; a successful run is not classified at all, and the text is not read
    assert classify(r, 0, read("claude_stream.jsonl"), r"\b429\b") is None


def test_claude_stream_cut_off_before_its_result_keeps_session_and_streamed_usage():
    r = parse("claude-json", read("claude_stream_killed.jsonl"))
    assert r.session_id == "4f0d6a1e-8c2b-4e57-9a3d-2b1c7e9f0a64"
    assert not r.completed and r.cost_usd is None
    # one message id repeated per content block is one message's usage
    assert r.usage == Usage(input=4 + 3962 + 6684, cached=6684, output=18)


def test_claude_rejected_rate_limit_event_gives_the_reset_time():
    r = parse("claude-json", read("claude_stream_rejected.jsonl"))
    assert r.reset_at == 1773162000
    f = classify(r, 1, now=1773150000.0)
    assert f.cls is FailureClass.USAGE_LIMITED and f.reset_at == 1773162000


def test_claude_pretty_printed_json_document():
    doc = json.loads(read("claude_success.json"))
    r = parse("claude-json", "npm warn something\n" + json.dumps(doc, indent=2) + "\n")
    assert r.session_id == doc["session_id"] and r.completed and r.events_seen == 1
    assert r.notes == ("npm warn something",)


# ---- text ----------------------------------------------------------------------------------------


def test_text_output_uses_the_custom_regex_and_retry_after():
    tail = read("fake_agent_429.txt")
    r = parse("text", tail)
    f = classify(r, 75, tail, r"\b429\b|rate[ _-]?limit|too many requests", now=1000.0)
    assert f.cls is FailureClass.RATE_LIMITED and f.reset_at == 1030.0
    assert classify(None, 75, tail, None, now=1000.0).cls is FailureClass.RATE_LIMITED  # "rate limit" phrase


def test_text_output_does_not_trust_bare_status_numbers():
    tail = read("text_test_output_401.txt")
    f = classify(parse("text", tail), 1, tail)
    assert f.cls is FailureClass.FAILED and f.reason == "exit code 1"


def test_custom_regex_is_matched_only_against_the_cli_message_when_a_parser_exists():
    r = parse("codex-json", read("codex_context_window.jsonl"))
    r = CliResult(format=r.format, failed=True, error_message="something broke", events_seen=r.events_seen,
                  final_text=r.final_text)
    f = classify(r, 1, read("codex_context_window.jsonl"), r"too many requests")
    assert f.cls is FailureClass.FAILED and f.reason == "something broke"
    r = CliResult(format="codex-json", failed=True, error_message="backend said: slow down", events_seen=3)
    assert classify(r, 1, b"", r"slow down").cls is FailureClass.RATE_LIMITED


def test_a_long_retry_after_is_a_usage_limit():
    r = CliResult(format="codex-json", failed=True, error_message="429 Too Many Requests; retry-after: 7200",
                  events_seen=2)
    f = classify(r, 1, now=500.0)
    assert f.cls is FailureClass.USAGE_LIMITED and f.reset_at == 7700.0


# ---- parsing is incremental and robust -----------------------------------------------------------


@pytest.mark.parametrize(
    "output,name",
    [("codex-json", "codex_success.jsonl"), ("codex-json", "codex_context_window.jsonl"),
     ("claude-json", "claude_stream.jsonl"), ("claude-json", "claude_success.json")],
)
def test_feeding_in_any_pieces_gives_the_same_result(output, name):
    data = read(name)
    whole = parse(output, data)
    rng = random.Random(17)
    for _ in range(5):
        p = parser_for(output)
        i = 0
        while i < len(data):
            n = rng.randint(1, 64)
            p.feed(data[i : i + n], now=float(i))
            i += n
        assert p.finish() == whole
    one = parser_for(output)
    for i in range(len(data)):
        one.feed(data[i : i + 1])
    assert one.finish() == whole


def test_a_partial_line_waits_for_its_end_and_finish_reads_it():
    p = parser_for("codex-json")
    line = b'{"type":"thread.started","thread_id":"t-1"}'
    assert p.feed(line[:20], now=1.0) == 0
    assert p.result().session_id is None and p.last_event_at is None
    assert p.feed(line[20:], now=2.0) == 0  # no newline yet
    r = p.finish(now=3.0)
    assert r.session_id == "t-1" and p.last_event_at == 3.0


def test_garbage_is_survived():
    rng = random.Random(3)
    noise = bytes(rng.randrange(256) for _ in range(20000))
    good = read("codex_success.jsonl")
    junk = b"\n".join([b"[1, 2, 3]", b"null", b'"a string"', b'{"no_type": 1}', b'{"type": 5}',
                       b'{"type":"turn.completed","usage":"lots"}',
                       b'{"type":"turn.completed","usage":{"input_tokens":"9"}}',
                       b'{"type":"item.completed","item":"x"}', b'{"type":"thread.started","thread_id":7}',
                       b'{"type":"turn.failed","error":null}', b"\xff\xfe\x00 binary", b'{"type":"item.comp'])
    for output in ("codex-json", "claude-json", "text"):
        p = parser_for(output)
        p.feed(noise)
        p.feed(b"\n" + junk + b"\n")
        p.feed(good)
        r = p.finish()
        assert isinstance(r, CliResult)
    r = parse("codex-json", noise + b"\n" + good + b"\n" + junk)
    assert r.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert r.failed and r.error_message == "turn failed"  # a turn.failed with no message gets a plain one
    assert not any(n.startswith("{") for n in r.notes)  # a cut-off event is not kept as a note


def test_a_cut_off_event_is_not_read_as_the_clis_words():
    data = read("codex_context_window.jsonl")
    cut = data[: data.index(b"(rate limit)")]  # killed in the middle of the agent's message
    r = parse("codex-json", cut)
    assert not any("429" in n for n in r.notes)
    f = classify(r, -9, cut, r"\b429\b")
    assert f.cls is FailureClass.FAILED and f.reason == "killed by signal 9"


def test_unknown_output_format():
    with pytest.raises(ValueError, match="unknown format 'json'.*codex-json"):
        parser_for("json")


# ---- reset times ---------------------------------------------------------------------------------


@needs_tz
@pytest.mark.parametrize(
    "text,expected",
    [
        ("You've hit your session limit · resets 3pm (Europe/London)", datetime(2026, 3, 11, 15, 0)),
        ("resets 5pm", datetime(2026, 3, 10, 17, 0)),
        ("resets 3:59pm", datetime(2026, 3, 10, 15, 59)),  # just past: lifting now, not tomorrow
        ("resets at 3:30 PM", datetime(2026, 3, 11, 15, 30)),
        ("try again at 9:40 AM.", datetime(2026, 3, 11, 9, 40)),
        ("try again at 12:05 AM", datetime(2026, 3, 11, 0, 5)),
        ("Try again at Aug 8th, 2026 12:30 PM.", datetime(2026, 8, 8, 12, 30)),
        ("resets Oct 9, 10am (Europe/London)", datetime(2026, 10, 9, 10, 0)),
        ("resets Jan 2, 10am", datetime(2027, 1, 2, 10, 0)),  # no year and already past: next year's
        ("Try again Aug 18.", datetime(2026, 8, 18, 0, 0)),
        ("resets 15:00 UTC", datetime(2026, 3, 11, 15, 0)),  # London is on UTC in March
        ("resets 11am (America/New_York)", datetime(2026, 3, 11, 15, 0)),
        ("resets 3pm (Mars/Olympus)", datetime(2026, 3, 11, 15, 0)),  # unknown zone: the default one
        ("try again in 2 hours", datetime(2026, 3, 10, 18, 0)),
        ("resets in 45 minutes", datetime(2026, 3, 10, 16, 45)),
        ("try again in 3 days 6 hours 57 minutes", datetime(2026, 3, 13, 22, 57)),
        ("retry-after: 30", datetime(2026, 3, 10, 16, 0, 30)),
        ('{"retry_after": 90}', datetime(2026, 3, 10, 16, 1, 30)),
        ("limit lifts at 2026-03-11T02:00:00Z", datetime(2026, 3, 11, 2, 0)),
        ("resets 2026-03-12T09:00:00+01:00", datetime(2026, 3, 12, 8, 0)),
        ("Claude AI usage limit reached|1773200000", local(1773200000.0)),
        ('"resetsAt": 1773200000000', local(1773200000.0)),  # milliseconds
    ],
)
def test_parse_reset(text, expected):
    now = at(2026, 3, 10, 16, 0)
    assert local(parse_reset(text, now, LONDON)) == expected


@pytest.mark.parametrize(
    "text", ["try again later", "resets 3", "resets soon", "Try again Feb 30.", "resets 25:00", "", "resets 13pm"]
)
def test_parse_reset_none(text):
    assert parse_reset(text, 1773158400.0) is None


@needs_tz
def test_parse_reset_across_a_clock_change():
    now = at(2026, 3, 28, 16, 0)  # London moves to BST overnight
    assert local(parse_reset("resets 3pm", now, LONDON)) == datetime(2026, 3, 29, 15, 0)
    assert parse_reset("resets 3pm", now, LONDON) - now == 22 * 3600


def test_parse_reset_default_zone_is_local():
    now = 1773158400.0
    expected = datetime.fromtimestamp(now).astimezone()
    when = parse_reset("try again in 2 hours", now)
    assert when == now + 7200
    assert parse_reset(f"resets {expected.hour}:{expected.minute:02d}", now) == pytest.approx(now, abs=60)


# ---- prices --------------------------------------------------------------------------------------


def test_prices_cost_and_estimate():
    prices = parse_prices({"gpt-5-codex": {"input": 1.25, "cached_input": 0.125, "output": 10},
                           "default": {"input": 2, "output": 8}})
    assert prices["default"] == Price(2.0, 2.0, 8.0)  # cached_input defaults to input
    usage = Usage(input=1_000_000, cached=400_000, output=100_000, reasoning=50_000)
    assert cost(usage, prices["gpt-5-codex"]) == pytest.approx(0.6 * 1.25 + 0.4 * 0.125 + 0.1 * 10)
    r = parse("codex-json", read("codex_success.jsonl"))
    estimated = with_cost(r, r.usage, "gpt-5-codex", prices)
    assert estimated.cost_estimated
    assert estimated.cost_usd == pytest.approx((315 * 1.25 + 24448 * 0.125 + 122 * 10) / 1e6)
    assert with_cost(r, r.usage, "some-other-model", prices).cost_usd == pytest.approx(
        (24763 * 2 + 122 * 8) / 1e6)
    assert with_cost(r, r.usage, "x", {}) == r  # no price: no cost, not a guess
    reported = parse("claude-json", read("claude_success.json"))
    assert with_cost(reported, reported.usage, "x", prices) == reported  # the CLI's own cost stays


@pytest.mark.parametrize(
    "spec,message",
    [
        ([1, 2], "executor.prices: must be a mapping"),
        ({"m": 3}, "executor.prices.m: must be a mapping"),
        ({"m": {"input": 1}}, "executor.prices.m.output: missing"),
        ({"m": {"input": 1, "output": "ten"}}, "executor.prices.m.output: must be a number"),
        ({"m": {"input": -1, "output": 1}}, "executor.prices.m.input: must be a number"),
        ({"m": {"input": True, "output": 1}}, "executor.prices.m.input: must be a number"),
        ({"m": {"input": 1, "output": 1, "cache": 1}}, "executor.prices.m: unknown field 'cache'"),
        ({"": {"input": 1, "output": 1}}, "executor.prices: a model name"),
    ],
)
def test_prices_errors_name_the_field(spec, message):
    with pytest.raises(PricingError) as info:
        parse_prices(spec)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)


def test_the_agents_words_never_stop_the_run():
    # The agent's summary of a failing auth test must not read as the CLI's own auth failure.
    r = CliResult(format="codex-json", failed=True, error_message="turn failed", events_seen=4,
                  final_text="The endpoint answers 401 Unauthorized: Invalid API key. You've hit your usage limit.")
    f = classify(r, 1, r.final_text, r"usage limit")
    assert f.cls is FailureClass.FAILED and f.reason == "turn failed"


# ---- real output of the CLIs (codex 0.171, claude 2.1.197) against the tests' mock API -----------

RECORDED = os.path.join(FIXTURES, "recorded")


def recorded(name: str) -> tuple[str, bytes, bytes, int | None]:
    """(output format, stdout, stderr, exit code) of one recorded run."""
    stem = os.path.join(RECORDED, name)
    output = "codex-json" if name.startswith("codex") else "claude-json"
    with open(stem + (".jsonl" if output == "codex-json" else ".json"), "rb") as f:
        out = f.read()
    with open(stem + ".stderr", "rb") as f:
        err = f.read()
    with open(stem + ".meta.json") as f:
        meta = json.load(f)
    return output, out, err, meta["exit_code"]


def run_of(name: str):
    """Parse as the runner will: stdout and stderr into one log, in arrival order unknown, so both."""
    output, out, err, code = recorded(name)
    p = parser_for(output)
    p.feed(err)
    p.feed(out)
    return p.finish(), code, err + out


@pytest.mark.parametrize(
    "name,cls",
    [
        ("codex-success", None),
        ("codex-resume", None),
        ("codex-429-then-ok", None),  # an `error` line, then success: transient
        ("codex-openai-base-url", None),  # websocket fallback warnings are not failures
        ("codex-401", FailureClass.AUTH_FAILED),
        ("codex-quota", FailureClass.USAGE_LIMITED),
        ("codex-usage-limit", FailureClass.USAGE_LIMITED),
        ("claude-success", None),
        ("claude-resume", None),
        ("claude-429-then-ok", None),
        ("claude-permission-denied", None),
        ("claude-401", FailureClass.AUTH_FAILED),
        ("claude-529", FailureClass.RATE_LIMITED),
        ("claude-usage-limit-api-key", FailureClass.RATE_LIMITED),  # an API key's per-minute limit
        ("claude-usage-limit", FailureClass.USAGE_LIMITED),  # a subscription's 5-hour limit
        ("claude-credit-balance", FailureClass.USAGE_LIMITED),
    ],
)
def test_recorded_runs_are_classified(name, cls):
    r, code, log = run_of(name)
    assert r.session_id == "00000000-0000-4000-8000-000000000001"
    f = classify(r, code, log, r"\b429\b|rate[ _-]?limit|too many requests", now=at(2026, 1, 1, 9) if LONDON else 0)
    assert (f.cls if f else None) is cls


def test_recorded_codex_usage_is_cumulative_over_resume():
    first, _, _ = run_of("codex-success")
    second, _, _ = run_of("codex-resume")
    assert first.usage == Usage(input=120, cached=20, output=7, reasoning=3)
    assert second.usage == Usage(input=240, output=14)
    assert first.final_text == "hello from the mock" and second.final_text == "second answer"
    # the mock answers every request with 120 in, 7 out: the first run of that thread left totals of 120/0/7/0
    assert attempt_usage(second, Usage(input=120, output=7)) == Usage(input=120, output=7)


def test_recorded_claude_cost_is_cumulative_over_resume_but_usage_is_not():
    first, _, _ = run_of("claude-429-then-ok")  # a first run like the resumed one's (120 in, 7 out)
    second, _, _ = run_of("claude-resume")
    assert second.usage == first.usage == Usage(input=120, output=7)
    assert second.cost_usd == pytest.approx(2 * first.cost_usd)  # the session's total
    assert attempt_cost(second, first.cost_usd) == pytest.approx(first.cost_usd)
    assert attempt_cost(first, None) == first.cost_usd
    assert attempt_usage(second, first.usage) == second.usage


@needs_tz
def test_recorded_limits_give_their_reset_times():
    r, code, log = run_of("codex-usage-limit")  # "You’ve hit ... or try again at 12:02 PM." (curly ’)
    f = classify(r, code, log, now=at(2026, 1, 1, 9), tz=LONDON)
    assert local(f.reset_at) == datetime(2026, 1, 1, 12, 2)
    r, code, log = run_of("claude-usage-limit")  # "You've hit your 5-hour limit · resets 12pm (UTC)"
    assert r.api_error == "usage_limit_reached"
    f = classify(r, code, log, now=at(2026, 1, 1, 13), tz=NEW_YORK)
    assert local(f.reset_at) == datetime(2026, 1, 2, 12, 0)


def test_recorded_details():
    r, _, _ = run_of("claude-permission-denied")
    assert r.permission_denials == ("Bash",)
    r, code, log = run_of("claude-401")
    assert r.api_status == 401 and classify(r, code, log).reason == "Invalid API key · Fix external API key"
    r, _, _ = run_of("codex-401")
    assert r.error_message.startswith("unexpected status 401 Unauthorized")
    assert r.last_error == r.error_message  # the five "Reconnecting..." lines came before
    assert any("Reading additional input from stdin" in n for n in r.notes)


@pytest.mark.parametrize("name", ["codex-stall", "claude-stall"])
def test_recorded_stalls(name):
    output, out, err, code = recorded(name)
    assert code is None  # killed by the test after its deadline
    p = parser_for(output)
    p.feed(out, now=1.0)
    p.feed(err, now=50.0)  # stderr warnings are not events
    r = p.finish(now=60.0)
    assert p.last_event_at == (1.0 if r.events_seen else None)
    assert not r.completed
    assert classify(r, None).cls is FailureClass.FAILED


# ---- through the run, on each backend -----------------------------------------------------------

STAND_IN = r'''
import os, sys
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(os.environ["WVO_TASK_ID"] + "\n")
session = "4f0d6a1e-8c2b-4e57-9a3d-2b1c7e9f0a64"  # the recorded one; each task gets a session of its own
text = open(os.environ["FAKE_OUTPUT"]).read().replace(session, "session-" + os.environ["WVO_TASK_ID"])
sys.stdout.write(text)
'''


@pytest.mark.timeout(120)
def test_structured_output_is_read_on_every_backend(tmp_path, backend):
    # Claude Code's stream-json, printed by a stand-in: the session id, tokens and the CLI's own cost reach
    # the ledger and --json whichever backend ran the attempt (issue 20: Ray read none of it).
    import sqlite3
    import sys

    from conftest import wvo

    script, calls = tmp_path / "claude.py", tmp_path / "calls.txt"
    script.write_text(STAND_IN)
    env = {"FAKE_CALLS": str(calls), "FAKE_OUTPUT": os.path.join(FIXTURES, "claude_stream.jsonl")}
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        f"defaults:\n  env: {json.dumps(env)}\n"
        "tasks:\n  - id: T1\n    title: one\n  - id: T2\n    title: two\n"
    )
    proc = wvo(rm, "--state-dir", tmp_path / "s", "--json", "--agents", "2", *backend, timeout=90, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert sorted(calls.read_text().split()) == ["T1", "T2"]
    for row in doc["tasks"]:
        assert row["usage"]["input"] == 12 + 13368 + 7924 and row["usage"]["output"] == 933, row
        assert row["usage"]["cost_usd"] == pytest.approx(0.104579, abs=1e-6)
    assert doc["usage"]["cost_usd"] == pytest.approx(2 * 0.104579, abs=1e-5) and not doc["usage"]["cost_estimated"]
    db = sqlite3.connect(f"file:{tmp_path / 's' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        sessions = db.execute("SELECT task_id, session_id FROM attempts ORDER BY task_id").fetchall()
    finally:
        db.close()
    assert sessions == [("T1", "session-T1"), ("T2", "session-T2")]


def test_the_summary_line_says_how_the_failed_tasks_failed_and_nothing_when_none_did():
    import io

    from runner.cli.summary import write_summary
    from runner.manager.options import RunResult

    def line(statuses: list[str]) -> str:
        rows = [{"task": f"t{i}", "status": s, "agent": "worker-0", "duration_s": 0.1, "log": None, "reason": None}
                for i, s in enumerate(statuses)]  # fmt: skip
        failed = sum(s != "succeeded" for s in statuses)
        summary = {"succeeded": len(statuses) - failed, "failed": failed, "skipped": 0, "interrupted": 0, "total": len(statuses),
                   "makespan_s": 1.0, "run_id": 1, "folder": "/r", "telemetry": {"utilization": 0.5, "queue_wait_p95_s": 0.0}}  # fmt: skip
        out = io.StringIO()
        write_summary(out, RunResult(1 if failed else 0, 1, "/r", summary, rows), quiet=True)
        return next(t for t in out.getvalue().splitlines() if " succeeded, " in t)

    assert "1 succeeded, 2 failed (1 failed, 1 check_failed), 0 skipped" in line(["succeeded", "check_failed", "failed"])
    assert "3 succeeded, 0 failed, 0 skipped" in line(["succeeded"] * 3)
