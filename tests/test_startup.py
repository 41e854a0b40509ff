"""Start-up stays lean: an ordinary run imports none of the heavy modules it used to."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from runner.roadmap.hashing import sha256

pytestmark = pytest.mark.timeout(60)

# Each cost 2-260 ms of every start-up when it was imported on the way to running one task.
HEAVY = ["typer", "click", "pydantic", "yaml", "multiprocessing", "subprocess", "_hashlib", "psutil", "typing", "shutil",
         # logging and traceback (with linecache, tokenize, textwrap: ~5 ms), and what inspect brings (ast, dis:
         # ~7 ms; dataclasses imports inspect, which runner.cli.lazyimport stands in for until it is used)
         "logging", "traceback", "ast", "dis", "threading",
         # ~1 ms each: random (the scheduler's retry jitter) and datetime (sqlite3's date adapters)
         "random", "datetime"]


def test_the_builtin_sha256_is_hashlibs():
    data = os.urandom(1000)
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = sha256()
    h.update(data[:10])
    h.update(data[10:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_running_one_task_imports_none_of_the_heavy_modules(tmp_path):
    """Neither the manager nor its agent: an agent imports what its first task needs after the fork, and
    every agent pays for it before that task starts (typing and pathlib cost an agent ~17 ms)."""
    (tmp_path / "one.yaml").write_text('tasks:\n  - id: a\n    command: ["true"]\n')
    manager, agents = modules_of_a_run(tmp_path, "one.yaml", ["--agents", "1"], site=True)
    imported = sorted(m for m in HEAVY if m in manager or m in agents)
    assert imported == [], f"imported on the way to one task: {imported} (by an agent: {sorted(set(imported) & agents)})"



def test_an_agent_imports_nothing_on_the_way_to_a_plain_command(tmp_path):
    """Twenty agents boot at once on two cores: a module an agent imports after the fork is imported
    twenty times, and the last agent's first task waits for all of them (workload 2 of the benchmark).
    What the agents need (the task's environment too) is imported, and built, by the manager before it forks."""
    (tmp_path / "two.yaml").write_text('tasks:\n  - id: a\n    command: ["true"]\n  - id: b\n    command: "exit 0"\n')
    _, agents = modules_of_a_run(tmp_path, "two.yaml", ["--agents", "2"])
    assert agents == set(), f"imported by the agents after the fork: {sorted(agents)}"

# -- the start-up budget ----------------------------------------------------------------------------------
#
# A run of plain commands (argv lists and shell strings, no workspace, no executor) must not pay for the
# coding layer, and the number of modules it imports is capped, so that a feature creeping into start-up
# fails here instead of in the benchmark. Counted beyond what `python -S` starts with (site not loaded).
MODULE_BUDGET = 138  # measured 137 (the manager; its agents import nothing more), Python 3.11 on Linux; raise it only with a reason. 141 -> 150: the run loop's components, context, events and exit decision (4), the one attempt pipeline and tree kill (2), the board and outcome table split out of the display (2), the manager's board component (1). 151 -> 136: logging, traceback and inspect's ast/dis/tokenize off the start-up path

# Imported today on the way to a plain run through runner/manager (its import of runner.coding.executors at
# module level, and the review module read for tasks that have no review key), which another change owns.
# The test fails when one of these is no longer imported, so that this list only ever shrinks.
KNOWN_CODING_IMPORTS: set[str] = set()

PLAIN_ROADMAP = """\
tasks:
  - id: a
    command: ["true"]
  - id: b
    command: "exit 0"
    dependencies: [a]
  - id: c
    command: ["sh", "-c", "echo hi"]
"""

COUNT_SCRIPT = """
import sys
before = set(sys.modules)
sys.argv = ["wvo-batch", ROADMAP, *ARGS, "--quiet", "--state-dir", "state"]
import runner.cli.command
runner.cli.command._exit = sys.exit  # main() ends in os._exit: let this script report first
try:
    runner.cli.command.main()
except SystemExit as exc:
    code = exc.code
after = sorted(set(sys.modules) - before)
import json
print(json.dumps([code, after, sorted(before)]))
"""


def modules_of_a_run(tmp_path, roadmap: str, args: list[str], creep: str = "", site: bool = False) -> tuple[set[str], set[str]]:
    """(the modules the manager imports, those only its agents import), beyond the bare interpreter's.

    The agents are forked from the manager and import what their tasks need afterwards, out of the
    manager's sys.modules: `-X importtime` names every import of every process that shares stderr.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WVO_")}
    env["PYTHONPATH"] = str(ROOT)
    script = COUNT_SCRIPT.replace("ROADMAP", repr(roadmap)).replace("*ARGS", ", ".join(repr(a) for a in args))
    script = script.replace("import runner.cli.command\n", creep + "import runner.cli.command\n", 1)
    # -S: the venv's site-packages (.pth hooks) is not the run's doing; the project is on PYTHONPATH instead.
    flags = ["-X", "importtime"] + ([] if site else ["-S"])
    out = subprocess.run([sys.executable, *flags, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    code, after, before = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 0, out.stderr
    named = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    named.discard("imported package")
    named -= {"org", "org.python", "org.python.core"}  # pickle's probe for Jython: an import that fails, not a module
    manager = set(after)
    return manager, named - manager - set(before)


def imported_by_a_plain_run(tmp_path, creep: str = "") -> list[str]:
    """The modules a run of three plain commands on 2 agents imports, manager and agents, beyond the bare
    interpreter's."""
    (tmp_path / "plain.yaml").write_text(PLAIN_ROADMAP)
    manager, agents = modules_of_a_run(tmp_path, "plain.yaml", ["--agents", "2"], creep)
    return sorted(manager | agents)


# Every task's environment is built without the variables that point git at the caller's repository
# (invariant 7), also a plain command's: the manager imports that one module of the coding layer for its
# agents, which imports only `os` (and its package, a docstring).
TASK_ENVIRONMENT = {"runner.coding", "runner.coding.gitenv"}


def budget_problems(modules: list[str]) -> list[str]:
    coding = {m for m in modules if m == "runner.coding" or m.startswith("runner.coding.")} - TASK_ENVIRONMENT
    problems = []
    if coding - KNOWN_CODING_IMPORTS:
        problems.append(f"a run of plain commands imports the coding layer: {sorted(coding - KNOWN_CODING_IMPORTS)}")
    if KNOWN_CODING_IMPORTS - coding:
        problems.append(f"no longer imported, take them off KNOWN_CODING_IMPORTS: {sorted(KNOWN_CODING_IMPORTS - coding)}")
    if len(modules) > MODULE_BUDGET:
        problems.append(f"a run of plain commands imports {len(modules)} modules, over the budget of {MODULE_BUDGET}")
    return problems


def test_a_run_of_plain_commands_stays_within_the_start_up_budget(tmp_path):
    modules = imported_by_a_plain_run(tmp_path)
    assert budget_problems(modules) == [], sorted(modules)


def test_the_budget_catches_a_creeping_import(tmp_path):
    """A feature that imports a coding module (or a pile of modules) at start-up fails the budget."""
    creep = "import runner.coding.workspace, runner.coding.failures\n"
    problems = budget_problems(imported_by_a_plain_run(tmp_path, creep))
    assert any("imports the coding layer" in p and "runner.coding.workspace" in p for p in problems), problems
    assert any("over the budget" in p for p in problems), problems


def test_the_stand_in_for_inspect_is_the_real_module_on_first_use():
    """A task's code (a `call:` runs in a forked agent) sees inspect as it is: its functions, its dunders."""
    script = textwrap.dedent(
        """
        import sys
        from runner.cli import lazyimport
        lazyimport.defer()
        import dataclasses, inspect
        @dataclasses.dataclass
        class Documented:
            '''Has a docstring: inspect is not needed to make it.'''
            x: int
        before = "ast" in sys.modules
        assert inspect.__file__.endswith("inspect.py")
        from inspect import signature
        assert str(signature(lambda a, b=1: None)) == "(a, b=1)"
        assert sys.modules["inspect"].signature is signature is inspect.signature
        print(before, "ast" in sys.modules, type(sys.modules["inspect"]).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WVO_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-S", "-c", script], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "module"]
