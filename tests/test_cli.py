"""The command as users type it: exit codes, messages that name the place, --json, plain output."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_ROADMAPS, wvo

pytestmark = pytest.mark.timeout(120)

GOOD = """tasks:
  - id: a
    command: echo a
  - id: b
    command: ["echo", "b"]
    dependencies: [a]
"""


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.yaml"
    p.write_text(GOOD)
    return p


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_bad_agents_exits_2_with_a_clear_message(good, tmp_path, value):
    r = wvo(good, "--agents", value, "--state-dir", tmp_path / "s")
    assert r.returncode == 2
    assert "--agents" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists(), "nothing may run or be created"


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("root-list.yaml", "- a\n- b\n", "mapping"),
        ("no-id.yaml", "tasks:\n  - command: echo x\n", "id"),
        ("dup.yaml", "tasks:\n  - id: a\n    command: x\n  - id: a\n    command: y\n", "dup.yaml:2"),
        ("bad-yaml.yaml", "tasks:\n  - id: a\n    command: [unclosed\n", "bad-yaml.yaml:"),
        ("tasks-not-list.yaml", "tasks: 3\n", "tasks"),
    ],
)
def test_bad_roadmaps_exit_2_naming_the_place(tmp_path, name, text, expected):
    p = tmp_path / name
    p.write_text(text)
    r = wvo(p, "--agents", "2", "--state-dir", tmp_path / "s")
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 4
    assert not (tmp_path / "s").exists()


def test_duplicate_ids_name_both_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("tasks:\n  - id: a\n    command: x\n  - id: b\n    command: y\n  - id: a\n    command: z\n")
    r = wvo(p, "--check")
    assert r.returncode == 2
    assert "dup.yaml:2" in r.stderr + r.stdout and "dup.yaml:6" in r.stderr + r.stdout


def test_missing_file_and_directory(tmp_path):
    r = wvo(tmp_path / "nope.yaml")
    assert r.returncode == 2 and "nope.yaml" in r.stderr and "Traceback" not in r.stderr
    r = wvo(tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_check_json_counts_and_lists_every_error(tmp_path):
    p = tmp_path / "two-errors.yaml"
    p.write_text("tasks:\n  - id: a\n    priority: urgent\n  - id: b\n    retries: -1\n")
    r = wvo(p, "--check", "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["valid"] is False and doc["tasks"] == 2
    assert {e["task"] for e in doc["errors"]} == {"a", "b"}
    assert all(e["line"] for e in doc["errors"])


def test_run_json_summary(good, tmp_path):
    r = wvo(good, "--agents", "2", "--json", "--state-dir", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("total", "succeeded", "failed", "skipped", "makespan_s"):
        assert key in doc
    assert (doc["total"], doc["succeeded"], doc["failed"]) == (2, 2, 0)
    assert doc["makespan_s"] >= 0


def test_failed_task_exits_1_and_piped_output_is_plain(tmp_path):
    p = tmp_path / "fail.yaml"
    p.write_text("tasks:\n  - id: ok\n    command: 'true'\n  - id: boom\n    command: exit 4\n")
    r = wvo(p, "--agents", "2", "--state-dir", tmp_path / "s")
    assert r.returncode == 1
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr
    assert any(line.startswith("FAIL  boom") for line in r.stderr.splitlines())
    table = r.stderr[r.stderr.index("task "):]
    assert "boom" in table and "exit" not in table.splitlines()[0]


def test_default_state_dir_does_not_depend_on_cwd(good, tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    a = wvo(good.name, "--agents", "1", "--json", env=env, cwd=good.parent)
    b = wvo(str(good), "--agents", "1", "--json", env=env, cwd=tmp_path.parent)
    assert a.returncode == b.returncode == 0
    folder_a = json.loads(a.stdout)["folder"]
    folder_b = json.loads(b.stdout)["folder"]
    assert folder_a.rsplit("/runs/", 1)[0] == folder_b.rsplit("/runs/", 1)[0]
    assert folder_a.startswith(str(tmp_path / "xdg" / "wvo-batch"))


def test_help_documents_exit_codes():
    r = wvo("--help")
    assert r.returncode == 0
    for code in ("0", "1", "2", "130"):
        assert code in r.stdout


@pytest.mark.parametrize(
    "name, tasks, warnings",
    [
        ("weathervane-2025-11-19.yaml", 180, 5),
        ("weathervane-2025-11-05-large.yaml", 424, 1),
        ("weathervane-sim.yaml", 199, 2),
    ],
)
def test_real_roadmaps_check_valid(name, tasks, warnings):
    path = SHARED_ROADMAPS / name
    if not path.exists():
        pytest.skip("shared/roadmaps is not beside the project")
    r = wvo(path, "--check", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["valid"] and doc["tasks"] == tasks
    unknown = [w for w in doc["warnings"] if "unknown dependency" in w["message"] or "does not exist" in w["message"]]
    assert len(unknown) == warnings, doc["warnings"]


@pytest.mark.parametrize(
    "name, needle",
    [("weathervane-2025-10-11-duplicate-id.yaml", "T3.2.2"), ("weathervane-2025-11-13-invalid-yaml.yaml", ":3137")],
)
def test_real_roadmaps_check_invalid(name, needle):
    path = SHARED_ROADMAPS / name
    if not path.exists():
        pytest.skip("shared/roadmaps is not beside the project")
    r = wvo(path, "--check", "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert not doc["valid"]
    assert any(needle in json.dumps(e) or needle.strip(":") == str(e.get("line")) for e in doc["errors"]), doc["errors"]
