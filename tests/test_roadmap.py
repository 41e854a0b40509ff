"""Roadmap loading and validation: layouts, fields, defaults, every error and warning with its place."""

from __future__ import annotations

import hashlib
import os
import textwrap
import time
from pathlib import Path

import pytest

from runner.roadmap import loader as rm
from runner.errors import RoadmapError
from runner.model import Complexity, Priority
from runner.roadmap.loader import CheckResult, format_plan, load, load_roadmap, plan


@pytest.fixture
def write(tmp_path):
    """write(name, yaml_text) -> path of a new file holding the dedented text."""

    def _write(name: str, text: str | bytes) -> str:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return str(path)

    return _write


def only(problems, needle: str):
    """The one problem whose message contains needle."""
    found = [p for p in problems if needle in p.message]
    assert len(found) == 1, f"expected one problem with {needle!r}, got {[str(p) for p in problems]}"
    return found[0]


def at(problem, path: str, line: int | None, task: str | None = None) -> None:
    """The problem names its place: file:line and task id, as it prints."""
    assert problem.file == path
    assert problem.line == line, str(problem)
    assert problem.task == task
    text = str(problem)
    assert text.startswith(f"{path}:{line}" if line else path)
    if task:
        assert f"task {task}:" in text


def tasks_by_id(result: CheckResult) -> dict:
    return {t.id: t for t in result.tasks}


# ----------------------------------------------------------------------------- layouts and fields


def test_flat_layout_gives_tasks_with_file_line_and_order(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - id: build
            command: make
          - id: test
            command: [pytest, -q]
            dependencies: [build]
        """,
    )
    result = load([path])
    assert result.errors == [] and result.warnings == []
    build, test = result.roadmap.tasks
    assert (build.id, build.file, build.line, build.order, build.command) == ("build", path, 2, 0, "make")
    assert (test.line, test.order, test.command, test.dependencies) == (4, 1, ["pytest", "-q"], ["build"])
    assert result.tasks_total == 2


def test_epics_layout_and_flat_tasks_mixed_in_one_file(write):
    path = write(
        "r.yaml",
        """
        epics:
          - id: E1
            milestones:
              - id: M1
                tasks:
                  - id: a
                  - id: b
              - id: M2
                tasks:
                  - id: c
          - id: E2
            tasks:
              - id: d
        tasks:
          - id: e
        """,
    )
    result = load([path])
    assert result.valid
    got = [(t.id, t.epic, t.milestone, t.order, t.line) for t in result.roadmap.tasks]
    assert got == [
        ("a", "E1", "M1", 0, 6),
        ("b", "E1", "M1", 1, 7),
        ("c", "E1", "M2", 2, 10),
        ("d", "E2", None, 3, 13),
        ("e", None, None, 4, 15),
    ]


def test_epic_tasks_and_milestones_keep_the_written_order(write):
    path = write(
        "r.yaml",
        "epics:\n  - id: E\n    tasks: [{id: first}]\n    milestones:\n      - id: M\n        tasks: [{id: second}]\n"
        "  - id: F\n    milestones:\n      - id: N\n        tasks: [{id: third}]\n    tasks: [{id: fourth}]\n",
    )
    assert [(t.id, t.order) for t in load([path]).roadmap.tasks] == [
        ("first", 0), ("second", 1), ("third", 2), ("fourth", 3),
    ]  # fmt: skip


def test_flat_task_may_name_its_epic(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    epic: W1\n")
    assert load([path]).roadmap.tasks[0].epic == "W1"


def test_order_runs_across_files_and_dependencies_may_cross_files(write):
    a = write("a.yaml", "tasks:\n  - id: one\n  - id: two\n")
    b = write("b.yaml", "tasks:\n  - id: three\n    dependencies: [one]\n")
    result = load([a, b])
    assert result.valid and result.warnings == []
    assert [(t.id, t.order, t.file) for t in result.roadmap.tasks] == [("one", 0, a), ("two", 1, a), ("three", 2, b)]


@pytest.mark.parametrize("big", [False, True])  # a big roadmap is hashed by OpenSSL's sha256
def test_content_hash_is_sha256_over_the_files_bytes_in_order(write, big):
    a = write("a.yaml", "tasks:\n  - id: one\n" + "".join(f"  - id: t{i}\n" for i in range(80_000 if big else 0)))
    b = write("b.yaml", "tasks:\n  - id: two\n")
    assert (os.path.getsize(a) >= rm.HASH_BYTES) is big
    want = hashlib.sha256(Path(a).read_bytes() + Path(b).read_bytes()).hexdigest()
    assert load([a, b]).roadmap.content_hash == want
    assert load([b, a]).roadmap.content_hash != want


def test_every_field_is_read(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - id: t
            title: Title
            description: Long text
            command: echo hi
            status: In-Progress
            dependencies: [u, u]
            priority: HIGH
            complexity_score: 5
            timeout: 1h30m
            retries: 3
            env: {A: x, N: 5, F: 1.5, B: true}
            cwd: /srv/work
            role: critic
            affinity: repo-1
            exit_criteria: [tests pass, {prose: docs updated}]
            owner: me
          - id: u
            call: pkg.mod:run
            args: [1, two]
            kwargs: {flag: true}
            set_id: s-7
            exit_criteria: one criterion
        """,
    )
    result = load([path])
    assert result.valid, result.errors
    t, u = result.roadmap.tasks
    assert t.title == "Title" and t.description == "Long text"
    assert t.status == "in_progress" and t.runnable_status
    assert t.dependencies == ["u"]
    assert t.priority is Priority.HIGH
    assert (t.complexity, t.complexity_score) == (Complexity.MODERATE, 5)
    assert t.timeout == 5400 and t.retries == 3
    assert t.env == {"A": "x", "N": "5", "F": "1.5", "B": "true"}
    assert t.cwd == "/srv/work" and t.role == "critic" and t.affinity == "repo-1"
    assert t.exit_criteria == ["tests pass", "prose: docs updated"]
    assert t.meta == {"owner": "me"}
    assert (u.call, u.args, u.kwargs, u.command) == ("pkg.mod:run", [1, "two"], {"flag": True}, None)
    assert u.affinity == "s-7"  # WeatherVane's set_id counts as affinity
    assert u.exit_criteria == ["one criterion"]


