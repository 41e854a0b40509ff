"""The fleet's roadmap keys: resources/uses, executors/executor, session, workspace.setup/copy; load and --check."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from runner.roadmap import fleet
from runner.roadmap.fleet import NamePool, PortRange
from runner.roadmap.loader import load
from conftest import wvo

pytestmark = pytest.mark.timeout(120)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


FULL = """\
resources:
  port: {range: 8100-8102}
  db: [test_a, test_b]
executors: {orchestrator: claude, worker: codex, critic: claude}
session: fresh
workspace:
  mode: shared
  setup: [python -m venv .venv, [.venv/bin/pip, install, -e, .]]
  copy: [.env]
defaults:
  workspace:
    setup: [make deps]
tasks:
  - id: api
    title: the API
    uses: [port, db]
    executor: {preset: claude, prompt: "serve on {port}, database {db}: {title}"}
    session: resume
  - id: docs
    title: the docs
    workspace: {setup: [make docs-deps], copy: [docs/.local]}
"""


def test_every_fleet_key_loads_into_settings_and_tasks(tmp_path):
    result = load([write(tmp_path, "r.yaml", FULL)])
    assert result.valid, [str(e) for e in result.errors]
    rm = result.roadmap
    assert rm.settings["resources"] == {"port": PortRange(8100, 8102), "db": NamePool(("test_a", "test_b"))}
    assert rm.settings["executors"] == {"orchestrator": "claude", "worker": "codex", "critic": "claude"}
    assert rm.settings["workspace"] == {"mode": "shared"}  # setup / copy taken out for runner.coding.settings
    api, docs = rm.tasks
    assert fleet.for_task(rm, api) == fleet.TaskFleet(
        uses=("port", "db"), executor=api.meta["executor"], session="resume", setup=("make deps",), copy=(".env",)
    )
    assert fleet.for_task(rm, docs) == fleet.TaskFleet(
        uses=(), executor=None, session="fresh", setup=("make docs-deps",), copy=("docs/.local",)
    )
    assert docs.meta["workspace"] == {}
    assert fleet.lease_uses(rm) == {"api": ("port", "db")}


def test_top_level_setup_applies_when_neither_task_nor_file_defaults_give_one(tmp_path):
    rm = load([write(tmp_path, "r.yaml", """\
        workspace: {setup: [make deps, [uv, sync]]}
        tasks: [{id: a, command: "true"}]
    """)]).roadmap
    assert fleet.for_task(rm, rm.tasks[0]).setup == ("make deps", ("uv", "sync"))


@pytest.mark.parametrize(
    "text, line, task, message",
    [
        ("resources: {port: {range: 9000-8000}}\ntasks: []\n", 1, None, "`resources.port.range` must be ports from 1 to 65535"),
        ("resources: {port: {range: lots}}\ntasks: []\n", 1, None, "`resources.port.range` must be LOW-HIGH"),
        ("resources: {db: []}\ntasks: []\n", 1, None, "`resources.db` is an empty list"),
        ("resources: {Port: [a]}\ntasks: []\n", 1, None, "name 'Port' must be lower-case"),
        ("resources: {model: [a]}\ntasks: []\n", 1, None, "'model' is a template field already"),
        ("tasks:\n  - id: a\n    command: 'true'\n    uses: [gpu]\n", 2, "a", "unknown resource 'gpu' (no `resources:` declares any)"),
        ("resources: {db: [x]}\ntasks:\n  - id: a\n    command: 'true'\n    uses: [db, db]\n", 3, "a", "names a resource twice"),
        ("tasks:\n  - id: a\n    session: later\n", 2, "a", "`session` must be one of fresh, resume"),
        ("session: 1\ntasks: []\n", 1, None, "`session` must be one of fresh, resume"),
        ("executors: {worker: nope}\ntasks: []\n", 1, None, "executors.worker: unknown preset 'nope'"),
        ("executors: [codex]\ntasks: []\n", 1, None, "`executors:` must map agent roles to executors"),
        ("tasks:\n  - id: a\n    executor: nope\n", 2, "a", "executor: unknown preset 'nope'"),
        ("tasks:\n  - id: a\n    executor: [cli, '{port}']\n", 2, "a", "unknown template field {port}"),
        ("workspace: {setup: [[]]}\ntasks: []\n", 1, None, "`workspace.setup[0]` must be a command"),
        ("workspace: {copy: [../secrets]}\ntasks: []\n", 1, None, "must be a path inside the checkout"),
        ("defaults: {workspace: {copy: [.git/config]}}\ntasks: []\n", 1, None, "is inside .git"),
        ("tasks:\n  - id: a\n    workspace: {setup: 3}\n", 2, "a", "`workspace.setup` must be a list of commands"),
    ],
)
def test_a_bad_fleet_key_is_an_error_naming_its_place_and_check_exits_2(tmp_path, text, line, task, message):
    path = write(tmp_path, "r.yaml", text)
    result = load([path])
    assert [(e.line, e.task) for e in result.errors if message in e.message] == [(line, task)], [str(e) for e in result.errors]
    proc = wvo("--check", path)
    assert proc.returncode == 2
    place = f"{path}:{line}: task {task}: " if task else f"{path}:{line}: "
    assert place + "" in proc.stdout + proc.stderr and message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_resource_field_is_allowed_in_executor_templates_when_the_pool_exists(tmp_path):
    result = load([write(tmp_path, "r.yaml", """\
        resources: {port: {range: 8100-8101}}
        executor: [cli, --port, "{port}", "{prompt}"]
        tasks: [{id: a, title: t, uses: [port]}]
    """)])
    assert result.valid, [str(e) for e in result.errors]


def test_executor_in_two_files_is_an_error_unless_it_is_the_same(tmp_path):
    a = write(tmp_path, "a.yaml", "executor: codex\ntasks: [{id: a, title: x}]\n")
    same = write(tmp_path, "same.yaml", "executor: codex\ntasks: [{id: b, title: y}]\n")
    other = write(tmp_path, "other.yaml", "\nexecutor: claude\ntasks: [{id: c, title: z}]\n")
    assert load([a, same]).valid
    errors = load([a, other]).errors
    assert [(e.file, e.line) for e in errors] == [(str(other), 2)]
    assert f"`executor` is also defined, differently, at {a}:1" in errors[0].message


def test_resources_and_executors_merge_across_files_and_a_clash_is_an_error(tmp_path):
    a = write(tmp_path, "a.yaml", "resources: {db: [x]}\nexecutors: {worker: codex}\ntasks: [{id: a, title: x, uses: [port]}]\n")
    b = write(tmp_path, "b.yaml", "resources: {port: {range: 1-2}}\nexecutors: {critic: claude}\ntasks: []\n")
    result = load([a, b])
    assert result.valid, [str(e) for e in result.errors]  # `uses: [port]` is declared by the other file
    assert set(result.roadmap.settings["resources"]) == {"db", "port"}
    c = write(tmp_path, "c.yaml", "resources: {db: [y]}\nexecutors: {worker: claude}\ntasks: []\n")
    messages = [e.message for e in load([a, c]).errors]
    assert any("`resources.db` is also defined, differently" in m for m in messages)
    assert any("`executors.worker` is also defined, differently" in m for m in messages)


def test_check_shows_which_executor_each_task_gets(tmp_path):
    path = write(tmp_path, "r.yaml", """\
        executor: [my-cli, "{prompt}"]
        executors: {critic: claude, worker: codex}
        tasks:
          - {id: own, title: a, executor: claude}
          - {id: review-it, title: review the parser, role: critic}
          - {id: plain, title: write the parser}
          - {id: shell, command: "true"}
    """)
    proc = wvo("--check", "--json", path)
    doc = json.loads(proc.stdout)
    rows = {r["task"]: r for r in doc["executors"]["tasks"]}
    assert rows["own"] == {"task": "own", "executor": "claude", "why": "task"}
    assert rows["review-it"] == {"task": "review-it", "executor": "claude", "why": "role critic"}
    assert rows["plain"] == {"task": "plain", "by_role": {"critic": "claude", "worker": "codex"}, "otherwise": "my-cli"}
    assert "shell" not in rows
    text = wvo("--check", path).stdout
    assert "own: claude (its own `executor:`)" in text
    assert "plain: by the role of the agent that takes it: critic claude, worker codex; any other my-cli" in text


def test_check_shows_the_resources_and_who_uses_them(tmp_path):
    path = write(tmp_path, "r.yaml", """\
        resources: {port: {range: 8100-8199}, db: [test_a, test_b]}
        tasks:
          - {id: a, command: "true", uses: [port]}
          - {id: b, command: "true", uses: [port, db]}
    """)
    proc = wvo("--check", path)
    assert proc.returncode == 0, proc.stderr
    assert "resource port: ports 8100-8199; used by 2 tasks" in proc.stdout
    assert "resource db: test_a, test_b; used by 1 task" in proc.stdout


# -- workspace.copy at --check, in a real repository -------------------------------------------------------


def git(repo, *args) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / ".gitignore").write_text(".env\n*.local\n")
    (r / "settings.toml").write_text("tracked\n")
    (r / "tracked.local").write_text("tracked although ignored\n")
    git(r, "add", "-f", ".gitignore", "settings.toml", "tracked.local")
    git(r, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "initial")
    (r / ".env").write_text("SECRET=1\n")
    (r / "a.local").write_text("local\n")
    (r / "notes.txt").write_text("neither tracked nor ignored\n")
    return r


def copy_roadmap(repo: Path, globs: list[str]) -> Path:
    return write(repo, "roadmap.yaml", f"workspace: {{copy: {json.dumps(globs)}}}\ntasks: [{{id: a, command: 'true'}}]\n")


def test_copy_of_ignored_untracked_files_passes_check(repo):
    proc = wvo("--check", copy_roadmap(repo, [".env", "a.local"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "glob, message",
    [
        ("settings.toml", "settings.toml is tracked by git"),
        ("*.local", "tracked.local is tracked by git"),
        ("notes.txt", "notes.txt is not ignored by git"),
    ],
)
def test_copy_of_a_tracked_or_unignored_file_is_refused_at_check(repo, glob, message):
    path = copy_roadmap(repo, [".env", glob])
    proc = wvo("--check", path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}:1: `workspace.copy`: {message}" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_copy_of_a_glob_that_matches_nothing_is_a_warning(repo):
    proc = wvo("--check", copy_roadmap(repo, ["missing.env"]))
    assert proc.returncode == 0
    assert "'missing.env' matches no file" in proc.stdout


def test_the_schema_takes_every_fleet_key():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from runner.roadmap.schema import json_schema

    jsonschema.validate(yaml.safe_load(FULL), json_schema())
    bad = yaml.safe_load(FULL.replace("session: fresh", "session: later"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())


def test_a_files_defaults_setup_and_copy_apply_to_that_files_tasks_only(tmp_path):
    a = write(tmp_path, "a.yaml", "defaults: {workspace: {setup: [make a], copy: [.env]}}\ntasks: [{id: a, command: 'true'}]\n")
    b = write(tmp_path, "b.yaml", "tasks: [{id: b, command: 'true'}]\n")
    rm = load([a, b]).roadmap
    got = {t.id: (fleet.for_task(rm, t).setup, fleet.for_task(rm, t).copy) for t in rm.tasks}
    assert got == {"a": (("make a",), (".env",)), "b": ((), ())}
    assert "setup" not in rm.defaults and rm.defaults["workspace"] == {}
