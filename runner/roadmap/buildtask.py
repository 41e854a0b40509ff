"""One task mapping -> a Task: each field read and checked, the file's defaults applied.

TaskBuilder is the part of runner.roadmap.build.Builder that reads a single task; Builder walks the files
and their layouts and calls TaskBuilder._task for each task item. Every problem is recorded, with its
place, in the Problems it is given; nothing raises.
"""

from __future__ import annotations

import os
TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up

from runner.model import RUN_STATUSES, SKIP_STATUSES, Task, new_task
from runner.roadmap.fields import (
    CODING_TASK_FIELDS,
    CALL,
    COMPLEXITIES,
    EXECUTOR_TIMEOUTS,
    FIELD_ALIASES,
    MAX_RETRIES,
    PRIORITIES,
    STATUS_WORDS,
    TASK_FIELDS,
    complexity_of,
    criterion_text,
    given_twice,
    kind_of,
    os_text_problem,
    parse_duration,
    parse_env,
    shown,
)

if TYPE_CHECKING:
    from runner.roadmap.check import Problems
    from runner.roadmap.yamldoc import Doc

_UNSET = object()  # not in a cache


_CODING_FIELDS = frozenset(CODING_TASK_FIELDS)  # one C-level test per task, not six lookups
# With none of these in a task, nor defaults in its file, _finish_fully has one thing to do (an executor task's
# timeout): one C-level test per task instead of its ten.
_FINISH_KEYS = _CODING_FIELDS | {"complexity_score", "cwd", "call", "args", "kwargs"}


