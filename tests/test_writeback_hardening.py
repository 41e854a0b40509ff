"""--write-back never loses or misplaces an edit: concurrent appends, look-alike `id:` lines, epics with a
task's id, symlinks, CRLF, and a roadmap a task made non-UTF-8 (issue 14, section 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from runner.roadmap import writeback
from runner.roadmap.writeback import WriteBackSkipped, write_statuses

from helpers import reaped

DONE = {"a": ("done", None)}


def tasks_of(text: str) -> dict[str, dict]:
    doc = yaml.safe_load(text)
    out = {}
    for t in doc.get("tasks") or []:
        out[t["id"]] = t
    for epic in doc.get("epics") or []:
        for ms in epic.get("milestones") or []:
            for t in ms.get("tasks") or []:
                out[t["id"]] = t
    return out


@pytest.mark.timeout(60)
def test_appends_by_another_process_during_write_back_are_all_kept(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("tasks:\n  - id: a\n    command: 'true'\n  - id: b\n    command: 'true'\n")
    n = 300
    # Like a task that reads the roadmap and adds a task to it, again and again, taking no lock.
    appender = textwrap.dedent(
        f"""
        import yaml
        path = {str(path)!r}
        print("go", flush=True)
        for i in range({n}):
            with open(path) as f:
                yaml.load(f, Loader=yaml.CSafeLoader)
            with open(path, "a") as f:
                f.write(f"  - id: extra-{{i}}\\n    command: 'true'\\n")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", appender], stdout=subprocess.PIPE, text=True)
    with reaped(proc):
        assert proc.stdout.readline() == "go\n"
        deadline = time.monotonic() + 40
        writes = skipped = 0
        while proc.poll() is None and writes < 20_000 and time.monotonic() < deadline:
            status = ("done", None) if writes % 2 else ("blocked", f"attempt {writes} failed")
            try:
                write_statuses(str(path), {"a": status, "b": status})
            except WriteBackSkipped:  # it kept changing for every try: the documented give-up, nothing written
                skipped += 1
            writes += 1
        assert proc.wait(timeout=20) == 0
        writeback.settle()  # what the process's exit does: a write into the last replaced file is kept
    assert writes - skipped >= 20, f"write-back wrote only {writes - skipped} times alongside the appender ({skipped} gave up)"
    text = path.read_text()
    lost = [i for i in range(n) if f"id: extra-{i}\n" not in text]
    assert lost == [], f"{len(lost)} of {n} appended entries lost over {writes} write-backs"
    by_id = tasks_of(text)
    assert len(by_id) == n + 2
    assert by_id["a"]["status"] in ("done", "blocked")


def test_an_id_line_inside_a_block_scalar_is_not_the_task(tmp_path):
    path = tmp_path / "r.yaml"
    text = (
        "tasks:\n"
        "  - id: notes\n"
        "    description: |\n"
        "      id: a\n"
        "      keep this text as it is\n"
        "    command: 'true'\n"
        "  - id: a\n"
        "    command: 'true'\n"
    )
    path.write_text(text)
    assert write_statuses(str(path), DONE) == []
    by_id = tasks_of(path.read_text())
    assert by_id["notes"]["description"] == "id: a\nkeep this text as it is\n"
    assert "status" not in by_id["notes"]
    assert by_id["a"]["status"] == "done"


def test_an_epic_with_the_tasks_id_is_not_the_task(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "epics:\n"
        "  - id: a\n"
        "    title: The epic\n"
        "    milestones:\n"
        "      - id: m1\n"
        "        tasks:\n"
        "          - id: a\n"
        "            command: 'true'\n"
    )
    assert write_statuses(str(path), DONE) == []
    doc = yaml.safe_load(path.read_text())
    epic = doc["epics"][0]
    assert "status" not in epic
    assert epic["milestones"][0]["tasks"][0]["status"] == "done"


