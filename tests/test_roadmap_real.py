"""The real WeatherVane roadmaps in shared/roadmaps give exactly what that folder's README says."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.roadmap.loader import format_plan, load, plan

ROADMAPS = Path(__file__).resolve().parents[2] / "shared" / "roadmaps"

pytestmark = pytest.mark.skipif(
    not ROADMAPS.is_dir(),
    reason=f"the shared roadmaps folder is absent (looked beside the project root: {ROADMAPS.name})",
)


def check(name: str):
    path = str(ROADMAPS / name)
    return path, load([path])


def unknown_dependencies(result) -> list[str]:
    return sorted(p.message.split("`")[1] for p in result.warnings if p.message.startswith("unknown dependency"))


def test_2025_11_19_is_valid_with_five_unknown_dependency_warnings():
    path, result = check("weathervane-2025-11-19.yaml")
    assert result.valid and result.roadmap is not None
    assert result.tasks_total == 180 and len(result.roadmap.tasks) == 180
    assert len(result.warnings) == 5
    assert unknown_dependencies(result) == [
        "AFP-MCP-PID-LOCK-FIX-20251112",
        "AFP-W3-RELIABILITY-DASHBOARD",
        "AFP-W4-RELIABILITY-100",
        "All critics and gates pass without overrides",
        "CLI demo runs 5 generations of glider",
    ]
    for w in result.warnings:
        assert w.file == path and w.line and w.task
    # Both layouts are read: tasks under epics/milestones and the flat list after them.
    assert any(t.epic and t.milestone for t in result.roadmap.tasks)
    assert any(t.milestone is None for t in result.roadmap.tasks)
    assert all(t.command is None and t.call is None and t.timeout for t in result.roadmap.tasks)


def test_2025_11_05_large_is_valid_with_one_warning_about_depends_on():
    path, result = check("weathervane-2025-11-05-large.yaml")
    assert result.valid
    assert result.tasks_total == 424
    assert len(result.warnings) == 1
    assert unknown_dependencies(result) == ["depends_on"]
    warning = result.warnings[0]
    assert warning.file == path and warning.line and warning.task
    # The tasks that wrote `dependencies: {depends_on: [...]}` cannot run, and the plan says why.
    mapped = [t for t in result.roadmap.tasks if t.dependencies[:1] == ["depends_on"] and t.runnable_status]
    assert mapped
    assert all(result.blocked[t.id] == "depends on unknown task `depends_on`" for t in mapped)
    assert plan(result)["valid"] is True


def test_sim_is_valid_with_warnings_for_the_two_unblock_tasks():
    path, result = check("weathervane-sim.yaml")
    assert result.valid
    assert result.tasks_total == 199
    assert unknown_dependencies(result) == ["MCP_UNBLOCK", "PRODUCT_UNBLOCK"]
    assert len(result.warnings) == 2


def test_duplicate_id_file_is_invalid_and_names_both_lines():
    path, result = check("weathervane-2025-10-11-duplicate-id.yaml")
    assert not result.valid and result.roadmap is None
    assert result.tasks_total == 44
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.task == "T3.2.2" and error.file == path
    first_line = int(error.message.rsplit(":", 1)[1].rstrip(")"))
    assert first_line < error.line
    text = str(error)
    assert f"{path}:{error.line}: task T3.2.2: duplicate task id" in text
    assert f"{path}:{first_line}" in text
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert "T3.2.2" in "\n".join(lines[first_line - 1 : first_line + 2])
    assert "T3.2.2" in "\n".join(lines[error.line - 1 : error.line + 2])


def test_invalid_yaml_file_reports_line_3137():
    path, result = check("weathervane-2025-11-13-invalid-yaml.yaml")
    assert not result.valid and result.roadmap is None
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.file, error.line) == (path, 3137)
    assert "invalid YAML" in error.message and "`" in error.message


def test_all_files_together():
    paths = [str(ROADMAPS / n) for n in ("weathervane-2025-11-19.yaml", "weathervane-sim.yaml")]
    result = load(paths)
    assert result.valid and result.tasks_total == 180 + 199
    assert "INVALID" not in format_plan(result)
