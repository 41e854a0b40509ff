"""Nothing lost, nothing run twice: SIGKILLs at chosen points, `--resume`, and two runs at once (cron overlap).

Real `wvo-batch` processes. Every task appends `ID ATTEMPT` to one file (O_APPEND: one write a line), so
what really ran is known whatever the manager recorded. A kill is synchronised on a FIFO a task writes,
or on the ledger (polled with a deadline), never on a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, wvo
from helpers import Fifo, reaped, wait_dead
from runner.errors import EXIT_LOCKED

pytestmark = pytest.mark.timeout(180)


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **(env or {})})  # fmt: skip


def lines(path: Path) -> list[tuple[str, str]]:
    """(task, attempt) of every line the tasks appended."""
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def wait_until(what, timeout: float = 30.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting: {why}"
        time.sleep(0.02)  # polling a condition with a deadline


def ledger_rows(state: Path, sql: str, params=()) -> list[tuple]:
    try:
        db = sqlite3.connect(f"file:{state / 'ledger.sqlite'}?mode=ro", uri=True)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def kill_run(proc: subprocess.Popen, tag: str) -> None:
    """SIGKILL the manager; its agents and tasks go with it (they watch it): waited for, with a deadline."""
    victims = tagged(tag)
    proc.kill()
    proc.communicate(timeout=30)
    alive = wait_dead(victims, timeout=10)
    assert not alive, f"survived the manager's SIGKILL: {alive}"


def tagged(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("WVO_REDTEAM_TAG") == tag:
                out.append(p)
        except psutil.Error:
            pass
    return out


# -- cron overlap -------------------------------------------------------------------------------------------


def test_cron_overlap_with_write_back_runs_once(tmp_path):
    """The README's cron line (`--resume --write-back`): a run that has written a status back into its roadmap
    (a new file put in place of the old) still holds that roadmap's lock: the next cron run exits 75, and
    its task does not run a second time."""
    ran = tmp_path / "ran"
    fifo = Fifo(tmp_path / "ready")
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    later = tmp_path / "later"  # once it exists, `slow` no longer waits: a second run of it would go through
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(
        "tasks:\n"
        f"  - id: first\n    command: 'echo first $WVO_ATTEMPT >> {ran}'\n"
        f"  - id: slow\n    dependencies: [first]\n"
        f"    command: 'echo slow $WVO_ATTEMPT >> {ran}; test -e {later} || {{ echo go > {fifo.path}; cat {hold}; }}'\n"
    )
    inode = rm.stat().st_ino
    proc = start(rm, "--state-dir", tmp_path / "s", "--agents", "2", "--resume", "--write-back", "-q")
    try:
        fifo.wait_lines(1)
        wait_until(lambda: "in_progress" in rm.read_text(), why="the run never wrote slow's status back")
        assert rm.stat().st_ino != inode  # the roadmap file was replaced (written back atomically)
        later.write_text("")
        other = wvo(rm, "--state-dir", tmp_path / "s", "--agents", "2", "--resume", "--write-back", "-q", timeout=60)
        assert other.returncode == EXIT_LOCKED, other.stderr
        assert f"PID {proc.pid}" in other.stderr
    finally:
        with open(hold, "w") as f:
            f.write("go\n")
        out, err = proc.communicate(timeout=60)
        fifo.close()
    assert proc.returncode == 0, err
    assert lines(ran) == [("first", "1"), ("slow", "1")]


# -- the harness: tasks that append `ID ATTEMPT`, a blocker that says where it is --------------------------

WORKER = '''
import os, time


def work(path, tid, ready=None, resumed=None, fail_first=False):
    with open(path, "a") as f:
        f.write(f"{tid} {os.environ['WVO_ATTEMPT']}\\n")
    if fail_first and os.environ["WVO_ATTEMPT"] == "1":
        raise RuntimeError("first attempt fails")
    if ready and os.environ["WVO_ATTEMPT"] == "1" and not os.path.exists(resumed):
        with open(ready, "w") as f:
            f.write(f"go {os.getpid()}\\n")
        time.sleep(120)
'''


class Plan:
    """A roadmap of n quick tasks (shell commands or `call:`s), one of which (`blocker`) stops on its first
    attempt of the first run and writes `go PID` (PID: its process, or the agent for a call) to a FIFO."""

    def __init__(self, tmp_path: Path, kind: str, n: int, blocker: int = -1, extra: str = "", tasks: str | None = None,
                 flaky: tuple[int, ...] = ()):  # fmt: skip
        """tasks: the roadmap's tasks as YAML (`{ran}`, `{resumed}`, `{fifo}` filled in) instead of n quick ones."""
        self.tmp, self.kind, self.n = tmp_path, kind, n
        self.ran = tmp_path / "ran"
        self.resumed = tmp_path / "resumed"  # once it exists, the blocker no longer stops
        self.fifo = Fifo(tmp_path / "ready")
        self.state = tmp_path / "s"
        self.roadmap = tmp_path / "roadmap.yaml"
        self.tag = f"rt-{tmp_path.name}"
        self.env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "WVO_REDTEAM_TAG": self.tag}
        if tasks is not None:
            import yaml

            text = tasks.format(ran=self.ran, resumed=self.resumed, fifo=self.fifo.path)
            self.ids = [t["id"] for t in yaml.safe_load(text)["tasks"]]
            self.n, self.blocker = len(self.ids), None
            self.roadmap.write_text(extra + text)
            return
        self.ids = [f"t{i:03d}" for i in range(n)]
        self.blocker = self.ids[blocker]
        self.flaky = {self.ids[i] for i in flaky}  # their first attempt fails (after its line); retried once
        (tmp_path / "rtworker.py").write_text(WORKER)
        out = ["tasks:"]
        for tid in self.ids:
            out.append(f"  - id: {tid}")
            if kind == "call":
                kw = {"path": str(self.ran), "tid": tid}
                if tid == self.blocker:
                    kw.update(ready=str(self.fifo.path), resumed=str(self.resumed))
                if tid in self.flaky:
                    kw.update(fail_first=True)
                out.append("    call: rtworker:work")
                out.append(f"    kwargs: {json.dumps(kw)}")
            else:
                cmd = f"echo {tid} $WVO_ATTEMPT >> {self.ran}"
                if tid == self.blocker:
                    cmd += (f"; test $WVO_ATTEMPT != 1 -o -e {self.resumed} || {{ echo go $$ > {self.fifo.path};"
                            " exec sleep 120; }")  # fmt: skip
                if tid in self.flaky:
                    cmd += "; test $WVO_ATTEMPT != 1"
                out.append(f"    command: {json.dumps(cmd)}")
            if tid in self.flaky:
                out.append("    retries: 1")
        self.roadmap.write_text(extra + "\n".join(out) + "\n")

    def start(self, *args) -> subprocess.Popen:
        return start(self.roadmap, "--state-dir", self.state, "-q", *args, env=self.env)

    def interrupt(self, *args, until=None, why: str = "", act=None, timeout: float = 120) -> tuple[int, str, str]:
        """Run with args until the blocker has said it runs (its line: `go PID`) and until() holds (polled with a
        deadline), then act(proc, line), by default the manager's SIGKILL (kill_run); returns the run's exit
        code, stdout and stderr (what it printed is not kept after a SIGKILL)."""
        proc = self.start(*args)
        out = err = ""
        with reaped(proc):
            line = self.fifo.wait_lines(1)[0]
            if until is not None:
                wait_until(until, why=why)
            if act is None:
                kill_run(proc, self.tag)
            else:
                act(proc, line)
                out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def run(self, *args) -> subprocess.CompletedProcess:
        return wvo(self.roadmap, "--state-dir", self.state, *args, env=self.env, timeout=120)

    def succeeded(self, run_id: int) -> set[str]:
        return {r[0] for r in ledger_rows(self.state, "SELECT task_id FROM attempts WHERE run_id = ? AND outcome = 'succeeded'",
                                          (run_id,))}  # fmt: skip

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tid, _ in lines(self.ran):
            out[tid] = out.get(tid, 0) + 1
        return out

    def chunked(self, run_id: int) -> bool:
        """A chunk of more than one task was handed out in the run (its events)."""
        folder = next((self.state / "runs").glob(f"{run_id:04d}-*"))
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines() if line.strip()]
        return any(e.get("chunk", 1) > 1 for e in events)

    def resume_and_check(self, before: dict[str, int], recorded: set[str], agents: str = "2", *more: str) -> dict:
        """--resume: a task recorded as succeeded in run 1 does not run again; every other one runs; the exit
        code, the summary and --history agree with the ledger."""
        self.resumed.write_text("")
        r = self.run("--resume", "--json", "--agents", agents, *more)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        after = self.counts()
        again = sorted(t for t in recorded if after.get(t, 0) != before.get(t, 0))
        assert not again, f"recorded as succeeded in run 1, run again by --resume: {again}"
        missing = sorted(t for t in self.ids if t not in recorded and after.get(t, 0) == before.get(t, 0))
        assert not missing, f"not recorded as succeeded, not run by --resume: {missing}"
        assert doc["succeeded"] == self.n and doc["failed"] == 0 and doc["interrupted"] == 0, doc
        assert {row["task"]: row["status"] for row in doc["tasks"]} == dict.fromkeys(self.ids, "succeeded")
        assert f"{len(recorded)} task(s) already succeeded are not run again" in r.stderr
        run_id = doc["run_id"]
        assert self.succeeded(run_id) == set(self.ids) - recorded  # the ledger: the others, each once succeeded
        carried = {r[0] for r in ledger_rows(self.state, "SELECT task_id FROM run_tasks WHERE run_id = ? AND carried = 1", (run_id,))}
        assert carried == recorded
        hist = self.run("--history", "--json")
        assert hist.returncode == 0, hist.stderr
        runs = {row["id"]: row for row in json.loads(hist.stdout)}
        assert runs[run_id]["status"] == "succeeded" and runs[run_id]["resumed_from"] == run_id - 1
        assert runs[run_id]["summary"]["succeeded"] == self.n
        detail = self.run("--history", str(run_id), "--json")
        attempts = json.loads(detail.stdout)["attempts"]
        ledger = ledger_rows(self.state, "SELECT task_id, attempt, outcome FROM attempts WHERE run_id = ? ORDER BY id", (run_id,))
        assert [(a["task"], a["attempt"], a["outcome"]) for a in attempts] == [tuple(r) for r in ledger]
        return doc

    def close(self):
        self.fifo.close()


