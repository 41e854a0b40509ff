"""Agent-CLI executors: turn a task without `command` into an argv from a template.

    executor: (roadmap / defaults / --executor) ──parse()──▶ Executor (argv template, prompt template,
                                                               models table, rate-limit pattern)
    Task + the agent's role ──task_fields()──▶ {id, title, prompt, model, ...} ──build_argv()──▶ argv

Fields are substituted inside argv elements, once, never through a shell and never re-expanded: a title
like `$(rm -rf ~)` or `{model}` reaches the agent CLI as that text, in the element it was placed in.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import field, replace

from runner.errors import UsageError
from runner.model import record, Complexity, Task

# `{name}` or `{meta.name}`; any other brace is literal text.
_FIELD = re.compile(r"\{(\w+(?:\.\w+)?)\}")

# Every field a template may use, in the order the docs list them.
FIELDS: dict[str, str] = {
    "id": "the task's id",
    "title": "its title",
    "description": "its description",
    "exit_criteria": "its exit criteria, one '- ' line each ('- none listed' when there are none)",
    "prompt": "the prompt template, filled in (argv only)",
    "model": "the model for this agent's role and the task's complexity (the models table)",
    "role": "the role of the agent that runs the attempt",
    "complexity": "simple / moderate / complex (from complexity_score when only that is set)",
    "complexity_score": "the roadmap's complexity_score, as written ('' when absent)",
    "priority": "critical / high / medium / low",
    "epic": "id of the enclosing epic ('' when none)",
    "milestone": "id of the enclosing milestone ('' when none)",
    "affinity": "the task's affinity or set_id ('' when none)",
    "roadmap_dir": "absolute directory of the roadmap file the task came from",
    "feedback": "why the earlier attempts failed (check output, conflicts, errors), one block each; '' on the first",
}
_META = "meta."  # `{meta.KEY}`: any other field of the task as written in the roadmap ('' when absent)

DEFAULT_PROMPT = (
    "Task {id}: {title}\n\n{description}\n\nExit criteria:\n{exit_criteria}\n\n"
    "Work in the current directory until every exit criterion is met, then stop.\n\n{feedback}"
)

# Structured output in both: codex's JSONL events, claude's stream-json (events as they happen, so the
# stall watchdog sees it working; `--verbose` is required with it in print mode). Options before the
# prompt: a session is resumed by `resume <id>` in front of codex's prompt, `--resume <id>` after claude's.
PRESETS: dict[str, list[str]] = {
    "codex": ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write", "--model", "{model}",
              "{prompt}"],
    "claude": ["claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose", "--model", "{model}",
               "--permission-mode", "acceptEdits"],
}
PRESET_OUTPUT = {"codex": "codex-json", "claude": "claude-json"}
OUTPUTS = ("codex-json", "claude-json", "text")
STALL_TIMEOUT = 600.0  # seconds without a structured event before an agent-CLI attempt is killed

DIFF_CAP = 60_000  # bytes of diff in a critic's prompt (runner.coding.review)
DEFAULT_REVIEW_PROMPT = (
    "You are the critic. Review the work done for task {id}: {title}\n\n{description}\n\n"
    "Exit criteria:\n{exit_criteria}\n\n"
    "These checks ran on it and passed:\n{checks}\n\n"
    f"The change, as a diff against the commit the task started from (at most {DIFF_CAP} bytes; a longer diff "
    "is cut and ends with a note listing every changed file). The current directory is a read-only copy of "
    "the result: read files there if the diff is not enough, but change nothing.\n\n{diff}\n\n"
    "Decide whether the change meets every exit criterion and is correct. End your answer with exactly one "
    "line, either\nVERDICT: APPROVE\nor\nVERDICT: REJECT <what must change, in one line>"
)

# Fields a review prompt may use beyond the executor's (runner.coding.executors.FIELDS).
REVIEW_FIELDS = {
    "diff": f"the task branch against its start commit (at most {DIFF_CAP} bytes; says so when cut)",
    "checks": "the checks that ran and passed, one '- ' line each ('- none' when the task has none)",
}

DEFAULT_RATE_LIMIT = r"\b429\b|rate[ _-]?limit|too many requests"

_KEYS = ("command", "preset", "prompt", "models", "rate_limit", "review_prompt", "escalate", "output", "prices",
         "stall_timeout", "accounts")
_COMPLEXITIES = tuple(c.value for c in Complexity) + ("default",)
_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class ExecutorError(UsageError, ValueError):
    """A malformed `executor:`; the message is one line that names the setting."""


@record(frozen=True)
class Executor:
    command: tuple[str, ...]
    prompt: str = DEFAULT_PROMPT
    models: dict = field(default_factory=dict)  # role | "default" -> model, or -> {complexity | "default" -> model}
    rate_limit: str | None = DEFAULT_RATE_LIMIT  # regex searched in a failed attempt's output; None: never
    source: str = ""  # preset name or file it came from, for messages
    review_prompt: str = DEFAULT_REVIEW_PROMPT  # a critic's prompt (runner.coding.review)
    escalate: tuple[str, ...] = ()  # model by attempt: attempt k uses entry k, the last repeats; over `models`
    output: str | None = None  # codex-json | claude-json | text; None: a plain command (regex only)
    prices: dict = field(default_factory=dict)  # model -> pricing.Price, for a CLI that reports no cost
    stall_timeout: float | None = STALL_TIMEOUT  # seconds without a structured event; None: no watchdog
    accounts: tuple[str, ...] = ()  # config homes (CODEX_HOME / CLAUDE_CONFIG_DIR), spread over agents

    @property
    def program(self) -> str:
        return self.command[0]


def parse(spec, base_dir: str | None = None, where: str = "executor", fields: tuple[str, ...] = ()) -> Executor | None:
    """An Executor from `executor:` as written (argv list, preset name, file, or mapping; an Executor as is).

    fields: more template fields allowed beyond FIELDS: the roadmap's resource names (`{port}`, `{db}`).
    Raises ExecutorError (a ValueError and a UsageError) with a one-line message that starts with `where`
    and names the setting. A file name is read relative to base_dir (default: the current directory).
    """
    if spec is None or isinstance(spec, Executor):
        return spec
    return _parse(spec, where, base_dir, allow_file=True, fields=tuple(fields))


def _parse(spec, where: str, base_dir: str | None, allow_file: bool, fields: tuple[str, ...] = ()) -> Executor:
    if isinstance(spec, str):
        if spec in PRESETS:
            return Executor(tuple(PRESETS[spec]), source=spec, output=PRESET_OUTPUT[spec])
        if allow_file and (spec.endswith(_FILE_SUFFIXES) or os.sep in spec):
            return _load_file(spec, where, base_dir, fields)
        raise ExecutorError(
            f"{where}: unknown preset {spec!r} (presets: {', '.join(PRESETS)}); "
            "or give an argv list, a mapping with `command:`, or a .yaml/.json file"
        )
    if isinstance(spec, (list, tuple)):
        return Executor(_command(spec, where, fields))
    if isinstance(spec, dict):
        return _parse_mapping(spec, where, base_dir, fields)
    raise ExecutorError(
        f"{where}: must be an argv list, a preset name ({', '.join(PRESETS)}), a file, or a mapping with `command:`;"
        f" got {type(spec).__name__}"
    )


def _parse_mapping(spec: dict, where: str, base_dir: str | None, fields: tuple[str, ...] = ()) -> Executor:
    unknown = [str(k) for k in spec if k not in _KEYS]
    if unknown:
        raise ExecutorError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(_KEYS)})")
    if ("command" in spec) == ("preset" in spec):
        raise ExecutorError(f"{where}: give exactly one of `command:` (an argv list or preset name) and `preset:`")
    key = "command" if "command" in spec else "preset"
    if key == "preset" and spec[key] not in PRESETS:
        raise ExecutorError(f"{where}.preset: unknown preset {spec[key]!r} (presets: {', '.join(PRESETS)})")
    base = _parse(spec[key], f"{where}.{key}", base_dir, allow_file=False, fields=fields)
    prompt = spec.get("prompt", DEFAULT_PROMPT)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ExecutorError(f"{where}.prompt: must be a non-empty string template")
    _check_fields(prompt, f"{where}.prompt", allow_prompt=False, extra=dict.fromkeys(fields, ""))
    models = _models(spec.get("models", {}), f"{where}.models")
    review_prompt = spec.get("review_prompt", DEFAULT_REVIEW_PROMPT)
    if not isinstance(review_prompt, str) or not review_prompt.strip():
        raise ExecutorError(f"{where}.review_prompt: must be a non-empty string template")
    _check_fields(review_prompt, f"{where}.review_prompt", allow_prompt=False,
                  extra={**REVIEW_FIELDS, **dict.fromkeys(fields, "")})
    escalate = spec.get("escalate", [])
    if not isinstance(escalate, list) or not all(isinstance(m, str) and m.strip() for m in escalate):
        raise ExecutorError(f"{where}.escalate: must be a list of model names, like [haiku, sonnet, opus]")
    rate_limit = spec.get("rate_limit", DEFAULT_RATE_LIMIT)
    if rate_limit is False or rate_limit is None or rate_limit == "":
        rate_limit = None
    elif not isinstance(rate_limit, str):
        raise ExecutorError(f"{where}.rate_limit: must be a regular expression (a string), or false to turn it off")
    else:
        try:
            re.compile(rate_limit.encode())
        except re.error as exc:
            raise ExecutorError(f"{where}.rate_limit: not a valid regular expression ({exc})") from None
    output = spec.get("output", base.output)
    if output is not None and output not in OUTPUTS:
        raise ExecutorError(f"{where}.output: unknown format {output!r} (known: {', '.join(OUTPUTS)})")
    from runner.coding.pricing import parse_prices

    prices = parse_prices(spec.get("prices"), f"{where}.prices")
    stall = spec.get("stall_timeout", STALL_TIMEOUT)
    if stall is False or stall is None:
        stall = None
    elif isinstance(stall, bool) or not isinstance(stall, (int, float)) or not stall > 0:
        raise ExecutorError(f"{where}.stall_timeout: must be a positive number of seconds, or false; got {stall!r}")
    accounts = spec.get("accounts", ())
    if isinstance(accounts, str):
        accounts = [accounts]
    if not isinstance(accounts, (list, tuple)) or not all(isinstance(a, str) and a.strip() for a in accounts):
        raise ExecutorError(f"{where}.accounts: must be a list of config directories (CODEX_HOME / CLAUDE_CONFIG_DIR)")
    accounts = tuple(a if os.path.isabs(a) or base_dir is None else os.path.join(base_dir, a) for a in accounts)
    return Executor(
        base.command, prompt, models, rate_limit, base.source, review_prompt=review_prompt, escalate=tuple(escalate),
        output=output, prices=prices, stall_timeout=None if stall is None else float(stall), accounts=accounts,
    )


def _command(spec, where: str, fields: tuple[str, ...] = ()) -> tuple[str, ...]:
    if not spec:
        raise ExecutorError(f"{where}: an argv template is a non-empty list of strings")
    argv = []
    for i, part in enumerate(spec):
        if isinstance(part, bool) or not isinstance(part, (str, int, float)):
            raise ExecutorError(f"{where}[{i}]: argv elements are strings; got {type(part).__name__}")
        argv.append(str(part))
        _check_fields(argv[-1], f"{where}[{i}]", allow_prompt=True, extra=dict.fromkeys(fields, ""))
    if not argv[0].strip():
        raise ExecutorError(f"{where}[0]: the program to run is empty")
    return tuple(argv)


def _check_fields(template: str, where: str, allow_prompt: bool, extra: dict | None = None) -> None:
    for m in _FIELD.finditer(template):
        name = m.group(1)
        if name.startswith(_META) and len(name) > len(_META):
            continue
        if name == "prompt" and not allow_prompt:
            raise ExecutorError(f"{where}: the prompt template cannot contain {{prompt}}")
        if name not in FIELDS and name not in (extra or {}):
            raise ExecutorError(
                f"{where}: unknown template field {{{name}}} (known: {', '.join([*FIELDS, *(extra or {})])}, and meta.KEY for any "
                "other field of the task)"
            )


def _models(spec, where: str) -> dict:
    """Validate a models table: role -> model, or role -> {complexity -> model}; 'default' at either level."""
    if isinstance(spec, str) and spec.strip():
        return {"default": spec}
    if not isinstance(spec, dict):
        raise ExecutorError(f"{where}: must be a mapping of role -> model (or role -> {{complexity -> model}})")
    table: dict = {}
    for role, entry in spec.items():
        if not isinstance(role, str) or not role:
            raise ExecutorError(f"{where}: a role name must be a string; got {role!r}")
        if isinstance(entry, str) and entry.strip():
            table[role] = entry
        elif isinstance(entry, dict):
            by_complexity = {}
            for level, model in entry.items():
                if level not in _COMPLEXITIES:
                    raise ExecutorError(
                        f"{where}.{role}: unknown complexity {level!r} (known: {', '.join(_COMPLEXITIES)})"
                    )
                if not isinstance(model, str) or not model.strip():
                    raise ExecutorError(f"{where}.{role}.{level}: a model name must be a non-empty string")
                by_complexity[level] = model
            table[role] = by_complexity
        else:
            raise ExecutorError(
                f"{where}.{role}: must be a model name or a mapping of complexity "
                f"({', '.join(_COMPLEXITIES)}) -> model; got {entry!r}"
            )
    return table


_MAX_FILE_BYTES = 1 << 20  # an executor file: a few lines of YAML or JSON


def _load_file(name: str, where: str, base_dir: str | None, fields: tuple[str, ...] = ()) -> Executor:
    path = name if os.path.isabs(name) or base_dir is None else os.path.join(base_dir, name)
    try:  # as a roadmap is read: a FIFO would block for ever, a device be read without end
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ExecutorError(f"{where}: executor file {name!r} is not a regular file")
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ExecutorError(f"{where}: cannot read executor file {name!r} ({exc.strerror})") from None
    if len(data) > _MAX_FILE_BYTES:
        raise ExecutorError(f"{where}: executor file {name!r} is too large (at most {_MAX_FILE_BYTES} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ExecutorError(f"{where}: executor file {name!r} is not UTF-8 text") from None
    import yaml  # lazily: only an executor file needs it here

    try:
        if name.endswith(".json"):
            doc = json.loads(text)
        else:
            doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (ValueError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ExecutorError(f"{where}: {name} does not parse ({first})") from None
    if isinstance(doc, dict) and "executor" in doc:
        doc = doc["executor"]
    if doc is None:
        raise ExecutorError(f"{where}: {name} is empty")
    executor = _parse(doc, f"{where} ({name})", base_dir, allow_file=False, fields=fields)
    return replace(executor, source=name)


def complexity_of(task: Task) -> str:
    """simple / moderate / complex; from complexity_score (1-10) when only that is set; '' when neither."""
    if task.complexity is not None:
        return task.complexity.value
    if task.complexity_score is None:
        return ""
    if task.complexity_score <= 3:
        return Complexity.SIMPLE.value
    if task.complexity_score <= 6:
        return Complexity.MODERATE.value
    return Complexity.COMPLEX.value


def model_for(executor: Executor, role: str, complexity: str | None) -> str:
    """The model from the table: the role's entry, else 'default'; in a mapping, the complexity, else 'default'."""
    for key in (role, "default"):
        entry = executor.models.get(key)
        if isinstance(entry, str):
            return entry
        if isinstance(entry, dict):
            model = entry.get(complexity or "") or entry.get("default")
            if model:
                return model
    return ""


