"""One attempt pipeline on every backend (issue 20): worktree, CLI output, commit, checks, tree kill.

Each test runs on the local backend and on the session's local Ray instance (joined by a driver of
the test's own: a new instance's start costs seconds), through the same Run a user's `wvo-batch` builds. Real git repositories in tmp_path; shell
commands and a stand-in for claude's stream-json as the agents.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import Recorder, reaped
from runner.agents.messages import TaskMessage
from runner.agents.checks import checks_env, run_checks
from runner.agents.kill import ATTEMPT_MARK
from runner.manager.run import Run, RunOptions
from runner.roadmap.loader import load_roadmap
from test_worktrees import GIT_ENV, checkout_state, git, make_repo

pytestmark = pytest.mark.timeout(180)

try:
    import ray
except ImportError:  # the local backend's half still runs
    ray = None

BACKENDS = ["local", pytest.param("ray", marks=[pytest.mark.ray,
                                                pytest.mark.skipif(ray is None, reason="Ray is not installed")])]


@pytest.fixture
def backend(request):
    """The backend's name; for "ray", the test joins the session's Ray instance as a driver of its own
    (conftest's ray_driver: its own actors, gone when it disconnects)."""
    if request.param == "ray":
        request.getfixturevalue("ray_driver")
    return request.param


def execute(repo: Path, backend: str, **opts):
    rm = load_roadmap([str(repo / "roadmap.yaml")])
    opts.setdefault("agents", 1)
    rec = Recorder()
    result = Run(rm, RunOptions(state_dir=str(repo.parent / "state"), grace=1.0, backoff_base=0.01,
                                backend=backend, **opts), rec).execute()
    return result, {row["task"]: row for row in result.tasks}


# -- worktree × checks × backend ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_worktree_task_whose_check_fails_writes_nothing_to_the_checkout_and_lands_nothing(tmp_path, backend):
    # The case of issue 20: with --backend ray this wrote into the user's checkout, its check never
    # ran, it was recorded succeeded and nothing landed.
    repo = make_repo(tmp_path, """
workspace: {mode: worktree}
tasks:
  - {id: t, title: Make a file, command: "echo made > made.txt", checks: ["false"], retries: 0}
""")
    before = checkout_state(repo)
    result, rows = execute(repo, backend)
    assert result.exit_code == 1
    assert rows["t"]["status"] == "check_failed"
    assert not (repo / "made.txt").exists() and checkout_state(repo) == before
    landed = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", "wvo/roadmap:made.txt"], env=GIT_ENV)
    assert landed.returncode != 0  # nothing landed on `into`
    branch = rows["t"]["workspace"]["branch"]
    assert git(repo, "show", f"{branch}:made.txt") == "made\n"  # the attempt's work is on its branch


@pytest.mark.parametrize("land", ["branch", "merge"])
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_check_sees_the_same_environment_in_the_worktree_and_on_the_merged_result(tmp_path, backend, land):
    repo = make_repo(tmp_path, f"""
workspace: {{mode: worktree, land: {land}}}
tasks:
  - id: t
    title: Make a file
    command: 'echo "$WVO_TASK_ID $WVO_ATTEMPT" > made.txt'
    checks: ['test "$(cat made.txt)" = "$WVO_TASK_ID 1" && test "$PWD" = "$WVO_WORKTREE" && test -n "$WVO_BRANCH"']
""")
    result, rows = execute(repo, backend)
    assert result.exit_code == 0, rows
    assert rows["t"]["status"] == "succeeded"
    branch = "wvo/roadmap" if land == "merge" else rows["t"]["workspace"]["branch"]
    assert git(repo, "show", f"{branch}:made.txt") == "t 1\n"
    assert not (repo / "made.txt").exists()


# -- cwd × backend ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_worktree_task_with_a_cwd_runs_in_that_folder_of_its_sealed_worktree(tmp_path, backend):
    # Issue 21: `cwd:` was ignored in worktree mode, the task ran at the worktree's top.
    repo = make_repo(tmp_path, """
workspace: {mode: worktree}
tasks:
  - id: t
    cwd: sub
    # sealed: git stops at the worktree's parent
    command: 'test "$PWD" = "$WVO_WORKTREE/sub" && test "$GIT_CEILING_DIRECTORIES" = "$(dirname "$WVO_WORKTREE")" && echo here > here.txt'
""", {"sub/keep": ""})
    result, rows = execute(repo, backend)
    assert result.exit_code == 0, rows
    assert git(repo, "show", "wvo/roadmap:sub/here.txt") == "here\n"
    assert not (repo / "sub" / "here.txt").exists()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_cwd_missing_from_the_worktree_ends_the_attempt_setup_failed_and_removes_it(tmp_path, backend):
    repo = make_repo(tmp_path, """
workspace: {mode: worktree}
tasks:
  - {id: t, cwd: build, command: 'echo x > x.txt', retries: 0}
""")
    (repo / "build").mkdir()  # the user's untracked folder: not in the worktree
    result, rows = execute(repo, backend)
    assert result.exit_code == 1
    assert rows["t"]["status"] == "setup_failed"
    log = Path(rows["t"]["log"]).read_text()
    assert "cwd " in log and "no folder build in the worktree" in log
    from runner.manager.ledger import Ledger

    ledger = Ledger(str(repo.parent / "state" / "ledger.sqlite"))
    try:
        (attempt,) = ledger.attempts(result.run_id)
    finally:
        ledger.close()
    assert "no folder build in the worktree" in attempt.error
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # removed
    assert not (repo / "build" / "x.txt").exists()


# -- CLI output × backend -------------------------------------------------------------------------------

# A stand-in for `claude -p --output-format stream-json`: its init, result and session, and a file written.
CLAUDE_STANDIN = """
import json, sys
print(json.dumps({"type": "system", "subtype": "init", "session_id": "11111111-2222-4333-8444-555555555555"}))
open("by-the-agent.txt", "w").write("written\\n")
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                  "session_id": "11111111-2222-4333-8444-555555555555", "total_cost_usd": 0.25,
                  "usage": {"input_tokens": 100, "output_tokens": 9, "cache_read_input_tokens": 0,
                            "cache_creation_input_tokens": 0}, "result": "done"}))
"""


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_an_agent_cli_in_a_worktree_is_read_through_its_parser_on_every_backend(tmp_path, backend):
    import sys

    (tmp_path / "standin.py").write_text(CLAUDE_STANDIN)
    executor = {"command": [sys.executable, str(tmp_path / "standin.py"), "{prompt}"], "output": "claude-json"}
    repo = make_repo(tmp_path, f"""
executor: {json.dumps(executor)}
workspace: {{mode: worktree}}
tasks:
  - {{id: t, title: Write a file, checks: ["test -s by-the-agent.txt"]}}
""")
    result, rows = execute(repo, backend)
    assert result.exit_code == 0, rows
    assert git(repo, "show", "wvo/roadmap:by-the-agent.txt") == "written\n"
    from runner.manager.ledger import Ledger

    ledger = Ledger(str(repo.parent / "state" / "ledger.sqlite"))
    try:
        (attempt,) = ledger.attempts(result.run_id)
    finally:
        ledger.close()
    assert attempt.session_id == "11111111-2222-4333-8444-555555555555"
    assert attempt.cost_usd == pytest.approx(0.25) and attempt.usage["input"] == 100


# -- what an attempt leaves running × backend ------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_setsid_child_of_an_attempt_is_gone_when_the_attempt_ends(tmp_path, backend):
    # Issue 21: a worker's `setsid` child survived its attempt and could write into the critic's log.
    pid_file = tmp_path / "child.pid"
    leave = (f"setsid sh -c 'echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60' & "
             f"while [ ! -s {pid_file} ]; do sleep 0.01; done")
    look = (f"p=$(cat {pid_file}); if [ -e /proc/$p ] && ! grep -q ') Z' /proc/$p/stat; "
            f"then echo still alive: $p; exit 1; fi")
    (tmp_path / "roadmap.yaml").write_text(json.dumps({"tasks": [
        {"id": "leave", "command": leave},
        {"id": "look", "command": look, "dependencies": ["leave"]},
    ]}))
    rm = load_roadmap([str(tmp_path / "roadmap.yaml")])
    result = Run(rm, RunOptions(state_dir=str(tmp_path / "state"), agents=1, grace=1.0, backend=backend),
                 Recorder()).execute()
    rows = {row["task"]: row for row in result.tasks}
    assert rows["leave"]["status"] == "succeeded"
    assert rows["look"]["status"] == "succeeded", Path(rows["look"]["log"]).read_text()


# -- the check runner ------------------------------------------------------------------------------------


def test_checks_run_in_order_until_one_fails_with_its_tail_and_the_log(tmp_path):
    log = tmp_path / "attempt.log"
    env = checks_env(dict(os.environ), "t", 3, worktree=str(tmp_path), branch="wvo/r/t")
    checks = ['test "$WVO_TASK_ID $WVO_ATTEMPT $WVO_BRANCH $WVO_WORKTREE" = "t 3 wvo/r/t $PWD"',
              "seq 1 100; exit 7", "echo never"]
    r = run_checks(checks, str(tmp_path), env, 1.0, str(log))
    assert not r.passed and r.failed == checks[1] and r.outcome == "failed" and r.exit_code == 7
    assert r.ran == ((checks[0], 0), (checks[1], 7))
    assert r.tail.splitlines() == [str(i) for i in range(61, 101)]  # the last 40 lines
    assert r.error == f"check failed: {checks[1]} (exit 7)"
    text = log.read_text()
    assert "===== wvo-batch check 2/3: seq 1 100; exit 7 =====\n1\n" in text and "===== exit 7 (failed) =====" in text
    assert "never" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt.log"]  # no output file left behind


def test_a_check_past_its_deadline_is_termed_then_killed_with_its_whole_tree(tmp_path):
    pids = tmp_path / "pids"
    # ignores TERM, and leaves a grandchild in a session of its own
    check = f"trap '' TERM; setsid sleep 60 & echo $! > {pids}; echo $$ >> {pids}; while :; do sleep 0.05; done"
    began = time.monotonic()
    r = run_checks([check], str(tmp_path), dict(os.environ), 0.3, str(tmp_path / "log"), deadline=began + 0.5)
    took = time.monotonic() - began
    assert r.outcome == "timed_out" and r.exit_code == -9 and r.error.endswith("(timed_out)")
    assert 0.5 <= took < 5
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid)


