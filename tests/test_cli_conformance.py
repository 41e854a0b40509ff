"""The real agent CLIs (Codex CLI, Claude Code, from npm) against tests/mockapi.py: what they print and exit with.

No wvo-batch here: each test runs a CLI as a subprocess with its own HOME / CODEX_HOME /
CLAUDE_CONFIG_DIR in tmp_path, pointed at the mock on 127.0.0.1, with placeholder keys. The mock is
also every run's HTTPS_PROXY, so a call to any other host is refused and recorded; each run asserts
there was none. `scripts/install-agent-clis.sh` installs the CLIs into .agent-clis/; without them the
module is skipped with the script's reason.

WVO_RECORD_CLI_FIXTURES=1 rewrites tests/fixtures/cli/ from these runs (ids, ports, paths replaced
by placeholders) for the parsers' unit tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.coding.failures import parse_reset
from mockapi import (MockAPI, overloaded, quota_exceeded, rate_limited, reply, stall, tool_call, unauthorized,
                     usage_limit)

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".agent-clis" / "node_modules" / ".bin"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cli"
RECORD = os.environ.get("WVO_RECORD_CLI_FIXTURES") == "1"


def _skip_reason() -> str | None:
    if (BIN / "codex").exists() and (BIN / "claude").exists():
        return None
    why = ROOT / ".agent-clis" / "REASON"
    reason = why.read_text().strip() if why.exists() else "not installed; run scripts/install-agent-clis.sh"
    return f"agent CLIs not in .agent-clis/: {reason}"


pytestmark = [pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
              pytest.mark.timeout(60)]


@dataclass
class Run:
    rc: int | None  # None: still running when the test's deadline came, then killed
    stdout: str
    stderr: str
    seconds: float

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events() if e.get("type") == kind]

    def result(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def mock():
    with MockAPI() as api:
        yield api
        assert api.escapes() == [], "a CLI tried to reach another host"


def _base_env(mock: MockAPI, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    proxy = mock.base_url
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        "TZ": "UTC",
        # Anything not for the mock goes to the mock's CONNECT handler, which refuses and records it.
        "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float, until=None, settle: float = 1.0) -> Run:
    """Run to exit, or kill its process group at `timeout` (rc None); with `until`, also `settle` s after
    until() first holds (rc None: the stall was reached and the CLI printed nothing more meanwhile)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    end = start + timeout
    while True:
        if until is not None and until():  # from now on, `settle` s more at most
            end, until = min(end, time.monotonic() + settle), None
        step = end - time.monotonic() if until is None else 0.02  # poll until() meanwhile
        try:  # communicate() called again after a timeout keeps what was read so far
            out, err = proc.communicate(timeout=max(0.0, step))
            rc: int | None = proc.returncode
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() < end:
                continue
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc = None
            break
    return Run(rc, out, err, time.monotonic() - start)


# ---- codex ------------------------------------------------------------------------------------

def codex_args(mock: MockAPI, *, retries: int | None = None, builtin_provider: bool = False) -> list[str]:
    """Config for `codex exec` against the mock: a provider of its own, so no WebSocket attempt
    (the built-in provider with `-c openai_base_url=` first tries ws:// five times, ~6 s), and off
    the features that call github.com / chatgpt.com / ab.chatgpt.com at start-up."""
    p = "model_providers.mock"
    if builtin_provider:  # the built-in `openai` provider, as a preset would use it, moved to the mock
        args = ["-c", f"openai_base_url={mock.base_url}/v1"]
    else:
        args = ["-c", "model_provider=mock", "-c", f'{p}.name="mock"', "-c", f'{p}.base_url="{mock.base_url}/v1"',
                "-c", f'{p}.env_key="CODEX_API_KEY"', "-c", f'{p}.wire_api="responses"',
                "-c", f"{p}.supports_websockets=false"]
    args += ["--disable", "plugins", "--disable", "remote_plugin", "--disable", "apps",
            "-c", "analytics.enabled=false"]
    if retries is not None:
        args += ["-c", f"{p}.stream_max_retries={retries}", "-c", f"{p}.request_max_retries={retries}"]
    return args


