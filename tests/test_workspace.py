"""The git layer for coding agents, on real repositories: worktrees, commits, landing, cleanup, recovery."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.coding.landing import ChecksFailed, Conflict, Landed, Lander
from runner.coding.workspace import (
    BranchState, Git, GitError, WorkspaceError, Workspaces, ref_component, recover,
)

ROOT = Path(__file__).resolve().parents[1]
INTO = "wvo/landed"

pytestmark = pytest.mark.timeout(120)


def git(repo, *args, check=True) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args}: {proc.stderr}")
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.name", "Test User")
    git(r, "config", "user.email", "user@example.invalid")
    for i in range(8):
        (r / f"f{i}.txt").write_text(f"file {i}\n")
    (r / "shared.txt").write_text("one\ntwo\nthree\n")
    (r / ".gitignore").write_text("*.log\n")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "initial")
    # The user's own uncommitted work: must survive everything untouched.
    (r / "f0.txt").write_text("the user's edit\n")
    (r / "scratch.txt").write_text("untracked by the user\n")
    git(r, "add", "f0.txt")
    return r


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


def user_view(repo: Path) -> tuple:
    """What the user would notice: HEAD, its branch, status, the index file's bytes."""
    return (git(repo, "rev-parse", "HEAD"), git(repo, "symbolic-ref", "HEAD"),
            git(repo, "status", "--porcelain", "--untracked-files=all"), (repo / ".git" / "index").read_bytes())