def test_a_hung_check_ends_when_its_cancel_is_set(tmp_path):
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    began = time.monotonic()
    check = "trap 'echo got TERM; exit 3' TERM; sleep 60 & wait"
    r = run_checks([check], str(tmp_path), dict(os.environ), 5.0, None, cancel=cancel)
    timer.join()
    assert r.outcome == "interrupted" and time.monotonic() - began < 5
    assert r.exit_code == 3 and r.tail == "got TERM"  # TERM first: it could end on its own terms
    assert run_checks(["true"], str(tmp_path), dict(os.environ), 0.5, None, cancel=cancel).outcome == "interrupted"


def test_what_a_passing_check_leaves_running_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    r = run_checks([f"setsid sleep 60 & echo $! > {pid_file}"], str(tmp_path), {**os.environ, ATTEMPT_MARK: "m1"},
                   0.5, None)
    assert r.passed
    assert not _alive(int(pid_file.read_text()))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


# -- Ray: what a node cannot do, it refuses ----------------------------------------------------------------


def test_a_ray_node_that_cannot_reach_the_repository_refuses_a_worktree_task(tmp_path):
    from runner.agents.ray_actor import _cannot_run_here

    msg = TaskMessage("t", 1, str(tmp_path / "t.log"), command="true",
                      workspace={"repo": str(tmp_path / "elsewhere"), "state_dir": str(tmp_path / "state")})
    why = _cannot_run_here(msg)
    assert why is not None and why.startswith("task t: workspace: worktree needs the repository")
    assert "\n" not in why
    assert _cannot_run_here(TaskMessage("t", 1, "x.log", command="true")) is None