def stalled(mock: MockAPI):
    """For a stall scenario: the model request has arrived (the mock then sends nothing more)."""
    return lambda: bool(mock.model_requests())


def run_codex(mock: MockAPI, tmp: Path, prompt: str, *, resume: str | None = None, retries: int | None = None,
              timeout: float = 30, builtin_provider: bool = False, until=None) -> Run:
    env = _base_env(mock, tmp / "home")
    env["CODEX_HOME"] = str(tmp / "codex-home")
    env["CODEX_API_KEY"] = "sk-placeholder"
    Path(env["CODEX_HOME"]).mkdir(exist_ok=True)
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    args = codex_args(mock, retries=retries, builtin_provider=builtin_provider)
    cmd = [str(BIN / "codex"), "exec", "--json", "--skip-git-repo-check", *args]
    cmd += ["resume", resume, prompt] if resume else [prompt]
    return _run(cmd, env, work, timeout, until)


def test_codex_success(mock, tmp_path):
    mock.queue(reply("hello from the mock", input_tokens=120, cached_tokens=20, output_tokens=7, reasoning_tokens=3))
    run = run_codex(mock, tmp_path, "say hello")
    record("codex-success", run, tmp_path, mock)
    assert run.rc == 0, run.stderr
    (started,) = run.of_type("thread.started")
    assert re.fullmatch(r"[0-9a-f-]{36}", started["thread_id"])
    (done,) = run.of_type("turn.completed")
    assert done["usage"] == {"input_tokens": 120, "cached_input_tokens": 20, "cache_write_input_tokens": 0,
                             "output_tokens": 7, "reasoning_output_tokens": 3}
    messages = [e["item"]["text"] for e in run.of_type("item.completed") if e["item"]["type"] == "agent_message"]
    assert messages == ["hello from the mock"]
    assert mock.model_requests()[0].path == "/v1/responses"
    assert mock.model_requests()[0].headers.get("authorization") == "Bearer sk-placeholder"


def test_codex_resume_sends_earlier_turns(mock, tmp_path):
    mock.queue(reply("first answer"), reply("second answer"))
    first = run_codex(mock, tmp_path, "first prompt")
    thread_id = first.of_type("thread.started")[0]["thread_id"]
    second = run_codex(mock, tmp_path, "second prompt", resume=thread_id)
    record("codex-resume", second, tmp_path, mock)
    assert second.rc == 0, second.stderr
    assert second.of_type("thread.started")[0]["thread_id"] == thread_id
    texts = [c.get("text") for item in mock.model_requests()[1].body["input"] if item.get("type") == "message"
             for c in item.get("content", [])]
    assert texts[-3:] == ["first prompt", "first answer", "second prompt"]
    # The resumed thread's usage is cumulative: both turns, not the last one.
    assert second.of_type("turn.completed")[0]["usage"]["input_tokens"] == 240


def test_codex_builtin_provider_tries_websocket_first(mock, tmp_path):
    mock.queue(reply("over https"))
    run = run_codex(mock, tmp_path, "hi", builtin_provider=True)
    record("codex-openai-base-url", run, tmp_path, mock)
    assert run.rc == 0
    errors = [e["message"] for e in run.of_type("error")]
    assert errors and all(m.startswith("Reconnecting... ") and "ws://127.0.0.1" in m for m in errors)
    notes = [e["item"] for e in run.of_type("item.completed") if e["item"]["type"] == "error"]
    assert notes[0]["message"].startswith("Falling back from WebSockets to HTTPS transport.")
    assert run.of_type("turn.completed")
    assert any(r.method == "GET" and r.path == "/v1/responses" for r in mock.requests)


def test_codex_429_then_success(mock, tmp_path):
    mock.queue(rate_limited(retry_after=1), reply("after the 429"))
    run = run_codex(mock, tmp_path, "hi")
    record("codex-429-then-ok", run, tmp_path, mock)
    assert run.rc == 0
    (err,) = run.of_type("error")  # transient: an `error` line, then the turn completes
    assert "429 Too Many Requests" in err["message"] and err["message"].startswith("Reconnecting... 1/5")
    assert run.of_type("turn.completed") and not run.of_type("turn.failed")
    assert len(mock.model_requests()) == 2


