"""The landing queue: one task branch at a time merged onto `into`, checked in a worktree of our own, never the user's.

    merge-tree --write-tree <into> <branch>   ── conflict ──▶ Conflict(files)   (no worktree touched)
    commit-tree <tree> -p <into> -p <branch> -m "Land <id>: <title>"   (what `merge --no-ff` makes)
      │ landing worktree (<state>/landing, detached, reused): reset --hard <merge>; clean -fd
      │ checks(landing worktree)                          ── fail ──────▶ reset --hard <old>, ChecksFailed
      │ reset --hard <new>; clean -fd  (what a check rewrote or left is gone before the next landing)
      ▼
    update-ref refs/heads/<into> <new> <old>   (compare-and-swap: the only write to `into`)

Lander lands one branch at a time (`--resume`'s recovery). The run's queue is runner.coding.speculative:
it checks the next k branches in parallel, each merged on top of the ones ahead of it, with the same
helpers (merge_commit, reset_to); with k = 1 it does exactly what Lander does.

Strategy: a merge commit (`--no-ff`), not rebase + fast-forward. The agent's commits keep their ids,
so every landed branch tip is an ancestor of `into` (what `finish` verifies before deleting a branch),
`into`'s first-parent history has one commit per landed task, and the result depends only on the two
commits, the fixed message and the fixed identity.

Crash safety: until the update-ref, nothing but objects and our own worktree has changed; update-ref
replaces the ref through a lock file and a rename, so after a SIGKILL at any point `into` is either the
old tip or the merge, and the object store holds only whole objects (`git fsck` clean). A checkout left
half-done in the landing worktree is thrown away by `remove_landing_worktree` (it holds nothing that is
not on some branch), and `Workspaces.recover` sees a task already on `into` by ancestry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Callable, Union

from runner.coding.workspace import (  # noqa: F401 - the landing worktree helpers are re-exported
    BranchState,
    GitError,
    Workspace,
    WorkspaceError,
    Workspaces,
    ensure_landing_worktree,
    refuse_if_checked_out,
    remove_landing_worktree,
)
from runner.model import record

Checks = Callable[[str], "tuple[bool, str]"]  # checks(worktree path) -> (ok, detail)
LANDER = "wvo-batch"
_CAS_TRIES = 3  # `into` moved under us (someone else wrote it) this many times in a row: give up


@record(frozen=True)
class Landed:
    branch: str
    commit: str  # the new tip of `into` (the merge, or the old tip when the branch was on it already)
    already: bool = False


@record(frozen=True)
class Conflict:
    branch: str
    files: list[str]

    def __str__(self) -> str:
        return f"conflict landing {self.branch} in: {', '.join(self.files)}"


@record(frozen=True)
class ChecksFailed:
    branch: str
    detail: str


@record(frozen=True)
class Interrupted:
    """The run was stopped while the branch waited to land: it stays committed (`--resume` lands it)."""

    branch: str


LandResult = Union[Landed, Conflict, ChecksFailed]


class Lander:
    """Lands this run's task branches on `into`, one at a time (a lock serialises callers from several threads)."""

    def __init__(self, spaces: Workspaces, checks: Checks | None = None):
        self.spaces = spaces
        self.checks = checks
        self._lock = threading.Lock()

    def land(self, what: Workspace | str, title: str, checks: Checks | None = None) -> LandResult:
        """Merge a task branch onto `into`; Landed, Conflict or ChecksFailed.

        Raises WorkspaceError for a branch this run did not create, one moved behind the commit its attempt
        started from, or when `into` is checked out somewhere, GitError when git fails in another way (`into` is then untouched).
        """
        branch = what.branch if isinstance(what, Workspace) else what
        message = landing_message(self.spaces, branch, title)
        checks = checks or self.checks
        with self._lock:
            for _ in range(_CAS_TRIES):
                result = self._try(branch, message, checks)
                if result is not None:
                    return result
        raise WorkspaceError(f"{self.spaces.into!r} kept moving while {branch} was landed; is another program writing it?")

    def _try(self, branch: str, message: str, checks: Checks | None) -> LandResult | None:
        sp, git = self.spaces, self.spaces.git
        refuse_if_checked_out(sp.repo, sp.into, git)  # the user may have checked it out since the start
        path = ensure_landing_worktree(sp)
        old = git.out(path, "rev-parse", f"refs/heads/{sp.into}")
        merged = merge_commit(sp, old, branch, message)
        if isinstance(merged, list):
            sp.mark(branch, BranchState.CONFLICT, conflict=merged)
            return Conflict(branch, merged)
        new = merged
        if new == old:  # "Already up to date": the branch is on `into` already
            sp.mark(branch, BranchState.LANDED, landed=old)
            return Landed(branch, old, already=True)
        if checks is not None:
            try:
                reset_to(sp, path, new)  # the merged result checked out, nothing of an earlier landing left
                ok, detail = checks(str(path))
            except BaseException:
                reset_to(sp, path, old)
                raise
            reset_to(sp, path, new if ok else old)  # whatever the checks changed goes: the next landing starts clean
            if not ok:
                sp.mark(branch, BranchState.CHECKS_FAILED)
                return ChecksFailed(branch, detail)
        if not git.ok(sp.repo, "update-ref", "-m", f"wvo-batch: {message}", f"refs/heads/{sp.into}", new, old):
            return None  # `into` moved since we read it: merge again onto its new tip
        sp.mark(branch, BranchState.LANDED, landed=new)
        return Landed(branch, new)


