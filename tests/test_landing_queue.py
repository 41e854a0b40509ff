"""The landing queue: checks on the merged result, a landing worktree reset after each, a cancel path, and
the speculative queue that checks the next k at once (issues 20, 21, 22).

The queue itself (runner.coding.speculative) on real repositories with real shell checks through the
agents' check runner; the rest through the real `wvo-batch` process. Overlap is seen through the files
the checks write, never through wall-time ratios.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, wvo
from helpers import reaped
from runner.agents.checks import landing_checks
from runner.coding.landing import Landed, Lander
from runner.coding.speculative import SpeculativeLander
from runner.coding.workspace import Workspaces
from runner.manager.recovery import CRASH_AT
from test_worktrees import git, make_repo, rows, run_json, worktrees

pytestmark = pytest.mark.timeout(180)

INTO = "wvo/landed"
WORKTREE = "workspace:\n  mode: worktree\n"


# -- the queue on real repositories ----------------------------------------------------------------------


def branches(repo: Path, state: Path, edits: list[dict[str, str]]) -> tuple[Workspaces, list[str]]:
    """One committed task branch per dict of edits (file -> text), all from the same base, as parallel agents make them."""
    sp = Workspaces(repo, state, "r1", INTO)
    start = sp.tip()
    out = []
    for i, files in enumerate(edits):
        ws = sp.create(f"t{i}", start)
        for name, text in files.items():
            Path(ws.path, name).write_text(text)
        assert sp.commit_all(ws, f"t{i}") is not None
        sp.remove(ws)
        out.append(ws.branch)
    return sp, out


def checks_by(commands: dict[int, str], log_dir: Path, grace: float = 1.0):
    """checks_for(i) -> the queue's checks_for(path, cancel) of candidate i: commands[i], if any, through the check runner."""

    def of(i: int):
        if i not in commands:
            return None

        def checks_for(path: str, cancel):
            env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
            return landing_checks([commands[i]], env, f"t{i}", 1, f"b{i}", grace, str(log_dir / f"t{i}.log"), cancel=cancel)

        return checks_for

    return of


def land_all(sp: Workspaces, names: list[str], k: int, checks_for=lambda i: None, timeout: float = 90.0) -> list:
    """Submit every branch in order to a queue of k; (index, verdict) in the order the verdicts came."""
    got: queue.Queue = queue.Queue()
    lander = SpeculativeLander(sp, k, lambda job, verdict: got.put((job, verdict)))
    for i, name in enumerate(names):
        lander.submit(i, name, f"edit {i}", checks_for(i))
    out = []
    try:
        for _ in names:
            out.append(got.get(timeout=timeout))
    finally:
        lander.stop(timeout=30)
    return out


def first_parent_trees(repo: Path, start: str) -> list[tuple[str, str]]:
    """(subject, tree) of each landing on `into` since start, oldest first."""
    lines = git(repo, "log", "--first-parent", "--reverse", "--format=%s|%T", f"{start}..{INTO}").splitlines()
    return [tuple(line.split("|")) for line in lines]


def kinds(verdicts: list) -> list[tuple[int, str]]:
    return [(i, type(v).__name__) for i, v in verdicts]


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path, "tasks: []\n", {f"f{i}.txt": f"file {i}\n" for i in range(6)} | {"shared.txt": "one\n"})


def test_k_candidates_land_in_order_and_k1_is_the_one_at_a_time_queue(tmp_path):
    # Same branches, same checks: the one-at-a-time Lander, the queue with k = 1 and with k = 4 give the
    # same verdicts in the same order, and `into` gets the same trees in the same order.
    edits = [{f"f{i}.txt": f"changed by t{i}\n"} for i in range(6)]
    check = 'test -f "f$(( ${WVO_TASK_ID#t} ))".txt'
    results = {}
    for how in ("serial", 1, 4):
        root = tmp_path / str(how)
        r = make_repo(root, "tasks: []\n", {f"f{i}.txt": f"file {i}\n" for i in range(6)})
        sp, names = branches(r, root / "state", edits)
        start = sp.tip()
        of = checks_by({i: check for i in range(6)}, root)
        if how == "serial":
            lander = Lander(sp)
            verdicts = [(i, lander.land(n, f"edit {i}", of(i)(str(sp.landing_path), threading.Event()))) for i, n in enumerate(names)]
        else:
            verdicts = land_all(sp, names, how, of)
        results[how] = (kinds(verdicts), [t for _, t in first_parent_trees(r, start)],
                        [s for s, _ in first_parent_trees(r, start)])
    assert results["serial"][0] == [(i, "Landed") for i in range(6)]
    assert results[1] == results["serial"]
    assert results[4] == results["serial"]
    assert results[4][2] == [f"Land t{i}: edit {i}" for i in range(6)]


