"""Agent-CLI executors: turn a task without `command` into an argv from a template.

Fields (`{id}`, `{title}`, `{prompt}`, `{model}`, `{role}`, ...) are substituted inside argv elements,
never through a shell: a title like `$(rm -rf ~)` reaches the agent CLI as that text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from runner.model import Task

_FIELD = re.compile(r"\{(\w+)\}")

DEFAULT_PROMPT = (
    "You are working on task {id}: {title}\n\n{description}\n\nExit criteria:\n{exit_criteria}\n\n"
    "Do the work in this repository, then stop."
)

PRESETS: dict[str, list[str]] = {
    "codex": ["codex", "exec", "--model", "{model}", "{prompt}"],
    "claude": ["claude", "-p", "{prompt}", "--model", "{model}"],
}

DEFAULT_RATE_LIMIT = r"\b429\b|rate[ -]?limit"


@dataclass(frozen=True)
class Executor:
    command: tuple[str, ...]
    prompt: str = DEFAULT_PROMPT
    models: dict = field(default_factory=dict)  # role -> model, or role -> {complexity -> model}, "default"
    rate_limit: str = DEFAULT_RATE_LIMIT


def parse(spec) -> Executor | None:
    """An executor from the roadmap's `executor:` (argv list, preset name, or mapping); ValueError if malformed."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in PRESETS:
            return Executor(tuple(PRESETS[spec]))
        raise ValueError(f"executor: unknown preset {spec!r} (known: {', '.join(PRESETS)}); or give an argv list")
    if isinstance(spec, list):
        if not spec or not all(isinstance(x, str) for x in spec):
            raise ValueError("executor: an argv template is a non-empty list of strings")
        return Executor(tuple(spec))
    if isinstance(spec, dict):
        base = parse(spec.get("command") if "command" in spec else spec.get("preset"))
        if base is None:
            raise ValueError("executor: a mapping needs `command:` (an argv list) or `preset:`")
        prompt = spec.get("prompt", DEFAULT_PROMPT)
        models = spec.get("models", {})
        if not isinstance(prompt, str):
            raise ValueError("executor.prompt: must be a string template")
        if not isinstance(models, dict):
            raise ValueError("executor.models: must be a mapping of role -> model")
        return Executor(base.command, prompt, models, spec.get("rate_limit", DEFAULT_RATE_LIMIT))
    raise ValueError("executor: must be an argv list, a preset name, or a mapping with `command:`")


def model_for(executor: Executor, role: str, complexity: str | None) -> str:
    entry = executor.models.get(role, executor.models.get("default", ""))
    if isinstance(entry, dict):
        entry = entry.get(complexity or "", entry.get("default", ""))
    return str(entry)


def task_fields(task: Task, role: str, executor: Executor) -> dict[str, str]:
    complexity = task.complexity.value if task.complexity else ""
    values = {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "exit_criteria": "\n".join(f"- {c}" for c in task.exit_criteria),
        "role": role,
        "complexity": complexity,
        "priority": task.priority.value,
        "epic": task.epic or "",
        "milestone": task.milestone or "",
    }
    for key, value in task.meta.items():
        if isinstance(value, (str, int, float)) and key not in values:
            values[key] = str(value)
    values["model"] = model_for(executor, role, complexity)
    values["prompt"] = _fill(executor.prompt, values)
    return values


def _fill(template: str, values: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def build_argv(task: Task, role: str, executor: Executor) -> tuple[str, ...]:
    """The argv for one attempt: each template element filled in, one element each."""
    values = task_fields(task, role, executor)
    return tuple(_fill(part, values) for part in executor.command)