def model_of(task: Task, role: str, executor: Executor, attempt: int = 1) -> str:
    """The model of one attempt: the task's own `model:`, else the `escalate:` ladder's entry, else the table."""
    own = task.meta.get("model")
    if isinstance(own, str) and own.strip():
        return own
    if executor.escalate:
        return executor.escalate[min(max(attempt, 1), len(executor.escalate)) - 1]
    return model_for(executor, role, complexity_of(task))


def task_fields(task: Task, role: str, executor: Executor, feedback: str = "", attempt: int = 1,
                review: dict[str, str] | None = None, leased: dict[str, str] | None = None) -> dict[str, str]:
    """Every template field's value for one attempt of task on an agent of role.

    With `review` ({diff}, {checks}), {prompt} is the executor's review prompt filled in: a critic's attempt.
    leased: the attempt's slots ({port}, {db}: runner.manager.leases), over any field of the same name.
    """
    complexity = complexity_of(task)
    values = {
        "id": task.id,
        "title": task.title or "",
        "description": (task.description or "").strip(),
        "exit_criteria": _criteria(task.exit_criteria),
        "role": role,
        "complexity": complexity,
        "complexity_score": "" if task.complexity_score is None else str(task.complexity_score),
        "priority": task.priority.value,
        "epic": task.epic or "",
        "milestone": task.milestone or "",
        "affinity": task.affinity or "",
        "roadmap_dir": os.path.dirname(os.path.abspath(task.file)) if task.file else os.getcwd(),
        "feedback": feedback,
    }
    for key, value in task.meta.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            values[_META + str(key)] = str(value)
    values["model"] = model_of(task, role, executor, attempt)
    if leased:
        values.update(leased)
    template = executor.prompt if review is None else executor.review_prompt
    values["prompt"] = re.sub(r"\n{3,}", "\n\n", _fill(template, {**values, **(review or {})})).strip()
    return values


