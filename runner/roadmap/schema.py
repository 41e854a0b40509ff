"""The roadmap format as a JSON Schema (draft 2020-12), for editors: `wvo-batch --schema > roadmap.schema.json`.

Built from the loader's own tables, so the two cannot drift apart. The schema is a help for writing
files; the loader stays the judge (it also accepts a few things the schema steers away from, such as
upper-case priorities or `dependencies:` written as a mapping).
"""

from __future__ import annotations

from runner.coding.executors import PRESETS
from runner.model import RUN_STATUSES, SKIP_STATUSES, Complexity, Priority
from runner.roadmap.fields import MAX_RETRIES, MAX_TIMEOUT_S
from runner.roadmap.fleet import SESSIONS
from runner.roadmap.loader import EXECUTOR_TIMEOUTS

_NUM = r"\d+(?:\.\d+)?"
# What runner.roadmap.loader._duration reads: seconds, 90s, 10m, 2h, 1d, 1h30m (spaces allowed), off, none.
DURATION_PATTERN = rf"^ *(?:off|none|{_NUM}|(?:{_NUM} *d)? *(?:{_NUM} *h)? *(?:{_NUM} *m)? *(?:{_NUM} *s)?) *$"
CALL_PATTERN = r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$"


def json_schema() -> dict:
    """The JSON Schema of a roadmap file."""
    statuses = sorted(s for s in RUN_STATUSES | SKIP_STATUSES if s)
    session = {"enum": list(SESSIONS), "description": "fresh: --resume never continues an earlier run's session."}
    duration = {
        "description": "Seconds, or a duration such as 90s, 10m, 2h, 1h30m, at most 7 days; `off` (or false) for none.",
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
            {"type": "string", "pattern": DURATION_PATTERN},
            {"const": False},
        ],
        "examples": ["90s", "10m", "1h30m", 600],
    }
    text = {"type": ["string", "null"]}
    name = {"type": ["string", "number", "null"]}
    env = {
        "type": ["object", "null"],
        "description": "Environment variables; numbers and booleans become text. Task keys win over defaults.",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
        "propertyNames": {"pattern": "^[^=]+$"},
    }
    priority = {"enum": [p.value for p in Priority], "description": "Default: medium."}
    argv = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    task = {
        "type": "object",
        "description": "A task. Fields not listed here are kept as data (Task.meta).",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "description": "Unique across all files of a run."},
            "title": text,
            "description": text,
            "command": {
                "description": "A string runs under /bin/sh -c; a list is an argv, run without a shell.",
                "oneOf": [{"type": "string", "minLength": 1}, argv],
            },
            "call": {"type": "string", "pattern": CALL_PATTERN, "description": "package.module:function"},
            "args": {"type": ["array", "null"], "description": "Positional arguments of `call`."},
            "kwargs": {"type": ["object", "null"], "description": "Keyword arguments of `call`."},
            "status": {
                "description": "Lower-cased; unknown statuses are warned and the task is skipped.",
                "anyOf": [{"enum": statuses}, {"type": "string"}, {"type": "null"}],
            },
            "dependencies": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "Ids of tasks (in any file of the run) that must succeed first.",
            },
            "priority": priority,
            "complexity": {"enum": [c.value for c in Complexity]},
            "complexity_score": {"type": "integer", "minimum": 1, "maximum": 10},
            "timeout": duration,
            "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
            "env": env,
            "cwd": {"type": "string", "description": "Relative paths are relative to the roadmap file's folder."},
            "role": {"type": "string", "description": "Only agents of this role take the task."},
            "affinity": name,
            "set_id": {**name, "description": "WeatherVane's name for affinity."},
            "exit_criteria": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": ["string", "object", "number"]}},
                    {"type": "null"},
                ]
            },
            "epic": name,
            "milestone": name,
            "uses": {
                "type": "array",
                "items": {"type": "string"},
                "uniqueItems": True,
                "description": "Pools of `resources:` this task leases one slot of per attempt (WVO_<NAME>).",
            },
            "session": session,
        },
        "not": {"required": ["command", "call"]},
    }
    executor = {
        "description": "How a task without `command`/`call` runs: a preset name, an executor file, an argv "
        "template, or a mapping (see docs/executors.md).",
        "anyOf": [
            {"type": "string", "examples": sorted(PRESETS) + ["configs/codex.yaml"]},
            argv,
            {
                "type": "object",
                "properties": {
                    "command": {"anyOf": [argv, {"enum": sorted(PRESETS)}]},
                    "preset": {"enum": sorted(PRESETS)},
                    "prompt": {"type": "string", "minLength": 1},
                    "models": {"type": ["object", "string"]},
                    "rate_limit": {"type": ["string", "boolean", "null"]},
                },
                "additionalProperties": False,
                "oneOf": [{"required": ["command"]}, {"required": ["preset"]}],
            },
        ],
        "examples": [["codex", "exec", "{prompt}"], "claude"],
    }
    commands = {"type": "array", "items": {"anyOf": [{"type": "string", "minLength": 1}, argv]}}
    workspace = {
        "type": "object",
        "description": "Where agent tasks work (docs/workspaces.md); setup and copy prepare each fresh worktree.",
        "properties": {
            "setup": {**commands, "description": "Commands run in each fresh worktree before the agent."},
            "copy": {"type": "array", "items": {"type": "string"},
                     "description": "Globs of gitignored files copied from the user's checkout."},
        },
    }  # fmt: skip
    defaults = {
        "type": "object",
        "description": "Settings every task of this file gets unless it sets its own.",
        "additionalProperties": False,
        "properties": {
            "timeout": duration,
            "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
            "priority": priority,
            "env": env,
            "cwd": {"type": "string"},
            "role": {"type": "string"},
            "executor": executor,
            "workspace": workspace,
            "executor_timeouts": {
                "type": "object",
                "description": "Timeouts of executor tasks without one, by complexity (score 1-3 simple, 4-6 "
                "moderate, 7-8 complex, 9-10 very_complex).",
                "additionalProperties": False,
                "properties": {key: duration for key in EXECUTOR_TIMEOUTS},
            },
        },
    }
    task["properties"]["executor"] = executor
    tasks = {"type": ["array", "null"], "items": {"$ref": "#/$defs/task"}}
    resources = {
        "type": "object",
        "description": "Named pools leased per attempt: a port range ({range: 8100-8199}) or a list of names.",
        "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
        "additionalProperties": {
            "anyOf": [
                {"type": "object", "required": ["range"], "additionalProperties": False,
                 "properties": {"range": {"type": "string", "pattern": r"^\s*\d+\s*-\s*\d+\s*$"}}},
                {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": ["string", "integer"]}},
            ]
        },
    }  # fmt: skip
    milestone = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": name, "title": text, "description": text, "status": text, "tasks": tasks},
    }
    epic = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": name,
            "title": text,
            "description": text,
            "status": text,
            "milestones": {"type": ["array", "null"], "items": {"$ref": "#/$defs/milestone"}},
            "tasks": tasks,
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "wvo-batch roadmap",
        "description": "Tasks for wvo-batch: a top-level `tasks:` list and/or `epics:` -> `milestones:` -> `tasks:`.",
        "type": "object",
        "properties": {
            "tasks": tasks,
            "epics": {"type": ["array", "null"], "items": {"$ref": "#/$defs/epic"}},
            "defaults": defaults,
            "executor": executor,
            "executors": {
                "type": "object",
                "description": "An executor per agent role, e.g. {orchestrator: claude, worker: codex, critic: claude}.",
                "additionalProperties": executor,
            },
            "resources": resources,
            "workspace": workspace,
            "session": session,
            "agents": {
                "type": "object",
                "description": "Agents per role, e.g. {worker: 4, critic: 1}.",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
        },
        "$defs": {"task": task, "milestone": milestone, "epic": epic},
    }
