"""Red team: where the Ray backend meets the coding layer and the real agent CLIs.

The tests run the real `wvo-batch --backend ray` joined to the session's Ray instance (conftest's `backend`
fixture), or a Run of the test's own on it (`ray_driver`), on real git repositories in tmp_path; several
run on both backends: what holds on the local backend must hold on Ray too (DESIGN invariant 12).

What failed on Ray, and was fixed:
- an actor that died mid-attempt freed the attempt's reservation and leases at once: the retry ran beside
  the dead attempt's daemon holding the same `db` name (test_x_leases_an_agents_death_…);
- the driver spun a whole core while any task ran: the hung-agents look asked for an overdue wake-up it
  never moved (test_hung_agents_asks_no_wake_up_…, test_ray_x_the_driver_is_idle_…);
- a SIGSTOPped actor held its task for ever (test_x_hung_agents_…);
- a landing's check outlived a SIGKILLed driver: no run watchdog on Ray (test_x_sigkill_mid_landing_…).
The rest held.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from conftest import wvo
from test_compose import claude_repo, first_parent_lands, ledger_attempts
from test_exit_codes import start
from test_worktrees import checkout_state, git, make_repo, rows, run_json, worktrees
from helpers import reaped

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

RAY = pytest.mark.parametrize("backend", ["ray"], indirect=True)


# ---- review × budget × ray -----------------------------------------------------------------------


@RAY
def test_ray_x_review_x_budget_the_critics_spend_counts(tmp_path, backend):
    # $1 a call: worker, critic (REJECT), worker = $3 >= $2.50: the second review never starts.
    repo, out = claude_repo(tmp_path, {"COST": "1.0"})
    before = checkout_state(repo)
    code, doc, err = run_json(repo, "--budget", "2.5", *backend, timeout=150)
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker"], err[-2000:]
    assert code == 1, err[-2000:]
    assert "budget reached: $3.00 of $2.50" in err
    attempts = ledger_attempts(repo.parent / "state")
    assert [(a["attempt"], a["session_id"], a["cost_usd"]) for a in attempts] == [
        (1, "session-T1-1", 1.0), (2, "session-T1-2", 1.0), (3, "session-T1-3", 1.0)]
    assert doc["usage"]["cost_usd"] == pytest.approx(3.0)
    assert checkout_state(repo) == before


@RAY
def test_ray_x_review_approved_work_lands_once_and_the_checkout_is_untouched(tmp_path, backend):
    repo, out = claude_repo(tmp_path, {"COST": "0.5"})
    before = checkout_state(repo)
    code, doc, err = run_json(repo, *backend, timeout=150)
    assert code == 0, err[-2000:]
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker", "critic"]
    assert rows(doc)["T1"]["status"] == "succeeded"
    assert first_parent_lands(repo, "T1") == 1
    assert git(repo, "show", "wvo/roadmap:hello.txt").startswith("hello world")
    assert checkout_state(repo) == before and not (repo / "hello.txt").exists()
    assert len(worktrees(repo)) == 1
    assert doc["usage"]["cost_usd"] == pytest.approx(2.0)


# ---- the real CLIs × a retry in a new worktree × ray -------------------------------------------------


def _cli_skip_reason():
    from test_agent_clis import _skip_reason

    return _skip_reason()


# ---- --resume after the driver's SIGKILL × worktrees × ray ---------------------------------------------


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@RAY
def test_ray_x_resume_after_the_driver_is_sigkilled_runs_nothing_twice_and_loses_nothing(tmp_path, backend):
    from helpers import Fifo

    fifo = Fifo(tmp_path / "up")
    runs, pid_file, release = tmp_path / "runs.txt", tmp_path / "slow.pid", tmp_path / "release"
    slow = (f"echo slow >> {runs}; echo slow > slow.txt; echo $$ > {pid_file}; echo up > {fifo.path}; "
            f"while [ ! -e {release} ]; do sleep 0.05; done")
    roadmap = "workspace:\n  mode: worktree\n" + (
        "tasks:\n"
        f"  - id: first\n    command: \"echo first >> {runs}; echo first > first.txt\"\n"
        f"  - id: slow\n    dependencies: [first]\n    command: {json.dumps(slow)}\n"
    )
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    proc = start(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--agents", "1", "-q", *backend)
    with reaped(proc):
        fifo.wait_lines(1, timeout=120)  # `first` landed (slow depends on it) and slow runs on its actor
        pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert _wait_gone(pid, 30), "the attempt's process outlived the SIGKILLed driver by 30 s"
    release.write_text("")
    code, doc, err = run_json(repo, "--resume", "--agents", "1", *backend, timeout=150)
    assert code == 0, err[-3000:]
    assert runs.read_text().split() == ["first", "slow", "slow"], "a task ran twice, or was lost"
    assert first_parent_lands(repo, "first") == 1 and first_parent_lands(repo, "slow") == 1
    assert git(repo, "show", "wvo/roadmap:slow.txt") == "slow\n"
    assert checkout_state(repo) == before
    assert len(worktrees(repo)) == 1, worktrees(repo)
    fifo.close()


# ---- exit codes × ray, on the real process -----------------------------------------------------------


@RAY
def test_ray_x_exit_1_a_failed_worktree_task(tmp_path, backend):
    roadmap = "workspace:\n  mode: worktree\n" + (
        "tasks:\n  - id: ok\n    command: \"echo ok > ok.txt\"\n  - id: bad\n    command: \"echo bad > bad.txt; exit 3\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "2", *backend, timeout=150)
    assert code == 1, err[-2000:]
    assert doc["exit_code"] == 1
    assert rows(doc)["bad"]["status"] == "failed" and rows(doc)["ok"]["status"] == "succeeded"
    assert "Traceback" not in err


@RAY
@pytest.mark.parametrize("sig, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ray_x_exit_130_143_interrupted_mid_worktree_attempt(tmp_path, backend, sig, expected):
    from helpers import Fifo

    fifo = Fifo(tmp_path / "up")
    pid_file = tmp_path / "long.pid"
    long = f"echo part > part.txt; echo $$ > {pid_file}; echo up > {fifo.path}; exec sleep 60"
    roadmap = "workspace:\n  mode: worktree\n" + (
        f"tasks:\n  - id: long\n    command: {json.dumps(long)}\n  - id: after\n    dependencies: [long]\n"
        "    command: \"echo after > after.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    proc = start(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--agents", "1", "--grace", "0.5",
                 "--json", *backend)  # fmt: skip
    with reaped(proc):
        fifo.wait_lines(1, timeout=120)
        pid = int(pid_file.read_text())
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    fifo.close()
    assert proc.returncode == expected, err[-2000:]
    assert "Traceback" not in err
    doc = json.loads(out)
    assert rows(doc)["long"]["status"] == "interrupted"
    assert not _alive(pid), "the interrupted attempt's process outlived the run"
    assert checkout_state(repo) == before
    # no attempt's work is lost: the interrupted attempt's WIP is on its branch
    branch = (rows(doc)["long"].get("workspace") or {}).get("branch")
    assert branch and "part.txt" in git(repo, "ls-tree", "--name-only", branch).split(), rows(doc)["long"]
    assert len(worktrees(repo)) == 1, worktrees(repo)


# ---- leases × ray ------------------------------------------------------------------------------------


@RAY
def test_ray_x_leases_released_on_failure_timeout_and_actor_death(tmp_path, backend):
    from test_leases_run import events_of, free_ports, lease_rows, roadmap

    low = free_ports(1)
    tasks = [("fails", "fail"), ("hangs", "hang", "    timeout: 1\n"), ("kills", "kill-agent")]
    rm = roadmap(tmp_path, low, low, tasks)
    proc = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "3", "--json", "--grace", "1", *backend, timeout=150)
    doc = json.loads(proc.stdout)
    r = {row["task"]: row for row in doc["tasks"]}
    said = f"{proc.stderr[-2000:]}\n{json.dumps(r, indent=1)[:3000]}"
    assert r["fails"]["status"] == "failed" and r["hangs"]["status"] == "timed_out", said
    assert r["kills"]["status"] == "succeeded", said  # its first attempt died with its actor; the retry had the port
    assert r["kills"]["attempts"] == 2, said
    assert doc["leases"] == {"port": {}}
    leases = lease_rows(tmp_path / "s")
    assert len(leases) == 4 and all(x["released"] is not None for x in leases), leases
    starts = [e for e in events_of(tmp_path) if e["event"] == "start"]
    assert len(starts) == 4


# Attempt 1 leaves a daemon (a session of its own, deaf to TERM) listening on a port, then SIGKILLs its own
# agent (the actor on Ray); attempt 2 says whether that daemon is still alive when it starts, then binds the port.
HOLDER = r"""
import os, signal, socket, sys, time
out = sys.argv[1]
port = int(sys.argv[2])
if os.environ["WVO_ATTEMPT"] == "1":
    r, w = os.pipe()
    if os.fork() == 0:  # the part of the task that holds the port: a daemon (its own session), deaf to TERM
        os.setsid()
        if os.fork():
            os._exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen()
        with open(out + "/first.pid", "w") as f:
            f.write(str(os.getpid()))
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(r, 1)
    os.kill(os.getppid(), signal.SIGKILL)  # its agent dies
    time.sleep(60)