def _criteria(items) -> str:
    lines = []
    for item in items or []:
        if isinstance(item, dict):
            item = ", ".join(f"{k}: {v}" for k, v in item.items())
        lines.append(f"- {item}")
    return "\n".join(lines) or "- none listed"


def _fill(template: str, values: dict[str, str]) -> str:
    """One pass: text that a value brings in is never looked at again."""
    return _FIELD.sub(lambda m: values.get(m.group(1), ""), template)


def build_argv(
    task: Task, role: str, executor: Executor, feedback: str = "", attempt: int = 1,
    review: dict[str, str] | None = None, session: str | None = None, prompt: str | None = None,
    leased: dict[str, str] | None = None,
) -> tuple[str, ...]:
    """The argv for one attempt: each template element filled in, one element each.

    With no model configured, an element that is exactly `{model}` is left out, and so is the option just
    before it (`--model`), so the CLI uses its own default model instead of an empty name.

    session: resume that CLI session (codex: `resume <id>` before the element that is exactly `{prompt}`;
    claude: `--resume <id>` at the end), with `prompt` (the feedback, say) in place of the filled-in
    template. A task's `max_turns` / `max_cost` become claude's `--max-turns` / `--max-budget-usd`.
    """
    values = task_fields(task, role, executor, feedback, attempt, review, leased)
    if prompt is not None:
        values["prompt"] = prompt
    argv: list[str] = []
    resumed = False
    for i, part in enumerate(executor.command):
        if part == "{model}" and not values["model"]:
            option = executor.command[i - 1] if i > 1 else ""
            if option.startswith("-") and not _FIELD.search(option):
                argv.pop()
            continue
        if session and executor.output == "codex-json" and part == "{prompt}" and not resumed:
            argv += ["resume", session]
            resumed = True
        argv.append(_fill(part, values))
    if executor.output == "claude-json":
        limits = task_limits(task)
        if limits.get("max_turns"):
            argv += ["--max-turns", str(limits["max_turns"])]
        if limits.get("max_cost"):
            argv += ["--max-budget-usd", f"{limits['max_cost']:g}"]
        if session:
            argv += ["--resume", session]
    return tuple(argv)


