"""The worktree seal covers the user's refs and config (invariant 7): a task's git moves only its own branch.

Real repositories, the real `wvo-batch` command, shell commands as the agents. A task tries to move
`main`, retag, delete a branch, commit on a branch it checked out or in the user's checkout: each is
refused by the run's reference-transaction hook with the sealed message, and the user's refs are as
they were; so are its checks and set-up, a critic and a landing check, locally and on Ray. A task
that commits as usual still runs the user's hooks and lands. A change of the shared config fails the
attempt (or the review, or the landing), naming the key. Then the rule alone, on one worktree.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from conftest import wvo
from test_worktrees import WORKTREE, git, make_repo, rows

pytestmark = pytest.mark.timeout(120)

SEALED = "the worktree is sealed"
COMMIT = "echo w > w.txt && git add w.txt && git commit -qm work"  # HEAD now differs from every user ref


def user_refs(repo: Path) -> str:
    """Every ref but the run's own branches (wvo/...) and its stash refs: what the user would notice."""
    return "\n".join(line for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
                     if not line.startswith(("refs/heads/wvo/", "refs/wvo-stash/")))


def user_repo(tmp_path: Path, roadmap: str) -> Path:
    repo = make_repo(tmp_path, roadmap)
    git(repo, "branch", "feature")
    git(repo, "tag", "v1")
    git(repo, "tag", "-a", "-m", "annotated", "v2")
    return repo


def attacks(repo: Path) -> dict[str, str]:
    """Task id -> a command that would move a ref of the user's."""
    return {
        "update_ref": "git update-ref refs/heads/main HEAD",
        "branch_force": "git branch -f feature HEAD",
        "retag": "git tag -f v1 HEAD",
        "delete_branch": "git branch -D feature",
        "delete_tag": "git tag -d v2",
        "new_tag": "git tag v3",
        "notes": "git notes add -m note HEAD",
        "checkout_commit": "git checkout -q feature && git commit -q --allow-empty -m on-feature",
        "users_checkout": f"git -C {shlex.quote(str(repo))} commit -q --allow-empty -m in-your-checkout",
    }


def attack_roadmap(names) -> str:
    return WORKTREE + "tasks:\n" + "".join(f"  - id: {n}\n    command: PLACEHOLDER_{n}\n" for n in names)


def run_attacks(tmp_path: Path, *args: str, only=None, timeout: float = 90):
    names = list(only or attacks(Path("/x")))
    repo = user_repo(tmp_path, attack_roadmap(names))
    text = (repo / "roadmap.yaml").read_text()
    for name, command in attacks(repo).items():
        text = text.replace(f"PLACEHOLDER_{name}\n", json.dumps(f"{COMMIT} && {command}") + "\n")
    (repo / "roadmap.yaml").write_text(text)  # not committed: the tasks' worktrees start from `main` as it is
    before, config = user_refs(repo), (repo / ".git" / "config").read_bytes()
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", *args, timeout=timeout, cwd=repo)
    assert proc.returncode == 1, proc.stderr  # some task failed: the exit decision's 1
    doc = json.loads(proc.stdout)
    assert user_refs(repo) == before
    assert (repo / ".git" / "config").read_bytes() == config  # the hooks reached the tasks through their environment
    r = rows(doc)
    for name in names:
        assert r[name]["status"] == "failed", (name, r[name])
        log = Path(r[name]["log"]).read_text()
        assert SEALED in log, (name, log)
        assert "work" in git(repo, "log", "--format=%s", r[name]["workspace"]["branch"])  # its commit kept on its branch
    return repo, r


def test_a_task_cannot_move_retag_or_delete_the_users_refs(tmp_path):
    repo, r = run_attacks(tmp_path, "--agents", "3")
    assert "refs/heads/main may not be changed" in Path(r["update_ref"]["log"]).read_text()
    assert "refs/tags/v1 may not be changed" in Path(r["retag"]["log"]).read_text()
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["initial"]


def test_a_tasks_checks_and_set_up_cannot_move_the_users_refs_either(tmp_path):
    roadmap = WORKTREE + ("tasks:\n"
                          "  - id: check\n    command: \"echo c > c.txt\"\n    checks: [\"git update-ref refs/heads/main HEAD\"]\n"
                          "  - id: setup\n    workspace: {setup: [\"git tag -f v1 HEAD~0\"]}\n    command: \"echo s > s.txt\"\n")
    repo = user_repo(tmp_path, roadmap)
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")  # v1 now behind HEAD: retagging would move it
    before = user_refs(repo)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", timeout=90, cwd=repo)
    assert proc.returncode == 1, proc.stderr
    r = rows(json.loads(proc.stdout))
    assert r["check"]["status"] == "check_failed" and SEALED in Path(r["check"]["log"]).read_text()
    assert r["setup"]["status"] == "setup_failed" and SEALED in Path(r["setup"]["log"]).read_text()
    assert user_refs(repo) == before


