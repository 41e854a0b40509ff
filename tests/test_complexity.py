"""A complexity for tasks that give none: the rule of runner.roadmap.complexity, and who uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from runner.coding import executors
from runner.model import Complexity, Task
from runner.roadmap.complexity import infer, level, points
from runner.roadmap.loader import format_plan, load, plan

# beside the project (the main checkout), or where WVO_SHARED_ROADMAPS says (a worktree elsewhere)
ROADMAPS = Path(os.environ.get("WVO_SHARED_ROADMAPS") or Path(__file__).resolve().parents[2] / "shared" / "roadmaps")


def words(n: int) -> str:
    return " ".join(["word"] * n)


def test_each_factor_adds_its_points():
    assert points(Task("a")) == 0
    assert points(Task("a", description=words(24))) == 0
    assert points(Task("a", description=words(25))) == 1
    assert points(Task("a", description=words(150))) == 2
    assert points(Task("a", dependencies=["x"])) == 0
    assert points(Task("a", dependencies=["x", "y"])) == 1
    assert points(Task("a", dependencies=list("wxyz"))) == 2
    assert points(Task("a", exit_criteria=["c"] * 3)) == 0
    assert points(Task("a", exit_criteria=["c"] * 4)) == 1
    assert points(Task("a", exit_criteria=["c"] * 7)) == 2
    assert points(Task("a", title="Refactor the parser")) == 1
    assert points(Task("a", title="Security review of the schema migration")) == 2  # three families, at most 2
    assert points(Task("a", title="Author the handbook")) == 0  # `author` is not `authentication`
    assert points(Task("a", title="Fix a typo in the README")) == -1
    assert points(Task("a"), epic_size=1) == 1
    assert points(Task("a"), epic_size=2) == 0


def test_heavy_words_count_only_near_the_start_of_the_description():
    lead = Task("a", description="Refactor " + words(30))
    late = Task("a", description=words(45) + " refactor")
    assert points(lead) == points(late) + 1


def test_levels_and_what_inference_leaves_alone():
    assert [level(p).value for p in (-1, 0, 1, 2, 3, 4, 9)] == [
        "simple", "simple", "simple", "moderate", "moderate", "complex", "complex",
    ]  # fmt: skip
    written = Task("w", complexity=Complexity.COMPLEX)
    scored = Task("s", complexity_score=2)
    bare = Task("b", title="Distributed schema migration", dependencies=["w", "s"], epic="E")
    assert infer([written, scored, bare]) == [bare]
    assert written.complexity is Complexity.COMPLEX and not written.complexity_inferred
    assert scored.complexity is None and not scored.complexity_inferred  # the loader derives it from the score
    assert bare.complexity is Complexity.COMPLEX and bare.complexity_inferred  # 2 words + 1 dep + epic of one


def test_the_loader_infers_and_the_executor_timeout_and_template_follow(write):
    path = write(
        "r.yaml",
        """
        tasks:
          - {id: small, title: Fix a typo}
          - id: big
            title: Refactor the security layer
            dependencies: [small, given]
            exit_criteria: [a, b, c, d]
          - {id: given, complexity: moderate}
          - {id: cmd, command: "true"}
        """,
    )
    tasks = load([path]).roadmap.by_id()
    assert {k: (t.complexity.value, t.complexity_inferred) for k, t in tasks.items()} == {
        "small": ("simple", True), "big": ("complex", True), "given": ("moderate", False), "cmd": ("simple", True),
    }  # fmt: skip
    assert (tasks["small"].timeout, tasks["big"].timeout, tasks["given"].timeout, tasks["cmd"].timeout) == (
        600, 1800, 1200, None,
    )  # fmt: skip
    ex = executors.parse({"command": ["agent", "{complexity}", "{model}"], "models": {"worker": {"complex": "big-model", "default": "small"}}})
    assert executors.complexity_of(tasks["big"]) == "complex"
    argv = executors.build_argv(tasks["big"], "worker", ex, "")
    assert list(argv)[1:] == ["complex", "big-model"]


def test_an_executor_timeouts_unknown_written_in_the_file_stays_for_inferred_tasks(write):
    path = write(
        "r.yaml",
        """
        defaults:
          executor_timeouts: {simple: 5m, unknown: 2m}
        tasks:
          - {id: u}
          - {id: s, complexity: simple}
        """,
    )
    assert [t.timeout for t in load([path]).roadmap.tasks] == [120, 300]
    other = write("o.yaml", "defaults:\n  executor_timeouts: {simple: 5m}\ntasks:\n  - {id: u}\n")
    assert load([other]).roadmap.tasks[0].timeout == 300


def test_check_shows_each_tasks_complexity_and_whether_it_was_inferred(write):
    path = write("r.yaml", "tasks:\n  - {id: a, complexity: complex}\n  - {id: b, title: Refactor the schema}\n")
    text = format_plan(load([path]))
    assert "  complexity: moderate 1 · complex 1 (1 inferred)" in text
    assert "    a: complex\n    b: moderate (inferred)" in text
    out = subprocess.run([sys.executable, "-m", "runner", path, "--check", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["complexity"] == [
        {"task": "a", "complexity": "complex", "inferred": False},
        {"task": "b", "complexity": "moderate", "inferred": True},
    ]
    assert doc["complexity_inferred"] == 1


# The spread the rule gives on the real WeatherVane roadmaps (docs/roadmap.md quotes these counts).
SPREAD = {
    "weathervane-2025-11-19.yaml": (180, {"simple": 87, "moderate": 90, "complex": 3}),
    "weathervane-2025-11-05-large.yaml": (379, {"simple": 231, "moderate": 137, "complex": 11}),
    "weathervane-sim.yaml": (199, {"simple": 199}),  # placeholders: a three-word title, nothing else
}


@pytest.mark.skipif(not ROADMAPS.is_dir(), reason="the shared roadmaps are not beside the project")
@pytest.mark.parametrize("name", sorted(SPREAD))
def test_the_rule_on_the_weathervane_roadmaps_gives_the_documented_spread(name):
    inferred, spread = SPREAD[name]
    tasks = load([str(ROADMAPS / name)]).roadmap.tasks
    rated = [t for t in tasks if t.complexity_inferred]
    assert len(rated) == inferred
    assert dict(Counter(t.complexity.value for t in rated)) == spread
    assert all(t.complexity is not None for t in tasks)


@pytest.mark.skipif(not ROADMAPS.is_dir(), reason="the shared roadmaps are not beside the project")
def test_the_real_roadmaps_are_not_all_one_level():
    levels = set()
    for name in SPREAD:
        levels |= {t.complexity for t in load([str(ROADMAPS / name)]).roadmap.tasks if t.complexity_inferred}
    assert levels == set(Complexity)


@pytest.fixture
def write(tmp_path):
    def _write(name: str, text: str) -> str:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text).lstrip("\n"))
        return str(p)

    return _write
