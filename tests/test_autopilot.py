"""Batches and the autopilot loop through the command: selection, caps, a living roadmap, env vars."""

from __future__ import annotations

import json

import pytest

from conftest import wvo

pytestmark = pytest.mark.timeout(120)

ROADMAP = """epics:
  - id: E1
    milestones:
      - id: M1
        tasks:
          - {{id: T1.1, command: "echo T1.1 >> {ran}", domain: mcp}}
          - {{id: T1.2, command: "echo T1.2 >> {ran}", dependencies: [T1.1]}}
      - id: M2
        tasks:
          - {{id: T2.1, command: "echo T2.1 >> {ran}", priority: low}}
          - {{id: T2.2, command: "echo T2.2 >> {ran}", priority: critical, domain: mcp}}
tasks:
  - {{id: X, command: "echo X >> {ran}", priority: high}}
"""


@pytest.fixture
def setup(tmp_path):
    ran = tmp_path / "ran.txt"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(ROADMAP.format(ran=ran))
    return rm, ran, tmp_path / "s"


def ran_ids(ran) -> list[str]:
    return ran.read_text().split() if ran.exists() else []


@pytest.mark.parametrize(
    "only, expected",
    [
        (["T1.*"], {"T1.1", "T1.2"}),
        (["E1"], {"T1.1", "T1.2", "T2.1", "T2.2"}),
        (["M2"], {"T2.1", "T2.2"}),
        (["domain=mcp"], {"T1.1", "T2.2"}),
        (["X", "M2"], {"X", "T2.1", "T2.2"}),
    ],
)
def test_only_selects_by_glob_epic_milestone_and_field(setup, only, expected):
    rm, ran, state = setup
    args = [a for o in only for a in ("--only", o)]
    r = wvo(rm, *args, "--state-dir", state, "--json")
    assert r.returncode == 0, r.stderr
    assert set(ran_ids(ran)) == expected


def test_outside_dependency_blocks_unless_with_deps(setup):
    rm, ran, state = setup
    r = wvo(rm, "--only", "T1.2", "--state-dir", state, "--json")
    doc = json.loads(r.stdout)
    assert ran_ids(ran) == []
    assert doc["skipped"] == 1 and "T1.1" in doc["tasks"][0]["reason"]
    r = wvo(rm, "--only", "T1.2", "--with-deps", "--state-dir", state)
    assert r.returncode == 0
    assert ran_ids(ran) == ["T1.1", "T1.2"]


def test_max_tasks_honours_priority_and_dependencies(setup):
    rm, ran, state = setup
    check = wvo(rm, "--max-tasks", "3", "--check", "--json")
    assert check.returncode == 0
    planned = json.loads(check.stdout)["batch"]["run"]
    r = wvo(rm, "--max-tasks", "3", "--agents", "1", "--state-dir", state)
    assert r.returncode == 0
    got = ran_ids(ran)
    assert sorted(got) == sorted(planned) == sorted(["T2.2", "X", "T1.1"])
    assert got[0] == "T2.2", "critical first"


def test_once_runs_one_batch(setup):
    rm, ran, state = setup
    r = wvo(rm, "--once", "--max-tasks", "2", "--state-dir", state)
    assert r.returncode == 0
    assert len(ran_ids(ran)) == 2