def test_a_task_whose_first_key_is_status_gets_it_replaced_not_doubled(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("tasks:\n  - status: todo\n    id: a\n    command: 'true'\n")
    assert write_statuses(str(path), DONE) == []
    text = path.read_text()
    assert text.count("status:") == 1 and tasks_of(text)["a"]["status"] == "done"


def test_a_symlinked_roadmap_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    target = real / "r.yaml"
    target.write_text("tasks:\n  - id: a\n    command: 'true'\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert write_statuses(str(link), DONE) == []
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert tasks_of(target.read_text())["a"]["status"] == "done"
    assert [p.name for p in real.iterdir()] == ["r.yaml"]  # no temp file left beside the target


def test_crlf_line_endings_are_kept(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"tasks:\r\n  - id: a\r\n    command: 'true'\r\n    status: todo\r\n  - id: b\r\n    command: x\r\n")
    assert write_statuses(str(path), {"a": ("done", None), "b": ("blocked", "exit code 3")}) == []
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") == 8
    by_id = tasks_of(data.decode())
    assert by_id["a"]["status"] == "done" and by_id["b"]["last_error"] == "exit code 3"


def test_a_non_utf8_byte_written_by_a_task_skips_write_back_with_a_reason(tmp_path):
    path = tmp_path / "r.yaml"
    data = b"tasks:\n  - id: a\n    command: 'true'\n  - id: b\n    title: caf\xe9\n"
    path.write_bytes(data)
    with pytest.raises(WriteBackSkipped) as info:
        write_statuses(str(path), DONE)
    assert isinstance(info.value, OSError)  # what the manager catches and logs as a warning
    assert "not UTF-8" in info.value.strerror and "line 5" in info.value.strerror
    assert path.read_bytes() == data


def test_a_roadmap_made_invalid_yaml_by_a_task_is_left_alone(tmp_path):
    path = tmp_path / "r.yaml"
    text = "tasks:\n  - id: a\n    command: 'true'\n  - id: [b\n"
    path.write_text(text)
    with pytest.raises(WriteBackSkipped) as info:
        write_statuses(str(path), DONE)
    assert "not valid YAML" in info.value.strerror
    assert path.read_text() == text


def test_a_roadmap_with_a_non_utf8_name_is_written_back(tmp_path):
    path = os.path.join(str(tmp_path), os.fsdecode(b"r\xff.yaml"))
    with open(path, "w") as f:
        f.write("tasks:\n  - id: a\n    command: 'true'\n")
    assert write_statuses(path, DONE) == []
    with open(path) as f:
        assert tasks_of(f.read())["a"]["status"] == "done"


@pytest.mark.timeout(60)
def test_a_task_writing_a_non_utf8_byte_into_the_roadmap_gets_a_warning_not_a_crash(tmp_path):
    from conftest import wvo

    path = tmp_path / "r.yaml"
    ran = tmp_path / "ran.txt"
    spoil = f"printf '# caf\\351\\n' >> {path}; echo a >> {ran}".replace("'", "''")
    path.write_text(
        f"tasks:\n  - id: a\n    command: '{spoil}'\n"
        f"  - id: b\n    dependencies: [a]\n    command: echo b >> {ran}\n"
    )
    r = wvo(path, "--state-dir", tmp_path / "s", "--write-back")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    assert "not UTF-8" in r.stderr and "were not written" in r.stderr
    assert ran.read_text().split() == ["a", "b"]
    assert b"# caf\xe9\n" in path.read_bytes()


@pytest.mark.timeout(60)
def test_last_error_names_a_log_only_when_the_attempt_left_one(tmp_path):
    """An attempt that printed nothing leaves no log (README): its `last_error` is the error alone, not
    `(log: None)`; one that printed names its log, which holds what it printed."""
    from conftest import wvo

    path = tmp_path / "r.yaml"
    path.write_text('tasks:\n  - id: quiet\n    command: "exit 3"\n  - id: loud\n    command: "echo boom; exit 4"\n')
    r = wvo(path, "--state-dir", tmp_path / "s", "--write-back")
    assert r.returncode == 1, r.stderr
    by_id = tasks_of(path.read_text())
    assert by_id["quiet"]["last_error"] == "exit code 3"
    error, _, log = by_id["loud"]["last_error"].partition(" (log: ")
    assert error == "exit code 4" and log.endswith("loud.1.log)")
    assert open(log[:-1]).read() == "boom\n"
