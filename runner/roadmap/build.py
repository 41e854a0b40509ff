"""Parsed roadmap files -> Tasks: layouts (tasks:, epics -> milestones -> tasks), defaults, executor, agents.

Every problem found on the way is recorded, with its place, in the Problems it is given; nothing raises.
"""

from __future__ import annotations

import difflib
import os
TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up

from runner.model import RUN_STATUSES, SKIP_STATUSES, Task
from runner.roadmap.fields import (
    CALL,
    CODING_TASK_FIELDS,
    COMPLEXITIES,
    DEFAULTS_FIELDS,
    EPIC_FIELDS,
    EXECUTOR_TIMEOUTS,
    FIELD_ALIASES,
    MILESTONE_FIELDS,
    PRIORITIES,
    STATUS_WORDS,
    TASK_FIELDS,
    TOP_FIELDS,
    complexity_of,
    criterion_text,
    kind_of,
    parse_duration,
    parse_env,
)

if TYPE_CHECKING:
    from runner.roadmap.check import Problems
    from runner.roadmap.yamlfast import Doc

_UNSET = object()  # not in a cache


class Builder:
    """Turns parsed files into Tasks, applying each file's defaults and recording every problem."""

    def __init__(self, problems: Problems):
        self.p = problems
        self.tasks: list[Task] = []
        self.total = 0  # task items seen, valid or not
        self.first_seen: dict[str, Task] = {}  # task id -> its first definition
        self.merged_defaults: dict = {}
        self.executor: object | None = None
        self.executor_place: str | None = None
        self.agents: dict[str, int] | None = None
        self.settings: dict = {}  # top-level `workspace:` (the first file's that has one)
        self.mapping_deps: set[str] = set()  # ids of tasks whose `dependencies:` was a mapping
        self._suggestions: dict[tuple, str | None] = {}
        # per file, set by add_file
        self.file = ""
        self.doc: Doc | None = None
        self.defaults: dict = {}
        self._folders: dict[str, str] = {}  # cwd as written -> folder, for the current file

    # -- files and layouts

    def add_file(self, path: str, doc: Doc) -> None:
        self.file, self.doc = path, doc
        self._folders = {}
        root = doc.data
        if not isinstance(root, dict):
            self.p.error(f"the file must be a mapping with `tasks:` or `epics:`, not {kind_of(root)}", path, 1)
            return
        line = doc.line(root) or 1
        self._unknown_keys(root, TOP_FIELDS, "top-level key", line)
        self.defaults = self._defaults(root.get("defaults"), line)
        if "executor" in root:
            self._executor(root["executor"], line, "executor")
        elif "executor" in self.defaults:
            self._executor(self.defaults["executor"], line, "defaults.executor")
        if "agents" in root:
            self._agents(root["agents"], line)
        if "workspace" in root:
            self._coding_block(root["workspace"], "workspace", line)
            self.settings.setdefault("workspace", root["workspace"])
        if not any(k in root for k in TOP_FIELDS):
            self.p.warn("no `tasks:` or `epics:` in this file", path, line)
        for key, value in root.items():
            if key == "tasks":
                self._task_list(value, line, None, None, "`tasks:`")
            elif key == "epics":
                self._epics(value, line)

    def _epics(self, epics, line: int) -> None:
        if epics is None:
            return
        if not isinstance(epics, list):
            self.p.error(f"`epics:` must be a list of epics, not {kind_of(epics)}", self.file, line)
            return
        for i, epic in enumerate(epics):
            eline = self.doc.item_line(epics, i, line)
            if not isinstance(epic, dict):
                self.p.error(
                    f"epic #{i + 1} must be a mapping with `id:` and `milestones:`, not {kind_of(epic)}",
                    self.file,
                    eline,
                )
                continue
            eline = self.doc.line(epic) or eline
            eid = self._group_id(epic, "epic", i, eline)
            self._unknown_keys(epic, EPIC_FIELDS, "epic key", eline)
            for key, value in epic.items():  # in the order written: that is the roadmap order
                if key == "tasks":
                    self._task_list(value, eline, eid, None, f"`tasks:` of epic {eid}")
                elif key == "milestones":
                    self._milestones(value, eid, eline)

    def _milestones(self, milestones, eid: str | None, eline: int) -> None:
        if milestones is None:
            return
        if not isinstance(milestones, list):
            self.p.error(f"`milestones:` of epic {eid} must be a list, not {kind_of(milestones)}", self.file, eline)
            return
        for j, ms in enumerate(milestones):
            mline = self.doc.item_line(milestones, j, eline)
            if not isinstance(ms, dict):
                self.p.error(f"milestone #{j + 1} of epic {eid} must be a mapping, not {kind_of(ms)}", self.file, mline)
                continue
            mline = self.doc.line(ms) or mline
            mid = self._group_id(ms, "milestone", j, mline)
            self._unknown_keys(ms, MILESTONE_FIELDS, "milestone key", mline)
            self._task_list(ms.get("tasks"), mline, eid, mid, f"`tasks:` of milestone {mid}")

    def _group_id(self, group: dict, kind: str, i: int, line: int) -> str | None:
        gid = group.get("id")
        if gid is None or isinstance(gid, (dict, list)) or gid == "":
            self.p.error(f"{kind} #{i + 1} has no `id:`", self.file, line)
            return None
        return str(gid)

    def _task_list(self, items, line: int, epic: str | None, milestone: str | None, what: str) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            self.p.error(f"{what} must be a list of tasks, not {kind_of(items)}", self.file, line)
            return
        doc = self.doc
        map_lines = doc.map_lines
        append = self.tasks.append
        order = self.total
        self.total += len(items)
        for i, raw in enumerate(items, order):
            if type(raw) is not dict:
                tline = doc.item_line(items, i - order, line)
                self.p.error(f"task #{i - order + 1} of {what} must be a mapping, not {kind_of(raw)}", self.file, tline)
                continue
            task = self._task(raw, map_lines.get(id(raw)) or doc.item_line(items, i - order, line), epic, milestone, i)
            if task is not None:
                append(task)

    # -- one task

    def _task(self, raw: dict, line: int | None, epic, milestone, order: int) -> Task | None:
        file, err = self.file, self.p.error
        tid = raw.get("id")
        if type(tid) is not str or not tid.strip():
            if tid is None or tid == "":
                err("task has no `id:`", file, line)
            elif isinstance(tid, str):
                err("task id is blank", file, line)
            elif isinstance(tid, (int, float)) and not isinstance(tid, bool):
                err(f"task id must be a string; write id: '{tid}'", file, line)
            else:
                err(f"task id must be a string, not {kind_of(tid)}", file, line)
            return None
        t = Task(id=tid, file=file, line=line, order=order, epic=epic, milestone=milestone)
        first = self.first_seen.setdefault(tid, t)
        if first is not t:
            err(f"duplicate task id (first defined at {first.place()})", file, line, tid)
        if self.doc.dup_keys:
            for key, kline in self.doc.dup_keys.get(id(raw), ()):
                self.p.warn(
                    f"field `{key}` is given twice (again at line {kline}); the last one is used", file, line, tid
                )
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

    def _finish_task(self, t: Task, raw: dict) -> None:
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
        if "checks" in d and "checks" not in raw:
            t.meta["checks"] = d["checks"]
        if any(k in raw for k in CODING_TASK_FIELDS):
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

    def _executor_timeout(self, t: Task) -> float:
        table = self.defaults.get("executor_timeouts") or EXECUTOR_TIMEOUTS
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
        if type(v) is int and v >= 0:
            t.retries = v
        else:
            self._bad(t, f"`retries` must be a whole number >= 0; got {v!r}")

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

    # -- file-level settings

    def _defaults(self, d, line: int) -> dict:
        file = self.file
        if d is None:
            return {}
        if not isinstance(d, dict):
            self.p.error(f"`defaults:` must be a mapping, not {kind_of(d)}", file, line)
            return {}
        line = self.doc.line(d) or line
        out: dict = {}
        for key, v in d.items():
            where = f"defaults.{key}"
            if key == "timeout":
                seconds, problem = parse_duration(v)
                if problem:
                    self.p.error(f"`{where}` {problem}", file, line)
                else:
                    out["timeout"] = seconds
            elif key == "retries":
                if type(v) is int and v >= 0:
                    out["retries"] = v
                else:
                    self.p.error(f"`{where}` must be a whole number >= 0; got {v!r}", file, line)
            elif key == "priority":
                p = PRIORITIES.get(v.strip().lower()) if type(v) is str else None
                if p is None:
                    self.p.error(f"`{where}` must be one of {', '.join(PRIORITIES)}; got {v!r}", file, line)
                else:
                    out["priority"] = p
            elif key == "env":
                env, problem = parse_env(v)
                if problem:
                    self.p.error(f"`{where}` {problem}", file, line)
                else:
                    out["env"] = env
            elif key in ("cwd", "role"):
                if type(v) is str and v.strip():
                    out[key] = v
                else:
                    self.p.error(f"`{where}` must be text; got {v!r}", file, line)
            elif key == "executor":
                out["executor"] = v
            elif key == "workspace":
                self._coding_block(v, where, line)
                out[key] = v
            elif key == "checks":
                self._coding_block({"checks": v}, "defaults", line)
                out[key] = v
            elif key == "executor_timeouts":
                table = self._executor_timeouts(v, line)
                if table is not None:
                    out["executor_timeouts"] = table
            else:
                hint = self._suggest(key, DEFAULTS_FIELDS) if type(key) is str else None
                more = f"; did you mean `{hint}`?" if hint else f"; known keys: {', '.join(DEFAULTS_FIELDS)}"
                self.p.warn(f"unknown key `{where}` (ignored){more}", file, line)
        for key, v in out.items():
            if key == "env":
                self.merged_defaults["env"] = {**self.merged_defaults.get("env", {}), **v}
            else:
                self.merged_defaults[key] = v
        return out

    def _executor_timeouts(self, v, line: int) -> dict | None:
        if not isinstance(v, dict):
            self.p.error(
                f"`defaults.executor_timeouts` must be a mapping like {{simple: 10m}}, not {kind_of(v)}",
                self.file,
                line,
            )
            return None
        table = dict(EXECUTOR_TIMEOUTS)
        ok = True
        for key, value in v.items():
            if key not in EXECUTOR_TIMEOUTS:
                self.p.error(
                    f"`defaults.executor_timeouts` key {key!r} must be one of {', '.join(EXECUTOR_TIMEOUTS)}",
                    self.file,
                    line,
                )
                ok = False
                continue
            seconds, problem = parse_duration(value)
            if problem:
                self.p.error(f"`defaults.executor_timeouts.{key}` {problem}", self.file, line)
                ok = False
            else:
                table[key] = seconds
        return table if ok else None

    def _executor(self, v, line: int, where: str) -> None:
        """Checked by the executors module, which reads it at run time: a bad one is reported now, with its place."""
        from runner.coding import executors

        line = self._line_of(v, line)
        try:
            executors.parse(v, where=where)
        except Exception as e:  # ExecutorError: one line naming the setting
            self.p.error(" ".join(str(e).split()) or type(e).__name__, self.file, line)
            return
        if self.executor is not None and self.executor != v:
            self.p.warn(f"`executor` is also defined at {self.executor_place}; this one is used", self.file, line)
        self.executor, self.executor_place = v, f"{self.file}:{line}"

    def _line_of(self, v, default: int) -> int:
        if isinstance(v, dict):
            return self.doc.line(v) or default
        if isinstance(v, list) and v:
            return self.doc.item_line(v, 0, default) or default
        return default

    def _agents(self, v, line: int) -> None:
        line = self._line_of(v, line)
        if not isinstance(v, dict):
            self.p.error(
                f"`agents:` must map roles to agent counts, like {{worker: 4}}, not {kind_of(v)}", self.file, line
            )
            return
        agents = {}
        for role, n in v.items():
            if type(role) is not str or type(n) is not int or n < 0:
                self.p.error(
                    f"`agents:` entry {role!r}: {n!r} must be a role name and a whole number >= 0", self.file, line
                )
            else:
                agents[role] = n
        self.agents = {**(self.agents or {}), **agents}

    # -- checks across tasks

    def _unknown_keys(self, mapping: dict, known: tuple, what: str, line: int) -> None:
        """Other keys are allowed and ignored; only one that looks like a misspelt known key is warned."""
        for key in mapping:
            if key in known or type(key) is not str:
                continue
            hint = self._suggest(key, known)
            if hint:
                self.p.warn(f"unknown {what} `{key}`; did you mean `{hint}`?", self.file, line)

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
            parse_block(raw["workspace"], "workspace", problems, TASK_WORKSPACE_KEYS)
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
            close = difflib.get_close_matches(low, known, n=1, cutoff=0.8)
            hint = close[0] if close else None
        self._suggestions[(key, known)] = hint
        return hint


_FIELD_HANDLERS = {name: getattr(Builder, f"f_{name}") for name in TASK_FIELDS if hasattr(Builder, f"f_{name}")}