class TaskBuilder:
    """Reads task mappings into Tasks, applying the current file's defaults and recording every problem."""

    def __init__(self, problems: Problems):
        self.p = problems
        self.first_seen: dict[str, Task] = {}  # task id -> its first definition
        self.mapping_deps: set[str] = set()  # ids of tasks whose `dependencies:` was a mapping
        self._suggestions: dict[tuple, str | None] = {}
        # per file, set by Builder.add_file
        self.file = ""
        self.doc: Doc | None = None
        self.defaults: dict = {}
        self._folders: dict[str, str] = {}  # cwd as written -> folder, for the current file
        self.unrated: list[tuple[Task, dict]] = []  # executor tasks with no complexity, with their timeouts table

    def _task(self, raw: dict, line: int | None, epic, milestone, order: int) -> Task | None:
        file = self.file
        tid = raw.get("id")
        if type(tid) is not str or not tid.strip():
            self._no_id(tid, line)
            return None
        t = new_task(tid, file, line, order, epic, milestone)
        first = self.first_seen.setdefault(tid, t)
        if first is not t:
            self.p.error(f"duplicate task id (first defined at {first.place()})", file, line, tid)
        if self.doc.dup_keys:
            dups = self.doc.dup_keys.pop(id(raw), ())  # the rest are reported by Builder.add_file
            for key, first_line, again in dups:
                self.p.error(f"field {given_twice(key, first_line, again)}", file, again, tid)
        handlers, statuses, priorities = _FIELD_HANDLERS, STATUS_WORDS, PRIORITIES
        for key, value in raw.items():
            if type(value) is str:  # the usual values, read here without a call
                if key == "id":
                    continue
                if key == "title" or key == "description":
                    setattr(t, key, value)
                    continue
                if key == "command" and value and not value.isspace():
                    t.command = value
                    continue
                if key == "status" and value in statuses:
                    t.status = value
                    continue
                if key == "priority" and value in priorities:
                    t.priority = priorities[value]
                    continue
            elif type(value) is list and (key == "dependencies" or key == "command") and value:
                for item in value:  # the usual lists, task ids or argv: f_command's and f_dependencies' valid case
                    if type(item) is not str:
                        break
                else:
                    if key == "command":
                        t.command = value
                    elif len(value) < 2 or len(set(value)) == len(value):
                        t.dependencies = value
                    else:
                        t.dependencies = list(dict.fromkeys(value))
                    continue
            handler = handlers.get(key)
            if handler is not None:
                handler(self, t, value)
            elif key != "id":
                t.meta[key] = value
                if type(key) is str:
                    hint = self._suggest(key, TASK_FIELDS)
                    if hint:
                        self.p.warn(f"unknown field `{key}` (kept as data); did you mean `{hint}`?", file, line, tid)
        self._finish_task(t, raw)
        return t

    def _no_id(self, tid, line: int | None) -> None:
        file, err = self.file, self.p.error
        if tid is None or tid == "":
            err("task has no `id:`", file, line)
        elif isinstance(tid, str):
            err("task id is blank", file, line)
        elif isinstance(tid, (int, float)) and not isinstance(tid, bool):
            err(f"task id must be a string; write id: '{tid}'", file, line)
        else:
            err(f"task id must be a string, not {kind_of(tid)}", file, line)

    def _finish_task(self, t: Task, raw: dict) -> None:
        """The file's defaults, the coding keys, and the checks across a task's fields."""
        if self.defaults or not self.doc.plain_text or not _FINISH_KEYS.isdisjoint(raw):
            self._finish_fully(t, raw)
        elif t.command is None and raw.get("timeout") is None:  # what _finish_fully does for such a task
            t.timeout = self._executor_timeout(t)

    def _finish_fully(self, t: Task, raw: dict) -> None:
        if not self.doc.plain_text:
            self._os_check(t)
        d = self.defaults
        get = raw.get
        if d:  # None in the task means "not set" too
            if get("timeout") is None and "timeout" in d:
                t.timeout = d["timeout"]
            if get("retries") is None and "retries" in d:
                t.retries = d["retries"]
            if get("priority") is None and "priority" in d:
                t.priority = d["priority"]
            if get("cwd") is None and "cwd" in d:
                t.cwd = d["cwd"]
            if get("role") is None and "role" in d:
                t.role = d["role"]
            if d.get("env"):
                t.env = {**d["env"], **t.env}
            for key in ("checks", "review", "review_rounds"):
                if key in d and key not in raw:
                    t.meta[key] = d[key]
            for key in ("setup", "copy", "uses"):  # a file's set-up, copies and leases, unless the task has its own
                if key in d and key not in t.meta:
                    t.meta[key] = d[key]
        if not _CODING_FIELDS.isdisjoint(raw):
            self._coding_task(t, raw)
        if t.complexity_score is not None:
            derived = complexity_of(t.complexity_score)
            if t.complexity is None:
                t.complexity = derived
            elif t.complexity is not derived:
                self.p.warn(
                    f"complexity `{t.complexity.value}` disagrees with complexity_score {t.complexity_score} "
                    f"({derived.value}); `complexity` is used for routing, the score for the timeout",
                    t.file, t.line, t.id,
                )  # fmt: skip
        if t.command is None and t.call is None and get("timeout") is None and "timeout" not in d:
            t.timeout = self._executor_timeout(t)
        if t.cwd is not None:
            folder = self._folders.get(t.cwd)
            if folder is None:
                folder = self._folders[t.cwd] = os.path.join(os.path.dirname(t.file), os.path.expanduser(t.cwd))
            t.cwd = folder
        if t.call is not None:
            if t.command is not None:
                self.p.error("has both `command` and `call`; a task runs one of them", t.file, t.line, t.id)
        elif t.args or t.kwargs:
            self.p.warn("`args`/`kwargs` only apply to `call:` tasks (ignored)", t.file, t.line, t.id)

    def _os_check(self, t: Task) -> None:
        """What an agent hands the OS must be something it can take: libyaml's escapes can write a NUL."""
        fields = [("id", t.id), ("cwd", t.cwd)]
        if type(t.command) is str:
            fields.append(("command", t.command))
        elif t.command:
            fields += [(f"command[{i}]", arg) for i, arg in enumerate(t.command)]
        if t.command is None and t.call is None:  # an executor's prompt, one argv element, is made of these
            fields += [("title", t.title), ("description", t.description)]
        for name, value in fields:
            problem = os_text_problem(value) if type(value) is str else None
            if problem:
                self._bad(t, f"`{name}` {problem}")

    def _executor_timeout(self, t: Task) -> float:
        table = self.defaults.get("executor_timeouts") or EXECUTOR_TIMEOUTS
        if t.complexity is None and t.complexity_score is None:
            self.unrated.append((t, table))  # rated once every task is read (runner.roadmap.complexity)
        score = t.complexity_score
        if score is not None:
            bucket = (
                "simple" if score <= 3 else "moderate" if score <= 6 else "complex" if score <= 8 else "very_complex"
            )
        else:
            bucket = t.complexity.value if t.complexity else "unknown"
        return table.get(bucket, EXECUTOR_TIMEOUTS[bucket])

    def _bad(self, t: Task, message: str) -> None:
        self.p.error(message, t.file, t.line, t.id)

    def f_title(self, t: Task, v) -> None:
        t.title = v if type(v) is str else self._text(t, "title", v)

    def f_description(self, t: Task, v) -> None:
        t.description = v if type(v) is str else self._text(t, "description", v)

    def _text(self, t: Task, name: str, v) -> str:
        if type(v) is str:
            return v
        if v is None:
            return ""
        if isinstance(v, (dict, list)):
            self._bad(t, f"`{name}` must be text, not {kind_of(v)}")
            return ""
        return str(v)

    def f_command(self, t: Task, v) -> None:
        if type(v) is str:
            if not v or v.isspace():
                self._bad(t, "`command` is empty")
            t.command = v
        elif type(v) is list and v:
            for bad in v:
                if type(bad) is not str:
                    hint = f"; quote it: '{bad}'" if isinstance(bad, (int, float)) else ""
                    self._bad(t, f"`command` list items must be strings; {bad!r} is {kind_of(bad)}{hint}")
                    return
            t.command = v
        elif v == []:
            self._bad(t, "`command` is an empty list")
        else:
            self._bad(t, f"`command` must be a string (run by the shell) or a list of strings (argv), not {kind_of(v)}")

    def f_call(self, t: Task, v) -> None:
        if type(v) is not str or not CALL.match(v):
            self._bad(t, f"`call` must look like 'package.module:function', got {v!r}")
            return
        t.call = v

    def f_args(self, t: Task, v) -> None:
        if isinstance(v, list):
            t.args = v
        elif v is not None:
            self._bad(t, f"`args` must be a list, not {kind_of(v)}")

    def f_kwargs(self, t: Task, v) -> None:
        if isinstance(v, dict) and all(type(k) is str for k in v):
            t.kwargs = v
        elif v is not None:
            self._bad(t, f"`kwargs` must be a mapping with string keys, not {kind_of(v)}")

    def f_status(self, t: Task, v) -> None:
        s = STATUS_WORDS.get(v) if type(v) is str else None
        if s is not None:
            t.status = s
            return
        if v is None:
            return
        if isinstance(v, (dict, list)):
            self._bad(t, f"`status` must be text, not {kind_of(v)}")
            return
        s = "_".join(str(v).lower().replace("-", " ").split())
        t.status = s
        if s not in RUN_STATUSES and s not in SKIP_STATUSES:
            self.p.warn(f"unknown status '{s}' (task skipped)", t.file, t.line, t.id)

    def f_dependencies(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is list:
            for bad in v:
                if type(bad) is not str:
                    hint = f"; task ids are strings: write '{bad}'" if isinstance(bad, (int, float)) else ""
                    self._bad(t, f"`dependencies` items must be task ids (strings); {bad!r} is {kind_of(bad)}{hint}")
                    return
            t.dependencies = v if len(v) < 2 or len(set(v)) == len(v) else list(dict.fromkeys(v))
        elif type(v) is dict and all(type(k) is str for k in v):
            # Seen in the wild as `dependencies: {depends_on: [...]}`: its keys are read as task ids, and the
            # unknown-dependency warning that follows says so.
            t.dependencies = list(v)
            self.mapping_deps.add(t.id)
        else:
            self._bad(t, f"`dependencies` must be a list of task ids, not {kind_of(v)}")

    def f_priority(self, t: Task, v) -> None:
        if v is None:
            return
        p = PRIORITIES.get(v) or PRIORITIES.get(v.strip().lower()) if type(v) is str else None
        if p is None:
            self._bad(t, f"`priority` must be one of {', '.join(PRIORITIES)}; got {v!r}")
        else:
            t.priority = p

    def f_complexity(self, t: Task, v) -> None:
        if v is None:
            return
        c = COMPLEXITIES.get(v.strip().lower()) if type(v) is str else None
        if c is None:
            self._bad(
                t, f"`complexity` must be one of {', '.join(COMPLEXITIES)} (or give complexity_score 1-10); got {v!r}"
            )
        else:
            t.complexity = c

    def f_complexity_score(self, t: Task, v) -> None:
        if type(v) is int and 1 <= v <= 10:
            t.complexity_score = v
        elif v is not None:
            self._bad(t, f"`complexity_score` must be a whole number from 1 to 10; got {v!r}")

    def f_timeout(self, t: Task, v) -> None:
        if v is None:
            return
        seconds, problem = parse_duration(v)
        if problem:
            self._bad(t, f"`timeout` {problem}")
        else:
            t.timeout = seconds

    def f_retries(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is int and 0 <= v <= MAX_RETRIES:
            t.retries = v
        else:
            self._bad(t, f"`retries` must be a whole number >= 0, at most {MAX_RETRIES}; got {shown(v)}")

    def f_env(self, t: Task, v) -> None:
        env, problem = parse_env(v)
        if problem:
            self._bad(t, f"`env` {problem}")
        else:
            t.env = env

    def f_cwd(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is str and v:
            t.cwd = v
        else:
            self._bad(t, f"`cwd` must be a folder path (text); got {v!r}")

    def f_role(self, t: Task, v) -> None:
        if type(v) is str and v.strip():
            t.role = v
        elif v is not None:
            self._bad(t, f"`role` must be a name (text); got {v!r}")

    def f_affinity(self, t: Task, v) -> None:
        if v is None:
            return
        if isinstance(v, (dict, list)):
            self._bad(t, f"`affinity` must be a name, not {kind_of(v)}")
        else:
            t.affinity = str(v)  # wins over `set_id`, whichever comes first

    def f_set_id(self, t: Task, v) -> None:
        if v is None:
            return
        if isinstance(v, (dict, list)):
            self._bad(t, f"`set_id` must be a name, not {kind_of(v)}")
        elif t.affinity is None:
            t.affinity = str(v)

    def f_exit_criteria(self, t: Task, v) -> None:
        if v is None:
            return
        if type(v) is str:
            t.exit_criteria = [v]
        elif type(v) is list:
            t.exit_criteria = [c if type(c) is str else criterion_text(c) for c in v]
        else:
            self._bad(t, f"`exit_criteria` must be a list of text, not {kind_of(v)}")

    def f_uses(self, t: Task, v) -> None:
        from runner.roadmap.fleet import parse_uses

        uses, problem = parse_uses(v)
        if problem:
            self._bad(t, problem)
        else:  # [] too: no lease, whatever the file's defaults say; the pools are checked once every file is read
            t.meta["uses"] = uses

    def f_executor(self, t: Task, v) -> None:
        if v is not None:
            t.meta["executor"] = v  # checked once every file is read, with the resource names (Builder.finish)

    def f_session(self, t: Task, v) -> None:
        from runner.roadmap.fleet import parse_session

        session, problem = parse_session(v)
        if problem:
            self._bad(t, problem)
        else:
            t.meta["session"] = session

    def f_epic(self, t: Task, v) -> None:
        if t.epic is None and v is not None and not isinstance(v, (dict, list)):
            t.epic = str(v)
        else:
            t.meta["epic"] = v

    def f_milestone(self, t: Task, v) -> None:
        if t.milestone is None and v is not None and not isinstance(v, (dict, list)):
            t.milestone = str(v)
        else:
            t.meta["milestone"] = v


    def _coding_block(self, raw, where: str, line: int) -> None:
        from runner.coding.settings import parse_block

        problems: list[str] = []
        parse_block(raw, where, problems)
        for message in problems:
            self.p.error(message, self.file, line)

    def _coding_task(self, t: Task, raw: dict) -> None:
        from runner.coding.settings import TASK_WORKSPACE_KEYS, _text_list, parse_block

        problems: list[str] = []
        for key in ("files", "checks"):
            if key in raw:
                _text_list(raw[key], key, problems)
        if "allow_empty" in raw and not isinstance(raw["allow_empty"], bool):
            problems.append(f"`allow_empty` must be true or false; got {raw['allow_empty']!r}")
        if "workspace" in raw:
            from runner.roadmap.fleet import split_workspace

            rest, fleet, more = split_workspace(raw["workspace"], "workspace")
            problems += more
            if fleet or rest is not raw["workspace"]:
                t.meta["workspace"] = rest  # what runner.coding.settings reads; setup / copy are the fleet's
                t.meta.update(fleet)
            parse_block(rest, "workspace", problems, TASK_WORKSPACE_KEYS)
        if "review" in raw or "review_rounds" in raw:
            from runner.coding.review import parse_policy

            parse_policy(raw.get("review"), raw.get("review_rounds"), problems)
        for message in problems:
            self.p.error(message, t.file, t.line, t.id)

    def _suggest(self, key: str, known: tuple) -> str | None:
        cached = self._suggestions.get((key, known), _UNSET)
        if cached is not _UNSET:
            return cached
        low = key.lower()
        hint = FIELD_ALIASES.get(low) if known is TASK_FIELDS else None
        if hint is None and low != key and low in known:
            hint = low
        if hint is None:
            import difflib  # only for a misspelt key: not at start-up

            close = difflib.get_close_matches(low, known, n=1, cutoff=0.8)
            hint = close[0] if close else None
        self._suggestions[(key, known)] = hint
        return hint



_FIELD_HANDLERS = {
    name: getattr(TaskBuilder, f"f_{name}") for name in TASK_FIELDS if hasattr(TaskBuilder, f"f_{name}")
}