def test_codex_401_default_retries(mock, tmp_path):
    mock.default = unauthorized()
    run = run_codex(mock, tmp_path, "hi")
    record("codex-401", run, tmp_path, mock)
    assert run.rc == 1
    (failed,) = run.of_type("turn.failed")
    assert failed["error"]["message"].startswith("unexpected status 401 Unauthorized: Incorrect API key")
    assert len(mock.model_requests()) == 6  # five reconnects before it gives up (~7 s)


def test_codex_401_without_retries(mock, tmp_path):
    mock.default = unauthorized()
    run = run_codex(mock, tmp_path, "hi", retries=0)
    assert run.rc == 1 and run.of_type("turn.failed")
    assert len(mock.model_requests()) == 1
    assert run.seconds < 10


@pytest.mark.parametrize("hours", [3, 30], ids=["in-3-hours", "another-day"])
def test_codex_usage_limit(mock, tmp_path, hours):
    resets_at = int(time.time()) + hours * 3600
    mock.queue(usage_limit(resets_at=resets_at))
    run = run_codex(mock, tmp_path, "hi")
    if hours == 3:
        record("codex-usage-limit", run, tmp_path, mock)
    assert run.rc == 1
    message = run.of_type("turn.failed")[0]["error"]["message"]
    # Note the typographic apostrophe. The time of day comes with its date when the reset is not today (a reset
    # 3 hours ahead is tomorrow from 21:00 on): "try again at 9:40 AM." or "try again at Dec 8th, 2026 12:25 AM."
    assert re.match(r"You\u2019ve hit your usage limit\. .* try again at ([A-Z][a-z]{2} \d{1,2}[a-z]{2}, \d{4} )?\d{1,2}:\d\d [AP]M\.$",
                    message), message
    if hours == 30:
        assert re.search(r"try again at [A-Z][a-z]{2} \d{1,2}[a-z]{2}, \d{4} ", message), message
    reset = parse_reset(message, time.time())  # what the runner reads from it: the account's pause ends then
    assert reset is not None and abs(reset - resets_at) <= 60, (message, reset, resets_at)
    assert len(mock.model_requests()) == 1  # not retried


def test_codex_quota_exceeded(mock, tmp_path):
    mock.queue(quota_exceeded())
    run = run_codex(mock, tmp_path, "hi")
    record("codex-quota", run, tmp_path, mock)
    assert run.rc == 1
    assert "Quota exceeded" in run.of_type("turn.failed")[0]["error"]["message"]


def test_codex_stall_prints_nothing_more(mock, tmp_path):
    mock.queue(stall(partial=True))
    run = run_codex(mock, tmp_path, "hi", timeout=30, until=stalled(mock))
    record("codex-stall", run, tmp_path, mock)
    assert run.rc is None  # still waiting when killed: only a watchdog ends this
    assert [e["type"] for e in run.events()] == ["thread.started", "turn.started"]


# ---- claude -----------------------------------------------------------------------------------

def run_claude(mock: MockAPI, tmp: Path, prompt: str, *, resume: str | None = None, retries: int = 2,
               oauth: bool = False, timeout: float = 30, extra: tuple[str, ...] = (), until=None) -> Run:
    env = _base_env(mock, tmp / "home")
    env.update({
        "CLAUDE_CONFIG_DIR": str(tmp / "claude-config"), "ANTHROPIC_BASE_URL": mock.base_url,
        "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_MAX_RETRIES": str(retries),
    })
    # A subscription login (an OAuth token) is what makes the usage-limit message; a key is the API.
    env["CLAUDE_CODE_OAUTH_TOKEN" if oauth else "ANTHROPIC_API_KEY"] = (
        "sk-ant-oat01-placeholder" if oauth else "sk-ant-placeholder")
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    cmd = [str(BIN / "claude"), "-p", prompt, "--output-format", "json", *extra]
    if resume:
        cmd += ["--resume", resume]
    return _run(cmd, env, work, timeout, until)