# -- sessions × worktrees, with the real CLIs against tests/mockapi.py ---------------------------------------

CLIS = Path(__file__).resolve().parents[1] / ".agent-clis" / "node_modules" / ".bin"
real_clis = pytest.mark.skipif(not ((CLIS / "claude").exists() and (CLIS / "codex").exists()),
                               reason="agent CLIs not in .agent-clis/ (scripts/install-agent-clis.sh)")


@real_clis
@pytest.mark.timeout(120)
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_a_retry_in_a_new_worktree_resumes_the_session_and_the_cli_writes_through_its_own_tool(tmp_path, cli):
    # Claude Code files a session under its working directory's name, and each attempt runs in a new
    # worktree: its retry failed once with "No conversation found with session ID" (issue 20).
    from mockapi import MockAPI, reply, write_file
    from test_agent_clis import _env
    from test_cli_conformance import codex_args

    with MockAPI() as mock:
        mock.queue(write_file("notes.txt", "not there yet\n"), reply("I wrote notes only"),
                   write_file("made.txt", "made by the agent\n"), reply("done"))
        env = _env(mock, tmp_path)
        if cli == "claude":
            command = [str(CLIS / "claude"), "-p", "{prompt}", "--output-format", "stream-json", "--verbose",
                       "--permission-mode", "acceptEdits"]
        else:
            command = [str(CLIS / "codex"), "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write",
                       *codex_args(mock, retries=0), "{prompt}"]
        executor = {"command": command, "output": f"{cli}-json"}
        repo = make_repo(tmp_path, f"""
executor: {json.dumps(executor)}
workspace: {{mode: worktree}}
tasks:
  - id: t
    title: Make the file
    retries: 1
    checks: ["test -s made.txt"]
    env: {json.dumps(env)}
""")
        result, rows = execute(repo, "local")
        requests = mock.model_requests()
        assert mock.escapes() == []
    from runner.manager.ledger import Ledger

    ledger = Ledger(str(repo.parent / "state" / "ledger.sqlite"))
    try:
        first, second = ledger.attempts(result.run_id)
    finally:
        ledger.close()
    assert (first.outcome, second.outcome) == ("check_failed", "succeeded"), (first, second)
    assert first.session_id and second.session_id == first.session_id
    assert git(repo, "show", "wvo/roadmap:made.txt") == "made by the agent\n"
    assert result.exit_code == 0, rows
    # the retry's first request carries the earlier conversation
    assert "I wrote notes only" in json.dumps(requests[2].body)