def test_a_candidate_whose_checks_fail_in_the_middle_drops_only_itself_and_those_behind_are_rechecked(repo, tmp_path):
    # t2 adds bad.txt, which every check refuses: t3 and t4, merged on top of t2 at first, fail there too
    # and must be checked again on the base without it, and land.
    edits = [{f"f{i}.txt": f"changed by t{i}\n"} for i in range(5)]
    edits[2]["bad.txt"] = "bad\n"
    sp, names = branches(repo, tmp_path / "state", edits)
    start = sp.tip()
    runs = tmp_path / "runs"
    runs.touch()
    # t2 fails only once t3 and t4 failed on top of it: their verdicts must wait for the base without t2
    wait = f'i=0; while [ "$(grep -c " 1$" {runs})" -lt 3 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; '
    check = (f'test ! -e bad.txt; r=$?; echo "$WVO_TASK_ID $r" >> {runs}; '
             f'if [ "$WVO_TASK_ID" = t2 ]; then {wait}fi; exit $r')  # fmt: skip
    verdicts = land_all(sp, names, 4, checks_by({i: check for i in range(5)}, tmp_path))
    assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "ChecksFailed"), (3, "Landed"), (4, "Landed")]
    assert "(exit 1)" in verdicts[2][1].detail
    checked = runs.read_text().split("\n")
    assert "t3 1" in checked and "t3 0" in checked, "t3 was not checked again without t2"
    assert [s for s, _ in first_parent_trees(repo, start)] == [f"Land t{i}: edit {i}" for i in (0, 1, 3, 4)]
    assert subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{INTO}:bad.txt"]).returncode != 0
    assert git(repo, "show", f"{INTO}:f4.txt") == "changed by t4\n"
    assert git(repo, "show", f"{INTO}:f2.txt") == "file 2\n"
    assert sp.owned()[names[2]]["state"] == "checks_failed"


def test_a_conflict_in_the_middle_drops_only_itself(repo, tmp_path):
    edits = [{"f0.txt": "t0\n"}, {"shared.txt": "t1's line\n"}, {"shared.txt": "t2's line\n"}, {"f3.txt": "t3\n"}]
    sp, names = branches(repo, tmp_path / "state", edits)
    start = sp.tip()
    check = "test -f shared.txt"
    verdicts = land_all(sp, names, 3, checks_by({i: check for i in range(4)}, tmp_path))
    assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Conflict"), (3, "Landed")]
    assert verdicts[2][1].files == ["shared.txt"]
    assert [s for s, _ in first_parent_trees(repo, start)] == [f"Land t{i}: edit {i}" for i in (0, 1, 3)]
    assert git(repo, "show", f"{INTO}:shared.txt") == "t1's line\n"


def test_a_conflict_with_a_candidate_that_then_fails_its_checks_is_no_conflict(repo, tmp_path):
    # t1 fails its checks; t2 conflicted only with t1's speculative merge: on the real base it lands.
    edits = [{"f0.txt": "t0\n"}, {"shared.txt": "t1's line\n", "bad.txt": "x\n"}, {"shared.txt": "t2's line\n"}]
    sp, names = branches(repo, tmp_path / "state", edits)
    verdicts = land_all(sp, names, 3, checks_by({i: "test ! -e bad.txt" for i in range(3)}, tmp_path))
    assert kinds(verdicts) == [(0, "Landed"), (1, "ChecksFailed"), (2, "Landed")]
    assert git(repo, "show", f"{INTO}:shared.txt") == "t2's line\n"