def test_claude_success(mock, tmp_path):
    mock.queue(reply("hello from the mock", input_tokens=120, cached_tokens=20, output_tokens=7))
    run = run_claude(mock, tmp_path, "say hello")
    record("claude-success", run, tmp_path, mock)
    assert run.rc == 0, run.stderr
    result = run.result()
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["is_error"] is False and result["api_error_status"] is None
    assert result["result"] == "hello from the mock"
    assert re.fullmatch(r"[0-9a-f-]{36}", result["session_id"])
    assert result["num_turns"] == 1 and result["permission_denials"] == []
    assert result["usage"]["input_tokens"] == 120 and result["usage"]["output_tokens"] == 7
    assert result["usage"]["cache_read_input_tokens"] == 20
    assert result["total_cost_usd"] > 0  # priced by the CLI from the model's list price
    req = mock.model_requests()[0]
    assert req.path.startswith("/v1/messages") and req.body["stream"] is True
    assert req.headers.get("x-api-key") == "sk-ant-placeholder"


def test_claude_resume_sends_earlier_turns(mock, tmp_path):
    mock.queue(reply("first answer"), reply("second answer"))
    first = run_claude(mock, tmp_path, "first prompt")
    session = first.result()["session_id"]
    second = run_claude(mock, tmp_path, "second prompt", resume=session)
    record("claude-resume", second, tmp_path, mock)
    assert second.rc == 0, second.stderr
    assert second.result()["session_id"] == session
    messages = mock.model_requests()[1].body["messages"]

    def texts(msg):
        content = msg["content"]
        return [content] if isinstance(content, str) else [c.get("text", "") for c in content]

    flat = [(m["role"], t) for m in messages for t in texts(m)]
    assert ("assistant", "first answer") in flat
    assert any(role == "user" and t == "first prompt" for role, t in flat)
    assert flat[-1] == ("user", "second prompt")


def test_claude_permission_denial(mock, tmp_path):
    # acceptEdits lets the shell write files in the workspace (`echo hi > out.txt` runs) but refuses
    # other commands, such as the project's tests.
    mock.queue(tool_call("make test"), reply("could not run it"))
    run = run_claude(mock, tmp_path, "run a command", extra=("--permission-mode", "acceptEdits"))
    record("claude-permission-denied", run, tmp_path, mock)
    assert run.rc == 0
    result = run.result()
    assert result["is_error"] is False and result["num_turns"] == 2
    (denial,) = result["permission_denials"]
    assert denial["tool_name"] == "Bash" and denial["tool_input"]["command"] == "make test"
    assert denial["tool_use_id"].startswith("toolu_")
    tool_results = [c for msg in mock.model_requests()[1].body["messages"] if isinstance(msg["content"], list)
                    for c in msg["content"] if c.get("type") == "tool_result"]
    assert tool_results[0]["is_error"] is True and tool_results[0]["content"] == "This command requires approval"


def test_claude_429_then_success(mock, tmp_path):
    mock.queue(rate_limited(retry_after=1), reply("after the 429"))
    run = run_claude(mock, tmp_path, "hi")
    record("claude-429-then-ok", run, tmp_path, mock)
    assert run.rc == 0
    assert run.result()["is_error"] is False and run.result()["result"] == "after the 429"
    assert len(mock.model_requests()) == 2
    assert run.seconds >= 1  # it honoured retry-after


def test_claude_401(mock, tmp_path):
    # CLAUDE_CODE_MAX_RETRIES=0: without it the CLI retries a 401 ten times over ~3 minutes.
    mock.default = unauthorized()
    run = run_claude(mock, tmp_path, "hi", retries=0)
    record("claude-401", run, tmp_path, mock)
    assert run.rc == 1
    result = run.result()
    assert result["is_error"] is True and result["subtype"] == "success"  # subtype does not say it
    assert result["api_error_status"] == 401 and result["api_error_type"] == "authentication_error"
    assert result["result"] == "Invalid API key \u00b7 Fix external API key"
    assert len(mock.model_requests()) == 1