def test_a_claude_session_filed_under_another_folder_is_copied_under_the_new_one(tmp_path):
    from runner.agents.sessions import carry_session, project_folder

    config = tmp_path / "config"
    old = config / "projects" / project_folder("/state/worktrees/t")
    old.mkdir(parents=True)
    session = "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc"
    (old / f"{session}.jsonl").write_text('{"turn": 1}\n')
    new_cwd = tmp_path / "worktrees" / "t-2.x"
    new_cwd.mkdir(parents=True)
    msg = TaskMessage("t", 2, "t.log", command=("claude", "-p", "again", "--resume", session), cwd=str(new_cwd),
                      output="claude-json")
    written = carry_session(msg, {"CLAUDE_CONFIG_DIR": str(config)})
    # as Claude Code 2.1.332 named them (a long one is cut, and ends with a hash of the path)
    assert project_folder("/tmp/exp/wt.a/t_1") == "-tmp-exp-wt-a-t-1"
    long = "/tmp/exp/run4/" + "x" * 120 + "/" + "y.z_" * 30 + "/t"
    assert project_folder(long) == ("-tmp-exp-run4-" + "x" * 120 + "-" + "y-z-" * 30)[:200] + "-jdduj1"
    assert written == str(config / "projects" / project_folder(str(new_cwd)) / f"{session}.jsonl")
    assert Path(written).read_text() == '{"turn": 1}\n' and (old / f"{session}.jsonl").exists()
    assert carry_session(msg, {"CLAUDE_CONFIG_DIR": str(config)}) is None  # already there: left alone
    codex = TaskMessage("t", 2, "t.log", command=("codex", "exec", "resume", session, "again"), output="codex-json")
    assert carry_session(codex, {"CLAUDE_CONFIG_DIR": str(config)}) is None  # codex finds its sessions by id


def test_the_landing_adapter_runs_the_same_checks_on_the_merged_result(tmp_path):
    from runner.agents.checks import landing_checks

    log = tmp_path / "attempt.log"
    checks = landing_checks(['test "$WVO_TASK_ID/$WVO_ATTEMPT/$WVO_BRANCH/$WVO_WORKTREE" = "t/2/wvo/r/t-2/$PWD"',
                             "echo broken on the merge; exit 4"], {"PATH": os.environ["PATH"]}, "t", 2, "wvo/r/t-2",
                            0.5, str(log))
    ok, detail = checks(str(tmp_path))
    assert not ok and detail == "echo broken on the merge; exit 4 (exit 4)\nbroken on the merge"
    assert "===== wvo-batch landing check 1/2: test" in log.read_text()
    assert landing_checks(["true"], {}, "t", 1, "b", 0.5, None)(str(tmp_path)) == (True, "")