first = int(open(out + "/first.pid").read())
try:
    alive = open("/proc/%d/stat" % first).read().split(") ")[1][0] != "Z"
except OSError:
    alive = False
with open(out + "/second.txt", "w") as f:
    f.write("first alive: %s\n" % alive)
s = socket.socket()
s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: fails while attempt 1 still listens
"""


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)], indirect=True)
def test_x_leases_an_agents_death_frees_its_lease_only_once_its_task_is_gone(tmp_path, backend):
    # DESIGN invariant 11: a leased slot (here a database name: no probe can see it taken) is held by at most
    # one live attempt. On Ray the actor's death was reported at once, while its node's watchdog was still
    # TERMing the attempt's processes: the retry, given the same name, started beside the dead attempt's daemon.
    import sys

    from test_leases_run import free_ports

    low = free_ports(1)
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("resources:\n  db: [only]\n"
                  f"tasks:\n  - id: t\n    uses: [db]\n"
                  f"    command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}, {json.dumps(str(tmp_path))}, '{low}']\n")
    proc = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "2", "--json", "--grace", "1", *backend, timeout=150)
    first = int((tmp_path / "first.pid").read_text())
    try:
        said = (tmp_path / "second.txt").read_text() if (tmp_path / "second.txt").exists() else "(no second attempt)"
        assert said == "first alive: False\n", f"{said}{proc.stderr[-2000:]}"
        doc = json.loads(proc.stdout)
        assert proc.returncode == 0 and doc["tasks"][0]["status"] == "succeeded", proc.stderr[-2000:]
    finally:
        if _alive(first):
            import os

            os.kill(first, signal.SIGKILL)


# ---- the real CLIs × a usage limit × --resume × ray ----------------------------------------------------


@RAY
@pytest.mark.skipif(_cli_skip_reason() is not None, reason=_cli_skip_reason() or "")
@pytest.mark.parametrize("cli", ["codex"])  # claude's session on Ray: test_compose.test_session_resume_x_worktree_with_the_real_cli
def test_ray_x_real_cli_a_usage_limit_exits_75_and_resume_continues_the_session(tmp_path, backend, cli):
    from mockapi import MockAPI, reply, usage_limit, write_file
    from test_sessions_resume import roadmap

    with MockAPI() as mock:
        mock.queue(write_file("first.txt", "one\n"), reply("wrote first.txt"), usage_limit(),
                   write_file("second.txt", "two\n"), reply("wrote second.txt"))  # fmt: skip
        text, _ = roadmap(mock, tmp_path, cli)
        repo = make_repo(tmp_path / "r", text)
        code, doc, err = run_json(repo, "--agents", "1", "--max-wait", "60", *backend, timeout=150)
        assert code == 75, err[-3000:]
        assert doc["exit_code"] == 75
        first_run = ledger_attempts(repo.parent / "state")
        code, doc, err2 = run_json(repo, "--agents", "1", "--resume", *backend, timeout=150)
        requests = mock.model_requests()
        assert mock.escapes() == [], "a CLI tried to reach another host"
    session = first_run[0]["session_id"]
    assert first_run[0]["outcome"] == "check_failed" and session, first_run
    assert first_run[-1]["failure"] == "usage_limited", first_run
    assert f"resume: task T1 continues session {session} (interrupted: usage limit)" in err2, err2[-3000:]
    resumed = [a for a in ledger_attempts(repo.parent / "state") if a["run_id"] != first_run[0]["run_id"]]
    assert resumed[0]["session_id"] == session, resumed
    assert resumed[0]["outcome"] == "succeeded" and code == 0, (resumed, err2[-3000:])
    assert git(repo, "show", "wvo/roadmap:second.txt") == "two\n"
    assert "wrote first.txt" in json.dumps(requests[-2].body), "the resumed turn did not carry the first run's turn"


# ---- an actor's death mid worktree attempt × ray --------------------------------------------------------

# Attempt 1 writes its work, then SIGKILLs its agent; attempt 2 writes the rest. Both attempts' work must be
# kept: the first on its branch (a WIP commit), the second landed.
KILLER = r"""
import os, signal, sys
open("work-%s.txt" % os.environ["WVO_ATTEMPT"], "w").write("attempt %s\n" % os.environ["WVO_ATTEMPT"])
if os.environ["WVO_ATTEMPT"] == "1":
    os.kill(os.getppid(), signal.SIGKILL)
    signal.pause()