def test_loop_picks_up_a_task_added_by_a_task(tmp_path):
    ran = tmp_path / "ran.txt"
    rm = tmp_path / "roadmap.yaml"
    adder = f"printf '  - id: added\\n    command: echo added >> {ran}\\n' >> {rm}; echo first >> {ran}"
    rm.write_text(f"tasks:\n  - id: first\n    command: {json.dumps(adder)}\n")
    r = wvo(rm, "--iterations", "0", "--state-dir", tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    assert ran_ids(ran) == ["first", "added"]
    doc = json.loads(r.stdout)
    assert len(doc["batches"]) == 2 and doc["succeeded"] == 2
    hist = wvo(rm, "--state-dir", tmp_path / "s", "--history")
    assert len(hist.stdout.strip().splitlines()) == 3


def test_invalid_edit_mid_loop_stops_with_2_and_keeps_what_ran(tmp_path):
    ran = tmp_path / "ran.txt"
    rm = tmp_path / "roadmap.yaml"
    breaker = f"echo one >> {ran}; printf '  - id: [broken\\n' >> {rm}"
    rm.write_text(f"tasks:\n  - id: one\n    command: {json.dumps(breaker)}\n")
    r = wvo(rm, "--iterations", "3", "--state-dir", tmp_path / "s", "--json")
    assert r.returncode == 2
    assert "roadmap.yaml:" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["succeeded"] == 1 and doc["errors"]
    hist = wvo(rm, "--state-dir", tmp_path / "s", "--history")
    assert "succeeded" in hist.stdout


def test_env_overrides_defaults_and_flags_override_env(setup):
    rm, ran, state = setup
    r = wvo(rm, "--json", env={"WVO_AGENTS": "3", "WVO_STATE_DIR": str(state)})
    doc = json.loads(r.stdout)
    assert sum(doc["agents"].values()) == 3
    assert doc["folder"].startswith(str(state))
    r = wvo(rm, "--json", "--agents", "2", env={"WVO_AGENTS": "3", "WVO_STATE_DIR": str(state)})
    assert sum(json.loads(r.stdout)["agents"].values()) == 2
    r = wvo(rm, "--json", env={"WVO_AGENTS": "0", "WVO_STATE_DIR": str(state)})
    assert r.returncode == 2 and "--agents" in r.stderr


def test_pattern_matching_nothing_is_a_usage_error(setup):
    rm, ran, state = setup
    r = wvo(rm, "--only", "nope*", "--state-dir", state)
    assert r.returncode == 2 and "nope*" in r.stderr and "Traceback" not in r.stderr
    assert ran_ids(ran) == []


def test_make_autopilot_takes_the_original_names(tmp_path):
    import os
    import subprocess

    from conftest import ROOT

    def case(name: str, make_vars: list[str], env: dict) -> list[str]:
        ran = tmp_path / f"{name}.txt"
        rm = tmp_path / f"{name}.yaml"
        adder = f"printf '  - id: added\\n    command: echo added >> {ran}\\n' >> {rm}; echo first >> {ran}"
        rm.write_text(f"tasks:\n  - id: first\n    command: {json.dumps(adder)}\n")
        full_env = {**os.environ, "WVO_STATE_DIR": str(tmp_path / name), **env}
        r = subprocess.run(
            ["make", "-s", "autopilot", f"ROADMAP={rm}", "AGENTS=2", *make_vars],
            cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120,
        )
        assert r.returncode == 0, r.stderr
        return ran_ids(ran)

    # A loop would run `first`, then the task it adds; one batch runs `first` only.
    assert case("loop", ["MAX_ITERATIONS=0"], {}) == ["first", "added"]
    assert case("max1", ["MAX_ITERATIONS=1"], {}) == ["first"]
    assert case("once", [], {"WVO_MAX_ITERATIONS": "0", "WVO_AUTOPILOT_ONCE": "1"}) == ["first"]


def _failing(tmp_path, n: int):
    """A roadmap of n tasks that each fail (no retries), each noting that it ran."""
    ran = tmp_path / "ran.txt"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n" + "".join(f'  - {{id: F{i}, command: "echo F{i} >> {ran}; exit 1"}}\n' for i in range(n)))
    return rm, ran


def test_max_failures_counts_the_whole_loop_not_each_batch(tmp_path):
    # --max-failures 2 with one task a batch: each batch failed once (under its own 2), so the loop ran all five.
    rm, ran = _failing(tmp_path, 5)
    r = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--max-failures", "2", "--max-tasks", "1",
            "--iterations", "0", "--json", timeout=60)  # fmt: skip
    assert ran_ids(ran) == ["F0", "F1"], r.stderr[-2000:]
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert len(doc["batches"]) == 2 and "--max-failures" in doc["stop_reason"]
    assert doc["failed"] == 2


def test_a_batch_stopped_by_max_failures_ends_the_loop(tmp_path):
    # One batch of five: --max-failures 2 skips the three not started; the loop handed them to the next batch,
    # and the next, until all five had failed.
    rm, ran = _failing(tmp_path, 5)
    r = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--max-failures", "2", "--iterations", "0", "--json",
            timeout=60)  # fmt: skip
    assert ran_ids(ran) == ["F0", "F1"], r.stderr[-2000:]
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert len(doc["batches"]) == 1 and "--max-failures" in doc["stop_reason"]
    assert doc["failed"] == 2 and doc["skipped"] == 3