def worktrees(repo: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def assert_fsck_clean(repo: Path) -> None:
    proc = subprocess.run(["git", "-C", str(repo), "fsck", "--strict", "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr


def edit(ws, name: str, text: str) -> None:
    Path(ws.path, name).write_text(text)


def test_eight_workspaces_each_editing_a_file_all_land_and_the_user_notices_nothing(repo, state):
    before = user_view(repo)
    sp = Workspaces(repo, state, "r1", INTO)
    lander = Lander(sp)
    start = sp.tip()
    spaces = [sp.create(f"t{i}", start) for i in range(8)]  # all at once, as parallel agents would
    assert len({ws.path for ws in spaces}) == 8 and all(ws.base_commit == start for ws in spaces)
    for i, ws in enumerate(spaces):
        edit(ws, f"f{i}.txt", f"changed by t{i}\n")
        assert sp.commit_all(ws, f"t{i}: edit f{i}") is not None
    for i, ws in enumerate(spaces):
        result = lander.land(ws, f"edit f{i}")
        assert isinstance(result, Landed), result
        sp.remove(ws)
    tip = sp.tip()
    for i in range(8):
        assert git(repo, "show", f"{tip}:f{i}.txt") == f"changed by t{i}"
    subjects = git(repo, "log", "--first-parent", "--format=%s", f"{start}..{INTO}").splitlines()
    assert subjects == [f"Land t{i}: edit f{i}" for i in reversed(range(8))]
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn", INTO) == "wvo-batch <wvo-batch@wvo-batch.invalid>|wvo-batch"
    cleanup = sp.finish()
    assert sorted(cleanup.deleted) == sorted(ws.branch for ws in spaces) and cleanup.kept == []
    assert git(repo, "branch", "--list", "wvo/r1/*") == ""
    assert worktrees(repo) == [str(repo)]
    assert user_view(repo) == before
    assert_fsck_clean(repo)


def test_two_edits_of_one_line_conflict_and_the_retry_from_the_new_tip_lands(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    lander = Lander(sp)
    a, b = sp.create("a"), sp.create("b")
    edit(a, "shared.txt", "one\nTWO by a\nthree\n")
    edit(b, "shared.txt", "one\nTWO by b\nthree\n")
    sp.commit_all(a, "a")
    b_tip = sp.commit_all(b, "b")
    assert isinstance(lander.land(a, "a"), Landed)
    after_a = sp.tip()
    result = lander.land(b, "b")
    assert result == Conflict(b.branch, ["shared.txt"])
    assert "shared.txt" in str(result)
    assert sp.tip() == after_a
    assert git(repo, "rev-parse", b.branch) == b_tip  # kept, with its work
    landing = sp.landing_path
    assert git(landing, "status", "--porcelain") == "" and not (Path(git(landing, "rev-parse", "--absolute-git-dir")) / "MERGE_HEAD").exists()
    sp.remove(b)
    b2 = sp.create("b")  # the next attempt, from the new tip: sees a's line
    assert b2.branch == "wvo/r1/b-2" and b2.base_commit == after_a
    assert Path(b2.path, "shared.txt").read_text() == "one\nTWO by a\nthree\n"
    edit(b2, "shared.txt", "one\nTWO by a, then b\nthree\n")
    sp.commit_all(b2, "b again")
    assert isinstance(lander.land(b2, "b"), Landed)
    assert git(repo, "show", f"{INTO}:shared.txt") == "one\nTWO by a, then b\nthree"
    cleanup = sp.finish()
    assert sorted(cleanup.deleted) == [a.branch, b2.branch]
    assert cleanup.kept == [(b.branch, BranchState.CONFLICT.value)]
    assert git(repo, "rev-parse", b.branch) == b_tip
    assert_fsck_clean(repo)


def test_a_dependent_started_from_intos_tip_sees_the_earlier_change(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    dep = sp.create("dep")
    edit(dep, "new.txt", "from dep\n")
    sp.commit_all(dep, "dep")
    Lander(sp).land(dep, "dep")
    later = sp.create("later")
    assert Path(later.path, "new.txt").read_text() == "from dep\n"
    sp.finish()


def test_removal_commits_what_is_left_as_wip_so_git_log_shows_it(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("crashy")
    edit(ws, "f1.txt", "half done\n")
    edit(ws, "brand-new.txt", "untracked\n")
    edit(ws, "noise.log", "ignored\n")
    wip = sp.remove(ws, "agent exited 1")
    assert not Path(ws.path).exists() and ws.path not in worktrees(repo)
    assert git(repo, "log", "-1", "--format=%H %s", ws.branch) == f"{wip} WIP: agent exited 1"
    assert git(repo, "show", f"{ws.branch}:f1.txt") == "half done"
    assert git(repo, "show", f"{ws.branch}:brand-new.txt") == "untracked"
    assert "noise.log" not in git(repo, "ls-tree", "--name-only", ws.branch)
    clean = sp.create("clean")
    assert sp.remove(clean) is None  # nothing left: no empty WIP commit
    assert git(repo, "rev-parse", clean.branch) == clean.base_commit
    cleanup = sp.finish()
    assert (ws.branch, "wip") in cleanup.kept


def test_commit_all_keeps_the_agents_commits_and_reports_no_changes(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    idle = sp.create("idle")
    assert sp.commit_all(idle, "idle") is None
    ws = sp.create("busy")
    edit(ws, "f2.txt", "agent commit\n")
    git(ws.path, "commit", "-qam", "the agent's own commit")
    edit(ws, "f3.txt", "left uncommitted\n")
    tip = sp.commit_all(ws, "busy: title")
    assert git(repo, "log", "--format=%s", f"{ws.base_commit}..{tip}").splitlines() == ["busy: title", "the agent's own commit"]
    only_commits = sp.create("only-commits")
    edit(only_commits, "f4.txt", "x\n")
    git(only_commits.path, "commit", "-qam", "agent")
    assert sp.commit_all(only_commits, "t") == git(only_commits.path, "rev-parse", "HEAD")  # no empty commit on top
    stats = sp.diff_stats(ws.branch, ws.base_commit)
    assert (stats.files_changed, stats.added, stats.deleted, sorted(stats.paths)) == (2, 2, 2, ["f2.txt", "f3.txt"])
    sp.finish()


def test_work_an_agent_committed_on_a_detached_head_ends_up_on_the_branch(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("wanderer")
    git(ws.path, "checkout", "-q", "--detach")
    edit(ws, "f5.txt", "detached work\n")
    git(ws.path, "commit", "-qam", "on a detached head")
    edit(ws, "f6.txt", "uncommitted\n")
    sp.remove(ws, "failed")
    assert "on a detached head" in git(repo, "log", "--format=%s", ws.branch).splitlines()
    assert git(repo, "show", f"{ws.branch}:f5.txt") == "detached work"
    assert git(repo, "show", f"{ws.branch}:f6.txt") == "uncommitted"
    sp.finish()


def test_diff_text_is_capped_and_says_so(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("big")
    edit(ws, "big.txt", "".join(f"line {i}\n" for i in range(5000)))
    sp.commit_all(ws, "big")
    full = sp.diff_text(ws.branch, ws.base_commit, cap_bytes=10_000_000)
    assert "+line 4999" in full and "cut" not in full
    cut = sp.diff_text(ws.branch, ws.base_commit, cap_bytes=2000)
    assert len(cut) < 2300 and "+line 4999" not in cut
    assert "[diff cut at" in cut and "big.txt" in cut.splitlines()[-1]
    sp.finish()


def test_a_foreign_branch_named_like_ours_is_never_landed_or_deleted(repo, state):
    git(repo, "branch", "wvo/r1/a")  # someone else's, at main: "merged" into anything built on main
    foreign = git(repo, "rev-parse", "wvo/r1/a")
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    assert ws.branch == "wvo/r1/a-2"
    edit(ws, "f1.txt", "ours\n")
    sp.commit_all(ws, "a")
    lander = Lander(sp)
    with pytest.raises(WorkspaceError, match="not created by this run"):
        lander.land("wvo/r1/a", "a")
    assert isinstance(lander.land(ws, "a"), Landed)
    sp.finish()
    assert git(repo, "rev-parse", "wvo/r1/a") == foreign
    assert git(repo, "branch", "--list", "wvo/r1/a-2") == ""


def test_into_checked_out_anywhere_is_refused_up_front_and_at_landing(repo, state, tmp_path):
    with pytest.raises(WorkspaceError, match="'main' is checked out in"):
        Workspaces(repo, state, "r1", "main")
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    edit(ws, "f1.txt", "x\n")
    sp.commit_all(ws, "a")
    git(repo, "worktree", "add", "-q", str(tmp_path / "users-other-checkout"), INTO)
    with pytest.raises(WorkspaceError, match="checked out in .*users-other-checkout"):
        Lander(sp).land(ws, "a")
    assert sp.tip() == ws.base_commit


def test_checks_failing_undo_the_merge_and_keep_the_branch(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    lander = Lander(sp)
    ws = sp.create("a")
    edit(ws, "f1.txt", "breaks the build\n")
    tip = sp.commit_all(ws, "a")
    seen = []

    def checks(path):
        seen.append(Path(path, "f1.txt").read_text())
        Path(path, "build-output.tmp").write_text("junk")
        return False, "3 tests failed"

    before = sp.tip()
    assert lander.land(ws, "a", checks=checks) == ChecksFailed(ws.branch, "3 tests failed")
    assert seen == ["breaks the build\n"]  # checks ran on the merged result
    assert sp.tip() == before and git(repo, "rev-parse", ws.branch) == tip
    assert git(sp.landing_path, "status", "--porcelain", "--untracked-files=all") == ""
    good = sp.create("b")
    edit(good, "f2.txt", "fine\n")
    sp.commit_all(good, "b")
    assert isinstance(lander.land(good, "b", checks=lambda p: (True, "ok")), Landed)
    assert git(repo, "show", f"{INTO}:f1.txt") == "file 1"
    assert sp.finish().kept == [(ws.branch, BranchState.CHECKS_FAILED.value)]


def test_recovery_after_a_crash_mid_landing_leaves_into_consistent(repo, state):
    before_user = user_view(repo)
    sp = Workspaces(repo, state, "r1", INTO)
    lander = Lander(sp)
    a, b, c = sp.create("a"), sp.create("b"), sp.create("c")
    edit(a, "shared.txt", "one\nTWO by a\nthree\n")
    edit(b, "shared.txt", "one\nTWO by b\nthree\n")
    sp.commit_all(a, "a")
    b_tip = sp.commit_all(b, "b")
    assert isinstance(lander.land(a, "a"), Landed)
    sp.remove(a)
    into_before = sp.tip()
    # The crash: a merge of b half done in the landing worktree (MERGE_HEAD, conflict markers, a stale
    # index.lock), and c's agent killed with its edits uncommitted.
    landing = sp.landing_path
    git(landing, "reset", "-q", "--hard", INTO)  # merges are made without a worktree: as the checks would see a's
    git(landing, "merge", "--no-ff", "-m", "x", b.branch, check=False)
    admin = Path(git(landing, "rev-parse", "--absolute-git-dir"))
    assert (admin / "MERGE_HEAD").exists()
    (admin / "index.lock").write_text("")
    edit(c, "f7.txt", "c was here\n")
    (Path(git(c.path, "rev-parse", "--absolute-git-dir")) / "index.lock").write_text("")
    del sp, lander

    spaces, found = recover(state)
    assert spaces.tip() == into_before
    assert [ws.branch for ws in found.finished] == [b.branch]
    assert list(found.saved) == [c.branch] and git(repo, "show", f"{c.branch}:f7.txt") == "c was here"
    assert sorted(found.removed) == sorted([b.path, c.path])
    assert not landing.exists() and worktrees(repo) == [str(repo)]
    assert_fsck_clean(repo)
    # Resume: b is landed (not rerun); it conflicts with a, an outcome, and its work is still there.
    result = Lander(spaces).land(found.finished[0], "b")
    assert isinstance(result, Conflict) and git(repo, "rev-parse", b.branch) == b_tip
    spaces.finish()
    assert user_view(repo) == before_user


CHILD = textwrap.dedent("""
    import sys, threading
    from runner.coding.workspace import Git, Workspaces
    from runner.coding.landing import Lander
    state, mode, fifo, git = sys.argv[1:5]
    spaces = Workspaces.open(state, git=Git(git))
    branch = next(b for b, r in spaces.owned().items() if r["state"] == "committed")

    def checks(path):
        with open(fifo, "w") as f:
            f.write("ready\\n")
        threading.Event().wait()  # hold here, merged but not landed, until killed
        return True, ""

    Lander(spaces).land(branch, "title", checks=checks if mode == "checks" else None)
""")

GIT_WRAPPER = textwrap.dedent("""\
    #!/bin/sh
    git "$@"; rc=$?
    case "$*" in
      *"update-ref -m wvo-batch: Land"*) echo ready > "$WVO_TEST_FIFO"; read hold < "$WVO_TEST_HOLD" ;;
    esac
    exit $rc
""")


def _wait_ready(fifo: Path, child: subprocess.Popen, timeout: float = 60.0) -> None:
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready and os.read(fd, 64):
                return
            assert child.poll() is None, child.stderr.read().decode()
        raise AssertionError("the child never reached the landing")
    finally:
        os.close(fd)


@pytest.mark.parametrize("moment", ["checks", "after-update-ref"])
def test_sigkill_mid_landing_leaves_into_before_or_after_and_resume_lands_once(repo, state, tmp_path, moment):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    edit(ws, "f3.txt", "a's change\n")
    tip = sp.commit_all(ws, "a")
    old = sp.tip()
    fifo, hold = tmp_path / "ready", tmp_path / "hold"
    os.mkfifo(fifo)
    os.mkfifo(hold)
    wrapper = tmp_path / "git-wrapper"
    wrapper.write_text(GIT_WRAPPER)
    wrapper.chmod(0o755)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WVO_TEST_FIFO": str(fifo), "WVO_TEST_HOLD": str(hold)}
    child = subprocess.Popen([sys.executable, str(script), str(state), moment, str(fifo), str(wrapper)],
                             env=env, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_ready(fifo, child)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    merged = sp.tip()
    if moment == "checks":
        assert merged == old  # before
    else:
        assert git(repo, "rev-parse", f"{merged}^1") == old and git(repo, "rev-parse", f"{merged}^2") == tip  # after
    assert_fsck_clean(repo)

    spaces, found = recover(state)
    assert spaces.tip() == merged and not spaces.landing_path.exists()
    if moment == "checks":
        assert [w.branch for w in found.finished] == [ws.branch] and found.landed == []
        assert isinstance(Lander(spaces).land(found.finished[0], "a"), Landed)
    else:
        assert found.finished == [] and found.landed == [ws.branch]  # not landed twice
    assert git(repo, "rev-list", "--count", "--merges", f"{old}..{INTO}") == "1"
    assert spaces.finish().deleted == [ws.branch]
    assert worktrees(repo) == [str(repo)]
    assert_fsck_clean(repo)


def test_user_hooks_identity_and_git_environment_do_not_leak_in(repo, state, monkeypatch):
    hooks = repo / ".git" / "hooks"
    marker = repo.parent / "hook-ran"
    for name in ("pre-commit", "post-checkout", "prepare-commit-msg", "pre-merge-commit", "post-merge", "reference-transaction"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> {marker}\nexit 1\n")
        (hooks / name).chmod(0o755)
    git(repo, "config", "commit.gpgSign", "true")  # would fail: no key
    before = user_view(repo)
    # As if started from inside a git hook of the user's checkout: these would redirect our commands.
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "index"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    edit(ws, "f4.txt", "a\n")
    sp.commit_all(ws, "a")
    assert isinstance(Lander(sp).land(ws, "a"), Landed)
    sp.finish()
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert not marker.exists()
    assert user_view(repo) == before


def test_journal_is_private_and_only_lists_branches_we_made(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    mode = stat.S_IMODE(os.stat(state / "workspaces.jsonl").st_mode)
    assert mode == 0o600
    assert list(sp.owned()) == [ws.branch]
    reopened = Workspaces.open(state)
    assert list(reopened.owned()) == [ws.branch] and reopened.base_commit == sp.base_commit
    with pytest.raises(WorkspaceError, match="belongs to run"):
        Workspaces(repo, state, "other-run", INTO)
    sp.finish()


def test_base_and_into_resolution(repo, tmp_path):
    main = git(repo, "rev-parse", "main")
    sp = Workspaces(repo / "f1.txt", tmp_path / "s1", "r", "results")  # a path inside the repo will do
    assert sp.repo == repo and sp.base_commit == main and git(repo, "rev-parse", "results") == main
    git(repo, "branch", "other", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "later on main")
    sp2 = Workspaces(repo, tmp_path / "s2", "r", "results")  # into exists: base defaults to it
    assert sp2.base_commit == main
    sp3 = Workspaces(repo, tmp_path / "s3", "r", "fresh", base="other")
    assert sp3.base_commit == main and git(repo, "rev-parse", "fresh") == main
    with pytest.raises(WorkspaceError, match="no such commit"):
        Workspaces(repo, tmp_path / "s4", "r", "x", base="nope")
    with pytest.raises(WorkspaceError, match="not inside a git repository"):
        Workspaces(tmp_path / "s1", tmp_path / "s5", "r", "x")
    with pytest.raises(WorkspaceError, match="not a valid branch name"):
        Workspaces(repo, tmp_path / "s6", "r", "bad..name")


@pytest.mark.parametrize("task_id", [
    "auth", "a b/c", "..hidden", "x.lock", "trailing.", "we~ir^d:na?me*[x]\\", "@{u}", "@", "-dash", "ünïcødé",
    "a//b", "", "   ", "x" * 300, "a..b", "end.lock.", "refs/heads/main",
])
def test_branch_names_are_valid_refs(repo, task_id):
    name = f"wvo/{ref_component('run 1')}/{ref_component(task_id)}"
    assert subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"]).returncode == 0, name
    assert len(name) < 100


def test_a_failed_wip_commit_removes_nothing(repo, state, tmp_path):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    edit(ws, "f1.txt", "precious\n")
    broken = tmp_path / "broken-git"
    broken.write_text('#!/bin/sh\ncase "$*" in *" add -A"*) exit 1 ;; esac\nexec git "$@"\n')
    broken.chmod(0o755)
    sp.git = Git(str(broken))
    with pytest.raises(GitError):
        sp.remove(ws)
    assert Path(ws.path, "f1.txt").read_text() == "precious\n"


def test_a_landed_branch_that_gained_commits_afterwards_is_kept(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    edit(ws, "f1.txt", "landed\n")
    sp.commit_all(ws, "a")
    assert isinstance(Lander(sp).land(ws, "a"), Landed)
    edit(ws, "f1.txt", "more, after landing\n")
    git(ws.path, "commit", "-qam", "not on into")
    later = git(ws.path, "rev-parse", "HEAD")
    cleanup = sp.finish()
    assert cleanup.deleted == [] and cleanup.kept == [(ws.branch, "landed")]
    assert git(repo, "rev-parse", ws.branch) == later


def test_into_moved_by_someone_else_mid_landing_is_kept_and_the_merge_redone(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    ws = sp.create("a")
    edit(ws, "f1.txt", "a\n")
    sp.commit_all(ws, "a")
    calls = []

    def checks(path):
        if not calls:  # someone else commits onto `into` while our checks run
            old = git(repo, "rev-parse", INTO)
            tree = git(repo, "rev-parse", f"{old}^{{tree}}")
            other = git(repo, "commit-tree", tree, "-p", old, "-m", "someone else's commit")
            git(repo, "update-ref", f"refs/heads/{INTO}", other, old)
            calls.append(other)
        return True, ""

    result = Lander(sp).land(ws, "a", checks=checks)
    assert isinstance(result, Landed)
    assert git(repo, "rev-parse", f"{INTO}^1") == calls[0]
    sp.finish()


def test_a_journal_line_torn_by_a_crash_loses_only_that_line(repo, state):
    sp = Workspaces(repo, state, "r1", INTO)
    a = sp.create("a")
    with open(state / "workspaces.jsonl", "a") as f:
        f.write('{"branch": "wvo/r1/a", "state": "comm')  # SIGKILL mid-append
    reopened = Workspaces.open(state)
    b = reopened.create("b")
    again = Workspaces.open(state)
    assert sorted(again.owned()) == [a.branch, b.branch]
    assert again.owned()[a.branch]["state"] == "running"
    again.finish()