@pytest.mark.ray
def test_on_ray_a_task_cannot_move_or_retag_the_users_refs(tmp_path):
    pytest.importorskip("ray")
    run_attacks(tmp_path, "--backend", "ray", "--agents", "1", only=["update_ref", "retag"], timeout=110)


@pytest.mark.parametrize("where", ["hooks folder", "relative core.hooksPath"])
def test_the_users_hooks_still_run_and_a_normal_commit_lands(tmp_path, where):
    marker = tmp_path / "marker"
    roadmap = WORKTREE + ("tasks:\n"
                          "  - id: t\n    command: \"echo mine > f.txt && git add f.txt && git commit -qm 'task commit'\"\n"
                          "  - id: own_repo\n    command: OWN\n")
    repo = make_repo(tmp_path, roadmap)
    hook = f"#!/bin/sh\necho \"$(basename \"$0\") in $PWD\" >> {shlex.quote(str(marker))}\n"
    if where == "hooks folder":
        folder = repo / ".git" / "hooks"
    else:  # relative: git finds it from the top of each worktree, so the committed copy runs there
        folder = repo / ".githooks"
        folder.mkdir()
        git(repo, "config", "core.hooksPath", ".githooks")
    for name in ("pre-commit", "reference-transaction"):
        (folder / name).write_text(hook)
        (folder / name).chmod(0o755)
    # a repository the task makes for itself (its own tests may): neither guarded nor robbed of its hooks
    own = ("d=$(mktemp -d) && git -C $d init -q && printf '#!/bin/sh\\ntouch hook-ran\\n' > $d/.git/hooks/pre-commit"
           " && chmod +x $d/.git/hooks/pre-commit && git -C $d -c user.name=t -c user.email=t@t.invalid commit -q"
           " --allow-empty -m a && git -C $d branch -f other && git -C $d tag t1 && test -e $d/hook-ran"
           " && rm -rf $d && echo ok > own.txt")
    (repo / "roadmap.yaml").write_text(roadmap.replace("OWN", json.dumps(own)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-verify", "-m", "hooks")
    marker.unlink(missing_ok=True)  # the user's own commit just above ran them too
    before, config = user_refs(repo), (repo / ".git" / "config").read_bytes()
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", timeout=90, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    r = rows(json.loads(proc.stdout))
    assert r["t"]["status"] == r["own_repo"]["status"] == "succeeded"
    assert git(repo, "show", "wvo/roadmap:f.txt") == "mine\n"  # landed
    ran = marker.read_text().splitlines()
    worktree = str(tmp_path / "state")
    assert any(line.startswith("pre-commit in " + worktree) for line in ran), ran  # in the task's worktree
    assert any(line.startswith("reference-transaction in " + worktree) for line in ran), ran  # after our guard
    assert (repo / ".git" / "config").read_bytes() == config
    assert user_refs(repo) == before


def test_a_task_that_changes_the_shared_config_fails_naming_the_key(tmp_path):
    roadmap = WORKTREE + ("tasks:\n  - id: cfg\n    command: \"echo x > f.txt && git config core.hooksPath /elsewhere\"\n")
    repo = make_repo(tmp_path, roadmap)
    before = (repo / ".git" / "config").read_text()
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", timeout=90, cwd=repo)
    assert proc.returncode == 1, proc.stderr
    row = rows(json.loads(proc.stdout))["cfg"]
    assert row["status"] == "failed"
    assert "shared config changed while the attempt ran (.git/config: core.hookspath added)" in row["reason"]
    assert "/elsewhere" not in row["reason"]  # keys, not values: a value may be a secret
    assert git(repo, "log", "--format=%s", "wvo/roadmap").splitlines() == ["initial"]  # not landed
    after = (repo / ".git" / "config").read_text()
    assert after.replace("\thooksPath = /elsewhere\n", "") == before  # the task's change alone: nothing put back
    assert os.path.exists(row["log"]) and "not put back" in Path(row["log"]).read_text()


CRITIC_AGENT = r"""
if [ -n "$WVO_REVIEW" ]; then
  git -c user.name=c -c user.email=c@example.invalid commit -q --allow-empty -m by-the-critic || exit 3
  git update-ref refs/heads/main HEAD 2>> "$OUT/critic.err"; echo "update-ref $?" >> "$OUT/critic.codes"
  git tag -f v1 HEAD 2>> "$OUT/critic.err"; echo "tag $?" >> "$OUT/critic.codes"
  echo "mine=$(git config --get wvo.mine)" >> "$OUT/critic.codes"
  echo "VERDICT: APPROVE"
else
  echo hello > hello.txt
fi
"""


def test_a_critic_cannot_move_the_users_refs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    roadmap = ("executor:\n  command: [/bin/sh, -c, " + json.dumps(CRITIC_AGENT) + ", agent, '{prompt}']\n"
               "agents: {worker: 1, critic: 1}\n" + WORKTREE +
               f"defaults:\n  review: true\n  env: {{OUT: {json.dumps(str(out))}, {USER_CONFIG}}}\n"
               "tasks:\n  - id: T1\n    title: greet\n")
    repo = user_repo(tmp_path, roadmap)
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")  # v1 behind main: a retag would move it
    before = user_refs(repo)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", timeout=90, cwd=repo)
    assert proc.returncode == 0, proc.stderr  # the critic's approval counts: its refused git changed nothing
    assert user_refs(repo) == before
    # the roadmap's own config entries are seen by the critic's git, and did not switch the guard off
    assert (out / "critic.codes").read_text().split("\n")[:3] == ["update-ref 128", "tag 128", "mine=seen"]
    assert (out / "critic.err").read_text().count(SEALED) == 2


def test_a_landing_check_cannot_move_the_users_refs(tmp_path):
    retag = "case $PWD in */landing*) git tag -f v1 HEAD ;; esac"  # only on the merged result
    roadmap = WORKTREE + ("tasks:\n  - id: t\n    command: \"echo t > t.txt\"\n    checks: [" + json.dumps(retag) + "]\n")
    repo = user_repo(tmp_path, roadmap)
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    before = user_refs(repo)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", timeout=90, cwd=repo)
    assert proc.returncode == 1, proc.stderr
    row = rows(json.loads(proc.stdout))["t"]
    assert row["status"] == "check_failed", row
    assert SEALED in Path(row["log"]).read_text()
    assert user_refs(repo) == before
    assert git(repo, "log", "--format=%s", "wvo/roadmap").splitlines() == ["second", "initial"]  # not landed


# --- a roadmap `env:` that gives git config entries of its own ---------------------------------------------

# Two entries, as a user gives them (safe.directory for a checkout owned by another user, and a key of their
# own): the task's git sees both, and the guard's entry, put after them, still wins.
USER_CONFIG = ("GIT_CONFIG_COUNT: 2, GIT_CONFIG_KEY_0: safe.directory, GIT_CONFIG_VALUE_0: '*', "
               "GIT_CONFIG_KEY_1: wvo.mine, GIT_CONFIG_VALUE_1: seen")


def test_a_roadmap_env_with_git_config_entries_keeps_them_and_the_guard(tmp_path, backend):
    mine = 'echo "mine=$(git config --get wvo.mine)"'
    seen = 'test "$(git config --get wvo.mine)" = seen'
    moves = "git update-ref refs/heads/main HEAD; git branch -f feature HEAD"  # (git itself refuses `branch -f main`)
    landing_check = "case $PWD in */landing*) git tag -f v1 HEAD ;; esac"  # only on the merged result
    roadmap = WORKTREE + (f"defaults:\n  env: {{{USER_CONFIG}}}\n"
                          "tasks:\n"
                          f"  - id: attack\n    command: {json.dumps(f'{mine} && {COMMIT} && {{ {moves}; }}')}\n"
                          f"  - id: lands\n    command: {json.dumps(f'{mine} && echo t > t.txt')}\n"
                          f"    checks: [{json.dumps(seen)}, {json.dumps(landing_check)}]\n")
    repo = user_repo(tmp_path, roadmap)
    before = user_refs(repo)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", "--agents", "2", *backend,
               timeout=110, cwd=repo)
    assert proc.returncode == 1, proc.stderr  # both tasks fail: the exit decision's 1
    r = rows(json.loads(proc.stdout))
    assert user_refs(repo) == before
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["initial"]
    log = Path(r["attack"]["log"]).read_text()
    assert r["attack"]["status"] == "failed" and "mine=seen" in log, log
    assert "refs/heads/main may not be changed" in log and "refs/heads/feature may not be changed" in log, log
    # the task's own checks saw the entry too (the first passed in the worktree), and in the landing worktree
    # the entry was seen (the first check passed again) and the guard refused the retag (the second failed)
    log = Path(r["lands"]["log"]).read_text()
    assert r["lands"]["status"] == "check_failed" and "mine=seen" in log, r["lands"]
    assert "refs/tags/v1 may not be changed" in log and SEALED in log, log
    assert "landing check 2/2" in log, log


REFUSED_ENV = {  # what a worktree task's env: sets -> the variable the error names
    "GIT_DIR: /elsewhere/.git": "GIT_DIR",
    "GIT_WORK_TREE: /elsewhere": "GIT_WORK_TREE",
    "GIT_INDEX_FILE: /elsewhere/index": "GIT_INDEX_FILE",
    "GIT_COMMON_DIR: /elsewhere/.git": "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY: /elsewhere/objects": "GIT_OBJECT_DIRECTORY",
    "GIT_CONFIG_PARAMETERS: \"'core.hookspath'='/x'\"": "GIT_CONFIG_PARAMETERS",
    "WVO_SEAL_BRANCH: refs/heads/main": "WVO_SEAL_BRANCH",
    "GIT_CONFIG_COUNT: two, GIT_CONFIG_KEY_0: a.b, GIT_CONFIG_VALUE_0: x": "GIT_CONFIG_COUNT",
    "GIT_CONFIG_COUNT: 2, GIT_CONFIG_KEY_0: a.b, GIT_CONFIG_VALUE_0: x": "GIT_CONFIG_KEY_1",
    "GIT_CONFIG_COUNT: 1, GIT_CONFIG_KEY_0: core.hooksPath, GIT_CONFIG_VALUE_0: /x": "GIT_CONFIG_KEY_0",
}


@pytest.mark.parametrize("env", list(REFUSED_ENV), ids=list(REFUSED_ENV.values()))
def test_a_worktree_tasks_env_that_would_escape_or_undo_the_guard_is_refused_before_anything_runs(tmp_path, env):
    roadmap = WORKTREE + f"tasks:\n  - id: fine\n    command: \"true\"\n  - id: bad\n    command: \"true\"\n    env: {{{env}}}\n"
    repo = user_repo(tmp_path, roadmap)
    before = user_refs(repo)
    proc = wvo("roadmap.yaml", "--state-dir", tmp_path / "state", timeout=60, cwd=repo)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = proc.stderr.strip()
    assert line.startswith(f"wvo-batch: roadmap.yaml:6: task bad: `env.{REFUSED_ENV[env]}` "), line
    assert len(line.splitlines()) == 1, line
    assert not (tmp_path / "state").exists()  # nothing ran, not even the task that was fine
    assert user_refs(repo) == before


def test_what_a_worktree_tasks_env_may_set_and_a_shared_tasks_env_as_written(tmp_path):
    roadmap = ("defaults:\n  env: {GIT_CONFIG_GLOBAL: /dev/null, GIT_CONFIG_NOSYSTEM: 1, " + USER_CONFIG + "}\n"
               "tasks:\n  - id: wt\n    workspace: {mode: worktree}\n    command: \"true\"\n"
               "  - id: shared\n    workspace: {mode: shared}\n    command: \"true\"\n"
               "    env: {GIT_DIR: /elsewhere/.git, GIT_CONFIG_COUNT: x}\n")  # no guard there: the user's word
    repo = user_repo(tmp_path, roadmap)
    proc = wvo(repo / "roadmap.yaml", "--check", timeout=60, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    proc = wvo(repo / "roadmap.yaml", "--check", "--workspace", "worktree", timeout=60, cwd=repo)  # now both are
    assert proc.returncode == 2 and "task shared: `env.GIT_DIR`" in proc.stderr, proc.stderr


# --- the rule itself, on one worktree made by Workspaces (no run) ------------------------------------------


def guarded_worktree(tmp_path: Path):
    from runner.coding import sealed
    from runner.coding.gitenv import environment
    from runner.coding.workspace import Workspaces

    repo = user_repo(tmp_path, "tasks: []\n")
    remote = tmp_path / "remote"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    spaces = Workspaces(repo, tmp_path / "state", "run1", "wvo/into")
    ws = spaces.create("t")
    env = environment(os.environ, ws.path, (spaces.hooks(), sealed.admin_dir(ws.path, spaces.common_dir()).resolve(),
                                            ws.branch))
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    return repo, spaces, ws, env


def task_git(cwd, env, *args) -> tuple[int, str]:
    import subprocess

    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("copies", [False, True], ids=["links", "copies"])
def test_the_rule_allowed_and_refused_updates(tmp_path, monkeypatch, copies):
    if copies:  # the installed scripts lost their executable bit: copies of them are made, and work the same
        from runner.coding import refguard

        plain = tmp_path / "githooks"
        plain.mkdir()
        for f in refguard.SCRIPTS.iterdir():
            (plain / f.name).write_text(f.read_text())
        monkeypatch.setattr(refguard, "SCRIPTS", plain)
    repo, spaces, ws, env = guarded_worktree(tmp_path)
    hooks = spaces.hooks()
    assert (hooks / "pre-commit").is_symlink() is not copies and os.access(hooks / "pre-commit", os.X_OK)
    wt = ws.path
    allowed = [
        ("commit", "-q", "--allow-empty", "-m", "mine"),  # its branch and HEAD
        ("fetch", "-q", "origin"),  # refs/remotes/origin/*
        ("reset", "-q", "--hard", "HEAD"),  # ORIG_HEAD
        ("update-ref", "refs/worktree/x", "HEAD"),
        ("update-ref", "refs/bisect/bad", "HEAD"),
        ("checkout", "-q", "--detach"), ("commit", "-q", "--allow-empty", "-m", "detached"),  # HEAD alone
    ]
    for args in allowed:
        code, err = task_git(wt, env, *args)
        assert code == 0, (args, err)
    (Path(wt) / "README").write_text("stashed\n")
    assert task_git(wt, env, "stash", "-q") == (0, "")  # refs/stash, moved off the user's list by the snapshot
    before = user_refs(repo)
    refused = [
        (wt, ("update-ref", "refs/heads/main", "HEAD")),
        (wt, ("branch", "newbranch")),
        (wt, ("tag", "-f", "v1")),
        (wt, ("update-ref", "refs/replace/" + git(repo, "rev-parse", "v1").strip(), "HEAD")),
        (wt, ("update-ref", "main-worktree/HEAD", "HEAD")),
        (repo, ("update-ref", "ORIG_HEAD", "HEAD")),  # the user's checkout's own pseudo-ref
        (repo, ("checkout", "-q", "--detach")),  # the user's HEAD
    ]
    for cwd, args in refused:
        code, err = task_git(cwd, env, *args)
        assert code != 0 and SEALED in err, (args, code, err)
        assert err.count("\n") == 2, err  # our line and git's
    assert user_refs(repo) == before
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main\n"


def test_a_config_change_by_a_landing_check_or_a_critic_fails_it_naming_the_key(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    critic = 'if [ -n "$WVO_REVIEW" ]; then git config wvo.critic yes; echo "VERDICT: APPROVE"; else echo hi > hi.txt; fi'
    landing_check = "case $PWD in */landing*) git config wvo.landing yes ;; esac"
    roadmap = ("executor:\n  command: [/bin/sh, -c, " + json.dumps(critic) + ", agent, '{prompt}']\n"
               "agents: {worker: 1, critic: 1}\n" + WORKTREE +
               "tasks:\n  - id: reviewed\n    title: r\n    review: true\n"
               "  - id: landed\n    title: l\n    checks: [" + json.dumps(landing_check) + "]\n")
    repo = make_repo(tmp_path, roadmap)
    proc = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "--json", timeout=90, cwd=repo)
    assert proc.returncode == 1, proc.stderr
    r = rows(json.loads(proc.stdout))
    assert r["reviewed"]["status"] == "failed", r["reviewed"]
    # the two may run at once: each names what changed while it ran, the other's change too
    assert "shared config changed during the review (.git/config: " in r["reviewed"]["reason"]
    assert "wvo.critic added" in r["reviewed"]["reason"]
    assert r["landed"]["status"] == "check_failed", r["landed"]
    assert "shared config changed during the landing checks (.git/config: " in r["landed"]["reason"]
    assert "wvo.landing added" in r["landed"]["reason"]
    assert git(repo, "log", "--format=%s", "wvo/roadmap").splitlines() == ["initial"]  # neither landed


def test_a_config_change_is_named_by_key_never_by_value():
    from runner.coding.refguard import config_change

    before = (b'[core]\n\tbare = false\n[remote "origin"]\n\turl = https://tok@host/r\n', None)
    after = (b'[core]\n\tbare = false\n\thooksPath = /x\n[remote "origin"]\n\turl = https://other@host/r\n'
             b'[url "https://user:secret@host/"]\n\tinsteadOf = https://host/\n', b"[core]\n\tbare = true\n")
    what = config_change(before, after)
    assert what == (".git/config: core.hookspath added, url.https://***@host/.insteadof added, remote.origin.url changed; "
                    ".git/config.worktree: core.bare added")
    assert "secret" not in what and "tok" not in what and "/x" not in what
    assert config_change(before, before) == ""
    assert config_change(before, (before[0] + b"# a comment\n", None)) == ".git/config: rewritten"
