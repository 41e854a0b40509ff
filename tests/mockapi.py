"""A local mock of the OpenAI Responses API and the Anthropic Messages API, for running the real CLIs.

    test ──queue(scenarios)──▶ MockAPI (127.0.0.1:ephemeral, one thread per connection)
                                  │  POST /v1/responses  (codex)  ─┐ each takes the next scenario
                                  │  POST /v1/messages   (claude) ─┘ (or `default` when none is left)
                                  │  anything else: a small canned answer or 404, never a scenario
                                  ▼
                              requests: [Request(method, path, headers, body, scenario)]

Scenarios are API-neutral (`reply`, `rate_limited`, `unauthorized`, `overloaded`, `usage_limit`,
`quota_exceeded`, `stall`, `tool_call`, `write_file`); each API renders them in its own wire format, so one test reads the
same for both CLIs. Stdlib only: tests import it without installing anything.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Scenario:
    """What the mock does with one model request."""

    kind: str  # reply | tool_call | write_file | rate_limited | unauthorized | overloaded | usage_limit | quota_exceeded | stall
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    retry_after: float | None = None  # seconds, sent as the retry-after header
    resets_at: int | None = None  # epoch seconds, for usage_limit
    command: str = ""  # for tool_call: the shell command the model asks to run; for write_file: the file's name
    partial: bool = False  # for stall: send the 200 and the first event, then nothing


def reply(text: str = "done", input_tokens: int = 120, output_tokens: int = 7, cached_tokens: int = 0,
          reasoning_tokens: int = 0) -> Scenario:
    return Scenario("reply", text=text, input_tokens=input_tokens, output_tokens=output_tokens,
                    cached_tokens=cached_tokens, reasoning_tokens=reasoning_tokens)


def tool_call(command: str) -> Scenario:
    return Scenario("tool_call", command=command, input_tokens=100, output_tokens=10)


def write_file(name: str, content: str) -> Scenario:
    """The model writes `content` to `name` in the CLI's working directory through the CLI's own tool: Claude
    Code's `Write` (an absolute path under the "Primary working directory" its prompt states), Codex's
    code-mode `exec` (JavaScript calling `tools.exec_command`). Queue a `reply` after it: the CLI sends
    the tool's result back for another turn."""
    return Scenario("write_file", text=content, command=name, input_tokens=100, output_tokens=10)


def rate_limited(retry_after: float = 1) -> Scenario:
    return Scenario("rate_limited", retry_after=retry_after)


def unauthorized() -> Scenario:
    return Scenario("unauthorized")


def overloaded(retry_after: float | None = None) -> Scenario:
    return Scenario("overloaded", retry_after=retry_after)


def usage_limit(resets_at: int | None = None) -> Scenario:
    """A subscription/quota limit that resets later (default: in 3 hours)."""
    return Scenario("usage_limit", resets_at=resets_at if resets_at is not None else int(time.time()) + 3 * 3600)


def quota_exceeded() -> Scenario:
    """Out of paid credit: OpenAI's insufficient_quota 429, Anthropic's credit-balance 400."""
    return Scenario("quota_exceeded")


def stall(partial: bool = False) -> Scenario:
    return Scenario("stall", partial=partial)


