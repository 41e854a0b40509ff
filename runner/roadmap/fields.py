"""The roadmap format's field names and defaults, and the checks on single values (durations, env, ...)."""

from __future__ import annotations

import os
import re

from runner.model import RUN_STATUSES, SKIP_STATUSES, Complexity, Priority

# Seconds an executor (agent CLI) task gets when neither it nor `defaults:` sets a timeout.
EXECUTOR_TIMEOUTS = {"simple": 600.0, "moderate": 1200.0, "complex": 1800.0, "very_complex": 2700.0, "unknown": 1200.0}

TASK_FIELDS = (
    "id", "title", "command", "call", "args", "kwargs", "status", "dependencies", "priority", "complexity",
    "complexity_score", "timeout", "retries", "env", "cwd", "role", "affinity", "set_id", "description",
    "exit_criteria", "epic", "milestone", "uses", "executor", "session",
)  # fmt: skip
DEFAULTS_FIELDS = (
    "timeout", "retries", "priority", "env", "cwd", "executor", "role", "executor_timeouts", "workspace", "checks",
    "review", "review_rounds", "uses",
)  # fmt: skip
TOP_FIELDS = ("tasks", "epics", "defaults", "executor", "agents", "workspace", "budget", "resources", "executors", "session")
# Task fields of the fleet (runner.roadmap.fleet), kept in Task.meta: `uses`, `executor`, `session`, and
# `setup` / `copy` taken out of the task's (or its file's defaults') `workspace:`.
FLEET_TASK_FIELDS = ("uses", "executor", "session")
# Task fields of the coding layer, kept in Task.meta and read by runner.coding.settings.
CODING_TASK_FIELDS = ("files", "allow_empty", "checks", "workspace", "review", "review_rounds")
EPIC_FIELDS = ("id", "title", "description", "status", "milestones", "tasks")
MILESTONE_FIELDS = ("id", "title", "description", "status", "tasks")
# Names people write for a field that this format spells differently; ignoring them would change what runs.
FIELD_ALIASES = {
    "depends_on": "dependencies", "depends": "dependencies", "deps": "dependencies", "requires": "dependencies",
    "needs": "dependencies", "prerequisites": "dependencies", "blocked_by": "dependencies",
    "cmd": "command", "run": "command", "script": "command",
    "timeout_s": "timeout", "timeout_seconds": "timeout", "time_limit": "timeout",
    "retry": "retries", "max_retries": "retries", "environment": "env",
    "workdir": "cwd", "working_dir": "cwd", "working_directory": "cwd", "prio": "priority",
}  # fmt: skip

PRIORITIES = {p.value: p for p in Priority}
STATUS_WORDS = {s: s for s in RUN_STATUSES | SKIP_STATUSES}  # statuses already in normal form
COMPLEXITIES = {c.value: c for c in Complexity}
CALL = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?\Z")
_NUMBER = re.compile(r"\d+(?:\.\d+)?\Z")
# The longest timeout: an agent waits on its task in polls of at most 2**31-1 ms (~24.8 days); a week is
# the documented limit well inside that. Longer is an error at load time, not an OverflowError in an agent.
MAX_TIMEOUT_S = 7 * 86400.0
MAX_RETRIES = 10_000
MAX_AGENTS_PER_ROLE = 4096  # `agents:` counts; each agent is an OS process
MAX_AGENTS = 1024  # `agents:` in all, as for --agents and --roles (runner.cli.options.MAX_AGENTS)
_OVER_LIMIT = f"must be at most 7 days (7d, {MAX_TIMEOUT_S:g} s; `timeout: off` for none)"


def parse_duration(v) -> tuple[float | None, str | None]:
    """A timeout as written -> (seconds or None for `off`, problem)."""
    if v is False:
        return None, None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v > MAX_TIMEOUT_S:  # before float(): a 400-digit int does not convert
            return None, f"{_OVER_LIMIT}; got {shown(v)}"
        if v > 0:  # not NaN either
            return float(v), None
        return None, f"must be a positive number of seconds (use `timeout: off` for none); got {shown(v)}"
    if type(v) is str:
        s = v.replace(" ", "").lower()
        if s in ("off", "none"):
            return None, None
        if _NUMBER.match(s):
            seconds = float(s)
        else:
            m = _DURATION.match(s) if s else None
            if m is None or not any(m.groups()):
                return None, f"must be seconds or a duration like 90s, 10m, 2h, 1h30m; got {shown(v)}"
            d, h, mi, se = (float(g) if g else 0.0 for g in m.groups())
            seconds = d * 86400 + h * 3600 + mi * 60 + se
        if seconds > MAX_TIMEOUT_S:  # also inf, from hundreds of digits
            return None, f"{_OVER_LIMIT}; got {shown(v)}"
        if seconds > 0:
            return seconds, None
        return None, f"must be positive (use `timeout: off` for none); got {shown(v)}"
    return None, f"must be seconds or a duration like 90s, 10m, 2h, 1h30m, not {kind_of(v)}"


def parse_env(v) -> tuple[dict[str, str], str | None]:
    if v is None:
        return {}, None
    if not isinstance(v, dict):
        return {}, f"must be a mapping of NAME: value, not {kind_of(v)}"
    env = {}
    for k, val in v.items():
        if type(k) is not str or not k or "=" in k:
            return {}, f"name {shown(k)} is not a valid environment variable name (text, not empty, no `=`)"
        problem = os_text_problem(k)
        if problem:
            return {}, f"name {shown(k)} {problem}"
        if type(val) is str:
            problem = os_text_problem(val)
            if problem:
                return {}, f"value of {k} {problem}"
            env[k] = val
        elif isinstance(val, bool):
            env[k] = "true" if val else "false"
        elif isinstance(val, (int, float)):
            env[k] = str(val)
        else:
            return {}, f"value of {k} must be text or a number, not {kind_of(val)} (quote it)"
    return env, None


def os_text_problem(s: str) -> str | None:
    """Why the OS cannot take s as an argument, environment entry or path (NUL, an unencodable character), or None."""
    if "\x00" in s:
        return "contains a NUL byte (\\0), which no program, environment or path can take"
    if not s.isascii():
        try:
            os.fsencode(s)
        except UnicodeEncodeError as e:
            return f"contains U+{ord(s[e.start]):04X}, which cannot be encoded for the OS"
    return None


def shown(v, limit: int = 60) -> str:
    """repr(v), cut short: a bad value is quoted in a one-line message."""
    text = repr(v)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def given_twice(key, first_line: int, again: int) -> str:
    """The message for a key that a mapping gives twice; YAML would keep only the last one."""
    where = f"lines {first_line} and {again}" if first_line != again else f"both on line {again}"
    return f"`{key}` is given twice ({where}); give it once"


def complexity_of(score: int) -> Complexity:
    return Complexity.SIMPLE if score <= 3 else Complexity.MODERATE if score <= 6 else Complexity.COMPLEX


def criterion_text(c) -> str:
    if isinstance(c, dict):
        return "; ".join(f"{k}: {v}" for k, v in c.items())
    return "" if c is None else str(c)


def kind_of(v) -> str:
    if v is None:
        return "empty (null)"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "text"
    if isinstance(v, (int, float)):
        return "a number"
    return f"a {type(v).__name__}"
