"""Two spellings of a roadmap's path are one roadmap (one state dir, one lock, one ledger); --check says what the run
does about the executor; contradictory flags and a file that is no roadmap are refused. Real wvo-batch processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, wvo
from runner.errors import EXIT_LOCKED, EXIT_USAGE

pytestmark = pytest.mark.timeout(120)


# -- two spellings of one roadmap's path ------------------------------------------------------------------------


@pytest.fixture
def spelt(tmp_path):
    """(env, real/rm.yaml, link/rm.yaml, fifo): link is a symlink to the folder real; the default state dir is
    under tmp_path. Task t1 notes each start in `ran`; the first to find `hold` takes it away, says `started` and
    waits on the FIFO. t2 fails until `go2` exists."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "real" / "rm.yaml").write_text(
        "tasks:\n"
        f"  - id: t1\n    command: 'echo t1 >> {tmp_path}/ran; if rm {tmp_path}/hold 2>/dev/null; then touch {tmp_path}/started; cat {fifo}; fi'\n"
        f"  - id: t2\n    command: 'test -e {tmp_path}/go2'\n"
    )
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home"), "WVO_STATE_DIR": ""}
    return env, tmp_path / "real" / "rm.yaml", tmp_path / "link" / "rm.yaml", fifo


def _start(env, *args):
    return subprocess.Popen([sys.executable, "-m", "runner", *map(str, args), "-q"], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(path: Path, proc, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run never started its task"
        time.sleep(0.02)


def _release(fifo, proc):
    with open(fifo, "w") as f:
        f.write("go\n")
    return proc.communicate(timeout=60)


def _history(env, roadmap) -> list[int]:
    r = wvo(roadmap, "--history", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return sorted(run["id"] for run in json.loads(r.stdout))


def _legacy_dir(env, roadmap: Path) -> Path:
    """The default state dir earlier versions gave this spelling: keyed on the path as given (made absolute)."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(roadmap))).hexdigest()[:10]
    return Path(env["XDG_STATE_HOME"]) / "wvo-batch" / f"{roadmap.stem}-{digest}"


def test_two_spellings_at_once_one_runs_the_other_is_refused_and_status_answers_by_either(spelt):
    env, real, link, fifo = spelt
    (real.parent.parent / "hold").touch()
    first = _start(env, link)
    try:
        _wait_for(real.parent.parent / "started", first)
        status = wvo(real, "--status", env=env, timeout=30)
        assert status.returncode == 0 and "t1" in status.stdout, status.stderr
        second = wvo(real, "-q", env=env, timeout=60)
        assert second.returncode == EXIT_LOCKED, second.stderr
        assert f"run of {real} is in progress (PID {first.pid} holds" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        out, err = _release(fifo, first)
    assert first.returncode == 1, err  # t2 failed: its file is not there
    assert (real.parent.parent / "ran").read_text().split() == ["t1"]  # run once, not by both
    assert _history(env, real) == _history(env, link) == [1]


def test_resume_after_changing_spelling_carries_what_succeeded(spelt):
    env, real, link, _ = spelt
    assert wvo(link, "-q", env=env).returncode == 1
    (real.parent.parent / "go2").touch()
    again = wvo(real, "-q", "--resume", env=env)
    assert again.returncode == 0, again.stderr
    assert (real.parent.parent / "ran").read_text().split() == ["t1"]  # carried over, not run again
    assert _history(env, link) == [1, 2]


def test_a_state_dir_an_earlier_version_made_for_one_spelling_is_adopted_and_found_by_every_spelling(spelt):
    env, real, link, _ = spelt
    legacy = _legacy_dir(env, link)
    assert wvo(link, "-q", "--state-dir", legacy, env=env).returncode == 1  # as earlier versions ran by default
    assert _history(env, link) == [1]  # read where it is, nothing moved (--history only reads)
    assert not os.path.lexists(_legacy_dir(env, real))
    (real.parent.parent / "go2").touch()
    resumed = wvo(link, "-q", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"now leads to {legacy}" in resumed.stderr
    assert (real.parent.parent / "ran").read_text().split() == ["t1"]  # resumed from the legacy dir's ledger
    assert _history(env, real) == _history(env, link) == [1, 2]
    assert os.path.realpath(_legacy_dir(env, real)) == str(legacy)  # the canonical name leads there


def test_a_run_still_in_the_legacy_dir_keeps_its_lock_against_every_spelling(spelt):
    env, real, link, fifo = spelt
    (real.parent.parent / "hold").touch()
    first = _start(env, link, "--state-dir", _legacy_dir(env, link))  # an earlier version's run, by default
    try:
        _wait_for(real.parent.parent / "started", first)
        for spelling in (link, real):
            other = wvo(spelling, "-q", env=env, timeout=60)
            assert other.returncode == EXIT_LOCKED, (spelling, other.stderr)
            assert f"(PID {first.pid} holds" in other.stderr
    finally:
        _release(fifo, first)
    assert (real.parent.parent / "ran").read_text().split() == ["t1"]



@pytest.mark.parametrize("other", ["symlink", "hard link"])
def test_another_name_of_the_roadmap_file_has_its_own_state_dir_but_never_runs_at_once(spelt, other):
    """A symlink to the file, or a hard link, under another name is another roadmap (pointing a symlink at a new
    version keeps its history), with a default state dir of its own; the file is locked on what it is in the
    folder of the default state dirs too, so the two never run at once."""
    env, real, link, fifo = spelt
    alias = real.parent / "alias.yaml"
    if other == "symlink":
        alias.symlink_to(real)
    else:
        os.link(real, alias)
    (real.parent.parent / "hold").touch()
    first = _start(env, real)
    try:
        _wait_for(real.parent.parent / "started", first)
        second = wvo(alias, "-q", env=env, timeout=60)
        assert second.returncode == EXIT_LOCKED, second.stderr
        assert f"run of {alias} is in progress (PID {first.pid} holds" in second.stderr, second.stderr
    finally:
        _release(fifo, first)
    assert (real.parent.parent / "ran").read_text().split() == ["t1"]
    assert wvo(alias, "-q", env=env).returncode == 1  # its own state dir, its own run: t2 still fails
    assert _history(env, alias) == [1] and _history(env, real) == [1]


def test_the_shared_locks_folder_is_made_private_and_used_only_when_it_is_ours_alone(tmp_path, monkeypatch):
    from runner.manager import statedir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    folder = tmp_path / "wvo-batch-locks"
    assert statedir.shared_lock_dir() == str(folder) and os.stat(folder).st_mode & 0o777 == 0o700
    folder.chmod(0o775)  # the group could plant the lock files
    assert statedir.shared_lock_dir() is None
    folder.rmdir()
    folder.symlink_to(tmp_path)
    assert statedir.shared_lock_dir() is None


# -- --check and the run decide alike about executors -----------------------------------------------------------


NO_EXECUTOR = ("1 task(s) have no command and no executor is configured (agent); set `executor:` in the roadmap "
               "or pass --executor")


def test_a_task_with_no_command_and_no_executor_stops_the_run_before_it_starts_and_check_says_so(tmp_path):
    """--check said valid and nothing more; the run refused. The roadmap is valid (an executor is often given on
    the command line), so --check stays valid and says, in its plan, that a run with these options stops."""
    rm = tmp_path / "rm.yaml"
    rm.write_text("tasks:\n"
                  "  - id: agent\n    title: needs an agent CLI\n"
                  f"  - id: after\n    command: 'touch {tmp_path}/after'\n    dependencies: [agent]\n"
                  f"  - id: plain\n    command: 'touch {tmp_path}/plain'\n")  # fmt: skip
    check = wvo(rm, "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"note: a run with these options stops before it starts (exit 2): {NO_EXECUTOR}" in check.stdout
    as_json = wvo(rm, "--check", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["without_executor"] == ["agent"], as_json.stdout
    run = wvo(rm, "-q", "--state-dir", tmp_path / "s")
    assert run.returncode == 2, run.stdout + run.stderr
    assert NO_EXECUTOR in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "plain").exists() and not (tmp_path / "s").exists(), "half-run: a task ran, or state was written"
    given = wvo(rm, "--check", "--executor", json.dumps([sys.executable, "{prompt}"]))
    assert given.returncode == 0 and "note:" not in given.stdout, given.stdout


def test_checks_critical_path_is_the_roadmaps_and_says_when_a_run_with_these_options_would_not_start(tmp_path):
    """The critical path names `agent`, which has no executor: a run with these options refuses to start (exit 2),
    so the text says beside the path that it is the path of a run given an executor. --json keeps its keys: the
    path is the roadmap's, `without_executor` names the tasks; the exit code stays 0 (the roadmap is valid)."""
    rm = tmp_path / "rm.yaml"
    rm.write_text("tasks:\n  - id: agent\n    title: t\n  - id: after\n    command: 'true'\n    dependencies: [agent]\n")
    check = wvo(rm, "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "  critical path (2 tasks, once an executor is given: see the note below): agent -> after\n" in check.stdout
    assert NO_EXECUTOR in check.stdout.split("critical path")[1], "the note is not below the path"
    as_json = json.loads(wvo(rm, "--check", "--json").stdout)
    assert as_json["critical_path"] == {"length": 2, "tasks": ["agent", "after"]} and as_json["without_executor"] == ["agent"]
    given = wvo(rm, "--check", "--executor", json.dumps([sys.executable, "{prompt}"]))
    assert given.returncode == 0 and "  critical path (2 tasks): agent -> after\n" in given.stdout, given.stdout


def test_the_batch_loop_and_a_selection_stop_on_a_task_with_no_executor(tmp_path):
    """The loop (--iterations 0: until nothing is runnable) must not run batch after batch selecting it again."""
    rm = tmp_path / "rm.yaml"
    rm.write_text(f"tasks:\n  - id: agent\n    title: t\n  - id: plain\n    command: 'echo x >> {tmp_path}/plain'\n")
    loop = wvo(rm, "-q", "--iterations", "0", "--state-dir", tmp_path / "s", timeout=60)
    assert loop.returncode == 2 and NO_EXECUTOR in loop.stderr, loop.stderr
    assert not (tmp_path / "plain").exists()
    check = wvo(rm, "--check", "--only", "agent")
    assert check.returncode == 0 and "batch: 1 task(s) would run: agent" in check.stdout, check.stdout
    assert NO_EXECUTOR in check.stdout
    only = wvo(rm, "-q", "--only", "plain", "--state-dir", tmp_path / "s2", timeout=60)
    assert only.returncode == 0 and (tmp_path / "plain").read_text() == "x\n", only.stderr
    plain = wvo(rm, "--check", "--only", "plain")
    assert plain.returncode == 0 and "note:" not in plain.stdout, plain.stdout


def test_a_missing_executor_program_is_exit_2_from_check_and_run_before_anything_runs(tmp_path):
    rm = tmp_path / "rm.yaml"
    rm.write_text("executor: [wvo-no-such-cli-s2, '{prompt}']\n"
                  f"tasks:\n  - id: agent\n    title: t\n  - id: plain\n    command: 'touch {tmp_path}/plain'\n")  # fmt: skip
    line = "executor wvo-no-such-cli-s2: program 'wvo-no-such-cli-s2' is not on PATH"
    check = wvo(rm, "--check")
    assert check.returncode == EXIT_USAGE and line in check.stdout, check.stdout
    run = wvo(rm, "-q", "--state-dir", tmp_path / "s")
    assert run.returncode == EXIT_USAGE, run.stderr
    assert run.stderr.splitlines() == [f"error: {line}; install it or put its folder on PATH"]
    assert not (tmp_path / "plain").exists()


def test_a_missing_executor_program_is_refused_at_the_start_locally_and_fails_its_attempts_on_ray(tmp_path, backend):
    """The program check looks on this machine's PATH, which is where a local run starts it: refused, exit 2, nothing
    run or written. A Ray run starts it on the cluster's nodes, whose PATH is theirs: not refused at the start;
    each attempt fails (exit code 127, not classed: a plain argv executor has no output parser) naming the program,
    its dependent is skipped, and the run exits 1."""
    rm = tmp_path / "rm.yaml"
    rm.write_text("executor: [wvo-no-such-cli-r4, '{prompt}']\n"
                  "tasks:\n  - id: agent\n    title: t\n    retries: 0\n"
                  f"  - id: after\n    command: 'touch {tmp_path}/after'\n    dependencies: [agent]\n")  # fmt: skip
    check = wvo(rm, "--check", *backend)  # --check decides as the run does
    assert check.returncode == (EXIT_USAGE if backend[1] == "local" else 0), check.stdout
    run = wvo(rm, "-q", "--json", "--agents", "1", "--state-dir", tmp_path / "s", *backend, timeout=60)
    if backend[1] == "local":
        assert run.returncode == EXIT_USAGE, run.stderr
        assert run.stderr.splitlines() == ["error: executor wvo-no-such-cli-r4: program 'wvo-no-such-cli-r4' is not on PATH; "
                                           "install it or put its folder on PATH"]  # fmt: skip
        assert run.stdout == "" and not (tmp_path / "s").exists()
        return
    assert run.returncode == 1, run.stderr
    rows = {t["task"]: t for t in json.loads(run.stdout)["tasks"]}
    assert rows["agent"]["status"] == "failed" and rows["agent"]["exit_code"] == 127 and rows["agent"]["attempts"] == 1
    assert "No such file or directory: 'wvo-no-such-cli-r4'" in rows["agent"]["reason"], rows["agent"]
    assert "wvo-batch: cannot start" in Path(rows["agent"]["log"]).read_text()
    assert rows["after"]["status"] == "skipped" and not (tmp_path / "after").exists()


def test_executors_by_role_are_checked_for_the_runs_own_roles(tmp_path):
    rm = tmp_path / "rm.yaml"
    rm.write_text(f"executors: {{worker: [{sys.executable}, '{{prompt}}']}}\ntasks:\n  - id: agent\n    title: t\n")
    line = f"{rm}:3: task agent: no executor for agents of role orchestrator"
    check = wvo(rm, "--check")  # 4 agents by default: 1 orchestrator, 2 workers, 1 critic
    assert check.returncode == EXIT_USAGE and line in check.stdout, check.stdout
    run = wvo(rm, "-q", "--state-dir", tmp_path / "s")
    assert run.returncode == EXIT_USAGE and line in run.stderr, run.stderr
    workers = wvo(rm, "--check", "--roles", "worker=2")
    assert workers.returncode == 0, workers.stdout


# -- flags that contradict each other ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags, env, named", [
    (["--agents", "5", "--max-agents", "2"], {}, "--agents (or WVO_AGENTS) gives a fixed pool and --max-agents (or WVO_MAX_AGENTS) a scaling one"),
    (["-j", "3", "--min-agents", "2"], {}, "--agents (or WVO_AGENTS) gives a fixed pool and --min-agents (or WVO_MIN_AGENTS) a scaling one"),
    ([], {"WVO_AGENTS": "5", "WVO_MAX_AGENTS": "2"}, "gives a fixed pool and --max-agents (or WVO_MAX_AGENTS) a scaling one"),
    (["--roles", "worker=2", "--agents", "2"], {}, "--agents (or WVO_AGENTS) and --roles (or WVO_ROLES) both give the pool"),
    (["-qj2", "--roles", "worker=2"], {}, "--agents (or WVO_AGENTS) and --roles (or WVO_ROLES) both give the pool"),  # typer reads it
])  # fmt: skip
def test_a_contradictory_pair_of_flags_is_one_line_and_exit_2_before_anything_runs(tmp_path, flags, env, named):
    rm = tmp_path / "rm.yaml"
    rm.write_text(f"tasks:\n  - id: t1\n    command: 'touch {tmp_path}/ran'\n")
    r = wvo(rm, "--state-dir", tmp_path / "s", *flags, env=env)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert named in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("flags, env, roles", [
    (["--max-agents", "2"], {"WVO_AGENTS": "5"}, {"worker"}),  # scaling starts with one worker
    (["--roles", "critic=1"], {"WVO_AGENTS": "5"}, {"critic"}),
    (["--agents", "2"], {"WVO_ROLES": "critic=3"}, {"orchestrator", "worker"}),
    (["-qj2"], {"WVO_ROLES": "critic=3"}, {"orchestrator", "worker"}),  # typer reads it: the same rule
    (["-qj2"], {"WVO_MAX_AGENTS": "3"}, {"orchestrator", "worker"}),  # not scaling, which starts with one worker
])  # fmt: skip
def test_a_flag_beats_a_variable_of_the_other_side_of_a_pair(tmp_path, flags, env, roles):
    """A flag on the command line beats the environment (README, Options): WVO_AGENTS in a profile does not make
    --roles on the command line an error, nor the other way round; the flag's pool is the one that runs."""
    rm = tmp_path / "rm.yaml"
    rm.write_text(f"tasks:\n  - id: t1\n    command: 'touch {tmp_path}/ran'\n")
    r = wvo(rm, "--state-dir", tmp_path / "s", "-q", *flags, env=env)
    assert r.returncode == 0, r.stderr
    spawned = [json.loads(line) for line in (tmp_path / "s").glob("runs/*/events.jsonl").__next__().read_text().splitlines()]
    assert {e["role"] for e in spawned if e.get("event") == "agent:spawned"} == roles


@pytest.mark.parametrize("flags, env", [
    (["--once", "--iterations", "3"], {}),
    (["--iterations", "0"], {"WVO_AUTOPILOT_ONCE": "1"}),  # the original autopilot's knobs: ONCE over MAX_ITERATIONS
])  # fmt: skip
def test_once_wins_over_iterations_and_says_so(tmp_path, flags, env):
    """--once refines --iterations (one batch, whatever the loop asks): the run says so; the roadmap's first task
    adds a task, which a second batch would run."""
    rm = tmp_path / "rm.yaml"
    adder = f"printf '  - id: added\\n    command: touch {tmp_path}/added\\n' >> {rm}"
    rm.write_text(f"tasks:\n  - id: first\n    command: {json.dumps(adder)}\n")
    r = wvo(rm, "--state-dir", tmp_path / "s", "-q", *flags, env={"WVO_AUTOPILOT_ONCE": "", **env})
    assert r.returncode == 0, r.stderr
    assert f"warning: --once (or WVO_AUTOPILOT_ONCE) wins over --iterations {flags[-1]} (" in r.stderr
    assert "added" in rm.read_text() and not (tmp_path / "added").exists()  # one batch only


@pytest.mark.parametrize("flags", [["--once", "--iterations", "1"], ["--max-agents", "2"], ["--min-agents", "1", "--max-agents", "2"],
                                   ["--roles", "worker=2"], ["-j", "2"]])  # fmt: skip
def test_flags_that_agree_run(tmp_path, flags):
    rm = tmp_path / "rm.yaml"
    rm.write_text(f"tasks:\n  - id: t1\n    command: 'touch {tmp_path}/ran'\n")
    r = wvo(rm, "--state-dir", tmp_path / "s", "-q", *flags, env={"WVO_AGENTS": "", "WVO_AUTOPILOT_ONCE": ""})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ran").exists()


# -- the pool: the command line, then the environment, then the roadmap's `agents:`, then the default -------------

POOL_UNSET = {"WVO_AGENTS": "", "WVO_ROLES": "", "WVO_MIN_AGENTS": "", "WVO_MAX_AGENTS": "", "WVO_AUTOPILOT_ONCE": ""}


@pytest.mark.parametrize("flags, env, roles, given", [
    ([], {}, {"critic"}, None),  # the roadmap's block beats the default
    (["--agents", "2"], {}, {"orchestrator", "worker"}, "--agents 2"),
    (["-qj2"], {}, {"orchestrator", "worker"}, "--agents 2"),  # typer reads it: the same rule
    ([], {"WVO_AGENTS": "2"}, {"orchestrator", "worker"}, "WVO_AGENTS=2"),
    (["--roles", "worker=1"], {}, {"worker"}, "--roles worker=1"),
    ([], {"WVO_ROLES": "worker=1"}, {"worker"}, "WVO_ROLES=worker=1"),
    (["--max-agents", "2"], {}, {"worker"}, "--max-agents 2"),  # scaling starts with one worker
    (["--roles", "worker=1"], {"WVO_AGENTS": "3"}, {"worker"}, "--roles worker=1"),  # the flag beats the variable
])  # fmt: skip
def test_the_command_line_and_the_environment_beat_the_roadmaps_agents_block_and_say_so(tmp_path, flags, env, roles, given):
    """An `agents:` block in the roadmap is a setting in a file: --agents/--roles/--min-agents/--max-agents (flag
    or variable) beat it, and the run says so in one line naming the block's file:line, under --quiet too.
    --check shows the pool the run starts, and the same warning."""
    rm = tmp_path / "rm.yaml"
    rm.write_text(f"tasks:\n  - id: t1\n    command: 'touch {tmp_path}/ran'\nagents: {{critic: 2}}\n")
    r = wvo(rm, "--state-dir", tmp_path / "s", "-q", *flags, env={**POOL_UNSET, **env})
    assert r.returncode == 0, r.stderr
    spawned = [json.loads(line) for line in next((tmp_path / "s").glob("runs/*/events.jsonl")).read_text().splitlines()]
    assert {e["role"] for e in spawned if e.get("event") == "agent:spawned"} == roles
    warning = f"warning: {given} sets aside the roadmap's `agents:` block at {rm}:4"
    said = [line for line in r.stderr.splitlines() if "`agents:`" in line]
    assert said == [] if given is None else len(said) == 1 and said[0].startswith(f"wvo-batch: {warning}"), r.stderr
    check = wvo(rm, "--check", *["-j2" if f == "-qj2" else f for f in flags], env={**POOL_UNSET, **env})
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"(from {given or f'`agents:` at {rm}:4'})" in check.stdout, check.stdout
    said = [line for line in check.stderr.splitlines() if "`agents:`" in line]
    assert said == [] if given is None else len(said) == 1 and said[0].startswith(warning), check.stderr


def test_the_batch_loop_says_once_that_the_command_line_beat_the_agents_block_and_every_batch_keeps_its_pool(tmp_path):
    """Each batch of the loop decides its pool from the roadmap it read again: the flag still wins, said once."""
    rm = tmp_path / "rm.yaml"
    adder = f"printf '  - id: added\\n    command: touch {tmp_path}/added\\n' >> {rm}"
    rm.write_text(f"agents: {{critic: 2}}\ntasks:\n  - id: first\n    command: {json.dumps(adder)}\n")
    r = wvo(rm, "--state-dir", tmp_path / "s", "-q", "--json", "--iterations", "2", "--agents", "1", env=POOL_UNSET)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "added").exists(), "the second batch did not run"
    doc = json.loads(r.stdout)
    assert [b["agents"] for b in doc["batches"]] == [{"worker": 1}, {"worker": 1}]
    assert [(t["task"], t["agent"]) for b in doc["batches"] for t in b["tasks"]] == [("first", "worker-0"), ("added", "worker-0")]
    assert r.stderr.count(f"warning: --agents 1 sets aside the roadmap's `agents:` block at {rm}:1") == 1, r.stderr


# -- a YAML file that is no roadmap ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["services:\n  web: {image: nginx}\nversion: '3'\n", "{}\n"])
def test_a_mapping_with_none_of_a_roadmaps_keys_is_refused_naming_the_file(tmp_path, text):
    other = tmp_path / "compose.yaml"
    other.write_text(text)
    line = f"error: {other}:1: none of a roadmap's keys in this file"
    check = wvo(other, "--check")
    assert check.returncode == EXIT_USAGE and f"  {line[len('error: '):]}" in check.stdout, check.stdout
    run = wvo(other, "-q", "--state-dir", tmp_path / "s")
    assert run.returncode == EXIT_USAGE and run.stderr.startswith(line) and len(run.stderr.splitlines()) == 1, run.stderr
    assert not (tmp_path / "s").exists()


def test_a_file_of_settings_alone_beside_the_tasks_file_is_still_a_roadmap(tmp_path):
    settings, tasks = tmp_path / "settings.yaml", tmp_path / "tasks.yaml"
    settings.write_text("defaults:\n  timeout: 30s\n")
    tasks.write_text(f"tasks:\n  - id: t1\n    command: 'touch {tmp_path}/ran'\n")
    r = wvo(settings, tasks, "-q", "--state-dir", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ran").exists()


# -- a task that swaps its log ----------------------------------------------------------------------------------


@pytest.mark.parametrize("swapped", ["spare", "named"])
def test_a_task_that_swaps_its_log_for_a_symlink_loses_none_of_its_output(tmp_path, swapped):
    """Until it is 0.2 s old, a running attempt writes into its agent's spare file (.spare-<agent>), which then
    takes the log's name. The task swaps that spare, or the named log, for a symlink to a file of the user's:
    nothing is written through it, and its output is still in its log, with a note."""
    target = tmp_path / "precious"
    target.write_text("keep\n")
    state = tmp_path / "state"
    logs = f"$(readlink -f {state}/latest)/logs"
    if swapped == "spare":
        swap = f"[ -f {logs}/.spare-worker-0 ] || exit 9; ln -sf {target} {logs}/.spare-worker-0"
    else:
        swap = (f"L={logs}/a.1.log; for i in $(seq 600); do [ -f $L ] && break; sleep 0.05; done; [ -f $L ] || exit 9; "
                f"ln -sf {target} $L")
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: " + json.dumps(f"echo before; {swap}; echo after") + "\n")
    r = wvo(rm, "--state-dir", state, "--agents", "1", "-q", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert target.read_text() == "keep\n"
    log = next((state / "runs").iterdir()) / "logs" / "a.1.log"
    assert not log.is_symlink() and os.stat(log).st_mode & 0o777 == 0o600
    text = log.read_text()
    assert text.startswith("before\nafter\n") and "this log was replaced by something else while the attempt ran" in text


@pytest.mark.parametrize("command", ["--status", "--history"])
def test_status_and_history_refuse_a_bad_pool_flag_but_not_a_bad_pool_variable(tmp_path, command):
    # They use no pool, but a bad --agents or --roles on their command line is still the usage error it is for a
    # run; a bad WVO_ROLES in the environment is not theirs to refuse (it would break --status in that shell).
    rm = tmp_path / "roadmap.yaml"
    rm.write_text('tasks:\n  - id: a\n    command: ["true"]\n')
    state = tmp_path / "s"
    for flags in (["--agents", "abc"], ["--roles", "x=y"], ["--min-agents", "3", "--max-agents", "2"]):
        r = wvo(rm, command, *flags, "--state-dir", state)
        assert r.returncode == EXIT_USAGE and flags[0] in r.stderr and "Traceback" not in r.stderr, (flags, r.stderr)
    for variable in ({"WVO_ROLES": "bad"}, {"WVO_AGENTS": "abc"}):
        r = wvo(rm, command, "--state-dir", state, env=variable)
        assert r.returncode != EXIT_USAGE, (variable, r.stderr)