"""


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)], indirect=True)
def test_x_worktree_an_agents_death_mid_attempt_keeps_the_attempts_work_and_the_retry_lands(tmp_path, backend):
    import sys

    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    roadmap = "workspace:\n  mode: worktree\n" + (
        f"tasks:\n  - id: t\n    title: write\n    command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}]\n"
    )
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    code, doc, err = run_json(repo, "--agents", "2", *backend, timeout=150)
    assert code == 0, err[-3000:]
    row = rows(doc)["t"]
    assert row["status"] == "succeeded" and row["attempts"] == 2, row
    assert git(repo, "show", "wvo/roadmap:work-2.txt") == "attempt 2\n"
    assert checkout_state(repo) == before
    assert len(worktrees(repo)) == 1, worktrees(repo)
    kept = [b.strip(" *+") for b in git(repo, "branch", "--list", "wvo/0*").splitlines()]
    with_first = [b for b in kept if "work-1.txt" in git(repo, "ls-tree", "--name-only", b).split()]
    assert with_first, f"the dead attempt's work is on no branch: {kept}\n{err[-2000:]}"


# ---- --iterations × worktrees × ray ----------------------------------------------------------------------


@RAY
def test_ray_x_iterations_each_batch_lands_and_nothing_runs_twice(tmp_path, backend):
    runs = tmp_path / "runs.txt"
    tasks = "".join(f"  - id: t{i}\n    command: \"echo t{i} >> {runs}; echo {i} > f{i}.txt\"\n" for i in range(3))
    repo = make_repo(tmp_path, "workspace:\n  mode: worktree\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "--agents", "1", "--iterations", "0", "--max-tasks", "1", *backend, timeout=170)
    assert code == 0, err[-3000:]
    assert sorted(runs.read_text().split()) == ["t0", "t1", "t2"], runs.read_text()
    assert len(doc["batches"]) >= 3, doc["batches"]
    for i in range(3):
        assert first_parent_lands(repo, f"t{i}") == 1
    assert len(worktrees(repo)) == 1


# ---- a hung (SIGSTOPped) agent × ray -------------------------------------------------------------------

STOPPER = r"""
import os, signal
if os.environ["WVO_ATTEMPT"] == "1":
    os.kill(os.getppid(), signal.SIGSTOP)  # its agent hangs: there, but stopped
    signal.pause()