@pytest.mark.parametrize("field", ["args: [1]", "kwargs: {a: 1}"])
def test_args_or_kwargs_without_call_are_warned(write, field):
    path = write("r.yaml", f"tasks:\n  - id: a\n    command: ['true']\n    {field}\n  - id: b\n    command: ['true']\n")
    result = load([path])
    at(only(result.warnings, "only apply to `call:` tasks"), path, 2, "a")


def test_affinity_wins_over_set_id(write):
    path = write("r.yaml", "tasks:\n  - {id: a, set_id: s, affinity: x}\n  - {id: b, affinity: x, set_id: s}\n")
    assert [t.affinity for t in load([path]).roadmap.tasks] == ["x", "x"]


@pytest.mark.parametrize(
    "written, seconds",
    [("90", 90), ("2.5", 2.5), ("'90'", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1h 30m", 5400),
     ("1d", 86400), ("0.5h", 1800), ("off", None)],
)  # fmt: skip
def test_timeout_forms(write, written, seconds):
    path = write("r.yaml", f"tasks:\n  - id: a\n    command: 'true'\n    timeout: {written}\n")
    result = load([path])
    assert result.valid, result.errors
    assert result.roadmap.tasks[0].timeout == seconds


def test_unknown_fields_are_kept_in_meta_and_not_warned(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    domain: mcp\n    estimate_hours: 5\n    kpi: [x]\n")
    result = load([path])
    assert result.warnings == []
    assert result.roadmap.tasks[0].meta == {"domain": "mcp", "estimate_hours": 5, "kpi": ["x"]}


def test_status_is_lower_cased_and_skip_statuses_are_known(write):
    path = write(
        "r.yaml",
        "tasks:\n  - {id: a, status: DONE}\n  - {id: b, status: On Hold}\n  - {id: c, status: Pending}\n  - {id: d}\n",
    )
    result = load([path])
    assert result.warnings == []
    assert [(t.status, t.runnable_status) for t in result.roadmap.tasks] == [
        ("done", False), ("on_hold", False), ("pending", True), ("", True),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- defaults and executor


def test_defaults_apply_and_tasks_override_them(write):
    path = write(
        "r.yaml",
        """
        defaults:
          timeout: 5m
          retries: 2
          priority: low
          env: {A: "1", B: "2"}
          cwd: work
          role: worker
        tasks:
          - id: plain
            command: make
          - id: own
            command: make
            timeout: 30
            retries: 0
            priority: critical
            env: {B: three, C: "4"}
            cwd: /abs
            role: critic
        """,
    )
    result = load([path])
    assert result.valid and result.warnings == []
    plain, own = result.roadmap.tasks
    folder = os.path.dirname(path)
    assert (plain.timeout, plain.retries, plain.priority, plain.env, plain.cwd, plain.role) == (
        300, 2, Priority.LOW, {"A": "1", "B": "2"}, os.path.join(folder, "work"), "worker",
    )  # fmt: skip
    assert (own.timeout, own.retries, own.priority, own.env, own.cwd, own.role) == (
        30, 0, Priority.CRITICAL, {"A": "1", "B": "three", "C": "4"}, "/abs", "critic",
    )  # fmt: skip
    assert result.roadmap.defaults["timeout"] == 300


def test_defaults_of_one_file_do_not_leak_into_another(write):
    a = write("a.yaml", "defaults: {retries: 4}\ntasks:\n  - {id: a, command: x}\n")
    b = write("b.yaml", "tasks:\n  - {id: b, command: x}\n")
    assert [t.retries for t in load([a, b]).roadmap.tasks] == [4, 0]


def test_executor_tasks_get_a_timeout_from_their_complexity(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - {id: s1, complexity_score: 1}
          - {id: s3, complexity_score: 3}
          - {id: m4, complexity_score: 4}
          - {id: m6, complexity_score: 6}
          - {id: c7, complexity_score: 7}
          - {id: c8, complexity_score: 8}
          - {id: v9, complexity_score: 9}
          - {id: v10, complexity_score: 10}
          - {id: unknown}
          - {id: simple, complexity: simple}
          - {id: moderate, complexity: moderate}
          - {id: complex, complexity: complex}
          - {id: cmd, command: make}
          - {id: call, call: "m:f"}
          - {id: own, complexity_score: 9, timeout: 1m}
        """,
    )
    minutes = {t.id: (t.timeout / 60 if t.timeout else None) for t in load([path]).roadmap.tasks}
    assert minutes == {
        "s1": 10, "s3": 10, "m4": 20, "m6": 20, "c7": 30, "c8": 30, "v9": 45, "v10": 45, "unknown": 10,  # neither given: inferred simple
        "simple": 10, "moderate": 20, "complex": 30, "cmd": None, "call": None, "own": 1,
    }  # fmt: skip


def test_executor_timeouts_can_be_changed_in_defaults_and_defaults_timeout_wins(write):
    path = write(
        "r.yaml",
        """
        defaults:
          executor_timeouts: {simple: 5m, moderate: 15m, complex: 40m, very_complex: 1h, unknown: 2m}
        tasks:
          - {id: s, complexity_score: 2}
          - {id: m, complexity: moderate}
          - {id: c, complexity_score: 8}
          - {id: v, complexity_score: 10}
          - {id: u}
        """,
    )
    assert [t.timeout for t in load([path]).roadmap.tasks] == [300, 900, 2400, 3600, 120]
    other = write("o.yaml", "defaults: {timeout: 3m}\ntasks:\n  - {id: x, complexity_score: 9}\n")
    assert load([other]).roadmap.tasks[0].timeout == 180


def test_executor_as_template_or_mapping_and_agents(write):
    path = write(
        "r.yaml",
        """
        executor:
          command: [codex, exec, "{prompt}"]
          prompt: "Work on {title}"
          models: {simple: small, complex: big}
        agents: {worker: 3, critic: 1}
        tasks: [{id: a}]
        """,
    )
    roadmap = load([path]).roadmap
    assert roadmap.executor == {
        "command": ["codex", "exec", "{prompt}"],
        "prompt": "Work on {title}",
        "models": {"simple": "small", "complex": "big"},
    }
    assert roadmap.agents == {"worker": 3, "critic": 1}
    listed = write("l.yaml", "defaults:\n  executor: [claude, -p, '{prompt}']\ntasks: [{id: a}]\n")
    assert load([listed]).roadmap.executor == ["claude", "-p", "{prompt}"]
    preset = write("p.yaml", "executor: codex\ntasks: [{id: a}]\n")
    assert load([preset]).roadmap.executor == "codex"  # kept as written; runner.coding.executors reads it


# ----------------------------------------------------------------------------- errors, each with its place


def test_missing_file_directory_and_no_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    result = load([missing, str(tmp_path)])
    assert result.roadmap is None
    at(only(result.errors, "file not found"), missing, None)
    at(only(result.errors, "is a directory"), str(tmp_path), None)
    assert "no roadmap file given" in load([]).errors[0].message


def test_not_utf8_names_the_line(write):
    path = write("r.yaml", b"tasks:\n  - id: a\n    title: caf\xe9\n")
    at(only(load([path]).errors, "not UTF-8"), path, 3)


def test_binary_file_is_an_error_not_a_crash(write):
    path = write("r.bin", bytes(range(256)) * 40)
    result = load([path])
    assert result.roadmap is None and len(result.errors) == 1
    assert result.errors[0].file == path and result.errors[0].line == 1


def test_yaml_syntax_error_names_its_line(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    title: [unclosed\n  - id: b\n")
    problem = load([path]).errors[0]
    assert problem.file == path and problem.line is not None and "invalid YAML" in problem.message


def test_backtick_value_gets_a_hint(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    exit_criteria:\n      - `make` passes\n")
    at(only(load([path]).errors, "quote the value"), path, 4)


@pytest.mark.parametrize(
    "text, needle",
    [("- id: a\n", "must be a mapping"), ("just text\n", "must be a mapping"), ("", "empty"), ("# nothing\n", "empty")],
)
def test_root_must_be_a_mapping(write, text, needle):
    path = write("r.yaml", text)
    result = load([path])
    assert result.roadmap is None
    problem = only(result.errors, needle)
    assert problem.file == path


@pytest.mark.parametrize(
    "text, needle, line",
    [
        ("tasks: {id: a}\n", "`tasks:` must be a list", 1),
        ("epics: {id: a}\n", "`epics:` must be a list", 1),
        ("epics:\n  - just-a-name\n", "epic #1 must be a mapping", 2),
        ("epics:\n  - id: E\n    milestones: {id: M}\n", "`milestones:` of epic E must be a list", 2),
        ("epics:\n  - id: E\n    milestones:\n      - M1\n", "milestone #1 of epic E must be a mapping", 4),
        ("epics:\n  - title: no id\n    milestones: []\n", "epic #1 has no `id:`", 2),
        ("epics:\n  - id: E\n    milestones:\n      - title: x\n        tasks: []\n", "milestone #1 has no `id:`", 4),
        (
            "epics:\n  - id: E\n    milestones:\n      - id: M\n        tasks: 3\n",
            "`tasks:` of milestone M must be a list",
            4,
        ),
        ("tasks:\n  - id: a\n  - just a string\n", "task #2 of `tasks:` must be a mapping", 3),
    ],
)
def test_malformed_layouts(write, text, needle, line):
    path = write("r.yaml", text)
    result = load([path])
    assert result.roadmap is None
    at(only(result.errors, needle), path, line)


def test_task_without_id_and_with_int_id(write):
    path = write("r.yaml", "tasks:\n  - title: nameless\n  - id: 1\n  - id: '  '\n")
    result = load([path])
    at(only(result.errors, "has no `id:`"), path, 2)
    at(only(result.errors, "must be a string; write id: '1'"), path, 3)
    at(only(result.errors, "blank"), path, 4)
    assert result.tasks_total == 3


def test_duplicate_ids_name_both_lines_also_across_files(write):
    a = write("a.yaml", "tasks:\n  - id: x\n  - id: y\n  - id: x\n")
    b = write("b.yaml", "tasks:\n  - id: y\n")
    result = load([a, b])
    first, second = sorted((p for p in result.errors if "duplicate" in p.message), key=lambda p: p.file)
    at(first, a, 4, "x")
    assert f"first defined at {a}:2" in first.message
    at(second, b, 2, "y")
    assert f"first defined at {a}:3" in second.message


@pytest.mark.parametrize(
    "field, needle",
    [
        ("timeout: soon", "`timeout` must be seconds or a duration"),
        ("timeout: -5", "`timeout` must be a positive number"),
        ("timeout: 0", "`timeout` must be a positive number"),
        ("timeout: [1]", "`timeout` must be seconds"),
        ("retries: -1", "`retries` must be a whole number >= 0"),
        ("retries: 1.5", "`retries` must be a whole number >= 0"),
        ("retries: yes", "`retries` must be a whole number >= 0"),
        ("env: [A=1]", "`env` must be a mapping"),
        ("env: {A: {B: 1}}", "`env` value of A must be text or a number"),
        ("dependencies: other", "`dependencies` must be a list of task ids"),
        ("dependencies: [1]", "write '1'"),
        ("command: 5", "`command` must be a string"),
        ("command: [sleep, 1]", "`command` list items must be strings; 1 is a number; quote it: '1'"),
        ("command: []", "`command` is an empty list"),
        ("command: ''", "`command` is empty"),
        ("command:", "`command` must be a string"),
        ("priority: urgent", "`priority` must be one of critical, high, medium, low; got 'urgent'"),
        ("complexity: hard", "`complexity` must be one of simple, moderate, complex"),
        ("complexity_score: 11", "`complexity_score` must be a whole number from 1 to 10; got 11"),
        ("complexity_score: 0", "`complexity_score` must be a whole number from 1 to 10"),
        ("complexity_score: '5'", "`complexity_score` must be a whole number from 1 to 10"),
        ("call: not-a-callable", "`call` must look like 'package.module:function'"),
        ("call: pkg.mod", "`call` must look like 'package.module:function'"),
        ("args: 3", "`args` must be a list"),
        ("kwargs: [1]", "`kwargs` must be a mapping"),
        ("cwd: 3", "`cwd` must be a folder path"),
        ("role: [a]", "`role` must be a name"),
        ("title: {a: 1}", "`title` must be text"),
        ("exit_criteria: 5", "`exit_criteria` must be a list of text"),
    ],
)
def test_wrong_field_types_are_errors_naming_file_line_and_task(write, field, needle):
    path = write("r.yaml", f"tasks:\n  - id: first\n  - id: bad\n    {field}\n")
    result = load([path])
    assert result.roadmap is None
    at(only(result.errors, needle), path, 3, "bad")


@pytest.mark.parametrize("fields", ["command: make\n    call: m:f", "call: m:f\n    command: [make]"])
def test_both_command_and_call_is_an_error(write, fields):
    path = write("r.yaml", f"tasks:\n  - id: a\n    {fields}\n")
    at(only(load([path]).errors, "both `command` and `call`"), path, 2, "a")


def test_dependency_cycle_is_printed_as_the_cycle(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - id: a
            dependencies: [b]
          - id: b
            dependencies: [c]
          - id: c
            dependencies: [a]
          - id: d
            dependencies: [a]
          - id: e
        """,
    )
    result = load([path])
    problem = only(result.errors, "dependency cycle")
    assert problem.message == "dependency cycle: a -> b -> c -> a"
    at(problem, path, 2, "a")
    assert result.blocked["a"] == "in a dependency cycle"
    assert result.blocked["d"] == "via `a`: in a dependency cycle"
    assert "e" not in result.blocked


def test_self_dependency_is_a_cycle(write):
    path = write("r.yaml", "tasks:\n  - id: z\n  - id: a\n    dependencies: [a]\n")
    problem = only(load([path]).errors, "dependency cycle")
    assert problem.message == "dependency cycle: a -> a"
    at(problem, path, 3, "a")


def test_two_separate_cycles_are_both_reported(write):
    path = write("r.yaml", "tasks:\n  - {id: a, dependencies: [b]}\n  - {id: b, dependencies: [a]}\n"
                 "  - {id: c, dependencies: [d]}\n  - {id: d, dependencies: [c]}\n")  # fmt: skip
    cycles = sorted(p.message for p in load([path]).errors)
    assert cycles == ["dependency cycle: a -> b -> a", "dependency cycle: c -> d -> c"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("executor: codex exec\n", "executor: unknown preset 'codex exec'"),
        ("executor: []\n", "executor: an argv template is a non-empty list"),
        ("executor: {prompt: x}\n", "executor: give exactly one of `command:`"),
        ("executor: {command: [a], prompt: [x]}\n", "executor.prompt: must be a non-empty string"),
        ("executor: [a, '{titel}']\n", "executor[1]: unknown template field {titel}"),
        ("executor: 5\n", "executor: must be an argv list, a preset name"),
        ("defaults:\n  executor: missing-file.yaml\n", "defaults.executor: cannot read executor file"),
        ("agents: [worker]\n", "`agents:` must map roles to agent counts"),
        ("agents: {worker: -1}\n", "must be a role name and a whole number >= 0"),
        ("defaults: [1]\n", "`defaults:` must be a mapping"),
        ("defaults: {timeout: never}\n", "`defaults.timeout` must be seconds"),
        ("defaults: {retries: -2}\n", "`defaults.retries` must be a whole number"),
        ("defaults: {priority: asap}\n", "`defaults.priority` must be one of"),
        ("defaults: {env: 3}\n", "`defaults.env` must be a mapping"),
        ("defaults: {executor_timeouts: {huge: 5m}}\n", "key 'huge' must be one of simple, moderate"),
        ("defaults: {executor_timeouts: {simple: later}}\n", "`defaults.executor_timeouts.simple` must be seconds"),
    ],
)
def test_file_level_settings_are_checked(write, text, needle):
    path = write("r.yaml", text + "tasks: [{id: a}]\n")
    result = load([path])
    assert result.roadmap is None
    problem = only(result.errors, needle)
    assert problem.file == path and problem.line == 1


# ----------------------------------------------------------------------------- warnings


def test_unknown_dependency_is_a_warning_and_blocks_the_task(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - id: a
            dependencies: [ghost]
          - id: b
            dependencies: [a]
          - id: c
            dependencies: [ghost]
          - id: d
        """,
    )
    result = load([path])
    assert result.valid and result.roadmap is not None
    problem = only(result.warnings, "unknown dependency `ghost`")
    at(problem, path, 2, "a")
    assert "needed by a, c" in problem.message
    assert result.blocked == {
        "a": "depends on unknown task `ghost`",
        "b": "via `a`: depends on unknown task `ghost`",
        "c": "depends on unknown task `ghost`",
    }
    assert plan(result)["runnable"] == 1


def test_dependencies_written_as_a_mapping_read_its_keys_and_say_so(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    dependencies:\n      depends_on: [b]\n  - id: b\n")
    result = load([path])
    problem = only(result.warnings, "unknown dependency `depends_on`")
    at(problem, path, 2, "a")
    assert "is a mapping there" in problem.message


@pytest.mark.parametrize(
    "field, hint",
    [("dependecies: [a]", "dependencies"), ("timout: 5", "timeout"), ("depends_on: [a]", "dependencies"),
     ("Priority: high", "priority"), ("comand: make", "command")],
)  # fmt: skip
def test_typo_of_a_known_field_is_a_warning_with_a_suggestion(write, field, hint):
    path = write("r.yaml", f"tasks:\n  - id: a\n  - id: t\n    {field}\n")
    result = load([path])
    assert result.valid
    problem = only(result.warnings, "did you mean")
    at(problem, path, 3, "t")
    assert f"did you mean `{hint}`?" in problem.message
    assert problem.message.startswith(f"unknown field `{field.split(':')[0]}`")


def test_typos_in_top_level_epic_and_defaults_keys(write):
    path = write("r.yaml", "taks: []\ndefaults: {retires: 2}\nepics:\n  - id: E\n    milestone: []\ntasks: []\n")
    messages = [p.message for p in load([path]).warnings]
    assert any("`taks`; did you mean `tasks`?" in m for m in messages)
    assert any("`defaults.retires` (ignored); did you mean `retries`?" in m for m in messages)
    assert any("`milestone`; did you mean `milestones`?" in m for m in messages)


def test_unknown_status_is_a_warning_and_the_task_is_skipped(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    status: Waiting-For-Review\n  - id: b\n    dependencies: [a]\n")
    result = load([path])
    problem = only(result.warnings, "unknown status")
    assert problem.message == "unknown status 'waiting_for_review' (task skipped)"
    at(problem, path, 2, "a")
    assert not result.roadmap.tasks[0].runnable_status
    assert result.blocked == {"b": "dependency `a` has unknown status `waiting_for_review`"}


def test_duplicate_key_in_a_task_is_an_error_naming_both_lines(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    retries: 1\n    retries: 2\n")
    result = load([path])
    problem = only(result.errors, "given twice")
    at(problem, path, 4, "a")
    assert "lines 3 and 4" in problem.message and result.roadmap is None


def test_strict_turns_warnings_into_errors(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    dependencies: [ghost]\n")
    assert load([path]).roadmap is not None
    strict = load([path], strict=True)
    assert strict.roadmap is None and strict.warnings == []
    at(only(strict.errors, "unknown dependency"), path, 2, "a")
    with pytest.raises(RoadmapError) as info:
        load_roadmap([path], strict=True)
    assert "unknown dependency `ghost`" in str(info.value)


def test_load_roadmap_raises_with_every_problem(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    retries: -1\n  - id: a\n")
    with pytest.raises(RoadmapError) as info:
        load_roadmap([path])
    assert len(info.value.problems) == 2
    assert info.value.exit_code == 2
    assert load_roadmap([write("ok.yaml", "tasks: [{id: a}]\n")]).tasks[0].id == "a"


# ----------------------------------------------------------------------------- blocked tasks and the plan


def test_done_dependency_is_satisfied_skipped_one_blocks(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - {id: done1, status: done}
          - {id: held, status: on_hold}
          - {id: cancelled, status: cancelled}
          - {id: ok, dependencies: [done1]}
          - {id: waits, dependencies: [held]}
          - {id: after, dependencies: [waits]}
          - {id: gone, dependencies: [cancelled]}
          - {id: ignored, status: blocked, dependencies: [ghost]}
        """,
    )
    result = load([path])
    assert result.blocked == {
        "waits": "dependency `held` has status `on_hold`",
        "after": "via `waits`: dependency `held` has status `on_hold`",
        "gone": "dependency `cancelled` has status `cancelled`",
    }
    assert plan(result)["runnable"] == 1


def test_blocked_is_found_when_dependencies_point_forward(write):
    path = write(
        "r.yaml",
        "tasks:\n  - {id: a, dependencies: [b]}\n  - {id: b, dependencies: [c]}\n  - {id: c, status: on_hold}\n",
    )
    assert list(load([path]).blocked) == ["a", "b"]


def test_plan_document(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - {id: a, priority: high, complexity_score: 2}
          - {id: b, dependencies: [a], complexity: complex}
          - {id: c, dependencies: [b]}
          - {id: d, dependencies: [a]}
          - {id: e, status: done, priority: low}
          - {id: f, dependencies: [nope]}
        """,
    )
    doc = plan(load([path]))
    assert doc == {
        "valid": True,
        "tasks": 6,
        "runnable": 4,
        "errors": [],
        "warnings": [
            {
                "file": path,
                "line": 7,
                "task": "f",
                "message": "unknown dependency `nope`: no task has this id (needed by f)",
            }
        ],
        "by_status": {"(none)": 5, "done": 1},
        "by_priority": {"critical": 0, "high": 1, "medium": 4, "low": 1},
        "by_complexity": {"simple": 5, "moderate": 0, "complex": 1},
        "complexity_inferred": 4,
        "complexity": [
            {"task": t, "complexity": c, "inferred": t in "cdef"}
            for t, c in zip("abcdef", ["simple", "complex", "simple", "simple", "simple", "simple"])
        ],
        "blocked": [{"task": "f", "reason": "depends on unknown task `nope`"}],
        "critical_path": {"length": 3, "tasks": ["a", "b", "c"]},
    }


def test_plan_of_an_invalid_roadmap_still_counts(write):
    path = write("r.yaml", "tasks:\n  - id: a\n  - id: a\n  - {id: b, retries: x}\n  - 7\n")
    doc = plan(load([path]))
    assert doc["valid"] is False and doc["tasks"] == 4 and len(doc["errors"]) == 3
    assert all(e["file"] == path and e["line"] for e in doc["errors"])


def test_plan_counts_the_first_definition_of_a_repeated_id(write):
    path = write("r.yaml", "tasks:\n  - {id: a, status: pending}\n  - {id: a, status: done}\n  - {id: b}\n")
    result = load([path])
    doc = plan(result)
    assert doc["by_status"] == {"pending": 1, "(none)": 1}
    assert [c["task"] for c in doc["complexity"]] == ["a", "b"]
    assert "status: (none) 1 · pending 1\n  priority: medium 2\n" in format_plan(result)


def test_format_plan_reads_like_a_report(write):
    path = write(
        "r.yaml",
        "tasks:\n  - {id: a}\n  - {id: b, dependencies: [a]}\n"
        "  - {id: c, dependencies: [ghost]}\n  - {id: d, status: wat}\n",
    )
    text = format_plan(load([path]))
    lines = text.splitlines()
    assert lines[0] == f"{path}: valid"
    assert "  tasks: 4 in the files, 2 would run, 1 blocked" in lines
    assert "    c: depends on unknown task `ghost`" in lines
    assert "  critical path (2 tasks): a -> b" in lines
    assert f"  {path}:4: task c: unknown dependency `ghost`: no task has this id (needed by c)" in lines
    assert f"  {path}:5: task d: unknown status 'wat' (task skipped)" in lines
    chain = "tasks:\n  - {id: t0}\n" + "".join(f"  - {{id: t{i}, dependencies: [t{i - 1}]}}\n" for i in range(1, 30))
    assert "  critical path (30 tasks): t0 -> t1 -> t2 -> t3 -> t4 -> t5 -> ... -> t25 -> t26 -> t27 -> t28 -> t29" in (
        format_plan(load([write("chain.yaml", chain)])).splitlines()
    )
    bad = format_plan(load([write("bad.yaml", "tasks:\n  - {id: a, retries: -1}\n")]))
    assert bad.splitlines()[0].endswith("INVALID (1 error)")
    assert "errors (1):" in bad


def test_many_problems_are_capped_with_a_count(write):
    body = "".join(f"  - {{id: t{i}, retries: -1}}\n" for i in range(rm.MAX_PROBLEMS + 5))
    result = load([write("r.yaml", "tasks:\n" + body)])
    assert len(result.errors) == rm.MAX_PROBLEMS + 1
    assert result.errors[-1].message == "... and 5 more errors not shown"


def test_same_file_twice_is_read_once(write):
    path = write("r.yaml", "tasks: [{id: a}]\n")
    result = load([path, path])
    assert result.valid and len(result.roadmap.tasks) == 1
    only(result.warnings, "given twice")


# ----------------------------------------------------------------------------- unsafe and hostile input


def test_python_tags_are_refused_and_never_constructed(write, tmp_path):
    marker = tmp_path / "pwned"
    path = write("r.yaml", f"tasks:\n  - id: a\n    x: !!python/object/apply:os.system ['touch {marker}']\n")
    result = load([path])
    at(only(result.errors, "unsupported YAML tag `!!python/object/apply:os.system`"), path, 3)
    assert not marker.exists()
    other = write("o.yaml", "tasks:\n  - !!python/object:collections.OrderedDict {id: a}\n")
    assert load([other]).errors[0].line == 2


def test_billion_laughs_is_refused_quickly(write):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    path = write("r.yaml", "\n".join(lines) + "\ntasks:\n  - id: a\n    meta: *a9\n")
    started = time.monotonic()
    result = load([path])
    assert time.monotonic() - started < 5
    problem = only(result.errors, "billion laughs")
    assert problem.file == path and problem.line == 6  # a5: the first value that expands past the limit


def test_recursive_alias_is_refused(write):
    path = write("r.yaml", "tasks:\n  - id: a\n    loop: &x [*x]\n")
    at(only(load([path]).errors, "recursive alias"), path, 3)


def test_ordinary_anchors_and_merge_keys_work(write):
    path = write(
        "r.yaml",
        "base: &base {retries: 2, priority: high}\n"
        "tasks:\n  - <<: *base\n    id: a\n  - <<: *base\n    id: b\n    retries: 0\n",
    )
    result = load([path])
    assert result.valid, result.errors
    assert [(t.retries, t.priority) for t in result.roadmap.tasks] == [(2, Priority.HIGH), (0, Priority.HIGH)]
    assert [t.line for t in result.roadmap.tasks] == [3, 5]


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_refused_without_crashing(write, opener):
    depth = 200_000
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    path = write(
        "r.yaml", "tasks:\n  - id: a\n    x: " * (opener != "- ") + opener * depth + "1" + closer * depth + "\n"
    )
    started = time.monotonic()
    result = load([path])
    assert time.monotonic() - started < 10
    assert result.roadmap is None and result.errors[0].file == path


def test_moderate_nesting_limit(write):
    ok = write("ok.yaml", "tasks:\n  - id: a\n    x: " + "[" * 90 + "]" * 90 + "\n")
    assert load([ok]).valid
    deep = write("deep.yaml", "tasks:\n  - id: a\n    x: " + "[" * 150 + "]" * 150 + "\n")
    assert "nesting deeper than" in load([deep]).errors[0].message


@pytest.mark.parametrize(
    "text, valid",
    [
        ("x" * 20_000_000, False),
        ("[" * 20_000_000, False),
        ("{" * 10_000_000 + "}" * 10_000_000, False),
        ("tasks:\n  - id: a\n    description: " + "word " * 4_000_000, True),
    ],
)
def test_a_20_mb_single_line_does_not_hang(write, text, valid):
    path = write("r.yaml", text)
    started = time.monotonic()
    result = load([path])
    assert time.monotonic() - started < 20
    assert result.valid is valid
    if valid:
        assert len(result.roadmap.tasks[0].description) == 20_000_000 - 1
    else:
        assert result.errors[0].file == path


@pytest.mark.parametrize("value", ["2025-02-30", "!!int abc", "!!bool maybe", "!!float x", "!!set [1]"])
def test_bad_values_are_problems_not_tracebacks(write, value):
    path = write("r.yaml", f"tasks:\n  - id: a\n  - id: b\n    n: {value}\n")
    at(only(load([path]).errors, "invalid YAML"), path, 4)


def test_fifo_is_not_read(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    at(only(load([str(fifo)]).errors, "not a regular file"), str(fifo), None)


# ----------------------------------------------------------------------------- JSON schema


def test_json_schema_is_valid_and_agrees_with_the_loader(write):
    jsonschema = pytest.importorskip("jsonschema")
    import re

    import yaml

    from runner.roadmap.schema import DURATION_PATTERN, json_schema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = """
        defaults: {timeout: 10m, retries: 1, executor_timeouts: {simple: 5m}}
        executor: {command: [codex, exec, "{prompt}"], prompt: "Do {title}"}
        agents: {worker: 2}
        epics:
          - id: E
            milestones:
              - id: M
                tasks:
                  - {id: a, command: make, timeout: 1h30m, priority: high, env: {N: 1}}
        tasks:
          - {id: b, call: "pkg.mod:f", dependencies: [a], complexity_score: 7, exit_criteria: [{prose: x}]}
    """
    path = write("good.yaml", good)
    assert load([path]).valid
    assert list(validator.iter_errors(yaml.safe_load(Path(path).read_text()))) == []
    for bad in (
        {"tasks": [{"title": "no id"}]},
        {"tasks": [{"id": "a", "priority": "urgent"}]},
        {"tasks": [{"id": "a", "timeout": "soon"}]},
        {"tasks": [{"id": "a", "command": "x", "call": "m:f"}]},
        {"tasks": [{"id": "a", "dependencies": {"depends_on": ["b"]}}]},
        {"defaults": {"tiemout": 5}},
        {"executor": {"prompt": "no command"}},
        {"executor": []},
    ):
        assert list(validator.iter_errors(bad)), bad
    for written in ("90", "90s", "10m", "1h30m", "1h 30m", "2.5h", "1d", "off"):
        assert re.match(DURATION_PATTERN, written) and rm._duration(written)[1] is None, written
    for written in ("soon", "10 minutes", "m10", "1x"):
        assert not re.match(DURATION_PATTERN, written) and rm._duration(written)[1] is not None, written