@dataclass
class Request:
    """One request the mock received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON, or the raw text when it is not JSON
    scenario: Scenario | None  # the scenario it consumed; None for start-up/side calls


@dataclass
class _Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[tuple[str, dict]] | None = None  # SSE (event, data) pairs instead of body
    stall: bool = False


class MockAPI:
    """The mock server; a context manager. `base_url` has no trailing /v1."""

    def __init__(self, default: Scenario | None = None) -> None:
        self.default = default or reply()
        self.requests: list[Request] = []  # every request, in arrival order
        self._queue: list[Scenario] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()  # set on close: stalled handlers then drop their connection
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="mockapi",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *scenarios: Scenario) -> None:
        with self._lock:
            self._queue.extend(scenarios)

    def model_requests(self) -> list[Request]:
        """The requests that took a scenario (the CLI's model calls), in order."""
        with self._lock:
            return [r for r in self.requests if r.scenario is not None]

    def escapes(self) -> list[str]:
        """Hosts a CLI tried to reach through the proxy (anything but this mock)."""
        with self._lock:
            return [r.path for r in self.requests if r.method == "CONNECT" or r.path.startswith("http")]

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """True once `count` model requests have arrived; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.model_requests()) >= count:
                return True
            self._closing.wait(0.02)
        return False

    def start(self) -> "MockAPI":
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "MockAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _next(self) -> Scenario:
        with self._lock:
            return self._queue.pop(0) if self._queue else self.default

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)


# ---- OpenAI Responses API (codex) ---------------------------------------------------------------

def _openai_error(status: int, code: str, message: str, extra: dict | None = None,
                  headers: dict | None = None) -> _Response:
    err = {"type": code, "code": code, "message": message, "param": None, **(extra or {})}
    return _Response(status, {"content-type": "application/json", **(headers or {})},
                     json.dumps({"error": err}).encode())


def _openai(s: Scenario, body: dict) -> _Response:
    rid = "resp_" + uuid.uuid4().hex[:16]
    if s.kind == "rate_limited":
        return _openai_error(429, "rate_limit_exceeded", "Rate limit reached for requests. Please try again.",
                             headers={"retry-after": str(s.retry_after)})
    if s.kind == "unauthorized":
        return _openai_error(401, "invalid_api_key", "Incorrect API key provided: sk-place***. You can find "
                             "your API key at the account page.")
    if s.kind == "overloaded":
        h = {"retry-after": str(s.retry_after)} if s.retry_after is not None else {}
        return _openai_error(503, "server_is_overloaded", "The server is overloaded. Please try again later.", headers=h)
    if s.kind == "usage_limit":
        # The shape the ChatGPT backend sends; codex turns it into "You've hit your usage limit ... try again at".
        return _openai_error(429, "usage_limit_reached", "The usage limit has been reached",
                             {"plan_type": "plus", "resets_at": s.resets_at,
                              "resets_in_seconds": max(0, s.resets_at - int(time.time()))})
    if s.kind == "quota_exceeded":
        return _openai_error(429, "insufficient_quota", "You exceeded your current quota, please check your plan "
                             "and billing details.")
    created = ("response.created", {"type": "response.created", "response": {"id": rid}})
    if s.kind == "stall":
        return _Response(200, {"content-type": "text/event-stream"}, events=[created] if s.partial else None,
                         stall=True)
    usage = {"input_tokens": s.input_tokens, "input_tokens_details": {"cached_tokens": s.cached_tokens},
             "output_tokens": s.output_tokens, "output_tokens_details": {"reasoning_tokens": s.reasoning_tokens},
             "total_tokens": s.input_tokens + s.output_tokens}
    if s.kind == "tool_call":
        item = {"type": "function_call", "id": "fc_" + rid[5:], "call_id": "call_" + rid[5:], "name": "shell",
                "arguments": json.dumps({"command": ["bash", "-lc", s.command]})}
    elif s.kind == "write_file":
        cmd = f"printf '%s' {shlex.quote(s.text)} > {shlex.quote(s.command)}"
        item = {"type": "custom_tool_call", "id": "ctc_" + rid[5:], "call_id": "call_" + rid[5:], "name": "exec",
                "input": f"await tools.exec_command({{cmd: {json.dumps(cmd)}}});", "status": "completed"}
    else:
        item = {"type": "message", "role": "assistant", "id": "msg_" + rid[5:],
                "content": [{"type": "output_text", "text": s.text, "annotations": []}]}
    events = [created]
    if item["type"] == "message":
        added = {**item, "content": []}
        events += [("response.output_item.added", {"type": "response.output_item.added", "item": added}),
                   ("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                   "output_index": 0, "content_index": 0, "delta": s.text})]
    events += [
        ("response.output_item.done", {"type": "response.output_item.done", "item": item}),
        ("response.completed", {"type": "response.completed", "response": {"id": rid, "usage": usage}}),
    ]
    return _Response(200, {"content-type": "text/event-stream"}, events=events)


# ---- Anthropic Messages API (claude) ------------------------------------------------------------

def _anthropic_error(status: int, etype: str, message: str, headers: dict | None = None) -> _Response:
    body = {"type": "error", "error": {"type": etype, "message": message},
            "request_id": "req_" + uuid.uuid4().hex[:24]}
    return _Response(status, {"content-type": "application/json", "request-id": body["request_id"],
                              **(headers or {})}, json.dumps(body).encode())


def _anthropic(s: Scenario, body: dict) -> _Response:
    if s.kind == "rate_limited":
        return _anthropic_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute "
                                "rate limit", {"retry-after": str(s.retry_after)})
    if s.kind == "unauthorized":
        return _anthropic_error(401, "authentication_error", "invalid x-api-key")
    if s.kind == "overloaded":
        h = {"retry-after": str(s.retry_after)} if s.retry_after is not None else {}
        return _anthropic_error(529, "overloaded_error", "Overloaded", h)
    if s.kind == "usage_limit":
        # The unified (subscription) limiter's headers: status rejected, which window, when it resets.
        return _anthropic_error(429, "rate_limit_error", "This request would exceed your account's rate limit. "
                                "Please try again later.", {
                                    "anthropic-ratelimit-unified-status": "rejected",
                                    "anthropic-ratelimit-unified-reset": str(s.resets_at),
                                    "anthropic-ratelimit-unified-5h-reset": str(s.resets_at),
                                    "anthropic-ratelimit-unified-representative-claim": "five_hour",
                                    "anthropic-ratelimit-unified-overage-status": "rejected",
                                    "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
                                    "retry-after": str(max(0, s.resets_at - int(time.time()))),
                                })
    if s.kind == "quota_exceeded":
        return _anthropic_error(400, "invalid_request_error", "Your credit balance is too low to access the "
                                "Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.")
    mid = "msg_" + uuid.uuid4().hex[:24]
    model = body.get("model", "claude-mock") if isinstance(body, dict) else "claude-mock"
    usage = {"input_tokens": s.input_tokens, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": s.cached_tokens, "output_tokens": s.output_tokens}
    if s.kind == "tool_call":
        block = {"type": "tool_use", "id": "toolu_" + mid[4:], "name": "Bash",
                 "input": {"command": s.command, "description": "run a command"}}
        stop = "tool_use"
    elif s.kind == "write_file":
        # the last one stated: a resumed session also carries the folder of its earlier turns
        where = re.findall(r"Primary working directory: ([^\s\\]+)", json.dumps(body))
        path = f"{where[-1] if where else '.'}/{s.command}"
        block = {"type": "tool_use", "id": "toolu_" + mid[4:], "name": "Write",
                 "input": {"file_path": path, "content": s.text}}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": s.text}
        stop = "end_turn"
    if not (isinstance(body, dict) and body.get("stream")):
        msg = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [block],
               "stop_reason": stop, "stop_sequence": None, "usage": usage}
        return _Response(200, {"content-type": "application/json"}, json.dumps(msg).encode())
    start = ("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})
    if s.kind == "stall":
        return _Response(200, {"content-type": "text/event-stream"}, events=[start] if s.partial else None,
                         stall=True)
    if block["type"] == "text":
        first = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": s.text}
    else:
        first = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    events = [
        start,
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": first}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": s.output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _Response(200, {"content-type": "text/event-stream", "request-id": "req_" + mid[4:]}, events=events)


def _side_call(method: str, path: str, body: Any) -> _Response:
    """Calls a CLI makes besides the model call; answered so start-up is quick, never a scenario."""
    if path.endswith("/messages/count_tokens"):
        return _Response(200, {"content-type": "application/json"}, b'{"input_tokens": 100}')
    if method == "GET" and path.rstrip("/").endswith("/models"):
        return _Response(200, {"content-type": "application/json"}, b'{"object": "list", "data": [], "models": []}')
    return _Response(404, {"content-type": "application/json"},
                     json.dumps({"error": {"type": "not_found_error", "message": f"mock: no {method} {path}"}}).encode())


def _make_handler(api: MockAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the test reads api.requests instead
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            path = self.path.split("?", 1)[0]
            scenario = None
            if self.command == "POST" and path.endswith("/responses"):
                scenario = api._next()
                resp = _openai(scenario, body if isinstance(body, dict) else {})
            elif self.command == "POST" and path.endswith("/messages"):
                scenario = api._next()
                resp = _anthropic(scenario, body if isinstance(body, dict) else {})
            else:
                resp = _side_call(self.command, path, body)
            api._record(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, scenario))
            self._send(resp)

        def _send(self, resp: _Response) -> None:
            if resp.stall and resp.events is None:
                api._closing.wait()  # accepted, never answered
                self.close_connection = True
                return
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            if resp.events is None:
                self.send_header("content-length", str(len(resp.body)))
                self.end_headers()
                self.wfile.write(resp.body)
                return
            # A stream: no length, the connection closes at its end.
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            for event, data in resp.events:
                self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            if resp.stall:
                api._closing.wait()

        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

        def do_CONNECT(self) -> None:
            # The mock is also the CLIs' HTTPS_PROXY: a request for any other host lands here, is
            # recorded (see MockAPI.escapes) and refused, so a test sees it instead of the network.
            api._record(Request("CONNECT", self.path, {k.lower(): v for k, v in self.headers.items()}, None, None))
            self.send_response(403)
            self.send_header("content-length", "0")
            self.end_headers()
            self.close_connection = True

    return Handler