def pid_of_agent(pid: int, manager: int) -> int:
    """The agent process at or above `pid` (a call runs in its agent; a command below it)."""
    p = psutil.Process(pid)
    while p.ppid() != manager:
        p = p.parent()
    return p.pid


def _signal_agent(proc: subprocess.Popen, line: str, sig: int) -> None:
    """Signal the agent that runs the blocker (its line: `go PID`)."""
    os.kill(pid_of_agent(int(line.split()[1]), proc.pid), sig)


# -- SIGKILL mid-chunk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["shell", "call"])
@pytest.mark.parametrize("agents", ["1", "2"])
def test_manager_killed_mid_chunk_resume_runs_each_unrecorded_task_and_no_recorded_one(tmp_path, kind, agents):
    plan = Plan(tmp_path, kind, 300, blocker=200)
    plan.interrupt("--agents", agents)
    before, recorded = plan.counts(), plan.succeeded(1)
    # a chunk was handed out (its event may have died with the manager: then its finished tasks did, unrecorded)
    if kind == "call":  # (a command is chunked once it has been seen to take under 2 ms: not on a loaded machine)
        assert plan.chunked(1) or len(set(before) - recorded) > 1, "no chunk was handed out: the attack missed"
    assert all(before.get(t) == 1 for t in recorded), "a task recorded as succeeded left no line, or two"
    assert plan.blocker not in recorded and len(recorded) < plan.n
    plan.resume_and_check(before, recorded, agents)
    plan.close()