def test_into_moved_by_someone_else_while_candidates_are_checked_is_kept_and_all_merge_again(repo, tmp_path):
    edits = [{f"f{i}.txt": f"t{i}\n"} for i in range(3)]
    sp, names = branches(repo, tmp_path / "state", edits)
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # t0's first check waits on the gate; meanwhile someone else commits on `into`
    check = f'if [ "$WVO_TASK_ID" = t0 ] && [ ! -e {tmp_path}/once ]; then touch {tmp_path}/once; read _ < {gate}; fi; true'
    got: queue.Queue = queue.Queue()
    lander = SpeculativeLander(sp, 3, lambda job, v: got.put((job, v)))
    of = checks_by({i: check for i in range(3)}, tmp_path)
    for i, name in enumerate(names):
        lander.submit(i, name, f"edit {i}", of(i))
    deadline = time.monotonic() + 30
    while not (tmp_path / "once").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    other = make_other_commit(repo, sp.tip())
    with open(gate, "w") as g:
        g.write("go\n")
    verdicts = [got.get(timeout=60) for _ in names]
    lander.stop()
    assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Landed")]
    assert git(repo, "merge-base", "--is-ancestor", other, INTO) == ""  # the other program's commit is kept
    for i in range(3):
        assert git(repo, "show", f"{INTO}:f{i}.txt") == f"t{i}\n"


