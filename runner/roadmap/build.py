"""Parsed roadmap files -> Tasks: layouts (tasks:, epics -> milestones -> tasks), defaults, executor, agents.

Each task item is read by runner.roadmap.buildtask.TaskBuilder, which Builder extends. Every problem
found on the way is recorded, with its place, in the Problems it is given; nothing raises.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up

from runner.model import Task
from runner.roadmap.buildtask import TaskBuilder
from runner.roadmap.complexity import infer
from runner.roadmap.fields import (
    DEFAULTS_FIELDS,
    EPIC_FIELDS,
    EXECUTOR_TIMEOUTS,
    MAX_AGENTS,
    MAX_AGENTS_PER_ROLE,
    MAX_RETRIES,
    MILESTONE_FIELDS,
    PRIORITIES,
    TOP_FIELDS,
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


class Builder(TaskBuilder):
    """Turns parsed files into Tasks, applying each file's defaults and recording every problem."""

    def __init__(self, problems: Problems):
        super().__init__(problems)
        self.tasks: list[Task] = []
        self.total = 0  # task items seen, valid or not
        self.merged_defaults: dict = {}
        self.executor: object | None = None
        self.executor_place: str | None = None
        self.agents: dict[str, int] | None = None
        self.agents_place: tuple[str, int] | None = None  # file, line of the last `agents:` block read
        self.settings: dict = {}  # top-level `workspace:` (the first file's that has one), and the fleet's keys
        self._places: dict[str, str] = {}  # fleet key ("resources.port", "executors.worker", ...) -> file:line
        self._executor_specs: list[tuple] = []  # (spec, where, file, line): checked by finish(), with the resource names

    def rate_unrated(self) -> None:
        """Infer the complexity of tasks that give none; an executor task's timeout follows it, unless the
        file's `executor_timeouts` writes `unknown`, which then stays theirs."""
        infer(self.tasks)
        for t, table in self.unrated:
            if "unknown" not in table or table is EXECUTOR_TIMEOUTS:
                t.timeout = table.get(t.complexity.value, EXECUTOR_TIMEOUTS[t.complexity.value])
        self.unrated = []

    # -- files and layouts

    def add_file(self, path: str, doc: Doc) -> None:
        """Build the tasks and settings of one parsed file. Uses doc up: its task items and repeated keys go."""
        self.file, self.doc = path, doc
        self._folders = {}
        self._layout(doc.data)
        # YAML keeps only the last of a repeated key: a second `tasks:` would drop the first list unseen.
        for dups in doc.dup_keys.values():  # those of task mappings were reported (with the task) and popped
            for key, first_line, again in dups:
                self.p.error(f"key {given_twice(key, first_line, again)}", path, again)

    def _layout(self, root) -> None:
        path, doc = self.file, self.doc
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
        if "budget" in root:  # USD for agent CLIs (runner.manager.accounts); --budget wins
            b = root["budget"]
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= 0:
                self.p.error(f"`budget:` must be a number of USD, 0 or more; got {b!r}", path, line)
            else:
                self.settings.setdefault("budget", b)
        if "workspace" in root:
            block = self._fleet_workspace(root["workspace"], "workspace", line, self._line_of(root["workspace"], line))
            self._coding_block(block, "workspace", line)
            self.settings.setdefault("workspace", block)
        if "resources" in root:
            self._resources(root["resources"], self._line_of(root["resources"], line))
        if "executors" in root:
            self._executors(root["executors"], self._line_of(root["executors"], line))
        if "session" in root:
            self._session(root["session"], line)
        if not any(k in root for k in TOP_FIELDS):  # another tool's YAML, given by mistake: nothing of it would run
            self.p.error("none of a roadmap's keys in this file (`tasks:`, `epics:`, `defaults:`, ...): is it the "
                         "roadmap you meant?", path, line)
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
            items[i - order] = None  # the document is used up: its task items go as they are built (~20 MB per 100k)
            if task is not None:
                append(task)

    # -- one task

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
                if type(v) is int and 0 <= v <= MAX_RETRIES:
                    out["retries"] = v
                else:
                    self.p.error(f"`{where}` must be a whole number >= 0, at most {MAX_RETRIES}; got {shown(v)}", file, line)
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
                problem = os_text_problem(v) if key == "cwd" and type(v) is str else None
                if problem:
                    self.p.error(f"`{where}` {problem}", file, line)
                elif type(v) is str and v.strip():
                    out[key] = v
                else:
                    self.p.error(f"`{where}` must be text; got {v!r}", file, line)
            elif key == "executor":
                out["executor"] = v
            elif key == "workspace":
                from runner.roadmap.fleet import split_workspace

                v, fleet, problems = split_workspace(v, where)
                for message in problems:
                    self.p.error(message, file, line)
                self._coding_block(v, where, line)
                out[key] = v
                out.update(fleet)  # setup / copy: copied into each task of this file (TaskBuilder._finish_task)
            elif key == "checks":
                self._coding_block({"checks": v}, "defaults", line)
                out[key] = v
            elif key in ("review", "review_rounds"):  # copied into each task; runner.coding.review reads them
                from runner.coding.review import parse_policy

                problems: list[str] = []
                parse_policy(*((None, v) if key == "review_rounds" else (v, None)), problems, "defaults.")
                for message in problems:
                    self.p.error(message, file, line)
                out[key] = v
            elif key == "uses":  # each task of this file leases these, unless it names its own
                from runner.roadmap.fleet import parse_uses

                uses, problem = parse_uses(v)
                if problem:
                    self.p.error(f"`{where}`: {problem}", file, line)
                elif uses:
                    out["uses"] = uses
            elif key == "executor_timeouts":
                table = self._executor_timeouts(v, line)
                if table is not None:
                    out["executor_timeouts"] = table
            else:
                hint = self._suggest(key, DEFAULTS_FIELDS) if type(key) is str else None
                more = f"; did you mean `{hint}`?" if hint else f"; known keys: {', '.join(DEFAULTS_FIELDS)}"
                self.p.warn(f"unknown key `{where}` (ignored){more}", file, line)
        for key, v in out.items():
            if key in ("setup", "copy"):
                continue  # per file, not run-wide
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
        table = {k: v for k, v in EXECUTOR_TIMEOUTS.items() if k != "unknown"}  # `unknown` only when written
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
        """Checked by the executors module, which reads it at run time: a bad one is reported now, with its place
        (by finish(), once every file is read)."""
        line = self._line_of(v, line)
        if self.executor is not None and self.executor != v:
            # A run has one `executor:`; other executors are chosen by role (`executors:`) or per task.
            self.p.error(
                f"`executor` is also defined, differently, at {self.executor_place}; a run has one: give it in one "
                "file, and use `executors:` (by agent role) or a task's `executor:` for others",
                self.file, line,
            )  # fmt: skip
            return
        if self.executor is None:
            self._executor_specs.append((v, where, self.file, line))
        self.executor, self.executor_place = v, f"{self.file}:{line}"

    # -- the fleet's keys (runner.roadmap.fleet)

    def _fleet_workspace(self, raw, where: str, line: int, block_line: int):
        """A top-level `workspace:` without its setup / copy, which go to settings (the first file's that has them)."""
        from runner.roadmap.fleet import split_workspace

        rest, fleet, problems = split_workspace(raw, where)
        for message in problems:
            self.p.error(message, self.file, block_line)
        for key, value in fleet.items():
            if key not in self.settings:
                self.settings[key] = value
                if key == "copy":
                    self.settings["copy_place"] = (self.file, block_line)
        return rest

    def _resources(self, v, line: int) -> None:
        from runner.roadmap.fleet import parse_resources

        pools, problems = parse_resources(v)
        for message in problems:
            self.p.error(message, self.file, line)
        merged = self.settings.setdefault("resources", {})
        for name, pool in pools.items():
            self._fleet_once(merged, f"resources.{name}", name, pool, line)

    def _executors(self, v, line: int) -> None:
        if not isinstance(v, dict) or not v:
            self.p.error(f"`executors:` must map agent roles to executors, like {{worker: codex, critic: claude}}; got {shown(v)}", self.file, line)
            return
        merged = self.settings.setdefault("executors", {})
        for role, spec in v.items():
            if type(role) is not str or not role.strip():
                self.p.error(f"`executors:` key {shown(role)} must be a role name", self.file, line)
            elif self._fleet_once(merged, f"executors.{role}", role, spec, line):
                self._executor_specs.append((spec, f"executors.{role}", self.file, self._line_of(spec, line)))

    def _session(self, v, line: int) -> None:
        from runner.roadmap.fleet import parse_session

        session, problem = parse_session(v)
        if problem:
            self.p.error(problem, self.file, line)
        else:
            self._fleet_once(self.settings, "session", "session", session, line)

    def _fleet_once(self, table: dict, what: str, key, value, line: int) -> bool:
        """Put value in table[key] unless another file set it: the same again is fine, another is an error."""
        if key in table:
            if table[key] != value:
                self.p.error(f"`{what}` is also defined, differently, at {self._places[what]}; give it once", self.file, line)
            return False
        table[key] = value
        self._places[what] = f"{self.file}:{line}"
        return True

    def finish(self) -> None:
        """Checks that need every file read: the agents in all; the pools tasks use exist; executors may use their
        names as fields."""
        if self.agents and self.agents_place is not None:  # as --roles is checked ({}: the default pool)
            n = sum(self.agents.values())
            if n < 1:
                self.p.error("`agents:` has no agent in all; give at least one, like {worker: 4}", *self.agents_place)
            elif n > MAX_AGENTS:
                self.p.error(f"`agents:` has {n} agents in all; give at most {MAX_AGENTS}", *self.agents_place)
        pools = self.settings.get("resources") or {}
        for t in self.tasks:
            if not t.meta:  # most tasks: neither `uses` nor `executor`
                continue
            for name in t.meta.get("uses", ()):
                if name not in pools:
                    known = f"declared: {', '.join(pools)}" if pools else "no `resources:` declares any"
                    self.p.error(f"`uses`: unknown resource {name!r} ({known})", t.file, t.line, t.id)
            if t.meta.get("executor") is not None:
                self._executor_specs.append((t.meta["executor"], "executor", t.file, t.line, t.id))
        if not self._executor_specs:
            return
        from runner.coding import executors

        fields = tuple(pools)
        for spec, where, file, line, *task in self._executor_specs:
            try:
                executors.parse(spec, where=where, fields=fields)
            except Exception as e:  # ExecutorError: one line naming the setting
                self.p.error(" ".join(str(e).split()) or type(e).__name__, file, line, *task)
        self._executor_specs = []

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
            if type(role) is not str or type(n) is not int or not 0 <= n <= MAX_AGENTS_PER_ROLE:
                self.p.error(
                    f"`agents:` entry {shown(role)}: {shown(n)} must be a role name and a whole number >= 0"
                    f", at most {MAX_AGENTS_PER_ROLE}",
                    self.file,
                    line,
                )
            else:
                agents[role] = n
        self.agents = {**(self.agents or {}), **agents}
        self.agents_place = (self.file, line)

    # -- checks across tasks

    def _unknown_keys(self, mapping: dict, known: tuple, what: str, line: int) -> None:
        """Other keys are allowed and ignored; only one that looks like a misspelt known key is warned."""
        for key in mapping:
            if key in known or type(key) is not str:
                continue
            hint = self._suggest(key, known)
            if hint:
                self.p.warn(f"unknown {what} `{key}`; did you mean `{hint}`?", self.file, line)