@pytest.mark.parametrize("kind", ["shell", "call"])
@pytest.mark.parametrize("agents", ["1", "3"])
def test_agent_killed_mid_chunk_runs_nothing_twice(tmp_path, kind, agents):
    """Only the task the agent was on is lost to its death (and retried); what it finished before is recorded
    from its outbox, not run again; the rest of its chunk runs elsewhere, once."""
    plan = Plan(tmp_path, kind, 300, blocker=200)
    proc = plan.start("--agents", agents, "--json")
    with reaped(proc):
        line = plan.fifo.wait_lines(1)[0]
        agent = pid_of_agent(int(line.split()[1]), proc.pid)
        os.kill(agent, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    if kind == "call":  # (a command is chunked once it has been seen to take under 2 ms: not on a loaded machine)
        assert plan.chunked(1), "no chunk was handed out: the attack missed"
    counts = plan.counts()
    twice = sorted(t for t, n in counts.items() if n != 1 and t != plan.blocker)
    assert not twice and len(counts) == plan.n, f"run twice: {twice}; ran {len(counts)} of {plan.n}"
    assert counts[plan.blocker] == 2  # its first attempt died with the agent
    assert [a for t, a in lines(plan.ran) if t == plan.blocker] == ["1", "2"]
    doc = json.loads(out)
    assert doc["succeeded"] == plan.n and doc["failed"] == 0
    assert plan.succeeded(1) == set(plan.ids)
    outcomes = ledger_rows(plan.state, "SELECT outcome, COUNT(*) FROM attempts WHERE run_id = 1 GROUP BY outcome")
    assert dict(outcomes) == {"succeeded": plan.n, "agent_died": 1}
    plan.close()


# -- SIGKILL while a task waits: in retry backoff, on its dependencies ------------------------------------

# `flaky` fails until --resume; `after` waits on it; `slow` holds an agent until the kill; `done*` succeed.
WAITING = """tasks:
  - id: flaky
    retries: 5
    command: "echo flaky $WVO_ATTEMPT >> {ran}; test -e {resumed}"
  - id: after
    dependencies: [flaky]
    command: "echo after $WVO_ATTEMPT >> {ran}"
  - id: chain
    dependencies: [after, slow]
    command: "echo chain $WVO_ATTEMPT >> {ran}"
  - id: slow
    command: "echo slow $WVO_ATTEMPT >> {ran}; test -e {resumed} || {{ echo go > {fifo}; exec sleep 120; }}"
  - id: done1
    command: "echo done1 $WVO_ATTEMPT >> {ran}"
  - id: done2
    dependencies: [done1]
    command: "echo done2 $WVO_ATTEMPT >> {ran}"
"""


@pytest.mark.parametrize("agents", ["1", "2", "9"])
def test_manager_killed_while_a_task_is_in_retry_backoff_and_its_dependents_wait(tmp_path, agents):
    plan = Plan(tmp_path, "shell", 0, tasks=WAITING)
    if agents == "1":  # one agent: `slow` would hold it; it is not started before flaky's backoff
        plan.roadmap.write_text(plan.roadmap.read_text().replace("test -e {0} || {{ echo go".format(plan.resumed), "true || { echo go"))
    proc = plan.start("--agents", agents)
    with reaped(proc):
        if agents != "1":
            plan.fifo.wait_lines(1)
        # two failed attempts of flaky recorded and done1, done2 succeeded: its third waits out a backoff of 1-2 s
        wait_until(lambda: len(ledger_rows(plan.state, "SELECT 1 FROM attempts WHERE task_id = 'flaky' AND outcome = 'failed'")) >= 2
                   and plan.succeeded(1) >= {"done1", "done2"}, why="flaky's second failure and done1, done2 recorded")  # fmt: skip
        kill_run(proc, plan.tag)
    before, recorded = plan.counts(), plan.succeeded(1)
    assert before.get("flaky") == 2, "the kill missed flaky's backoff"
    assert "after" not in before and "chain" not in before  # a dependent never starts before its dependency succeeded
    assert {"done1", "done2"} <= recorded and "flaky" not in recorded
    plan.resume_and_check(before, recorded, agents=agents)
    plan.close()


CHAIN = """tasks:
  - id: a
    command: "echo a $WVO_ATTEMPT >> {ran}"
  - id: b
    dependencies: [a]
    command: "echo b $WVO_ATTEMPT >> {ran}"
  - id: c
    dependencies: [b]
    command: "echo c $WVO_ATTEMPT >> {ran}"
"""


@pytest.mark.parametrize("agents", ["1", "5"])
def test_killed_when_a_dependency_succeeded_but_is_not_committed_its_dependent_has_not_started(tmp_path, agents):
    """The manager SIGKILLs itself (test hook) at its first commit of an outcome: a's success is recorded,
    not committed. b must not have started on it; --resume runs a again (its success was never recorded)."""
    from runner.manager.recovery import CRASH_AT

    plan = Plan(tmp_path, "shell", 0, tasks=CHAIN)
    killed = wvo(plan.roadmap, "--state-dir", plan.state, "--agents", agents, "-q", env={**plan.env, CRASH_AT: "commit"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_until(lambda: not tagged(plan.tag), why="the killed run's agents to go")
    before = plan.counts()
    assert before == {"a": 1}, f"a dependent started on a success not yet committed: {before}"
    assert plan.succeeded(1) == set()
    plan.resume_and_check(before, set(), agents=agents)
    assert plan.counts() == {"a": 2, "b": 1, "c": 1}
    plan.close()


# -- resume after resume, and a roadmap that changed in between ------------------------------------------

SERIES = """tasks:
  - id: b1
    command: "echo b1 $WVO_ATTEMPT >> {ran}; test -e {ran}.m1 || {{ echo b1 > {fifo}; exec sleep 120; }}"
  - id: b2
    command: "echo b2 $WVO_ATTEMPT >> {ran}; test -e {ran}.m2 || {{ echo b2 > {fifo}; exec sleep 120; }}"
  - id: d
    dependencies: [b1]
    command: "echo d $WVO_ATTEMPT >> {ran}"
""" + "".join(f"  - id: q{i}\n    command: \"echo q{i} $WVO_ATTEMPT >> {{ran}}\"\n" for i in range(10))


def test_resume_of_a_killed_resume_then_a_changed_roadmap_then_again(tmp_path):
    plan = Plan(tmp_path, "shell", 0, tasks=SERIES)
    quick = {f"q{i}" for i in range(10)}
    proc = plan.start("--agents", "3")
    with reaped(proc):  # run 1: the quick ones recorded, b1 and b2 in flight
        plan.fifo.wait_lines(2)
        wait_until(lambda: plan.succeeded(1) == quick, why="the quick tasks recorded")
        kill_run(proc, plan.tag)
    (tmp_path / "ran.m1").write_text("")
    proc = plan.start("--agents", "3", "--resume")
    with reaped(proc):  # run 2, resuming 1: b1 and d succeed, b2 is in flight again
        plan.fifo.wait_lines(3)
        wait_until(lambda: plan.succeeded(2) == {"b1", "d"}, why="b1 and d recorded in run 2")
        kill_run(proc, plan.tag)
    assert plan.counts() == {**dict.fromkeys(quick, 1), "b1": 2, "b2": 2, "d": 1}
    # Between the runs: q0's command changes, q9 goes, `new` comes.
    text = plan.roadmap.read_text()
    text = text.replace('echo q0 $WVO_ATTEMPT', 'echo q0  $WVO_ATTEMPT').replace(
        f'  - id: q9\n    command: "echo q9 $WVO_ATTEMPT >> {plan.ran}"\n', "")
    text += f'  - id: new\n    dependencies: [d]\n    command: "echo new $WVO_ATTEMPT >> {plan.ran}"\n'
    plan.roadmap.write_text(text)
    (tmp_path / "ran.m2").write_text("")
    r = plan.run("--agents", "3", "--resume", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "continuing run 2: 10 task(s) already succeeded are not run again" in r.stderr  # q1-q8, b1, d
    assert "task q0 changed since run 2" in r.stderr
    assert plan.counts() == {**dict.fromkeys(quick - {"q0"}, 1), "q0": 2, "b1": 2, "b2": 3, "d": 1, "new": 1}
    assert doc["total"] == 13 and doc["succeeded"] == 13 and doc["run_id"] == 3
    assert plan.succeeded(3) == {"q0", "b2", "new"}
    hist = json.loads(plan.run("--history", "--json").stdout)
    assert [(h["id"], h["status"], h["resumed_from"]) for h in hist] == [(3, "succeeded", 2), (2, "running", 1), (1, "running", None)]
    # Everything succeeded: nothing to continue; a cron line's --resume starts a fresh run (the README)
    again = plan.run("--agents", "3", "--resume", "--json")
    assert again.returncode == 0 and "no unfinished run" in again.stderr
    assert json.loads(again.stdout)["succeeded"] == 13
    plan.close()


@pytest.mark.parametrize("resume", [False, True])
def test_two_runs_started_at_once_one_runs_the_other_exits_75_and_another_roadmap_is_not_blocked(tmp_path, resume):
    ran = tmp_path / "ran"
    fifo = Fifo(tmp_path / "ready")
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    rm, other = tmp_path / "roadmap.yaml", tmp_path / "other.yaml"
    rm.write_text(f"tasks:\n  - id: t\n    command: 'echo t >> {ran}; echo go > {fifo.path}; cat {hold}'\n")
    other.write_text(f"tasks:\n  - id: o\n    command: 'echo o >> {ran}'\n")
    flags = ["--state-dir", tmp_path / "s", "-q"] + (["--resume"] if resume else [])
    procs = [start(rm, *flags), start(rm, *flags)]
    try:
        fifo.wait_lines(1)
        wait_until(lambda: any(p.poll() is not None for p in procs), why="the second run to give up")
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        out, err = loser.communicate(timeout=30)
        assert loser.returncode == EXIT_LOCKED, err
        assert f"another wvo-batch run of {rm} is in progress (PID {winner.pid} holds" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        side = wvo(other, *flags, timeout=60)  # another roadmap, the same state dir: not blocked
        assert side.returncode == 0, side.stderr
        assert winner.poll() is None
    finally:
        with open(hold, "w") as f:
            f.write("go\n")
        for p in procs:
            p.communicate(timeout=60)
        fifo.close()
    assert winner.returncode == 0
    assert sorted(ran.read_text().split()) == ["o", "t"]
    assert ledger_rows(tmp_path / "s", "SELECT COUNT(*) FROM runs") == [(2,)]  # the refused run recorded nothing


# -- the lock at the instant another process looks at it, or takes it -------------------------------------


def _locks_taken(tmp_path: Path, shared: bool = False, pid: int | None = None) -> tuple[Path, list[int]]:
    """A roadmap.yaml in tmp_path (the state dir too) whose run locks this process takes on descriptors of
    their own, as another process would: exclusively (a run that has not written its pid yet; `pid`: what the
    files still say), or shared (a --status looking). Returns the roadmap and the descriptors, to close."""
    import fcntl

    from runner.manager import statedir

    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks: []\n")
    tmp_path.chmod(0o700)
    fds = []
    for path in statedir.RunLock.of_roadmaps(str(tmp_path), [str(rm)]).paths:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        if pid is not None:
            os.pwrite(fd, f"{pid}\n".encode(), 0)
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        fds.append(fd)
    return rm, fds


def test_a_status_looking_at_the_lock_does_not_refuse_a_run_starting_that_instant(tmp_path, monkeypatch):
    """--status (RunLock.holder) takes each lock shared for an instant to see whether a run holds it; a run
    starting at that instant waits the look out instead of exiting 75 (a cron run refused by a dashboard)."""
    from runner.manager import statedir

    rm, looks = _locks_taken(tmp_path, shared=True)  # a --status looking at every lock, as holder() does

    def pause():  # the run waits: the look ends
        while looks:
            os.close(looks.pop())

    monkeypatch.setattr(statedir, "_pause", pause, raising=False)
    lock = statedir.RunLock.of_roadmaps(str(tmp_path), [str(rm)])
    try:
        lock.acquire()  # not LockHeld
        assert lock.holder() == os.getpid() and not looks
    finally:
        lock.release()
        pause()


@pytest.mark.parametrize("left", ["nothing", "a dead run's pid"])
def test_a_run_refused_the_instant_the_other_took_the_lock_names_the_live_pid(tmp_path, monkeypatch, left):
    """Two runs started at once: the loser may look at the lock files before the winner has written its pid
    there, while they are empty or (after a crash) still hold the dead run's pid. It waits for the live pid,
    rather than saying `another process` or naming the dead run."""
    from runner.manager import statedir

    dead = None
    if left != "nothing":
        dead = subprocess.Popen(["true"])
        dead.wait()
    rm, held = _locks_taken(tmp_path, pid=dead and dead.pid)  # the winner has the locks, its pid not yet written

    def pause():  # the winner writes its pid (ours: a live one)
        for fd in held:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    monkeypatch.setattr(statedir, "_pause", pause, raising=False)
    try:
        with pytest.raises(statedir.LockHeld, match=rf"\(PID {os.getpid()} holds"):
            statedir.RunLock.of_roadmaps(str(tmp_path), [str(rm)]).acquire()
    finally:
        for fd in held:
            os.close(fd)


def test_the_readme_cron_line_killed_then_resumed_with_write_back(tmp_path):
    """`--resume --write-back` (the README's cron line): killed mid-run after some statuses were written back,
    the next run runs each task the ledger does not hold as succeeded, once, and no other."""
    plan = Plan(tmp_path, "shell", 40, blocker=20)
    plan.interrupt("--agents", "2", "--resume", "--write-back", until=lambda: "status: done" in plan.roadmap.read_text(),
                   why="a status written back")
    before, recorded = plan.counts(), plan.succeeded(1)
    assert plan.blocker not in recorded
    plan.resume_and_check(before, recorded, "2", "--write-back")
    import yaml

    statuses = {t["id"]: t.get("status") for t in yaml.safe_load(plan.roadmap.read_text())["tasks"]}
    assert statuses == dict.fromkeys(plan.ids, "done")
    plan.close()


GONE_AND_BACK = """tasks:
  - id: x
    command: "echo x $WVO_ATTEMPT >> {ran}"
  - id: y
    command: "echo y $WVO_ATTEMPT >> {ran}; test -e {ran}.m1 || {{ echo go > {fifo}; exec sleep 120; }}; test -e {ran}.m2"
  - id: z
    command: "echo z $WVO_ATTEMPT >> {ran}"
"""


def test_a_task_removed_for_one_resume_and_back_unchanged_for_the_next_is_not_run_again(tmp_path):
    """x succeeded in run 1 (killed); run 2 (--resume) runs a roadmap without x and fails; run 3 (--resume)
    has x back, unchanged: x is recorded as succeeded in the run being continued, and is not run again."""
    plan = Plan(tmp_path, "shell", 0, tasks=GONE_AND_BACK)
    full = plan.roadmap.read_text()
    plan.interrupt("--agents", "2", until=lambda: plan.succeeded(1) == {"x", "z"}, why="x and z recorded")
    plan.roadmap.write_text(full.replace(f'  - id: x\n    command: "echo x $WVO_ATTEMPT >> {plan.ran}"\n', ""))
    (tmp_path / "ran.m1").write_text("")
    second = plan.run("--agents", "2", "--resume", "--json")
    assert second.returncode == 1, second.stderr  # y fails
    assert "1 task(s) already succeeded are not run again" in second.stderr  # z
    plan.roadmap.write_text(full)
    (tmp_path / "ran.m2").write_text("")
    third = plan.run("--agents", "2", "--resume", "--json")
    assert third.returncode == 0, third.stderr
    assert plan.counts() == {"x": 1, "y": 3, "z": 1}, "x ran again, though it succeeded and never changed"
    doc = json.loads(third.stdout)
    assert doc["succeeded"] == 3 and "2 task(s) already succeeded are not run again" in third.stderr
    plan.close()


@pytest.mark.parametrize("behind", [False, True])
def test_tasks_absent_from_a_resumed_runs_roadmap_are_kept_with_its_task_rows(tmp_path, behind):
    """The kept rows go with the run's task rows, written by the run or behind it by a child (a large roadmap)."""
    from runner.manager.ledger import BEHIND_TASKS, Ledger, task_hashes
    from runner.model import Roadmap, Task

    tasks = [Task(id=f"t{i}", command="true", order=i) for i in range(BEHIND_TASKS + 10 if behind else 5)]
    rm = Roadmap(files=[str(tmp_path / "r.yaml")], tasks=tasks)
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(rm, 2, "", None, {"t1"}, {"gone": "0123456789abcdef"})
    ledger.write_tasks_behind()
    ledger.record(run_id, ("t3", 1, "worker-0", 1.0, 2.0, 0, "succeeded", None, None, None))
    ledger.commit()
    hashes = dict(zip([t.id for t in tasks], task_hashes(tasks)))
    assert ledger.succeeded_tasks(run_id) == {"t1": hashes["t1"], "t3": hashes["t3"], "gone": "0123456789abcdef"}
    ledger.close()


def test_killed_after_a_commit_before_its_write_back_the_resume_writes_the_status_and_the_next_run_skips_it(tmp_path):
    """The window between the ledger's commit and --write-back: a task recorded as succeeded whose `done` never
    reached the roadmap. The resume (the README's cron line) carries it and writes `done`; the next cron run
    (nothing left to continue: a fresh run) then runs nothing of it again."""
    from runner.manager.recovery import CRASH_AT

    plan = Plan(tmp_path, "shell", 0, tasks=CHAIN)
    flags = ("--agents", "2", "--resume", "--write-back", "-q")
    killed = wvo(plan.roadmap, "--state-dir", plan.state, *flags, env={**plan.env, CRASH_AT: "committed"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_until(lambda: not tagged(plan.tag), why="the killed run's agents to go")
    assert plan.succeeded(1) == {"a"} and "done" not in plan.roadmap.read_text()
    first = plan.run(*flags)
    assert first.returncode == 0, first.stderr
    import yaml

    statuses = {t["id"]: t.get("status") for t in yaml.safe_load(plan.roadmap.read_text())["tasks"]}
    assert statuses == {"a": "done", "b": "done", "c": "done"}
    again = plan.run(*flags)
    assert again.returncode == 0, again.stderr
    assert plan.counts() == {"a": 1, "b": 1, "c": 1}
    plan.close()


# -- the run's end ----------------------------------------------------------------------------------------


def test_killed_after_every_outcome_was_committed_before_the_run_was_closed(tmp_path):
    """Everything recorded, the run left `running`: --resume runs only the failed task, and its exit code and
    summary count the carried successes."""
    from runner.manager.recovery import CRASH_AT

    tasks = CHAIN.replace('command: "echo c $WVO_ATTEMPT >> {ran}"', 'command: "echo c $WVO_ATTEMPT >> {ran}; test -e {resumed}"')
    plan = Plan(tmp_path, "shell", 0, tasks=tasks + '  - id: d\n    command: "echo d $WVO_ATTEMPT >> {ran}"\n')
    killed = wvo(plan.roadmap, "--state-dir", plan.state, "--agents", "2", "-q", env={**plan.env, CRASH_AT: "finish"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_until(lambda: not tagged(plan.tag), why="the killed run's agents to go")
    assert ledger_rows(plan.state, "SELECT status, ended FROM runs") == [("running", None)]
    before, recorded = plan.counts(), plan.succeeded(1)
    assert recorded == {"a", "b", "d"} and before == {"a": 1, "b": 1, "c": 1, "d": 1}
    plan.resume_and_check(before, recorded)
    plan.close()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_mid_chunk_then_resumed(tmp_path, sig, code):
    plan = Plan(tmp_path, "call", 200, blocker=120)
    returncode, out, err = plan.interrupt("--agents", "2", "--grace", "1", act=lambda proc, line: proc.send_signal(sig), timeout=60)
    assert returncode == code, err
    assert ledger_rows(plan.state, "SELECT status FROM runs") == [("interrupted",)]
    before, recorded = plan.counts(), plan.succeeded(1)
    assert all(before.get(t) == 1 for t in recorded) and plan.blocker not in recorded
    plan.resume_and_check(before, recorded)
    plan.close()


@pytest.mark.parametrize("kind", ["shell", "call"])
def test_agent_killed_mid_chunk_with_failures_in_it_retries_each_failure_once(tmp_path, kind):
    """Failures in the chunk before the agent's death are recorded from its outbox and retried once: a task
    that failed is not run a third time, nor a success a second."""
    flaky = (150, 170, 190, 199, 210, 250)
    plan = Plan(tmp_path, kind, 300, blocker=200, flaky=flaky)
    returncode, out, err = plan.interrupt("--agents", "2", "--json", act=lambda proc, line: _signal_agent(proc, line, signal.SIGKILL))
    assert returncode == 0, err
    attempts: dict[str, list[str]] = {}
    for tid, attempt in lines(plan.ran):
        attempts.setdefault(tid, []).append(attempt)
    wrong = {t: a for t, a in attempts.items() if a != (["1", "2"] if t in plan.flaky or t == plan.blocker else ["1"])}
    assert not wrong and len(attempts) == plan.n, f"wrong attempts: {wrong}"
    assert json.loads(out)["succeeded"] == plan.n
    outcomes = dict(ledger_rows(plan.state, "SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome"))
    assert outcomes == {"succeeded": plan.n, "failed": len(flaky), "agent_died": 1}
    plan.close()


def test_agent_stopped_mid_chunk_is_killed_and_runs_nothing_twice(tmp_path):
    """SIGSTOP of an agent in the middle of a chunk of calls: found stopped, killed; its chunk is settled as for
    a death (the outbox's results recorded, the task it was on retried, the rest run elsewhere)."""
    plan = Plan(tmp_path, "call", 300, blocker=200)
    returncode, out, err = plan.interrupt("--agents", "2", "--json", act=lambda proc, line: _signal_agent(proc, line, signal.SIGSTOP))
    assert returncode == 0, err
    counts = plan.counts()
    assert {t: n for t, n in counts.items() if n != 1} == {plan.blocker: 2} and len(counts) == plan.n
    assert json.loads(out)["succeeded"] == plan.n
    plan.close()


# -- batches (--max-tasks, --iterations) ------------------------------------------------------------------

BATCHES = """tasks:
  - id: a
    command: "echo a $WVO_ATTEMPT >> {ran}"
  - id: b
    command: "echo b $WVO_ATTEMPT >> {ran}"
  - id: c
    command: "echo c $WVO_ATTEMPT >> {ran}"
  - id: d
    command: "echo d $WVO_ATTEMPT >> {ran}; test -e {resumed} || {{ echo go > {fifo}; exec sleep 120; }}"
  - id: e
    command: "echo e $WVO_ATTEMPT >> {ran}"
"""


def test_a_loop_of_batches_killed_then_resumed_runs_no_success_of_its_earlier_batches_again(tmp_path):
    """`--max-tasks 2 --iterations 0`: batch 1 (run 1) runs a, b; batch 2 (run 2) is killed with c recorded and
    d in flight. The same line with --resume runs d and e, once each, and neither a, b (run 1) nor c (run 2)."""
    plan = Plan(tmp_path, "shell", 0, tasks=BATCHES)
    loop = ("--max-tasks", "2", "--iterations", "0", "--agents", "2")
    plan.interrupt(*loop, until=lambda: plan.succeeded(2) == {"c"}, why="c recorded in batch 2")
    assert plan.counts() == {"a": 1, "b": 1, "c": 1, "d": 1}
    plan.resumed.write_text("")
    r = plan.run(*loop, "--resume", "--json")
    assert r.returncode == 0, r.stderr
    assert plan.counts() == {"a": 1, "b": 1, "c": 1, "d": 2, "e": 1}, "a success of the loop ran again"
    assert "no unfinished run" not in r.stderr, r.stderr
    plan.close()


# -- one roadmap, two spellings of its path ----------------------------------------------------------------


def test_resume_through_another_path_to_the_same_roadmap_continues_the_run(tmp_path):
    """The run was started through a symlinked folder, the resume names the real one (or the other way round):
    one roadmap, one state dir, one run to continue."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    plan = Plan(real, "shell", 20, blocker=10)
    plan.state = tmp_path / "s"
    plan.roadmap = tmp_path / "link" / "roadmap.yaml"
    plan.interrupt("--agents", "2", until=lambda: len(plan.succeeded(1)) >= 5, why="some tasks recorded")
    before, recorded = plan.counts(), plan.succeeded(1)
    plan.roadmap = real / "roadmap.yaml"
    plan.resume_and_check(before, recorded)
    plan.close()


def test_a_roadmap_symlink_pointed_elsewhere_mid_run_still_locks_its_name(tmp_path):
    """`current.yaml -> v1.yaml` runs; current.yaml is pointed at v2.yaml (a new version); a run of current.yaml
    now is the same roadmap by name: refused with 75, not run beside the first (and resuming it)."""
    ran = tmp_path / "ran"
    fifo = Fifo(tmp_path / "ready")
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    text = f"tasks:\n  - id: t\n    command: 'echo t >> {ran}; test -e {tmp_path}/later || {{ echo go > {fifo.path}; cat {hold}; }}'\n"
    (tmp_path / "v1.yaml").write_text(text)
    (tmp_path / "v2.yaml").write_text(text)
    current = tmp_path / "current.yaml"
    current.symlink_to("v1.yaml")
    proc = start(current, "--state-dir", tmp_path / "s", "-q", "--resume")
    try:
        fifo.wait_lines(1)
        os.symlink("v2.yaml", tmp_path / "current.tmp")
        os.replace(tmp_path / "current.tmp", current)
        (tmp_path / "later").write_text("")
        other = wvo(current, "--state-dir", tmp_path / "s", "-q", "--resume", timeout=60)
        assert other.returncode == EXIT_LOCKED, other.stderr
    finally:
        with open(hold, "w") as f:
            f.write("go\n")
        proc.communicate(timeout=60)
        fifo.close()
    assert ran.read_text().split() == ["t"]


def test_runs_a_ledger_recorded_under_the_unresolved_path_are_still_found(tmp_path):
    """A ledger written before roadmap keys were resolved named the run by its absolute path as given."""
    from runner.manager.ledger import Ledger
    from runner.model import Roadmap, Task

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    path = str(tmp_path / "link" / "r.yaml")
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(Roadmap(files=[path], tasks=[Task(id="t", command="true")]), 1, "", None, set())
    ledger.db.execute("UPDATE runs SET roadmap_key = ?", (json.dumps([path]),))
    assert [r.id for r in ledger.runs([path])] == [run_id]
    assert ledger.latest_unfinished([path]).id == run_id
    assert ledger.latest_unfinished([str(tmp_path / "real" / "r.yaml")]) is None  # not this spelling's, then
    ledger.close()


def test_status_of_a_roadmap_shows_its_own_run_while_another_roadmap_runs_on_the_state_dir(tmp_path):
    """Two roadmaps, one state dir, both running: `--status a.yaml` shows a's board, not the board of b's run
    (which started later, so `latest` names it)."""
    fifo = Fifo(tmp_path / "ready")
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(f"tasks:\n  - id: task-of-{name}\n    command: 'echo go > {fifo.path}; cat {hold}'\n")
    procs = []
    try:
        for n, name in enumerate(("a", "b"), 1):
            procs.append(start(paths[name], "--state-dir", tmp_path / "s", "-q", "--agents", "1"))
            fifo.wait_lines(n)
        for name in ("a", "b"):
            deadline = time.monotonic() + 30
            while (r := wvo(paths[name], "--state-dir", tmp_path / "s", "--status", "--json")).returncode != 0:
                assert time.monotonic() < deadline, r.stderr
            running = [a.get("task") for a in json.loads(r.stdout)["agents"] if a.get("task")]
            assert running == [f"task-of-{name}"], r.stdout
    finally:
        with open(hold, "w") as f:
            f.write("go\ngo\n")
        for p in procs:
            p.communicate(timeout=60)
        fifo.close()
    assert [p.returncode for p in procs] == [0, 0]


def test_resume_runs_what_a_failure_skipped_and_counts_it_right(tmp_path):
    """a fails, so b (after a) is skipped and c, which does not wait for a, succeeds: exit 1. The resume runs a
    and b, not c; exit 0, all succeeded; --history has run 1 failed and run 2 succeeded."""
    tasks = CHAIN.replace('command: "echo a $WVO_ATTEMPT >> {ran}"', 'command: "echo a $WVO_ATTEMPT >> {ran}; test -e {resumed}"')
    tasks = tasks.replace("    dependencies: [b]\n", "")
    plan = Plan(tmp_path, "shell", 0, tasks=tasks)
    first = plan.run("--agents", "2", "--json")
    assert first.returncode == 1, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["succeeded"], doc["failed"], doc["skipped"]) == (1, 1, 1)
    before, recorded = plan.counts(), plan.succeeded(1)
    assert recorded == {"c"} and before == {"a": 1, "c": 1}
    plan.resume_and_check(before, recorded)
    hist = json.loads(plan.run("--history", "--json").stdout)
    assert [(h["id"], h["status"]) for h in hist] == [(2, "succeeded"), (1, "failed")]
    plan.close()
