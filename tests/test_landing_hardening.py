"""Where the landing queue meets what is not ours: the user's checkout, a broken slot, a kill mid-removal.

Each test failed on the code it guards: merges made with merge-tree read the user's checkout's
.gitattributes; a slot's checkout that raised something unexpected left its candidate without a verdict;
a run killed between emptying a worktree and unregistering it was snapshotted on --resume as an attempt
that deleted every file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.coding.landing import merge_commit
from runner.coding.workspace import Workspaces
from test_landing_queue import INTO, branches, checks_by, kinds, land_all
from test_worktrees import git, make_repo

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path, "tasks: []\n", {f"f{i}.txt": f"file {i}\n" for i in range(3)} | {"shared.txt": "one\n"})


def test_merge_commit_ignores_the_users_checkout_attributes(repo, tmp_path):
    # Two branches change the same line of shared.txt: landing the second on the first is a conflict, as
    # `git merge --no-ff` in a worktree of `into` says. The user's own checkout (never ours, invariant 7)
    # has a .gitattributes `into` does not have (uncommitted here; a commit on their branch does the same):
    # it must not change what lands. merge-tree runs with -C <the user's checkout> and reads it.
    sp, names = branches(repo, tmp_path / "state", [{"shared.txt": "t0's line\n"}, {"shared.txt": "t1's line\n"}])
    (repo / ".gitattributes").write_text("shared.txt merge=union\n")  # the user's, in their checkout only
    first = merge_commit(sp, sp.tip(), names[0], "Land t0: edit 0")
    assert isinstance(first, str)
    scratch = tmp_path / "scratch"
    git(repo, "worktree", "add", "-q", "--detach", str(scratch), first)
    merged = subprocess.run(["git", "-C", str(scratch), "merge", "-q", "--no-ff", "--no-edit", "-m", "x", names[1]],
                            capture_output=True, text=True)
    assert merged.returncode != 0  # merge --no-ff on into's content: a conflict
    got = merge_commit(sp, first, names[1], "Land t1: edit 1")
    assert got == ["shared.txt"], f"merged cleanly by the user's attributes: {git(repo, 'show', f'{got}:shared.txt')!r}"


def test_merge_commit_follows_intos_attributes_as_merge_no_ff_does(tmp_path):
    # The other way round: a merge driver committed on into (union) is honoured, as `merge --no-ff` in a
    # worktree of into would honour it, whatever the user's checkout holds.
    files = {f"f{i}.txt": f"file {i}\n" for i in range(3)} | {"shared.txt": "one\n", ".gitattributes": "shared.txt merge=union\n"}
    repo = make_repo(tmp_path, "tasks: []\n", files)
    (repo / ".gitattributes").write_text("")  # the user's checkout says nothing (uncommitted)
    sp, names = branches(repo, tmp_path / "state", [{"shared.txt": "t0's line\n"}, {"shared.txt": "t1's line\n"}])
    first = merge_commit(sp, sp.tip(), names[0], "Land t0: edit 0")
    got = merge_commit(sp, first, names[1], "Land t1: edit 1")
    assert isinstance(got, str), got
    assert git(repo, "show", f"{got}:shared.txt") == "t0's line\nt1's line\n"


def test_the_queue_gives_a_conflict_whatever_the_users_checkout_attributes_say(repo, tmp_path):
    # The same through the run's queue (k = 2, no checks): t1 must get Conflict, not land a union of both lines.
    sp, names = branches(repo, tmp_path / "state", [{"shared.txt": "t0's line\n"}, {"shared.txt": "t1's line\n"}])
    (repo / ".gitattributes").write_text("shared.txt merge=union\n")
    verdicts = land_all(sp, names, 2)
    assert kinds(verdicts) == [(0, "Landed"), (1, "Conflict")], git(repo, "show", f"{INTO}:shared.txt")


def _branch_from(sp: Workspaces, task: str, start: str, files: dict) -> str:
    """A committed task branch from `start`: file -> text, or None to delete it."""
    ws = sp.create(task, start)
    for name, text in files.items():
        path = Path(ws.path, name)
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    assert sp.commit_all(ws, task) is not None
    sp.remove(ws)
    return ws.branch


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("change", ["added", "emptied", "deleted"])
def test_a_gitattributes_changed_on_into_between_two_landings_is_honoured(tmp_path, change, k):
    # The merges keep a work tree of into's attributes files from one landing to the next. t0 and t1 change
    # the same line of sub/shared.txt; ta, landing between them, changes sub/.gitattributes (a union merge
    # driver added, or emptied or deleted where there was one). t1 must be merged with the attributes ta
    # left: clean (both lines) when a union driver is now there, a conflict when it is gone, as `merge
    # --no-ff` in a worktree of into would say. Fails with the attributes of the first landing's base kept.
    union = "shared.txt merge=union\n"
    files = {"f0.txt": "file 0\n", "sub/shared.txt": "one\n"} | ({} if change == "added" else {"sub/.gitattributes": union})
    repo = make_repo(tmp_path, "tasks: []\n", files)
    sp = Workspaces(repo, tmp_path / "state", "r1", INTO)
    start = sp.tip()
    attrs = {"added": union, "emptied": "# nothing here\n", "deleted": None}[change]
    names = [_branch_from(sp, "t0", start, {"sub/shared.txt": "t0's line\n"}),
             _branch_from(sp, "ta", start, {"sub/.gitattributes": attrs}),
             _branch_from(sp, "t1", start, {"sub/shared.txt": "t1's line\n"})]  # fmt: skip
    verdicts = land_all(sp, names, k)
    if change == "added":
        assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Landed")], verdicts
        assert git(repo, "show", f"{INTO}:sub/shared.txt") == "t0's line\nt1's line\n"
    else:
        assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Conflict")], git(repo, "show", f"{INTO}:sub/shared.txt")


def test_merge_commit_merges_the_branch_tip_whatever_the_commit_dates_say(repo, tmp_path):
    # merge_commit reads the branch's tip and whether `into` holds it already with one `rev-list`. A commit's
    # date may be older than its parent's (a clock set back, a rebase keeping dates): the tip must still be
    # what is merged, not the newest-dated commit of the branch; and a branch `into` holds is not merged again.
    sp, names = branches(repo, tmp_path / "state", [{"f0.txt": "t0\n"}])
    start = sp.tip()
    parent = git(repo, "rev-parse", names[0]).strip()
    tree = git(repo, "rev-parse", f"{parent}^{{tree}}").strip()
    env = {"GIT_COMMITTER_DATE": "2001-01-01T00:00:00Z", "GIT_AUTHOR_DATE": "2001-01-01T00:00:00Z"}
    old = subprocess.run(["git", "-C", str(repo), "commit-tree", tree, "-p", parent, "-m", "older than its parent"],
                         capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout.strip()
    git(repo, "update-ref", f"refs/heads/{names[0]}", old)
    merged = merge_commit(sp, start, names[0], "Land t0: edit 0")
    assert git(repo, "rev-parse", f"{merged}^2").strip() == old
    assert merge_commit(sp, merged, names[0], "Land t0: again") == merged  # already on it: no commit


def test_an_unexpected_error_checking_a_merge_out_still_gives_a_verdict(repo, tmp_path, monkeypatch):
    # Fault injection: the slot's checkout (reset_to / ensure_landing_worktree, in the candidate's own
    # thread) raises something other than GitError/WorkspaceError/OSError, e.g. the UnicodeDecodeError
    # subprocess's text mode raises when git's stderr names a non-UTF-8 path. The candidate must still get
    # a verdict (its slot broken), or its task would wait to land forever.
    import runner.coding.speculative as spec

    def broken(*args, **kwargs):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(spec, "reset_to", broken)
    monkeypatch.setattr(spec, "ensure_landing_worktree", broken)
    sp, names = branches(repo, tmp_path / "state", [{"f0.txt": "t0\n"}])
    verdicts = land_all(sp, names, 1, checks_by({0: "true"}, tmp_path), timeout=15)
    assert len(verdicts) == 1


def test_an_unexpected_error_merging_a_candidate_behind_the_head_drops_that_candidate_only(repo, tmp_path, monkeypatch):
    # Fault injection: merging t1 (second in the window, while t0's checks run at the head) raises something
    # other than GitError/WorkspaceError/OSError. Only t1 gets it as its verdict: t0 lands, and t2, behind
    # t1, is merged on what t0 leaves and lands. (The error used to go to the head: t0 was dropped instead.)
    import threading

    import runner.coding.speculative as spec

    sp, names = branches(repo, tmp_path / "state", [{"f0.txt": "t0\n"}, {"f1.txt": "t1\n"}, {"f2.txt": "t2\n"}])
    raised = threading.Event()
    real = spec.merge_commit

    def merge_commit(sp_, base, branch, message):
        if branch == names[1]:
            raised.set()
            raise ValueError("injected: an unexpected error merging t1")
        return real(sp_, base, branch, message)

    monkeypatch.setattr(spec, "merge_commit", merge_commit)

    def checks_for(i):
        def of(path, cancel):
            def checks(where):  # t0's checks at the head: over once t1's merge has raised
                assert raised.wait(30)
                return True, ""

            return checks if i == 0 else None

        return of

    verdicts = dict(land_all(sp, names, 3, checks_for, timeout=30))
    assert type(verdicts[0]).__name__ == "Landed", verdicts
    assert isinstance(verdicts[1], ValueError), verdicts
    assert type(verdicts[2]).__name__ == "Landed", verdicts
    assert git(repo, "show", f"{INTO}:f0.txt") == "t0\n" and git(repo, "show", f"{INTO}:f2.txt") == "t2\n"


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a folder's appearance, with a deadline


def test_slots_made_ahead_are_used_and_a_checks_leftovers_never_reach_the_next_check(repo, tmp_path):
    # warm(n) makes slots 0..n-1 while the agents work. A candidate checked in a warmed slot sees its own
    # merge (not into's tip the slot was made at); a check's untracked leftovers are gone before the next
    # check in the same slot (the slot is cleaned once a check ran there). k = 1: one slot for all.
    import queue

    from runner.coding.speculative import SpeculativeLander, slot_path

    sp, names = branches(repo, tmp_path / "state", [{"f0.txt": "t0\n"}, {"f1.txt": "t1\n"}, {"f2.txt": "t2\n"}])
    got: queue.Queue = queue.Queue()
    lander = SpeculativeLander(sp, 1, lambda job, verdict: got.put((job, verdict)))
    lander.warm(5)  # capped at k
    _wait_for(lambda: (slot_path(sp, 0) / ".git").exists(), "the warmed slot")
    assert not slot_path(sp, 1).exists()
    check = 'test ! -e junk.txt && grep -q "t$(( ${WVO_TASK_ID#t} ))" "f${WVO_TASK_ID#t}.txt" && echo left > junk.txt'
    of = checks_by({i: check for i in range(3)}, tmp_path)
    try:
        for i, name in enumerate(names):
            lander.submit(i, name, f"edit {i}", of(i))
        verdicts = [got.get(timeout=60) for _ in names]
    finally:
        lander.stop(timeout=30)
    assert kinds(verdicts) == [(0, "Landed"), (1, "Landed"), (2, "Landed")], verdicts


def test_stop_ends_the_warming_thread(repo, tmp_path):
    from runner.coding.speculative import SpeculativeLander

    sp, _ = branches(repo, tmp_path / "state", [])
    lander = SpeculativeLander(sp, 4, lambda job, verdict: None)
    lander.warm(4)
    lander.stop(timeout=30)
    assert lander._warmers and not any(t.is_alive() for t in lander._warmers)


def test_the_run_makes_the_landing_slots_while_its_agents_work(tmp_path):
    # Two worktree tasks with checks on two agents: once both are up, the run makes the two landing slots
    # the checks will need while they work. Each task waits (with a deadline) until both slots exist; made
    # only at first use (after the hand-over) they would never appear while it waits, and it fails.
    import json

    from test_landing_queue import WORKTREE
    from test_worktrees import rows, run_json

    wait = ('i=0; while ! { [ -e "$WVO_WORKTREE/../../landing/.git" ] && [ -e "$WVO_WORKTREE/../../landing.2/.git" ]; }; '
            'do [ $i -lt 300 ] || exit 1; sleep 0.1; i=$((i+1)); done; echo $WVO_TASK_ID > $WVO_TASK_ID.txt')  # fmt: skip
    tasks = "".join(f"  - id: t{i}\n    command: {json.dumps(wait)}\n" for i in range(2))
    repo = make_repo(tmp_path, WORKTREE + f"  checks: [{json.dumps('true')}]\ntasks:\n" + tasks)
    code, doc, err = run_json(repo, "-j", "2")
    assert code == 0, err[-2000:]
    assert {t: r["status"] for t, r in rows(doc).items()} == {"t0": "succeeded", "t1": "succeeded"}
    assert not list((tmp_path / "state").rglob("landing*/.git"))  # removed at the end all the same


_KILLED_MID_REMOVE = r'''
import os, signal, sys
from pathlib import Path
from runner.coding.workspace import Workspaces

repo, state = sys.argv[1], sys.argv[2]
sp = Workspaces(repo, state, "r1", "wvo/landed")
ws = sp.create("t0")
Path(ws.path, "f0.txt").write_text("the task's work\n")
print(sp.commit_all(ws, "t0: edit"), flush=True)   # committed: ready to land
real = Workspaces._worktree

def killed(self, *args, **kwargs):
    if args and args[0] == "remove":
        os.kill(os.getpid(), signal.SIGKILL)  # the run dies here (SIGKILL of the manager; the agents follow)
    return real(self, *args, **kwargs)

Workspaces._worktree = killed
sp.remove(ws, "attempt 1 ended: succeeded", saved=True)  # as run_in_worktree does after commit_all
'''


def test_killed_between_emptying_a_worktree_and_removing_it_resume_still_lands_the_committed_attempt(repo, tmp_path):
    # remove() deletes the worktree's files itself (outside the run's lock), then asks git to remove the
    # worktree (under the lock, behind the other agents). A SIGKILL in between leaves a worktree that holds
    # only its .git. --resume must land the committed attempt, not snapshot the emptied folder as a commit
    # deleting every file (which left the branch not COMMITTED and the task to run again).
    import sys

    from runner.coding.workspace import recover

    state = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_REMOVE, str(repo), str(state)], capture_output=True,
                          text=True, timeout=60, cwd=str(Path(__file__).resolve().parents[1]),
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == -9, proc.stderr
    committed = proc.stdout.strip()
    spaces, recovery = recover(state)
    branch = "wvo/r1/t0"
    tip = git(repo, "rev-parse", branch).strip()
    assert tip == committed, f"resume committed over the attempt: {git(repo, 'show', '--stat', '--format=%s', tip)}"
    assert [ws.branch for ws in recovery.finished] == [branch]  # --resume lands it


def test_an_agent_attaching_to_the_run_puts_back_a_fence_a_task_deleted(repo, tmp_path):
    # The fence (a `.git` file that is no repository, above every worktree) is the layer that holds when a
    # task clears GIT_CEILING_DIRECTORIES: an agent attaching to the run's workspaces puts it back.
    from runner.coding import sealed

    state = tmp_path / "state"
    Workspaces(repo, state, "r1", INTO)
    (state / ".git").unlink()
    Workspaces.attach(state)
    assert (state / ".git").read_text() == sealed.FENCE_TEXT