def test_claude_overloaded(mock, tmp_path):
    mock.default = overloaded()
    run = run_claude(mock, tmp_path, "hi", retries=0)
    record("claude-529", run, tmp_path, mock)
    assert run.rc == 1
    result = run.result()
    assert result["is_error"] is True and result["api_error_status"] == 529


def test_claude_usage_limit_subscription(mock, tmp_path):
    resets = int(time.time()) // 3600 * 3600 + 3 * 3600  # on the hour: "resets 3pm (UTC)"
    mock.default = usage_limit(resets_at=resets)
    run = run_claude(mock, tmp_path, "hi", retries=0, oauth=True)
    record("claude-usage-limit", run, tmp_path, mock)
    assert run.rc == 1
    result = run.result()
    assert result["is_error"] is True and result["api_error_status"] == 429
    assert result["api_error"] == "usage_limit_reached"
    assert re.fullmatch(r"You've hit your 5-hour limit \u00b7 resets \d{1,2}(:\d\d)?[ap]m \(UTC\)", result["result"])
    assert mock.model_requests()[0].headers.get("authorization") == "Bearer sk-ant-oat01-placeholder"


def test_claude_usage_limit_api_key(mock, tmp_path):
    # The same 429 for an API-key user reads as a plain rate limit, with no reset time.
    mock.default = usage_limit()
    run = run_claude(mock, tmp_path, "hi", retries=0)
    record("claude-usage-limit-api-key", run, tmp_path, mock)
    result = run.result()
    assert run.rc == 1 and result["api_error_status"] == 429 and "api_error" not in result
    assert result["result"].startswith("API Error: Request rejected (429)")


def test_claude_credit_balance(mock, tmp_path):
    mock.default = quota_exceeded()
    run = run_claude(mock, tmp_path, "hi", retries=0)
    record("claude-credit-balance", run, tmp_path, mock)
    assert run.rc == 1
    result = run.result()
    assert result["is_error"] is True and result["api_error_status"] == 400
    assert result["result"] == "Credit balance is too low"


def test_claude_stall_prints_nothing(mock, tmp_path):
    mock.queue(stall(partial=True))
    run = run_claude(mock, tmp_path, "hi", timeout=30, until=stalled(mock))
    record("claude-stall", run, tmp_path, mock)
    assert run.rc is None and run.stdout == ""  # --output-format json prints only at the end


# ---- recorded fixtures --------------------------------------------------------------------------

def _placeholders(text: str, tmp: Path, mock: MockAPI) -> str:
    text = text.replace(str(tmp), "/tmp/wvo-test").replace(f"127.0.0.1:{mock.port}", "127.0.0.1:PORT")
    ids: dict[str, str] = {}

    def one(m: re.Match) -> str:
        return ids.setdefault(m.group(0), f"00000000-0000-4000-8000-{len(ids) + 1:012d}")

    text = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", one, text)
    text = re.sub(r"\b(req|msg|resp|toolu)_[0-9a-zA-Z]{8,}", r"\1_PLACEHOLDER", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "2026-01-01T00:00:00.000000Z", text)
    return text


def record(name: str, run: Run, tmp: Path, mock: MockAPI) -> None:
    """With WVO_RECORD_CLI_FIXTURES=1, keep what the CLI printed as fixtures/cli/NAME.{stdout ext,stderr}."""
    if not RECORD:
        return
    FIXTURES.mkdir(parents=True, exist_ok=True)
    ext = "jsonl" if name.startswith("codex") else "json"
    (FIXTURES / f"{name}.{ext}").write_text(_placeholders(run.stdout, tmp, mock))
    (FIXTURES / f"{name}.stderr").write_text(_placeholders(run.stderr, tmp, mock))
    meta = {"exit_code": run.rc, "seconds": round(run.seconds, 1), "model_requests": len(mock.model_requests())}
    (FIXTURES / f"{name}.meta.json").write_text(json.dumps(meta) + "\n")