def make_other_commit(repo: Path, parent: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    tree = git(repo, "rev-parse", f"{parent}^{{tree}}").strip()
    new = subprocess.run(["git", "-C", str(repo), "commit-tree", tree, "-p", parent, "-m", "someone else"],
                         capture_output=True, text=True, check=True, env=env).stdout.strip()
    git(repo, "update-ref", f"refs/heads/{INTO}", new, parent)
    return new


def test_a_check_that_rewrites_a_tracked_file_does_not_fail_the_next_landing(repo, tmp_path):
    # Issue 21: the landing worktree is reset after every landing's checks (and before every merge).
    edits = [{f"f{i}.txt": f"t{i}\n"} for i in range(3)]
    sp, names = branches(repo, tmp_path / "state", edits)
    check = 'test -z "$(git status --porcelain)" && echo rewritten > shared.txt && echo junk > junk.txt'
    verdicts = land_all(sp, names, 1, checks_by({i: check for i in range(3)}, tmp_path))
    assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Landed")]
    assert git(repo, "show", f"{INTO}:shared.txt") == "one\n"
    lander = Lander(sp)  # the one-at-a-time queue too
    _, more = branches_more(sp, [{"f5.txt": "a\n"}, {"f4.txt": "b\n"}])
    for name in more:
        ok = lander.land(name, "more", checks_by({0: check}, tmp_path)(0)(str(sp.landing_path), threading.Event()))
        assert isinstance(ok, Landed), ok


def branches_more(sp: Workspaces, edits: list[dict[str, str]]) -> tuple[Workspaces, list[str]]:
    out = []
    for i, files in enumerate(edits):
        ws = sp.create(f"m{i}", sp.tip())
        for name, text in files.items():
            Path(ws.path, name).write_text(text)
        sp.commit_all(ws, f"m{i}")
        sp.remove(ws)
        out.append(ws.branch)
    return sp, out


# -- through the real process ----------------------------------------------------------------------------


def test_checks_of_the_next_k_landings_overlap(tmp_path):
    # Three tasks end together on three agents; each landing check records that it started, then waits
    # (with a deadline) until all three have: with one check at a time each would see only itself.
    seen = tmp_path / "seen"
    seen.mkdir()
    check = (f'case "$PWD" in */landing*) touch {seen}/started.$WVO_TASK_ID; i=0; '
             f'while [ "$(ls {seen} | grep -c started)" -lt 3 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
             f'ls {seen} | grep -c started > {seen}/saw.$WVO_TASK_ID;; esac; true')  # fmt: skip
    tasks = "".join(f"  - id: t{i}\n    command: \"echo {i} > f{i}.txt\"\n" for i in range(3))
    repo = make_repo(tmp_path, WORKTREE + f"  checks: [{json.dumps(check)}]\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "-j", "3", "--land-parallel", "3")
    assert code == 0, err[-2000:]
    assert {t: r["status"] for t, r in rows(doc).items()} == {f"t{i}": "succeeded" for i in range(3)}
    saw = {p.name: p.read_text().strip() for p in seen.glob("saw.*")}
    assert saw == {f"saw.t{i}": "3" for i in range(3)}, "the landings' checks did not run at once"
    for i in range(3):
        assert git(repo, "show", f"wvo/roadmap:f{i}.txt") == f"{i}\n"
    assert len(worktrees(repo)) == 1  # every landing worktree removed at the end
    assert not list((tmp_path / "state").rglob("landing*/.git"))


def test_a_landing_check_that_rewrites_tracked_files_does_not_fail_the_next_task(tmp_path):
    check = ('case "$PWD" in */landing*) test -z "$(git status --porcelain)" || exit 1; '
             'echo rewritten > README; echo junk > junk.txt;; esac; true')  # fmt: skip
    tasks = ("  - id: a\n    command: \"echo a > a.txt\"\n"
             "  - id: b\n    command: \"echo b > b.txt\"\n    dependencies: [a]\n")  # fmt: skip
    repo = make_repo(tmp_path, WORKTREE + f"  checks: [{json.dumps(check)}]\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "-j", "1")
    assert code == 0, err[-2000:]
    assert rows(doc)["b"]["status"] == "succeeded", rows(doc)["b"]
    assert git(repo, "show", "wvo/roadmap:README") == "hello\n"


def _gone(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigterm_cancels_a_hung_landing_check_and_the_run_ends_143_then_resume_lands_it(tmp_path):
    flag, pidfile, runs = tmp_path / "in-landing", tmp_path / "check.pid", tmp_path / "runs.txt"
    seen = tmp_path / "seen.txt"
    check = (f'case "$PWD" in */landing*) echo "$WVO_TASK_ID $WVO_ATTEMPT" >> {seen}; [ -e {flag}.done ] || '
             f'{{ echo $$ > {pidfile}; touch {flag}; exec sleep 300; }};; esac; true')  # fmt: skip  no timeout: only the run's stop ends it
    roadmap = WORKTREE + f"  checks: [{json.dumps(check)}]\ntasks:\n  - id: only\n    command: \"echo ran >> {runs}; echo w > w.txt\"\n"
    repo = make_repo(tmp_path, roadmap)
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(state),
                             "-q", "--grace", "1"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    with reaped(proc, group=True):
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the landing's check never ran"
            time.sleep(0.02)
        pid = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert code == 143, proc.stderr.read().decode()[-2000:]  # read before the pipe is closed
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "the hung check outlived the run"
        time.sleep(0.05)
    assert subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "wvo/roadmap:w.txt"],
                          capture_output=True).returncode != 0  # nothing landed
    Path(f"{flag}.done").touch()
    code, doc, err = run_json(repo, "--resume")
    assert code == 0, err[-2000:]
    assert runs.read_text() == "ran\n", "the committed attempt was run again instead of landed"
    assert git(repo, "show", "wvo/roadmap:w.txt") == "w\n"
    assert seen.read_text() == "only 1\nonly 1\n"  # the landing at --resume checks attempt 1, as the first did


def test_killed_after_a_landing_with_others_checked_speculatively_each_lands_once(tmp_path):
    # k = 4: the manager SIGKILLs itself right after the first landing, while the others' checks run in
    # their own landing worktrees; --resume lands each task exactly once and runs none again.
    runs = tmp_path / "runs.txt"
    state = tmp_path / "state"
    # The first landing waits (with a deadline) until every attempt is committed: none is cut short by the kill.
    committed = f'find {state} -name workspaces.jsonl -exec cat {{}} + | grep -c \'"state": "committed"\''
    check = (f'case "$PWD" in */landing) i=0; while [ "$({committed})" -lt 4 ] && [ $i -lt 300 ]; do sleep 0.1; '
             'i=$((i+1)); done;; */landing.*) sleep 0.5;; esac; true')  # fmt: skip
    tasks = "".join(f"  - id: t{i}\n    command: \"echo t{i} >> {runs}; echo {i} > f{i}.txt\"\n" for i in range(4))
    repo = make_repo(tmp_path, WORKTREE + f"  checks: [{json.dumps(check)}]\ntasks:\n" + tasks)
    killed = wvo(repo / "roadmap.yaml", "--state-dir", state, "-q", "-j", "4", "--land-parallel", "4",
                 env={CRASH_AT: "landed"})
    assert killed.returncode == -9, killed.stderr
    proc = wvo(repo / "roadmap.yaml", "--state-dir", state, "--resume", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(runs.read_text().split()) == [f"t{i}" for i in range(4)], "a task ran again"
    lands = [s for s in git(repo, "log", "--first-parent", "--format=%s", "wvo/roadmap").splitlines() if s.startswith("Land ")]
    assert sorted(lands) == sorted(f"Land t{i}: t{i}" for i in range(4)), lands
    assert len(worktrees(repo)) == 1
    assert not list(state.rglob("landing*/.git"))


def test_a_worktree_git_cannot_remove_is_a_warning_and_the_rest_is_cleaned(tmp_path):
    # Issue 21: one bad worktree no longer aborts the clean-up; its problem is printed, the others go.
    tasks = ("  - id: good\n    command: \"echo g > g.txt\"\n"
             "  - id: bad\n    command: \"echo b > b.txt; rm -rf .git\"\n    retries: 0\n")  # fmt: skip
    repo = make_repo(tmp_path, WORKTREE + "tasks:\n" + tasks)
    code, doc, err = run_json(repo, "-j", "2")
    assert rows(doc)["good"]["status"] == "succeeded"
    assert "warning: workspace clean-up" in err, err[-2000:]
    assert git(repo, "show", "wvo/roadmap:g.txt") == "g\n"
    assert not any("landing" in w for w in worktrees(repo))


def test_utilisation_counts_the_agents_time_not_the_wait_to_land(tmp_path):
    # Quick tasks on 2 agents behind a slow landing check, one landing at a time: the branches wait to land
    # while their agents already run the next task. That wait is not agent time (it read 105-156%).
    check = 'case "$PWD" in */landing*) sleep 0.4;; esac; true'
    tasks = "".join(f"  - id: t{i}\n    command: \"echo {i} > f{i}.txt\"\n" for i in range(6))
    repo = make_repo(tmp_path, WORKTREE + f"  checks: [{json.dumps(check)}]\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "-j", "2", "--land-parallel", "1")
    assert code == 0, err[-2000:]
    telemetry = doc["telemetry"]
    assert 0 < telemetry["utilization"] <= 1.0, telemetry
    assert telemetry["makespan_s"] >= 6 * 0.4, telemetry  # the makespan still runs to the last landing


# -- merges without a worktree, slots, the default k (issue 22, workload 11) --------------------------------


def test_merge_commit_is_what_merge_no_ff_makes_and_names_the_same_conflicts(repo, tmp_path):
    # The queue merges with merge-tree + commit-tree (no checkout on its critical path): the same tree,
    # parents and message as `git merge --no-ff` in a worktree, and the same conflicting files.
    edits = [{"f0.txt": "t0\n", "new.txt": "new\n"}, {"shared.txt": "t1's line\n"}, {"shared.txt": "t2's line\n", "f3.txt": "x\n"}]
    sp, names = branches(repo, tmp_path / "state", edits)
    from runner.coding.landing import merge_commit

    base = sp.tip()
    on_top = merge_commit(sp, base, names[1], "Land t1: edit 1")
    assert isinstance(on_top, str)
    scratch = tmp_path / "scratch"
    git(repo, "worktree", "add", "-q", "--detach", str(scratch), on_top)
    for name, parent in ((names[0], base), (names[0], on_top), (names[2], on_top)):
        got = merge_commit(sp, parent, name, "Land: x")
        git(scratch, "reset", "-q", "--hard", parent)
        merged = subprocess.run(["git", "-C", str(scratch), "merge", "-q", "--no-ff", "--no-edit", "-m", "Land: x", name],
                                capture_output=True, text=True)  # fmt: skip
        if merged.returncode == 0:
            assert isinstance(got, str), got
            want = git(scratch, "show", "-s", "--format=%T %P%n%B", "HEAD")
            assert git(repo, "show", "-s", "--format=%T %P%n%B", got) == want
        else:
            assert got == sorted(f for f in git(scratch, "diff", "--name-only", "--diff-filter=U").split()), got
            git(scratch, "merge", "--abort")
    assert merge_commit(sp, on_top, names[1], "Land: again") == on_top  # already on it: no commit


def test_a_landing_worktree_that_cannot_be_made_drops_only_its_candidate(repo, tmp_path):
    # Slot 2's folder is a file: its candidate gets the error as its verdict; those around it land, and the
    # one behind it (merged on top of it at first) is merged again without it.
    from runner.coding.speculative import slot_path

    edits = [{f"f{i}.txt": f"t{i}\n"} for i in range(3)]
    sp, names = branches(repo, tmp_path / "state", edits)
    slot_path(sp, 1).write_text("not a folder\n")
    verdicts = land_all(sp, names, 3, checks_by({i: "true" for i in range(3)}, tmp_path))
    assert sorted(kinds(verdicts)) == [(0, "Landed"), (1, "NotADirectoryError"), (2, "Landed")]
    assert [s for s, _ in first_parent_trees(repo, sp.base_commit)] == ["Land t0: edit 0", "Land t2: edit 2"]
    assert subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{INTO}:f1.txt"]).returncode == 0
    assert git(repo, "show", f"{INTO}:f1.txt") == "file 1\n"


def test_the_default_k_follows_the_agents(tmp_path):
    # Nine tasks end together on nine agents, no --land-parallel: all nine landing checks run at once (the
    # default was min(8, agents): the ninth waited for a slot, and the checks for the ninth timed out).
    seen = tmp_path / "seen"
    seen.mkdir()
    n = 9
    check = (f'case "$PWD" in */landing*) touch {seen}/started.$WVO_TASK_ID; i=0; '
             f'while [ "$(ls {seen} | grep -c started)" -lt {n} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
             f'ls {seen} | grep -c started > {seen}/saw.$WVO_TASK_ID;; esac; true')  # fmt: skip
    tasks = "".join(f"  - id: t{i}\n    command: \"echo {i} > f{i}.txt\"\n" for i in range(n))
    repo = make_repo(tmp_path, WORKTREE + f"  checks: [{json.dumps(check)}]\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "-j", str(n), timeout=150)
    assert code == 0, err[-2000:]
    saw = {p.name: p.read_text().strip() for p in seen.glob("saw.*")}
    assert saw == {f"saw.t{i}": str(n) for i in range(n)}, "the landings' checks did not all run at once"
    assert len(worktrees(repo)) == 1


def test_an_agent_attached_to_the_run_restores_into_and_skips_a_branch_name_that_is_taken(repo, tmp_path):
    # Agents attach to the manager's workspaces without checking them again; what the checks did for them
    # still holds: `into` deleted by the user starts again at the run's base, and a branch of someone else
    # with the attempt's name is left alone (the attempt takes the next name).
    sp = Workspaces(repo, tmp_path / "state", "r1", INTO)
    git(repo, "branch", "wvo/r1/t", "main")  # the user's, not ours
    git(repo, "branch", "-D", INTO)
    agent = Workspaces.attach(tmp_path / "state")
    ws = agent.create("t")
    assert ws.branch == "wvo/r1/t-2" and ws.base_commit == sp.base_commit
    assert git(repo, "rev-parse", INTO).strip() == sp.base_commit
    assert git(repo, "rev-parse", "wvo/r1/t").strip() == git(repo, "rev-parse", "main").strip()
    Path(ws.path, "f1.txt").write_text("by t\n")
    assert agent.commit_all(ws, "t") is not None
    agent.remove(ws, saved=True)
    assert not Path(ws.path).exists() and len(worktrees(repo)) == 1
    sp.reload()
    assert sp.owned()[ws.branch]["task"] == "t"


def test_passed_candidates_at_the_head_land_together_by_one_compare_and_swap_in_order(repo, tmp_path):
    # t0's check ends only after t1's and t2's passed: the three land by one update-ref of `into` to t2's
    # merge, whose first-parent line holds t0's and t1's merges, in order; each gets its own Landed verdict.
    edits = [{f"f{i}.txt": f"t{i}\n"} for i in range(3)]
    sp, names = branches(repo, tmp_path / "state", edits)
    start = sp.tip()
    done = tmp_path / "done"
    done.mkdir()
    wait = f'i=0; while [ "$(ls {done} | wc -l)" -lt 2 ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done'
    check = f'if [ "$WVO_TASK_ID" = t0 ]; then {wait}; else touch {done}/$WVO_TASK_ID; fi; true'
    verdicts = land_all(sp, names, 3, checks_by({i: check for i in range(3)}, tmp_path))
    assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Landed")]
    line = git(repo, "log", "--first-parent", "--reverse", "--format=%H %s", f"{start}..{INTO}").splitlines()
    assert [x.split(" ", 1)[1] for x in line] == [f"Land t{i}: edit {i}" for i in range(3)]
    assert [v.commit for _, v in verdicts] == [x.split(" ", 1)[0] for x in line]
    moves = git(repo, "reflog", "--format=%gs", f"refs/heads/{INTO}").splitlines()
    assert len(moves) == 2 and "and the 2 before it" in moves[0], moves  # created, then one move for the three
