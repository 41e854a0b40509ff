"""The sealed worktree: what a task, its checks and its critic see of git, and what we refuse to follow.

    caller's environment ──environment()──▶ no variable that points git at a repository, an index,
      (a git hook's: GIT_DIR,               a work tree, an object store or a config; with a worktree,
       GIT_INDEX_FILE, ...)                 GIT_CEILING_DIRECTORIES = its parent: git stops there
    <state>/ws/.git  ──fence()──▶ a `.git` file that is no repository: a worktree whose own `.git` is
                                  gone meets it and git fails, whatever the environment
    <worktree>/.git ──admin_dir()──▶ still ours (it names our admin folder, which names it back), or refused

Why two pins on the climb upwards: the ceiling needs the environment, which a task may clear; the
fence is a file, which holds for every process (our git, the task's, its checks', a git hook's), and
needs nothing wired. Explicit GIT_DIR / GIT_WORK_TREE were the other choice; they would send every
git command of the task to the worktree, also those meant for another repository it clones or
for the worktree's submodules, so they are used only for our own commands.
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.coding.gitenv import CEILING, REPO_PREFIXES, REPO_VARIABLES, environment, points_at_repository  # noqa: F401 (re-exported)

FENCE_TEXT = "gitdir: (no repository here: wvo-batch stops git from climbing out of a worktree)\n"


def fence(folder: str | os.PathLike) -> None:
    """Put the fence in `folder` (the parent of every worktree of a run): git climbing from below fails there."""
    path = Path(folder) / ".git"
    try:
        if path.read_text() == FENCE_TEXT:
            return
    except OSError:
        pass
    Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".git.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(FENCE_TEXT)
    os.replace(tmp, path)


def admin_dir(worktree: str | os.PathLike, common_dir: str | os.PathLike) -> Path:
    """The admin folder of our linked worktree, after checking that it is still ours; raises WorkspaceError.

    Ours: its `.git` is a file naming <common>/worktrees/<name>, whose `gitdir` file names this `.git`
    back. A task that deleted `.git`, made it a repository of its own (`git init`) or pointed it
    elsewhere is refused: nothing of ours runs there, so nothing climbs to an enclosing repository.
    """
    top = Path(worktree)
    dot_git = top / ".git"
    why = None
    if dot_git.is_symlink() or not dot_git.exists():
        why = "its .git is gone" if not dot_git.is_symlink() else "its .git is a symbolic link"
    elif dot_git.is_dir():
        why = "its .git is a repository of its own (was it re-initialised?)"
    else:
        try:
            text = dot_git.read_text()
        except OSError as exc:
            text, why = "", f"its .git cannot be read ({exc.strerror})"
        if why is None and not text.startswith("gitdir:"):
            why = "its .git is not a worktree's"
        if why is None:
            admin = Path(text[len("gitdir:"):].strip())
            admin = (top / admin) if not admin.is_absolute() else admin
            if admin.resolve().parent != (Path(common_dir) / "worktrees").resolve():
                why = f"its .git points at {admin}, not at this repository's worktrees"
            else:
                try:
                    back = admin / (admin / "gitdir").read_text().strip()  # relative to the admin folder, if relative
                except OSError:
                    back = None
                if back is None or back.resolve() != dot_git.resolve():
                    why = f"its .git points at {admin}, which belongs to another worktree"
                else:
                    return admin
    raise _refused(
        f"worktree {top} is no longer a worktree of this run: {why}; nothing in it was committed, and the "
        f"folder is kept as it is")


def worktree_cwd(worktree: str | os.PathLike, repo: str | os.PathLike, cwd: str | None) -> str:
    """Where a task with `cwd:` runs in its worktree: the same place relative to the repository's top.

    cwd is the task's folder as loaded (absolute, or relative to the repository). Raises WorkspaceError
    when it is outside the repository, or is not a folder in the worktree (an untracked folder of the
    user's checkout is not in it).
    """
    top = Path(worktree)
    if not cwd:
        return str(top)
    repo_top = Path(repo).resolve()
    target = Path(cwd) if os.path.isabs(cwd) else repo_top / cwd
    target = Path(os.path.normpath(target))
    try:
        rel = target.relative_to(repo_top)
    except ValueError:
        try:
            rel = target.resolve().relative_to(repo_top)
        except ValueError:
            raise _refused(
                f"cwd {cwd}: outside the repository {repo_top}; in worktree mode a task runs in its worktree, "
                f"so its cwd must be a folder of the repository") from None
    folder = top / rel
    real_top = top.resolve()
    real = folder.resolve()
    if real != real_top and real_top not in real.parents:
        raise _refused(f"cwd {cwd}: leads out of the worktree ({real})")
    if not real.is_dir():
        raise _refused(f"cwd {cwd}: no folder {rel} in the worktree (is it committed on the branch the task starts from?)")
    return str(folder)


def _refused(message: str) -> Exception:
    from runner.coding.git import WorkspaceError  # not at import: an agent imports environment() alone

    return WorkspaceError(message)


# --- our own commands in a worktree (runner.coding.workspace calls these) ---------------------------


def check_worktree(git, worktree: str, common_dir: Path, *revs: str) -> tuple[Path, list[str]]:
    """admin_dir(), and git agrees from inside: it finds this work tree and this admin folder; (admin, revs resolved).

    Raises WorkspaceError when it does not. The revisions are resolved in the same git command.
    """
    admin = admin_dir(worktree, common_dir)
    proc = git.run(worktree, "rev-parse", "--show-toplevel", "--absolute-git-dir", *revs, check=False)
    found = proc.stdout.split("\n") if proc.returncode == 0 else []
    if [Path(p).resolve() for p in found[:2]] != [Path(worktree).resolve(), admin.resolve()]:
        what = " and ".join(found[:2]) if found else (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise _refused(f"worktree {worktree} is no longer a worktree of this run: git finds {what} there; nothing "
                       f"in it was committed, and the folder is kept as it is")
    return admin, found[2:2 + len(revs)]


def common_dir_of(repo: Path) -> Path | None:
    """The common .git folder of the checkout at `repo`, read from its files (no git run); None when they do not say."""
    dot_git = Path(repo) / ".git"
    try:
        if dot_git.is_dir():
            return dot_git.resolve()
        text = dot_git.read_text()
        if not text.startswith("gitdir:"):
            return None
        gitdir = Path(repo) / text[len("gitdir:"):].strip()  # an absolute path stays absolute
        common = gitdir / "commondir"
        if not common.exists():  # --separate-git-dir: that folder is the repository
            return gitdir.resolve()
        return (gitdir / common.read_text().strip()).resolve()
    except OSError:
        return None


def make_full(git, worktree: str, common_dir: Path) -> list[str]:
    """Check out the whole tree in a worktree made with --no-checkout, whatever the user's sparse settings.

    Only the worktree's own files are written (its config.worktree, or its sparse patterns): the user's
    config and checkout stay sparse. Returns the files still left out (none when it worked).
    """
    from runner.coding.git import GitError, WorkspaceError

    try:
        admin = admin_dir(worktree, common_dir)
        if git.run(worktree, "config", "--bool", "extensions.worktreeConfig", check=False).stdout.strip() == "true":
            git.run(worktree, "config", "--worktree", "core.sparseCheckout", "false")
        else:  # one config for all worktrees: a pattern that keeps everything, in this worktree's own file
            (admin / "info").mkdir(exist_ok=True)
            (admin / "info" / "sparse-checkout").write_text("/*\n")
        git.run(worktree, "reset", "-q", "--hard")
        return [line[2:] for line in git.out(worktree, "ls-files", "-t").splitlines() if line.startswith("S ")]
    except (GitError, WorkspaceError, OSError) as exc:
        return [f"({exc})"]


def refuse_lost_submodule_work(git, worktree: str, admin: Path, base_commit: str, tree: str) -> None:
    """Raise WorkspaceError naming each submodule or nested repository whose work the branch cannot carry.

    A gitlink to a commit that exists only in the worktree (made inside a submodule, or the commit of a
    repository cloned or initialised there without a .gitmodules entry) would land pointing nowhere once
    the worktree, and the submodule repositories in its admin folder, are removed; so would edits inside
    a submodule. A submodule moved to a commit its upstream has (on a remote-tracking branch) is fine.
    """
    at = (f"--git-dir={admin}", f"--work-tree={worktree}")
    lost = []
    raw = git.run(worktree, *at, "diff-tree", "-r", "-z", "--no-renames", base_commit, tree).stdout.split("\0")
    for meta, path in zip(raw[0::2], raw[1::2]):
        fields = meta.split()
        if (len(fields) >= 4 and fields[1] == "160000" and not git.ok(worktree, *at, "cat-file", "-e", f"{fields[3]}^{{commit}}")
                and not _upstream_has(git, worktree, path, fields[3])):
            lost.append(f"{path} (points at commit {fields[3][:12]}, which exists only inside the worktree)")
    if (admin / "modules").is_dir():  # a submodule was initialised in this worktree: edits inside it count too
        status = git.run(worktree, *at, "status", "--porcelain=v2", "-z", "--untracked-files=no",
                         "--ignore-submodules=none").stdout.split("\0")
        for rec in status:
            parts = rec.split(" ", 8)
            # "1 XY S<c><m><u> ...": <m> tracked changes, <u> untracked files inside the submodule
            if rec[:2] in ("1 ", "2 ") and len(parts) > 8 and parts[2].startswith("S") and parts[2][2:] != "..":
                path = parts[8] if rec[0] == "1" else parts[8].split(" ", 1)[-1]
                if not any(x.startswith(path + " ") for x in lost):
                    lost.append(f"{path} (has changes inside it that are not committed)")
    if lost:
        raise _refused(
            f"worktree {worktree}: work inside submodule(s) or nested repositories cannot be carried by the "
            f"task's branch: {'; '.join(lost)}. Nothing was committed; the worktree is kept so that the work "
            f"is not lost (commit it in the submodule's own repository and push it there)")


def _upstream_has(git, worktree: str, path: str, commit: str) -> bool:
    """True when `path` is a registered submodule whose repository has `commit` on a remote-tracking branch."""
    sub = Path(worktree) / path
    if not (sub / ".git").exists():
        return False
    registered = git.run(worktree, "config", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$", check=False)
    if path not in {line.split(" ", 1)[1] for line in registered.stdout.splitlines() if " " in line}:
        return False
    return bool(git.run(str(sub), "for-each-ref", "--count=1", "--contains", commit, "refs/remotes", check=False).stdout.strip())


def _stash_marks(branch: str) -> tuple[str, str]:
    return f"WIP on {branch}: ", f"On {branch}: "  # the messages of `git stash` in a worktree on `branch`


def stash_entries_of(common_dir: Path, branch: str) -> bool:
    """Whether the stash list may hold entries made on `branch`: a look at its reflog file, no git run."""
    marks = tuple("\t" + m for m in _stash_marks(branch))
    try:
        with open(common_dir / "logs" / "refs" / "stash", errors="replace") as f:
            return any(m in line for line in f for m in marks)
    except OSError:
        return False


def take_stash(git, repo: Path, branch: str, refs: str) -> list[str]:
    """Move the stash entries made on `branch` off the user's stash list to refs/<...>/<n>; the refs written.

    The stash list is shared by all worktrees (refs/stash in the common .git). Each entry of the
    task's is kept under `refs`, then dropped from the list; an entry of the user's that went
    missing meanwhile (their own `git stash` racing ours) is stored again: nothing is lost.
    """
    marks = _stash_marks(branch)
    entries = [line.split(" ", 1) for line in
               git.out(repo, "log", "-g", "--format=%H %gs", "refs/stash").splitlines() if " " in line]
    ours = [(i, sha) for i, (sha, subject) in enumerate(entries) if subject.startswith(marks)]
    written, n = [], 0
    for _, sha in reversed(ours):  # the oldest first, as they were made
        while n < 10_000 and not git.ok(repo, "update-ref", "-m", "wvo-batch: a task's stash entry", f"{refs}/{n}", sha, ""):
            n += 1
        written.append(f"{refs}/{n}")
        n += 1
    for i, sha in reversed(ours):  # the newest index first: the others keep their places
        if git.run(repo, "rev-parse", "--verify", "--quiet", f"refs/stash@{{{i}}}", check=False).stdout.strip() == sha:
            git.run(repo, "stash", "drop", "-q", f"refs/stash@{{{i}}}", check=False)
    left = set(git.run(repo, "log", "-g", "--format=%H", "refs/stash", check=False).stdout.split())
    mine = {sha for _, sha in ours}
    for sha, subject in reversed(entries):
        if sha not in mine and sha not in left:
            git.run(repo, "stash", "store", "-q", "-m", subject, sha, check=False)
    return written