def task_limits(task: Task) -> dict:
    """A task's own `max_turns` (int) and `max_cost` (USD) when it sets them; ignored when malformed
    (the loader keeps them in meta as written)."""
    out = {}
    turns, cost = task.meta.get("max_turns"), task.meta.get("max_cost")
    if isinstance(turns, int) and not isinstance(turns, bool) and turns > 0:
        out["max_turns"] = turns
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost > 0:
        out["max_cost"] = float(cost)
    return out


@record(frozen=True)
class Choice:
    """The executor one attempt runs with, and why that one."""

    name: str  # the executor's name in this run: what models, prices, accounts and limit pauses are keyed by
    executor: Executor
    why: str  # "task" (its own `executor:`), "role <name>" (`executors:`), "run" (the run's `executor:`)


class Fleet:
    """The executors of one run: the run's, one per agent role (`executors:`), and tasks' own (`executor:`).

    A task's executor is its own `executor:`, else the one for the role of the agent that takes it, else the
    run's. The same setting written in several places is one executor: one name, one set of accounts, one
    limit pause. Raises ExecutorError (naming the place) for a malformed one.
    """

    def __init__(self, run=None, by_role: dict | None = None, own: dict | None = None, fields: tuple[str, ...] = ()):
        self.executors: dict[str, Executor] = {}  # name -> executor, in the order first met
        self._named: dict[str, str] = {}  # the setting as written (canonical text) -> name
        self._fields = tuple(fields)
        self.run = self._add(run, "executor") if run is not None else None  # name of the run's executor
        self.roles = {role: self._add(spec, f"executors.{role}") for role, spec in (by_role or {}).items()}
        self.own = {tid: self._add(spec, f"task {tid}: executor") for tid, spec in (own or {}).items()}

    def _add(self, spec, where: str) -> str:
        key = repr(spec) if isinstance(spec, Executor) else json.dumps(spec, sort_keys=True, default=str)
        name = self._named.get(key)
        if name is not None:
            return name
        executor = parse(spec, where=where, fields=self._fields)
        base = os.path.basename(executor.source or executor.program) or "executor"
        name, n = base, 2
        while name in self.executors:  # two settings of one program (other accounts, other models)
            name, n = f"{base}-{n}", n + 1
        self.executors[name] = executor
        self._named[key] = name
        return name

    def __bool__(self) -> bool:
        return bool(self.executors)

    def default(self) -> Executor | None:
        """The run's executor, else the first one met (what a setting that knows one executor reads)."""
        if self.run is not None:
            return self.executors[self.run]
        return next(iter(self.executors.values()), None)

    def choose(self, task: Task, role: str) -> Choice | None:
        """The executor for an attempt of task on an agent of role; None when the run has none for it."""
        name = self.own.get(task.id)
        if name is not None:
            return Choice(name, self.executors[name], "task")
        name = self.roles.get(role)
        if name is not None:
            return Choice(name, self.executors[name], f"role {role}")
        if self.run is not None:
            return Choice(self.run, self.executors[self.run], "run")
        return None

    def reviewer(self, task: Task) -> Choice | None:
        """The executor of a critic's review of task: `executors: {critic: ...}`, else the run's, else the task's own."""
        name = self.roles.get("critic")
        if name is not None:
            return Choice(name, self.executors[name], "role critic")
        if self.run is not None:
            return Choice(self.run, self.executors[self.run], "run")
        name = self.own.get(task.id)
        if name is not None:
            return Choice(name, self.executors[name], "task")
        name = next(iter(self.executors), None)  # only roles other than critic have one: the first
        return Choice(name, self.executors[name], "run") if name is not None else None

    def add_task(self, task: Task) -> None:
        """A task that joined the run mid-way: its own `executor:` (ExecutorError for a malformed one)."""
        spec = task.meta.get("executor")
        if spec is None:
            self.own.pop(task.id, None)
        else:
            self.own[task.id] = self._add(spec, f"task {task.id}: executor")

    def planned(self, task: Task, role: str | None) -> dict:
        """For --check: {executor, why} when known before an agent takes the task (its own, or the role it
        prefers), else {by_role: {role: name}, otherwise: the run's name or None}."""
        if task.id in self.own:
            return {"executor": self.own[task.id], "why": "task"}
        if role is not None and role in self.roles:
            return {"executor": self.roles[role], "why": f"role {role}"}
        if not self.roles:
            return {"executor": self.run, "why": "run"}
        return {"by_role": dict(self.roles), "otherwise": self.run}

    def missing(self, task: Task, roles) -> list[str]:
        """The roles among `roles` whose agents would have no executor for task."""
        if task.id in self.own or self.run is not None:
            return []
        return [r for r in roles if r not in self.roles]