"""


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)], indirect=True)
def test_x_hung_agents_a_stopped_agent_is_killed_and_its_task_retried(tmp_path, backend):
    import sys

    from test_exit_codes import bounded

    script = tmp_path / "stopper.py"
    script.write_text(STOPPER)
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"tasks:\n  - id: t\n    command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}]\n")
    code, out, err = bounded(rm, "--state-dir", tmp_path / "s", "--agents", "2", "--json", "--grace", "1", *backend,
                             timeout=45)  # fmt: skip
    assert code is not None, f"the run never ended with its agent stopped: {err[-2000:]}"
    assert code == 0, err[-2000:]
    row = json.loads(out)["tasks"][0]
    assert row["status"] == "succeeded" and row["attempts"] == 2, row


def test_hung_agents_asks_no_wake_up_of_a_backend_it_cannot_look_at():
    # The Ray backend had no `stopped`: the component never moved its next look, and its overdue timer made
    # the run loop spin, a whole core, for as long as a task ran.
    from types import SimpleNamespace

    from runner.manager.hung_agents import HungAgents

    ctx = SimpleNamespace(pool=SimpleNamespace(reservations={"worker-0": "t"}), backend=object())
    hung = HungAgents(ctx)
    for now in (100.0, 100.001, 100.002):
        hung.tick(now)
        assert all(t > now for t in hung.timers(now)), "an overdue wake-up: the loop would spin"


@RAY
def test_ray_x_the_driver_is_idle_while_a_task_runs(tmp_path, backend):
    import time

    import psutil

    from helpers import Fifo

    fifo = Fifo(tmp_path / "up")
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"tasks:\n  - id: t\n    command: {json.dumps(f'echo up > {fifo.path}; exec sleep 60')}\n")
    proc = start(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--grace", "0.5", *backend)
    with reaped(proc):
        fifo.wait_lines(1, timeout=120)
        driver = psutil.Process(proc.pid)
        before, began = driver.cpu_times(), time.monotonic()
        time.sleep(2.0)  # a measurement window, not a synchronisation
        after, seconds = driver.cpu_times(), time.monotonic() - began
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    fifo.close()
    used = (after.user + after.system - before.user - before.system) / seconds
    assert used < 0.3, f"the driver used {used:.0%} of a core while its one task slept"


# ---- the real CLIs × review × --budget × ray ---------------------------------------------------------------


@RAY
@pytest.mark.skipif(_cli_skip_reason() is not None, reason=_cli_skip_reason() or "")
@pytest.mark.parametrize("cli", ["claude"])  # the critic's spend with a fake CLI: test_ray_x_review_x_budget_…
def test_ray_x_real_cli_review_x_budget_counts_the_workers_and_the_critics_spend(tmp_path, backend, cli):
    # worker (writes a file), critic (REJECT), worker again: the budget is reached after those three calls
    # when the critic's spend counts, so the second review never starts.
    from mockapi import MockAPI, reply, write_file
    from helpers import real_cli_executor

    def review_run(folder: str, budget: str):
        """Worker, critic (REJECT), worker, critic (APPROVE) through the real CLI, under --budget."""
        with MockAPI() as mock:
            mock.queue(write_file("a.txt", "one\n"), reply("wrote a.txt", input_tokens=100000, output_tokens=1000),
                       reply("Looked.\nVERDICT: REJECT name the world", input_tokens=100000, output_tokens=1000),
                       write_file("a.txt", "hello world\n"), reply("fixed", input_tokens=100000, output_tokens=1000),
                       reply("VERDICT: APPROVE", input_tokens=100000, output_tokens=1000))  # fmt: skip
            argv, output, env = real_cli_executor(mock, tmp_path / folder, cli)
            prices = "  prices: {default: {input: 1.25, cached_input: 0.125, output: 10}}\n" if cli == "codex" else ""
            roadmap = (
                f"executor:\n  command: {json.dumps(argv)}\n  output: {output}\n{prices}"
                "agents: {worker: 1, critic: 1}\n"
                "workspace: {mode: worktree}\n"
                f"defaults:\n  review: true\n  review_rounds: 3\n  retries: 3\n  env: {json.dumps(env)}\n"
                "tasks:\n  - id: T1\n    title: write the greeting\n"
            )
            repo = make_repo(tmp_path / folder / "r", roadmap)
            return repo, run_json(repo, "--budget", budget, *backend, timeout=150)

    repo, first = review_run("first", "1000")  # a budget never reached: what each call costs
    assert first[0] == 0, first[2][-3000:]
    spent = ledger_attempts(repo.parent / "state")
    assert len(spent) == 4 and all(a["cost_usd"] for a in spent), spent
    three = sum(a["cost_usd"] for a in spent[:3])
    repo, (code, doc, err) = review_run("again", f"{three * 0.99:.6f}")
    assert code == 1, err[-3000:]
    assert "budget reached" in err
    ran = [(a["attempt"], a["cost_usd"]) for a in ledger_attempts(repo.parent / "state")]
    assert len(ran) == 3, f"attempts {ran}: the critic's spend was not counted"
    assert doc["usage"]["cost_usd"] == pytest.approx(three)


# ---- a usage limit that resets within --max-wait × ray -------------------------------------------------------

from test_agent_clis import fake  # noqa: E402,F401 - the stand-in codex fixture


@pytest.mark.timeout(90)
def test_ray_x_usage_limit_pauses_every_actor_of_the_account_then_the_run_goes_on(tmp_path, fake, ray_driver):
    from helpers import Recorder, read_events, roadmap, run, task
    from test_agent_clis import attempts

    ex, env = fake(["usage_limit", "ok"])
    rm = roadmap([task(f"T{i}", title="t", env=env) for i in range(4)])
    result = run(rm, tmp_path / "s", Recorder(), agents=2, executor=ex, backend="ray")
    assert result.exit_code == 0, result.tasks
    events = read_events(result)
    (paused,) = [e for e in events if e["event"] == "account:paused"]
    at = [i for i, e in enumerate(events) if e["event"] == "task:finished" and e["status"] == "usage_limited"][0]
    later = [e for e in events[at:] if e["event"] == "task:reserved"]
    assert len(later) >= 2 and all(e["ts"] >= paused["until"] - 0.05 for e in later), (paused, later)
    assert len(fake.calls()) == 5
    assert [a.failure for a in attempts(result, tmp_path / "s")].count("usage_limited") == 1


# ---- dynamic scaling × worktrees × ray -------------------------------------------------------------------


@RAY
def test_ray_x_scaling_workers_come_and_go_and_every_task_lands_once(tmp_path, backend):
    runs = tmp_path / "runs.txt"
    tasks = "".join(f"  - id: t{i}\n    command: \"echo t{i} >> {runs}; sleep 0.5; echo {i} > f{i}.txt\"\n"
                    for i in range(6))
    repo = make_repo(tmp_path, "workspace:\n  mode: worktree\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "--min-agents", "1", "--max-agents", "3", *backend, timeout=170)
    assert code == 0, err[-3000:]
    assert sorted(runs.read_text().split()) == [f"t{i}" for i in range(6)], runs.read_text()
    for i in range(6):
        assert first_parent_lands(repo, f"t{i}") == 1
    assert len(worktrees(repo)) == 1


# ---- Ctrl-C during a critic's review × ray ----------------------------------------------------------------

REVIEWED = r'''
import json, os, pathlib, sys, time
out = pathlib.Path(os.environ["AGENT_OUT"])
task, attempt = os.environ["WVO_TASK_ID"], int(os.environ["WVO_ATTEMPT"])
review = bool(os.environ.get("WVO_REVIEW"))
with open(out / "calls.txt", "a") as f:
    f.write(("critic" if review else "worker") + "\n")
if review and not (out / "go").exists():
    (out / "critic.pid").write_text(str(os.getpid()))
    with open(os.environ["FIFO"], "w") as f:
        f.write("reviewing\n")
    time.sleep(60)
text = "VERDICT: APPROVE" if review else "wrote hello.txt"
if not review:
    pathlib.Path("hello.txt").write_text("hello world\n")
session = f"session-{task}-{attempt}"
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": text,
                  "session_id": session, "total_cost_usd": 0.1,
                  "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                            "output_tokens": 1}}))
'''


@RAY
def test_ray_x_ctrl_c_during_a_review_exits_130_lands_nothing_and_resume_lands_once(tmp_path, backend):
    import sys

    from helpers import Fifo

    fifo = Fifo(tmp_path / "up")
    out = tmp_path / "out"
    out.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(REVIEWED)
    env = {"AGENT_OUT": str(out), "FIFO": str(fifo.path)}
    roadmap = (
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, '-p', '{{prompt}}']\n"
        "  output: claude-json\n"
        "agents: {worker: 1, critic: 1}\n"
        "workspace: {mode: worktree}\n"
        f"defaults:\n  review: true\n  env: {json.dumps(env)}\n"
        "tasks:\n  - id: T1\n    title: write the greeting\n"
    )
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    proc = start(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--grace", "0.5", "--json", *backend)
    with reaped(proc):
        fifo.wait_lines(1, timeout=120)
        critic = int((out / "critic.pid").read_text())
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=60)
    fifo.close()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert not _alive(critic), "the critic outlived the interrupted run"
    assert first_parent_lands(repo, "T1") == 0
    assert checkout_state(repo) == before
    (out / "go").write_text("")
    code, doc, err = run_json(repo, "--resume", *backend, timeout=150)
    assert code == 0, err[-3000:]
    assert first_parent_lands(repo, "T1") == 1
    assert git(repo, "show", "wvo/roadmap:hello.txt") == "hello world\n"
    assert len(worktrees(repo)) == 1, worktrees(repo)
    assert checkout_state(repo) == before


# ---- the driver SIGKILLed while a task lands × ray ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)], indirect=True)
def test_x_sigkill_mid_landing_the_landings_check_dies_with_the_run_and_resume_lands_once(tmp_path, backend):
    # The checks on the merged result run in the driver, in a session of their own: on the local backend
    # the run's watchdog kills them when the manager dies. The Ray backend started no watchdog.
    import os
    import subprocess
    import sys
    import time

    from conftest import ROOT
    from test_worktrees import _marked

    flag = tmp_path / "resumed"
    runs = tmp_path / "runs.txt"
    check = f'[ -e "{flag}" ] && exit 0; case "$PWD" in */landing) touch "{flag}.hit"; exec sleep 60;; esac'
    roadmap = "workspace:\n  mode: worktree\n" + (
        f"  checks: ['{check}']\n"
        "tasks:\n"
        f"  - id: only\n    command: \"echo ran >> {runs}; echo work > work.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(tmp_path / "state"), "-q",
         *backend],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "WVO_TEST_MARK": str(flag)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{flag}.hit").exists():  # the landing's check is running: into is mid-landing
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _marked(str(flag)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _marked(str(flag)), "the landing's check outlived the run"
    finally:
        for p in _marked(str(flag)):
            p.kill()
    flag.write_text("")
    code, doc, err = run_json(repo, "--resume", *backend, timeout=150)
    assert code == 0, err[-3000:]
    assert runs.read_text() == "ran\n"
    assert first_parent_lands(repo, "only") == 1


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)], indirect=True)
def test_x_what_a_landings_check_leaves_running_is_gone_when_the_run_ends(tmp_path, backend):
    pid_file = tmp_path / "daemon.pid"
    check = (f'case "$PWD" in */landing) setsid sh -c \'echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; '
             f'exec sleep 60\' & while [ ! -s {pid_file} ]; do sleep 0.01; done;; esac')
    roadmap = "workspace:\n  mode: worktree\n" + (
        f"  checks: [{json.dumps(check)}]\n"
        "tasks:\n  - id: only\n    command: \"echo work > work.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, *backend, timeout=150)
    assert code == 0, err[-3000:]
    pid = int(pid_file.read_text())
    assert _wait_gone(pid, 5), "a daemon the landing's check started outlived the run"


@pytest.mark.timeout(90)
def test_ray_x_auth_failure_stops_the_run_after_one_attempt(tmp_path, fake, ray_driver):
    from helpers import Recorder, roadmap, run, task

    ex, env = fake(["auth", "ok"])
    rm = roadmap([task(f"T{i}", title="t", env=env, retries=3) for i in range(4)])
    rec = Recorder()
    result = run(rm, tmp_path / "s", rec, agents=1, executor=ex, backend="ray")
    assert result.exit_code == 1
    assert len(fake.calls()) == 1
    assert any("auth failed" in m for m in rec.messages)
    assert result.tasks[0]["status"] == "auth_failed"
    assert {r["status"] for r in result.tasks[1:]} == {"interrupted"}


@RAY
def test_ray_x_status_from_another_shell_shows_the_task_on_its_actor(tmp_path, backend):
    from helpers import Fifo

    fifo = Fifo(tmp_path / "up")
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"tasks:\n  - id: long\n    command: {json.dumps(f'echo up > {fifo.path}; exec sleep 60')}\n")
    proc = start(rm, "--state-dir", tmp_path / "s", "--agents", "1", "--grace", "0.5", "-q", *backend)
    with reaped(proc):
        fifo.wait_lines(1, timeout=120)
        shown = wvo(rm, "--state-dir", tmp_path / "s", "--status", "--json", timeout=30)
        text = wvo(rm, "--state-dir", tmp_path / "s", "--status", timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    fifo.close()
    assert shown.returncode == 0, shown.stderr[-2000:]
    doc = json.loads(shown.stdout)
    assert "long" in json.dumps(doc.get("agents", doc)), doc
    assert text.returncode == 0 and "long" in text.stdout, text.stdout + text.stderr
    assert "Traceback" not in shown.stderr + text.stderr