@pytest.mark.parametrize("backend", [BACKENDS[1]], indirect=True)
def test_a_ray_actor_refuses_a_worktree_it_cannot_reach_and_the_run_stops_with_a_usage_error(tmp_path, backend):
    from runner.agents.backend import AgentGone, AgentReady
    from runner.agents.ray_backend import RayBackend
    from runner.errors import UsageError

    rb = RayBackend()
    try:
        rb.start("worker-0", "worker")
        deadline = time.monotonic() + 60
        ready = False
        while not ready and time.monotonic() < deadline:
            events, _ = rb.wait(1.0)
            ready = any(isinstance(m, AgentReady) for _, m in events)
        assert ready
        msg = TaskMessage("t", 1, str(tmp_path / "t.1.log"), command="touch made-here",
                          workspace={"repo": str(tmp_path / "not-on-this-node"), "state_dir": str(tmp_path / "state")})
        assert rb.send("worker-0", msg)
        with pytest.raises(UsageError) as err:
            while time.monotonic() < deadline:
                events, _ = rb.wait(1.0)
                assert not any(isinstance(m, AgentGone) for _, m in events)
        assert str(err.value).startswith("task t: workspace: worktree needs the repository")
        assert not (Path.cwd() / "made-here").exists()
        t0 = time.monotonic()
        rb.stop(10.0)  # the refused agent's end is seen at once, not when stop() gives up
        assert time.monotonic() - t0 < 5, "stop() after a refusal waited out its timeout"
    finally:
        if not rb._closed:
            rb.stop(5.0)


@pytest.mark.timeout(60)
def test_a_sigterm_of_the_run_ends_a_hung_check_of_an_attempt(tmp_path):
    # The checks took no orders: a stop waited for the manager to SIGKILL their agent.
    import signal
    import sys

    from conftest import ROOT

    flag = tmp_path / "check-runs"
    (tmp_path / "roadmap.yaml").write_text(json.dumps({"tasks": [
        {"id": "t", "command": "true", "checks": [f"touch {flag}; sleep 60"]}]}))
    argv = [sys.executable, "-m", "runner", str(tmp_path / "roadmap.yaml"), "--state-dir", str(tmp_path / "state"),
            "--quiet", "--grace", "0.5"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    with reaped(proc):
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the check never ran"
            time.sleep(0.02)  # polling a file the check makes, with a deadline
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert time.monotonic() - began < 15  # not the check's 60 s
    assert b"Traceback" not in err
    events = [json.loads(line) for path in (tmp_path / "state").glob("runs/*/events.jsonl")
              for line in path.read_text().splitlines()]
    finished = [e["status"] for e in events if e["event"] == "task:finished"]
    assert finished == ["interrupted"]
    # the agent ended its check and reported: it was not killed for holding the stop up
    assert {e["reason"] for e in events if e["event"] == "agent:exited"} == {"exit code 0"}


_CHUNK_LEAVES = """
import ctypes, multiprocessing, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # a subreaper, as an agent is
from runner.agents.agent import _run_batch
from runner.agents.execute import LogFiles
from runner.agents.messages import TaskBatch, TaskMessage
pid_file, folder = sys.argv[1], sys.argv[2]
look = f"p=$(cat {pid_file}); if [ -e /proc/$p ] && ! grep -q ') Z' /proc/$p/stat; then exit 1; fi"
msgs = (TaskMessage("c0", 1, folder + "/c0.1.log", command=f"setsid sleep 60 & echo $! > {pid_file}"),
        TaskMessage("c1", 1, folder + "/c1.1.log", command=look))
ours, theirs = multiprocessing.Pipe()
logs = LogFiles("t")
result, _ = _run_batch(TaskBatch(msgs), theirs, {"PATH": "/usr/bin:/bin"}, logs)
logs.close()
print(" ".join(r.outcome for r in result.results))
"""


@pytest.mark.timeout(60)
def test_what_a_chunk_task_leaves_running_is_killed_before_the_next_one(tmp_path):
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-c", _CHUNK_LEAVES, str(tmp_path / "pid"), str(tmp_path)], capture_output=True,
                       text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["succeeded", "succeeded"]
