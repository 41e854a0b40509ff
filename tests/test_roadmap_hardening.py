"""Bad roadmaps are refused at load time, naming the place (issue 14, sections 3 and 5): duplicate keys
anywhere, values the OS cannot take, numbers past what an agent can wait, paths that are not UTF-8."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, wvo
from runner.roadmap import loader as rm
from runner.roadmap.yamlfast import Bail, FastReader
from runner.roadmap.yamllib import LineLoader

# A block scalar sends a file to libyaml: each duplicate-key case is read by both readers.
LIBYAML = "notes: |\n  read by libyaml\n"


def write(tmp_path, text: str, name: str = "r.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def errors(path: str) -> list[str]:
    result = rm.load([path])
    assert result.roadmap is None, "loaded as valid"
    return [str(p) for p in result.errors]


def fast_reads(text: str) -> bool:
    try:
        FastReader(text).read()
        return True
    except Bail:
        return False


# ----------------------------------------------------------------------------- duplicate keys


DUPLICATES = [
    # (text, line of the second key, line of the first key, key)
    ("tasks:\n  - id: a\n    command: 'true'\ntasks:\n  - id: b\n    command: 'true'\n", 4, 1, "tasks"),
    ("epics:\n  - id: e\n    title: x\n    title: y\n    tasks:\n      - id: a\n", 4, 3, "title"),
    ("defaults:\n  timeout: 10\n  retries: 1\n  timeout: 20\ntasks:\n  - id: a\n", 4, 2, "timeout"),
    ("tasks:\n  - id: a\n    env:\n      A: '1'\n      A: '2'\n", 5, 4, "A"),
    ("tasks:\n  - id: a\n    command: 'true'\n    command: 'false'\n", 4, 3, "command"),
    ("tasks:\n  - command: 'true'\n    id: a\n    id: b\n", 4, 3, "id"),
]


@pytest.mark.parametrize("reader", ["fast", "libyaml"])
@pytest.mark.parametrize("text,again,first,key", DUPLICATES)
def test_a_duplicate_key_anywhere_is_an_error_naming_both_lines(tmp_path, reader, text, again, first, key):
    if reader == "libyaml":
        text += LIBYAML
    path = write(tmp_path, text)
    assert fast_reads(text) == (reader == "fast")
    found = [e for e in errors(path) if "given twice" in e]
    assert len(found) == 1, errors(path)
    assert found[0].startswith(f"{path}:{again}: ")
    assert f"`{key}` is given twice (lines {first} and {again})" in found[0]


def test_both_readers_find_the_same_duplicates():
    texts = [t for t, *_ in DUPLICATES] + ["tasks:\n  - {id: a, id: b}\n", "tasks:\n  - id: a\n    env: {X: 1, X: 2}\n"]
    for text in texts:
        fast = FastReader(text).read()
        loader = LineLoader(text)
        try:
            loader.get_single_data()
        finally:
            loader.dispose()
        assert sorted(sum(fast.dup_keys.values(), [])) == sorted(sum(loader.dup_keys.values(), [])), text


def test_a_second_top_level_tasks_list_fails_check_with_exit_2(tmp_path):
    path = write(tmp_path, "tasks:\n  - id: a\n    command: 'true'\ntasks:\n  - id: b\n    command: 'true'\n")
    r = wvo(path, "--check")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{path}:4: key `tasks` is given twice (lines 1 and 4)" in r.stdout + r.stderr


# ----------------------------------------------------------------------------- values the OS cannot take


NUL_CASES = [
    ('tasks:\n  - id: "a\\0b"\n    command: "true"\n', "`id`"),
    ('tasks:\n  - id: a\n    command: "echo \\0"\n', "`command`"),
    ('tasks:\n  - id: a\n    command: [echo, "x\\0y"]\n', "`command[1]`"),
    ('tasks:\n  - id: a\n    command: "true"\n    env: {"K\\0": v}\n', "`env`"),
    ('tasks:\n  - id: a\n    command: "true"\n    env: {K: "v\\0"}\n', "`env`"),
    ('tasks:\n  - id: a\n    command: "true"\n    cwd: "sub\\0dir"\n', "`cwd`"),
    ('tasks:\n  - id: a\n    title: "x\\0"\n', "`title`"),  # an executor task: the title is in its prompt
]


@pytest.mark.parametrize("text,field", NUL_CASES, ids=[f for _, f in NUL_CASES])
def test_a_nul_byte_in_what_reaches_the_os_is_an_error_at_load_time(tmp_path, text, field):
    path = write(tmp_path, "executor: codex\n" + text if "title" in field else text)
    line = 3 if "title" in field else 2
    found = [e for e in errors(path) if "NUL" in e]
    assert len(found) == 1 and found[0].startswith(f"{path}:{line}: task a"), found
    assert field in found[0]


def test_a_nul_byte_in_defaults_is_an_error(tmp_path):
    path = write(tmp_path, 'defaults:\n  cwd: "x\\0"\n  env: {A: "\\0"}\ntasks:\n  - id: a\n    command: "true"\n')
    found = [e for e in errors(path) if "NUL" in e]
    assert any("`defaults.cwd`" in e for e in found) and any("`defaults.env`" in e for e in found), found


@pytest.mark.parametrize("key", ["A=B", "", "=A"])
def test_an_env_name_the_os_cannot_take_is_an_error(tmp_path, key):
    path = write(tmp_path, f'tasks:\n  - id: a\n    command: "true"\n    env: {{"{key}": v}}\n')
    (found,) = [e for e in errors(path) if "`env`" in e]
    assert found.startswith(f"{path}:2: task a: `env` name {key!r}")


def test_check_of_a_nul_id_exits_2_without_a_traceback(tmp_path):
    path = write(tmp_path, 'tasks:\n  - id: "a\\0"\n    command: "true"\n')
    r = wvo(path, "--check")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "NUL" in r.stdout + r.stderr


# ----------------------------------------------------------------------------- numbers out of range


@pytest.mark.parametrize(
    "value", ["30d", "8d", "169h", "604801", "1e400", "9" * 400, '"' + "9" * 400 + '"', ".inf", ".nan", "-.inf"]
)
def test_a_timeout_past_the_limit_or_not_a_number_is_an_error_at_load_time(tmp_path, value):
    path = write(tmp_path, f'tasks:\n  - id: a\n    command: "true"\n    timeout: {value}\n')
    (found,) = [e for e in errors(path) if "`timeout`" in e]
    assert found.startswith(f"{path}:2: task a: `timeout`")
    assert len(found) < 300


def test_the_timeout_limit_is_seven_days_and_says_so(tmp_path):
    ok = write(tmp_path, 'tasks:\n  - id: a\n    command: "true"\n    timeout: 7d\n', "ok.yaml")
    assert rm.load([ok]).roadmap.tasks[0].timeout == 7 * 86400
    path = write(tmp_path, 'tasks:\n  - id: a\n    command: "true"\n    timeout: 30d\n')
    (found,) = errors(path)
    assert "at most 7 days" in found


@pytest.mark.parametrize(
    "text,needle",
    [
        ('defaults:\n  timeout: 30d\ntasks:\n  - id: a\n    command: "true"\n', "`defaults.timeout` must be at most 7 days"),
        ("defaults:\n  executor_timeouts: {simple: 100d}\ntasks:\n  - id: a\n    command: 'true'\n", "executor_timeouts.simple"),
        ('tasks:\n  - id: a\n    command: "true"\n    retries: 99999999999999999999\n', "at most 10000"),
        ('defaults:\n  retries: 99999999999999999999\ntasks:\n  - id: a\n    command: "true"\n', "at most 10000"),
        ('agents: {worker: 99999999999999999999}\ntasks:\n  - id: a\n    command: "true"\n', "at most 4096"),
        ('tasks:\n  - id: a\n    command: "true"\n    complexity_score: .nan\n', "complexity_score"),
    ],
)
def test_other_numbers_out_of_range_are_errors_at_load_time(tmp_path, text, needle):
    path = write(tmp_path, text)
    assert any(needle in e for e in errors(path)), errors(path)


# ----------------------------------------------------------------------------- paths that are not UTF-8


def test_a_roadmap_path_that_is_not_utf8_loads_and_is_named_in_problems(tmp_path):
    folder = os.fsdecode(b"d\xff")
    os.mkdir(tmp_path / folder)
    good = os.path.join(str(tmp_path), folder, os.fsdecode(b"r\xfe.yaml"))
    with open(good, "w") as f:
        f.write('tasks:\n  - id: a\n    command: "true"\n    cwd: sub\n')
    result = rm.load([good])
    assert result.valid and result.roadmap.tasks[0].cwd == os.path.join(os.path.dirname(good), "sub")
    bad = good.replace(".yaml", "-bad.yaml")
    with open(bad, "w") as f:
        f.write("tasks:\n  - id: a\n    retries: -1\n")
    (problem,) = rm.load([bad]).errors
    assert problem.file == bad and problem.line == 2
    missing = rm.load([good + ".missing"])
    assert [p.message for p in missing.errors] == ["file not found"]


def test_check_of_a_roadmap_path_that_is_not_utf8_has_no_traceback(tmp_path):
    name = os.fsdecode(b"r\xff.yaml")
    with open(tmp_path / name, "w") as f:
        f.write("tasks:\n  - id: a\n    retries: -1\n")
    r = subprocess.run(
        [sys.executable, "-m", "runner", str(tmp_path / name), "--check"], capture_output=True, timeout=60, cwd=ROOT
    )
    assert r.returncode == 2 and b"Traceback" not in r.stderr, r.stderr
    # the name as the user gave it, its undecodable byte spelt out (nothing raw reaches a terminal)
    assert rb"r\xff.yaml:2: task a: `retries`" in r.stdout + r.stderr
