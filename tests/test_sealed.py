"""The sealed worktree (issue 21): nothing reaches from a task's worktree to the user's repository.

Real repositories, the real `wvo-batch` command, shell commands as the agents: the caller's GIT_*
variables, a deleted or re-initialised `.git`, the stash list and sparse settings shared through the
common `.git`, a branch moved backwards, submodules, and clean-up past a worktree git cannot handle.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import wvo
from test_worktrees import GIT_ENV, WORKTREE, checkout_state, git, make_repo, rows, run_json, worktrees

from runner.coding import sealed
from runner.coding.landing import Lander
from runner.coding.workspace import WorkspaceError, Workspaces

pytestmark = pytest.mark.timeout(120)


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


# --- 1. the environment ---------------------------------------------------------------------------


def test_every_variable_git_unsets_for_another_repository_is_removed_and_the_identity_stays(tmp_path):
    local = subprocess.run(["git", "rev-parse", "--local-env-vars"], capture_output=True, text=True, check=True).stdout.split()
    caller = {name: "/somewhere" for name in local}
    caller.update(GIT_CONFIG_GLOBAL="/x", GIT_CONFIG_KEY_0="core.worktree", GIT_CONFIG_VALUE_0="/", GIT_NAMESPACE="n",
                  GIT_CEILING_DIRECTORIES="/a", GIT_AUTHOR_NAME="A User", GIT_SSH_COMMAND="ssh -i k", PATH="/bin")
    env = sealed.environment(caller)
    assert set(env) == {"GIT_CEILING_DIRECTORIES", "GIT_AUTHOR_NAME", "GIT_SSH_COMMAND", "PATH"}
    pinned = sealed.environment(caller, tmp_path / "worktrees" / "t1")
    assert pinned["GIT_CEILING_DIRECTORIES"] == str(tmp_path / "worktrees")


@pytest.mark.parametrize("hook_vars", ["index", "dir"])
def test_a_run_started_from_a_git_hook_commits_only_in_the_tasks_worktree(tmp_path, hook_vars):
    roadmap = WORKTREE + "tasks:\n  - id: t\n    command: \"echo mine > f.txt && git add f.txt && git commit -qm 'task commit'\"\n"
    repo = make_repo(tmp_path, roadmap)
    before = checkout_state(repo)
    env = {"GIT_INDEX_FILE": str(repo / ".git" / "index")}  # what git sets for a pre-commit hook
    if hook_vars == "dir":
        env.update(GIT_DIR=str(repo / ".git"), GIT_WORK_TREE=str(repo))
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", env=env, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert checkout_state(repo) == before  # the user's index, HEAD, branch and status
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["initial"]
    assert git(repo, "show", "wvo/roadmap:f.txt") == "mine\n"
    assert "task commit" in git(repo, "log", "--format=%s", "wvo/roadmap")


# On Ray (a run's own local Ray instance inherits the hook's variables): one run with the call of
# test_redteam_security, test_no_task_on_a_ray_agent_started_from_a_git_hook_sees_the_users_repository.


# --- 2. a task deletes its worktree's .git --------------------------------------------------------


def dotfiles_home(tmp_path: Path) -> Path:
    """A repository around the state dir (a dotfiles $HOME): an untracked secret, an uncommitted edit, `.wvo/` ignored."""
    home = tmp_path / "home"
    home.mkdir()
    git(home, "init", "-q", "-b", "main")
    (home / ".gitignore").write_text(".wvo/\n")
    (home / "notes").write_text("committed\n")
    git(home, "add", ".gitignore", "notes")
    git(home, "-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-qm", "dotfiles")
    (home / ".env.local").write_text("SECRET=1\n")
    (home / "notes").write_text("the user's draft, not committed\n")
    return home


def test_a_deleted_dot_git_is_refused_not_followed_to_the_enclosing_repository(tmp_path):
    roadmap = WORKTREE + (
        "tasks:\n"
        "  - id: gone\n"
        "    command: \"rm -f .git && echo hi > new.txt && (git add -A && git commit -qm stolen; true)\"\n"
        "  - id: fine\n    command: \"echo ok > ok.txt\"\n"
    )
    repo = make_repo(tmp_path / "r", roadmap)
    home = dotfiles_home(tmp_path)
    home_before = (refs(home), (home / ".git" / "index").read_bytes(), git(home, "status", "--porcelain"))
    before = checkout_state(repo)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", home / ".wvo" / "state", "--json", timeout=90)
    assert proc.returncode == 1, proc.stderr
    r = rows(json.loads(proc.stdout))
    assert r["fine"]["status"] == "succeeded"
    assert r["gone"]["status"] == "failed"
    assert "worktree of this run: its .git is gone" in proc.stderr  # the attempt's error, on the display
    assert "worktree of this run: its .git is gone" in r["gone"]["reason"]  # and in --json, not just "failed"
    assert (refs(home), (home / ".git" / "index").read_bytes(), git(home, "status", "--porcelain")) == home_before
    assert checkout_state(repo) == before
    kept = [p for p in json.loads(proc.stdout)["workspaces"]["worktrees_kept"] if p.endswith("/gone")]
    assert kept and (Path(kept[0]) / "new.txt").read_text() == "hi\n"  # the task's work is still there


def test_a_check_that_deletes_dot_git_cannot_make_our_clean_up_reach_the_enclosing_repository(tmp_path):
    roadmap = WORKTREE + "tasks:\n  - id: t\n    command: \"echo t > t.txt\"\n    checks: [\"rm -f .git\"]\n"
    repo = make_repo(tmp_path / "r", roadmap)
    home = dotfiles_home(tmp_path)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", home / ".wvo" / "state", "--json", timeout=90)
    assert proc.returncode in (0, 1), proc.stderr
    # the `git reset --hard` and `git clean -fd` after the checks stayed in the worktree
    assert (home / "notes").read_text() == "the user's draft, not committed\n"
    assert git(home, "status", "--porcelain") == " M notes\n?? .env.local\n"


# --- 3. state shared through the common .git --------------------------------------------------------


@pytest.mark.parametrize("land", ["branch", "merge"])
def test_a_tasks_stash_leaves_the_users_stash_list_as_it_was(tmp_path, land):
    roadmap = (f"workspace:\n  mode: worktree\n  land: {land}\n"
               "tasks:\n  - id: s\n    command: \"echo more >> README && git stash -q && echo b > b.txt\"\n")
    repo = make_repo(tmp_path, roadmap)
    (repo / "README").write_text("the user's edit\n")
    git(repo, "stash", "-q")  # the user's own entry
    before = git(repo, "stash", "list", "--format=%H %gs")
    code, doc, err = run_json(repo)
    assert code == 0, err
    assert git(repo, "stash", "list", "--format=%H %gs") == before
    moved = git(repo, "for-each-ref", "--format=%(refname)", "refs/wvo-stash/").split()
    if land == "merge":  # landed: its branch deleted at clean-up, and its stash entries with it
        assert moved == [] and git(repo, "branch", "--list", "wvo/*/s") == ""
        return
    assert len(moved) == 1 and moved[0].startswith("refs/wvo-stash/wvo/")  # a kept branch keeps its entries
    assert git(repo, "show", f"{moved[0]}:README") == "hello\nmore\n"  # the task's stashed work, kept


def test_clean_up_deletes_the_stash_refs_of_landed_branches_only(tmp_path):
    repo = make_repo(tmp_path, "tasks: []\n")
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    landed, kept = spaces.create("t"), spaces.create("t")  # wvo/run1/t and wvo/run1/t-2: one a prefix of the other
    for ws in (landed, kept):
        (Path(ws.path) / "README").write_text(ws.branch + "\n")
        subprocess.run(["git", "-C", ws.path, "stash", "-q"], check=True, env=GIT_ENV)
        (Path(ws.path) / "f.txt").write_text(ws.branch + "\n")
        spaces.commit_all(ws, "t")
    assert Lander(spaces).land(landed.branch, "t").__class__.__name__ == "Landed"
    spaces.finish()
    left = git(repo, "for-each-ref", "--format=%(refname)", "refs/wvo-stash/").split()
    assert left == [f"refs/wvo-stash/{kept.branch}/0"], left
    assert git(repo, "show", f"{left[0]}:README") == kept.branch + "\n"


def test_stash_entries_interleaved_with_the_users_are_all_moved_and_the_users_keep_their_order(tmp_path):
    repo = make_repo(tmp_path, "tasks: []\n")
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    ws = spaces.create("t")
    for who, folder in (("user-a", repo), ("task-1", Path(ws.path)), ("user-b", repo), ("task-2", Path(ws.path))):
        (folder / "README").write_text(who + "\n")
        subprocess.run(["git", "-C", str(folder), "stash", "-q", "-m", who], check=True, env=GIT_ENV)
    spaces.commit_all(ws, "t")  # nothing to commit: the snapshot still moves the stash entries
    assert [line.split(": ", 1)[1] for line in git(repo, "stash", "list", "--format=%gs").splitlines()] == ["user-b", "user-a"]
    moved = git(repo, "for-each-ref", "--format=%(refname) %(subject)", f"refs/wvo-stash/{ws.branch}/").splitlines()
    assert [m.split(" ", 1)[1].split(": ", 1)[1] for m in moved] == ["task-1", "task-2"]


def test_the_users_sparse_checkout_does_not_make_the_tasks_worktree_sparse(tmp_path):
    roadmap = WORKTREE + "tasks:\n  - id: e\n    command: \"echo more >> e/b && echo new > e/new.txt\"\n"
    repo = make_repo(tmp_path, roadmap, {"d/a": "a\n", "e/b": "b\n"})
    git(repo, "sparse-checkout", "set", "d")
    config = (repo / ".git" / "config").read_text(), (repo / ".git" / "config.worktree").read_text()
    assert not (repo / "e").exists()
    code, doc, err = run_json(repo)
    assert code == 0, err
    assert git(repo, "show", "wvo/roadmap:e/b") == "b\nmore\n"
    assert git(repo, "show", "wvo/roadmap:e/new.txt") == "new\n"
    assert not (repo / "e").exists()  # the user's checkout is as sparse as before
    assert ((repo / ".git" / "config").read_text(), (repo / ".git" / "config.worktree").read_text()) == config


def test_a_branch_moved_backwards_is_not_reported_landed(tmp_path):
    roadmap = WORKTREE + "tasks:\n  - id: back\n    command: \"git reset -q --hard HEAD~1\"\n"
    repo = make_repo(tmp_path, roadmap)
    (repo / "six.txt").write_text("".join(f"{i}\n" for i in range(6)))
    git(repo, "add", "six.txt")
    git(repo, "commit", "-qm", "six lines")
    code, doc, err = run_json(repo)
    assert code == 1, err
    row = rows(doc)["back"]
    assert row["status"] == "failed", row
    assert "FAIL  back" in err and "which does not contain" in err and "landed" not in err
    assert git(repo, "rev-parse", "wvo/roadmap") == git(repo, "rev-parse", "main")  # nothing landed


def test_the_lander_refuses_a_branch_behind_the_commit_its_attempt_started_from(tmp_path):
    repo = make_repo(tmp_path, "tasks: []\n")
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    ws = spaces.create("t")
    (Path(ws.path) / "t.txt").write_text("t\n")
    spaces.commit_all(ws, "t")
    git(repo, "update-ref", f"refs/heads/{ws.branch}", f"{ws.base_commit}~1")  # moved back after its commit
    into = git(repo, "rev-parse", "wvo/into")
    with pytest.raises(WorkspaceError, match="no longer contains"):
        Lander(spaces).land(ws.branch, "t")
    assert git(repo, "rev-parse", "wvo/into") == into
    assert spaces.owned()[ws.branch]["state"] == "refused"


# --- 4. submodules -------------------------------------------------------------------------------------


SUB = "git -c protocol.file.allow=always submodule -q update --init"


def test_work_inside_a_submodule_is_refused_naming_it_and_kept(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    git(sub, "-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "--allow-empty", "-m", "s")
    roadmap = WORKTREE + (
        "tasks:\n"
        f"  - id: commits\n    command: \"{SUB} && echo x > lib/new && git -C lib add -A && git -C lib -c user.name=A "
        "-c user.email=a@example.invalid commit -qm inside\"\n"
        f"  - id: edits\n    command: \"{SUB} && echo y > lib/edit\"\n"
        "  - id: clones\n    command: \"git init -q vendor && git -C vendor -c user.name=A -c user.email=a@example.invalid "
        "commit -q --allow-empty -m v\"\n"
    )
    repo = make_repo(tmp_path / "r", roadmap)
    git(repo, "-c", "protocol.file.allow=always", "submodule", "-q", "add", str(sub), "lib")
    git(repo, "commit", "-qm", "add lib")
    into_before = git(repo, "rev-parse", "main")
    code, doc, err = run_json(repo, "--agents", "3")
    assert code == 1, err
    r = rows(doc)
    for tid, path in (("commits", "lib"), ("edits", "lib"), ("clones", "vendor")):
        assert r[tid]["status"] == "failed", r[tid]
        line = next(x for x in err.splitlines() if x.startswith(f"FAIL  {tid} "))
        assert f"submodule(s) or nested repositories cannot be carried by the task's branch: {path} (" in line
    assert git(repo, "rev-parse", "wvo/roadmap") == into_before  # no gitlink to nowhere landed
    kept = {Path(p).name: Path(p) for p in doc["workspaces"]["worktrees_kept"]}
    assert (kept["commits"] / "lib" / "new").exists() and (kept["edits"] / "lib" / "edit").exists()


def test_a_submodule_moved_to_a_commit_its_upstream_has_lands(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    git(sub, "-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "--allow-empty", "-m", "s1")
    roadmap = WORKTREE + f"tasks:\n  - id: bump\n    command: \"{SUB} && git -C lib checkout -q origin/main\"\n"
    repo = make_repo(tmp_path / "r", roadmap)
    git(repo, "-c", "protocol.file.allow=always", "submodule", "-q", "add", str(sub), "lib")
    git(repo, "commit", "-qm", "add lib")
    git(sub, "-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "--allow-empty", "-m", "s2")
    code, doc, err = run_json(repo)
    assert code == 0, err
    assert git(repo, "rev-parse", "wvo/roadmap:lib").strip() == git(sub, "rev-parse", "main").strip()


# --- 5. clean-up and recovery go on past one bad worktree ------------------------------------------


def test_clean_up_goes_on_past_a_reinitialised_worktree_and_reports_it(tmp_path):
    roadmap = WORKTREE + (
        "tasks:\n"
        "  - id: reinit\n    command: \"rm -f .git && git init -q . && echo r > r.txt\"\n"
        "  - id: locks\n    command: \"git worktree lock --reason mine \\\"$WVO_WORKTREE\\\" && echo l > l.txt\"\n"
        "  - id: plain\n    command: \"echo p > p.txt\"\n"
    )
    repo = make_repo(tmp_path, roadmap)
    code, doc, err = run_json(repo, "--agents", "3")
    assert code == 1, err
    r = rows(doc)
    assert r["locks"]["status"] == "succeeded" and r["plain"]["status"] == "succeeded", r
    assert r["reinit"]["status"] == "failed"
    assert "is a repository of its own" in err
    assert git(repo, "branch", "--list", "wvo/*/locks", "wvo/*/plain").strip() == ""  # landed branches deleted
    assert [Path(p).name for p in doc["workspaces"]["worktrees_kept"]] == ["reinit"]
    assert len(worktrees(repo)) == 2  # the user's and the kept one


def test_recovery_saves_and_removes_the_others_when_one_worktree_is_not_ours_any_more(tmp_path):
    repo = make_repo(tmp_path, "tasks: []\n")
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    good, bad = spaces.create("good"), spaces.create("bad")
    (Path(good.path) / "g.txt").write_text("g\n")
    (Path(bad.path) / ".git").unlink()
    subprocess.run(["git", "init", "-q", bad.path], check=True, env=GIT_ENV, capture_output=True)
    again = Workspaces.open(tmp_path / "state")
    rec = again.recover()
    assert good.path in rec.removed and not Path(good.path).exists()
    assert git(repo, "show", f"{good.branch}:g.txt") == "g\n"  # saved as WIP before removal
    assert bad.path not in rec.removed and Path(bad.path).is_dir()
    assert any(p.startswith(f"{bad.branch}: worktree {bad.path} kept:") for p in rec.problems), rec.problems


# --- 6. cwd: relative to the worktree ------------------------------------------------------------------


def test_a_tasks_cwd_is_the_same_folder_of_its_worktree(tmp_path):
    repo = make_repo(tmp_path, "tasks: []\n", {"src/pkg/x.py": ""})
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    ws = spaces.create("t")
    assert sealed.worktree_cwd(ws.path, repo, None) == ws.path
    assert sealed.worktree_cwd(ws.path, repo, str(repo / "src" / "pkg")) == os.path.join(ws.path, "src", "pkg")
    assert sealed.worktree_cwd(ws.path, repo, "src") == os.path.join(ws.path, "src")
    with pytest.raises(WorkspaceError, match="outside the repository"):
        sealed.worktree_cwd(ws.path, repo, str(tmp_path))
    (repo / "build").mkdir()  # the user's untracked folder: not in the worktree
    with pytest.raises(WorkspaceError, match="no folder build in the worktree"):
        sealed.worktree_cwd(ws.path, repo, str(repo / "build"))


def test_the_fence_stops_any_git_climbing_from_a_worktree_without_dot_git(tmp_path):
    home = dotfiles_home(tmp_path)
    repo = make_repo(tmp_path / "r", "tasks: []\n")
    spaces = Workspaces(repo, home / ".wvo" / "ws", "run1", "wvo/into")
    ws = spaces.create("t")
    (Path(ws.path) / ".git").unlink()
    proc = subprocess.run(["git", "status"], cwd=ws.path, capture_output=True, text=True, env=GIT_ENV)
    assert proc.returncode != 0 and "not a git repository" in proc.stderr
    with pytest.raises(WorkspaceError, match="its .git is gone"):
        spaces.commit_all(ws, "t")


def test_a_cut_diff_names_every_changed_file_or_says_how_many_it_left_out(tmp_path):
    repo = make_repo(tmp_path, "tasks: []\n")
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    ws = spaces.create("t")
    for i in range(61):
        (Path(ws.path) / f"f{i:02}.txt").write_text("x\n" * 200)
    (Path(ws.path) / "zzz-backdoor.sh").write_text("evil\n")
    spaces.commit_all(ws, "t")
    text = spaces.diff_text(ws.branch, ws.base_commit, cap_bytes=20_000)
    assert "[diff cut at" in text and "zzz-backdoor.sh" in text.split("[diff cut at", 1)[1]
    small = spaces.diff_text(ws.branch, ws.base_commit, cap_bytes=1_000)
    assert "in all 62 files" in small and "zzz-backdoor.sh" in small.split("[diff cut at", 1)[1]  # every file named