def landing_message(sp: Workspaces, branch: str, title: str) -> str:
    """The merge message of a branch of this run, after checking it may land; raises WorkspaceError otherwise."""
    if not sp.is_ours(branch):
        raise WorkspaceError(f"branch {branch!r} was not created by this run; it is not landed")
    rec = sp.owned()[branch]
    base = rec.get("base_commit")
    if base and not sp.git.ok(sp.repo, "merge-base", "--is-ancestor", base, f"refs/heads/{branch}"):
        # moved back behind where its attempt started (`git reset --hard HEAD~1`): merging it would say
        # "landed" and land nothing
        sp.mark(branch, BranchState.REFUSED, why="behind its base commit")
        raise WorkspaceError(f"{branch} no longer contains {base[:12]}, the commit its attempt started from; it is not landed")
    return f"Land {rec['task']}: {(title.splitlines() or [''])[0]}".rstrip()


def merge_commit(sp: Workspaces, base: str, branch: str, message: str) -> str | list[str]:
    """The merge of a branch onto `base`, made without a worktree (`merge-tree`, then `commit-tree`): the merge
    commit (`base` itself when the branch is on it already), or the conflicting files. What `merge --no-ff`
    makes, tree, parents, message and identity, but nothing is checked out: the coordinator of the landing
    queue merges one candidate after another without waiting on a checkout. Raises GitError when git fails
    in another way."""
    git = sp.git
    # The branch's tip unless `base` holds it already ("Already up to date"): one git process. In topological
    # order the tip comes first, as every other commit listed is an ancestor of it that `base` lacks.
    tip = git.out(sp.repo, "rev-list", "--topo-order", "-n1", f"refs/heads/{branch}^{{commit}}", f"^{base}", "--")
    if not tip:
        return base  # "Already up to date"
    # The merge reads `.gitattributes` (merge drivers, eol) from its work tree: those of `base`, as `merge
    # --no-ff` in a worktree of into would, never the user's checkout. git reads them where it runs (from the
    # user's checkout it reads the checkout's files whatever --work-tree says), so it runs in a work tree of
    # ours holding nothing but base's .gitattributes files, the repository named by its git dir, with an
    # empty index of ours. That work tree is kept between merges and brought from the last base to this one
    # by what changed in their attributes files (_AttributesTree).
    scratch = _attributes_tree(sp)
    with scratch.lock:
        where = scratch.holding(git, sp, base)
        if os.path.exists(scratch.index):
            os.unlink(scratch.index)
        proc = git.run(*where, "merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", base, tip,
                       check=False, index=scratch.index)
    if proc.returncode not in (0, 1):
        raise GitError(["merge-tree", base, branch], proc.returncode, proc.stderr or proc.stdout)
    tree, *files = proc.stdout.split("\0")
    if proc.returncode == 1:
        return list(dict.fromkeys(f for f in files if f))  # a file in conflict in several ways is named once
    return git.out(sp.repo, "commit-tree", tree, "-p", base, "-p", tip, "-m", message, author=LANDER)


_ATTRIBUTES = ":(glob)**/.gitattributes"  # every .gitattributes file, at any depth (the top one included)
_scratches: "weakref.WeakKeyDictionary[Workspaces, _AttributesTree]" = weakref.WeakKeyDictionary()
_scratches_lock = threading.Lock()


def _attributes_tree(sp: Workspaces) -> "_AttributesTree":
    with _scratches_lock:
        scratch = _scratches.get(sp)
        if scratch is None:
            scratch = _scratches[sp] = _AttributesTree()
        return scratch


