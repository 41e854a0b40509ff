"""Executors by role and per task (runner.coding.executors.Fleet), with two stand-in executors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from runner.coding.executors import ExecutorError, Fleet, build_argv
from runner.model import Task
from runner.roadmap.fleet import fleet_of
from runner.roadmap.loader import load

pytestmark = pytest.mark.timeout(60)

# Two stand-ins: each prints which one it is and the prompt it was given.
ALPHA = [sys.executable, "-c", "import sys; print('alpha', sys.argv[1])", "{prompt}"]
BETA = {"command": [sys.executable, "-c", "import sys; print('beta', sys.argv[1], sys.argv[2])", "{model}", "{prompt}"],
        "models": {"critic": "beta-large", "default": "beta-small"}}  # fmt: skip


def task(tid: str, **kw) -> Task:
    return Task(id=tid, title=f"do {tid}", **kw)


def test_a_task_gets_its_own_executor_else_its_agents_roles_else_the_runs():
    fleet = Fleet(run=ALPHA, by_role={"critic": BETA}, own={"mine": BETA})
    assert fleet.choose(task("mine"), "worker").why == "task"
    assert fleet.choose(task("mine"), "worker").name == fleet.choose(task("other"), "critic").name  # one executor
    by_role = fleet.choose(task("other"), "critic")
    assert (by_role.why, by_role.executor.models["critic"]) == ("role critic", "beta-large")
    assert fleet.choose(task("other"), "worker").why == "run"
    names = list(fleet.executors)
    assert len(names) == 2 and names[1] == names[0] + "-2"  # two settings of one program: two names


def test_without_a_run_executor_a_role_with_none_has_no_executor():
    fleet = Fleet(by_role={"worker": ALPHA})
    assert fleet.choose(task("a"), "critic") is None
    assert fleet.missing(task("a"), ["worker", "critic"]) == ["critic"]
    assert Fleet(run=ALPHA).missing(task("a"), ["critic"]) == []


def test_a_bad_executor_names_where_it_was_written():
    with pytest.raises(ExecutorError, match=r"^executors\.critic: unknown preset 'nope'"):
        Fleet(run=ALPHA, by_role={"critic": "nope"})
    with pytest.raises(ExecutorError, match=r"^task t: executor: unknown preset 'nope'"):
        Fleet(own={"t": "nope"})


def test_each_role_runs_its_own_stand_in_with_its_own_models():
    fleet = Fleet(run=ALPHA, by_role={"critic": BETA})
    out = {}
    for role in ("worker", "critic"):
        choice = fleet.choose(task("t"), role)
        argv = build_argv(task("t"), role, choice.executor)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        out[role] = proc.stdout.split()[:2]
    assert out == {"worker": ["alpha", "Task"], "critic": ["beta", "beta-large"]}


def test_leased_slots_fill_their_template_fields():
    fleet = Fleet(run=[*ALPHA[:3], "--port={port}", "{prompt}"], fields=("port",))
    argv = build_argv(task("t"), "worker", fleet.choose(task("t"), "worker").executor, leased={"port": "8101"})
    assert "--port=8101" in argv


def test_a_roadmap_with_executors_by_role_and_per_task(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        executor: codex
        executors: {critic: claude}
        tasks:
          - {id: a, title: a, executor: claude}
          - {id: b, title: b}
    """))
    rm = load([path]).roadmap
    fleet = fleet_of(rm)
    a, b = rm.tasks
    assert (fleet.choose(a, "worker").name, fleet.choose(b, "worker").name, fleet.choose(b, "critic").name) == (
        "claude", "codex", "claude")
    assert len(fleet.executors) == 2  # `claude` written twice is one executor: one set of accounts and pauses
    assert fleet_of(rm, run_executor="claude").choose(b, "worker").name == "claude"  # --executor replaces the run's


def test_check_wants_every_executors_program_on_path_not_only_the_runs(tmp_path):
    from conftest import wvo

    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        executor: [{sys.executable}, "{{prompt}}"]
        executors: {{critic: [no-such-agent-cli, "{{prompt}}"]}}
        tasks: [{{id: a, title: a}}]
    """))
    proc = wvo("--check", path)
    assert proc.returncode == 2
    assert "program 'no-such-agent-cli' is not on PATH" in proc.stdout  # among the plan's errors
    path.write_text(path.read_text().replace("no-such-agent-cli", sys.executable))
    assert wvo("--check", path).returncode == 0