def remove_merge_trees(sp: Workspaces) -> None:
    """Remove the work tree merge_commit keeps for `sp` (at the run's end, after --resume's landing), and any a killed
    run left in its state dir (`merge-*`, ours alone: nothing else there is named so)."""
    with _scratches_lock:
        scratch = _scratches.pop(sp, None)
    if scratch is not None:
        with scratch.lock:
            scratch.folder = None
    for path in sp.state_dir.glob("merge-*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


class _AttributesTree:
    """A work tree of ours holding only the `.gitattributes` files of one commit (`commit`), for merge-tree.

    Brought to another commit by `git diff-tree` of the two, limited to attributes files: git compares
    trees by id and descends only where they differ, so a landing that changed a few files costs ~1 ms
    whatever the size of the repository (a full `ls-tree -r` of 100,000 files cost ~40 ms of git and as
    much again to read it). Exact: what it holds is a function of `commit` alone, and `commit` is set
    only once the files are written; anything unexpected empties it and the next merge starts afresh.
    Held under `lock` from the update to the end of the merge that reads it. Removed at the end of the run
    (remove_merge_trees), else with its Workspaces.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folder: str | None = None
        self.commit: str | None = None  # whose attributes files `tree` holds; None: start from nothing
        self.tree = self.index = ""

    def holding(self, git, sp: Workspaces, commit: str) -> tuple:
        """`commit`'s attributes files in `tree` (and nothing else); the arguments that run git there."""
        if self.folder is None or not os.path.isdir(self.folder):
            sp.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.folder = tempfile.mkdtemp(prefix="merge-", dir=sp.state_dir)
            weakref.finalize(sp, shutil.rmtree, self.folder, True)
            self.tree, self.index, self.commit = os.path.join(self.folder, "tree"), os.path.join(self.folder, "index"), None
        if not os.path.isdir(self.tree):
            self.commit = None  # removed under us: made again
        where = (self.tree, f"--git-dir={sp.common_dir()}", f"--work-tree={self.tree}")
        if self.commit == commit:
            return where
        old, self.commit = self.commit, None  # unknown until the files are written
        try:
            try:
                if old is None:
                    shutil.rmtree(self.tree, ignore_errors=True)
                    os.mkdir(self.tree, 0o700)
                _write_attributes(git, where, old, commit, self.tree, self.index)
            except (GitError, OSError):
                if old is None:
                    raise
                old = None  # the last base gone (pruned), or the folder touched: start from nothing once
                shutil.rmtree(self.tree, ignore_errors=True)
                os.mkdir(self.tree, 0o700)
                _write_attributes(git, where, None, commit, self.tree, self.index)
        except BaseException:
            shutil.rmtree(self.tree, ignore_errors=True)
            raise
        self.commit = commit
        return where


def _write_attributes(git, where: tuple, old: str | None, commit: str, tree: str, index: str) -> None:
    """`tree`, holding the `.gitattributes` files of `old` (nothing when None), made to hold those of `commit`.
    `index`: our empty one (diff-tree reads the index: the repository's own costs ~8 ms at 100,000 files)."""
    if os.path.exists(index):
        os.unlink(index)
    start = old or git.run(*where, "hash-object", "-t", "tree", "/dev/null", index=index).stdout.strip()  # the empty tree
    listing = git.run(*where, "diff-tree", "-r", "-z", "--no-renames", start, commit, "--", _ATTRIBUTES, index=index).stdout
    fields = listing.split("\0")
    changes = []
    for meta, name in zip(fields[0::2], fields[1::2]):  # ":<old mode> <new mode> <old id> <new id> <status>", path
        if name != ".gitattributes" and not name.endswith("/.gitattributes"):
            continue  # under a folder named .gitattributes: not an attributes file
        _, mode, _, oid, _ = meta.split()
        changes.append((name, mode, oid))
    for name, _, _ in changes:  # gone or changed: removed first (a file may become a folder's name)
        target = os.path.join(tree, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)  # was a folder named .gitattributes (holding one of its own)
        elif os.path.lexists(target):
            os.unlink(target)
    for name, mode, oid in changes:
        if mode not in ("100644", "100755"):
            continue  # deleted (000000); a symlink named .gitattributes is not followed, as git does not follow it in a tree
        target = os.path.join(tree, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(git.run(*where, "cat-file", "blob", oid, index=index).stdout)


def reset_to(sp: Workspaces, path: Path, commit: str, clean: bool = True) -> None:
    """A landing worktree back to `commit`: tracked files a check rewrote restored (reset also drops
    MERGE_HEAD), untracked files it left removed; ignored ones (caches) stay. clean=False: nothing has run
    there since it was made or cleaned, so there is nothing untracked to remove."""
    sp.git.run(path, "reset", "-q", "--hard", commit)
    if clean:
        sp.git.run(path, "clean", "-q", "-fd")
