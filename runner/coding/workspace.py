"""Git worktrees for coding agents: one branch and one worktree per attempt, nothing lost, nothing foreign touched.

    repo (the user's checkout: never modified)
      │ git worktree add -b wvo/<run>/<task> <state>/worktrees/<task> <start>
      ▼
    attempt worktree ──commit_all──▶ branch tip ──(landing.Lander)──▶ `into`
      │ wip_commit before any removal (invariant 8)
      ▼
    remove ──finish──▶ landed branches deleted (ours, merged: verified), others kept and listed

Ownership: a journal in the state dir (workspaces.jsonl, mode 0600, append-only) lists every branch
this run created, with its state. Only those are ever merged or deleted (invariant 7); a branch that
merely looks like ours (wvo/<run>/<task> made by someone else) is never in the journal, because a
branch is journalled only after `git worktree add -b` created it. Lines are appended without fsync:
a SIGKILL loses nothing (the page cache survives), and a power cut can only drop the newest lines,
which makes us keep a branch we could have deleted, never delete one we should keep.

Every git call is `git -C DIR ...` as a subprocess, never through a shell, with the environment's GIT_*
variables removed (a run started from a git hook must not write to the hook's index), hooks off,
signing off, rerere off, auto-gc off, and a fixed identity: the user's config and hooks do not change
what we commit.

Sealed (runner.coding.sealed): git never climbs above DIR (a ceiling, and a fence file in the state
dir), and before every snapshot the worktree is checked to be still ours; the snapshot then names the
worktree's admin folder and work tree explicitly. What the common `.git` would share with the user is
kept apart: a worktree is never sparse (the user's sparse-checkout would hide the task's files), a
task's stash entries are moved off the user's stash list onto refs of the run, and work inside a
submodule or a nested repository, which the branch cannot carry, is refused with the worktree kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path

from runner.coding import refguard, sealed
from runner.coding.git import (  # noqa: F401 - re-exported: the workspace API
    BranchState,
    Cleanup,
    DiffStats,
    Git,
    GitError,
    Recovery,
    Workspace,
    WorkspaceError,
    branch_name,
    checked_out_branch,
    diff_stats,
    diff_text,
    find_repo,
    git_env,
    ref_component,
    refuse_if_checked_out,
    worktree_branches,
)

JOURNAL = "workspaces.jsonl"
WORKTREES = "worktrees"
LANDING = "landing"
STASH_REFS = "refs/wvo-stash"  # a task's stash entries, moved off the user's list: refs/wvo-stash/<branch>/<n>


class Workspaces:
    """The worktrees and branches of one run in one repository; the journal in `state_dir` says which are ours.

    Raises WorkspaceError when the setting cannot be honoured, GitError when git fails.
    """

    def __init__(self, repo: str | Path, state_dir: str | Path, run: str, into: str,
                 base: str | None = None, git: Git | None = None):
        self._fields(find_repo(repo, git or Git()), state_dir, run, into, git)
        sealed.fence(self.state_dir)
        if not self.git.ok(self.repo, "check-ref-format", f"refs/heads/{into}"):
            raise WorkspaceError(f"`into` {into!r} is not a valid branch name")
        header = self._load()
        refuse_if_checked_out(self.repo, into, self.git)
        # the tasks' git runs the run's hooks (runner.coding.refguard): the user's core.hooksPath read afresh
        try:
            refguard.install(self.state_dir, self.common_dir(), refguard.user_hooks_path(self.git, self.repo))
        except OSError as exc:
            raise WorkspaceError(f"cannot write the tasks' hooks folder in {self.state_dir}: {exc}") from None
        if header is None:
            self.base_commit, created = self._resolve_into(base)
            self._append({"header": True, "repo": str(self.repo), "run": self.run, "into": into,
                          "base_commit": self.base_commit, "into_created": created})
        else:
            if header["repo"] != str(self.repo) or header["into"] != into or header["run"] != self.run:
                raise WorkspaceError(
                    f"{self._journal} belongs to run {header['run']} of {header['repo']} into {header['into']}")
            self.base_commit = header["base_commit"]
            if not self._ref(into):  # deleted by the user since: start it again where the run began
                self.git.run(self.repo, "branch", "--no-track", into, self.base_commit)

    def _fields(self, repo: Path, state_dir: str | Path, run: str, into: str, git: Git | None) -> None:
        self.git = git or Git()
        self.repo = repo
        self.state_dir = Path(state_dir).resolve()
        self.run = ref_component(run)
        self.into = into
        self.worktrees_dir = self.state_dir / WORKTREES
        self.landing_path = self.state_dir / LANDING
        self._lock = threading.Lock()  # guards the journal file and _entries
        self._entries: dict[str, dict] = {}  # branch -> its journal record (ours only)
        self._torn = False  # the journal ends mid-line (a crash mid-append): start the next record on a new line
        self._journal = self.state_dir / JOURNAL
        self._common: Path | None = None  # the repository's common .git folder, looked up once
        self._sparse: bool | None = None  # whether new worktrees would be sparse (the user's sparse-checkout)

    @classmethod
    def attach(cls, state_dir: str | Path, git: Git | None = None) -> "Workspaces":
        """An agent's view of the workspaces the manager opened (their journal is in `state_dir`), with nothing
        checked again: each check is a git process, and a dozen agents set up at once on a few cores. `into`
        is looked at where it matters: checked out nowhere when it lands (the landing queue), restored at
        the run's base when the user deleted it (create). Raises WorkspaceError when there is no journal."""
        header = _journal_header(state_dir, "no workspace journal")
        self = cls.__new__(cls)
        self._fields(Path(header["repo"]), state_dir, header["run"], header["into"], git)
        sealed.fence(self.state_dir)  # a file read, no git: put back should a task have deleted it
        self._load()
        self.base_commit = header["base_commit"]
        return self

    @classmethod
    def open(cls, state_dir: str | Path, git: Git | None = None) -> "Workspaces":
        """The workspaces of an earlier run, from its journal; raises WorkspaceError when there is none."""
        header = _journal_header(state_dir, "no workspace journal to resume from")
        return cls(header["repo"], state_dir, header["run"], header["into"], git=git)

    # -- setup

    def _resolve_into(self, base: str | None) -> tuple[str, bool]:
        """Resolve base (default: `into` if it exists, else the checked-out branch); create `into` from it."""
        into_tip = self._ref(self.into)
        if base is None:
            if into_tip:
                return into_tip, False
            base = checked_out_branch(self.repo, self.git)
            if base is None:
                raise WorkspaceError(f"{self.repo}: HEAD is detached and {self.into!r} does not exist; say `base:`")
        proc = self.git.run(self.repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False)
        if proc.returncode != 0:
            raise WorkspaceError(f"base {base!r}: no such commit in {self.repo}")
        base_commit = proc.stdout.strip()
        if into_tip:
            return base_commit, False
        self.git.run(self.repo, "branch", "--no-track", self.into, base_commit)  # never a checkout
        return base_commit, True

    def _ref(self, branch: str) -> str | None:
        proc = self.git.run(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    def tip(self) -> str:
        """The current commit of `into`: where the next attempt starts."""
        tip = self._ref(self.into)
        if tip is None:
            raise WorkspaceError(f"branch {self.into!r} disappeared during the run")
        return tip

    # -- journal

    def _load(self) -> dict | None:
        try:
            text = self._journal.read_text()
        except FileNotFoundError:
            return None
        self._torn = bool(text) and not text.endswith("\n")
        header = None
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a torn line from a crash: the change it described did not finish
                continue
            if rec.get("header"):
                header = header or rec
            else:
                self._entries.setdefault(rec["branch"], {}).update(rec)
        return header

    def _append(self, rec: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        with self._lock:
            if self._torn:
                line, self._torn = b"\n" + line, False
            # Never through a symlink, nor blocking on a FIFO: the journal is two folders above each worktree.
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", str(self._journal))
                os.fchmod(fd, 0o600)
                os.write(fd, line)
            finally:
                os.close(fd)
            if "branch" in rec:
                self._entries.setdefault(rec["branch"], {}).update(rec)

    def _worktree(self, *args: str, check: bool = True):
        """`git worktree ARGS` with our other processes kept out: git takes no lock on .git/worktrees,
        and an agent's `worktree remove` (which drops that folder once it is empty) races another's
        `worktree add` ("could not create directory of '.git/worktrees/...'")."""
        with self._locked():
            proc = self.git.run(self.repo, "worktree", *args, check=check)
        if args[0] == "add" and proc.returncode == 0:  # git makes its folder after the umask: ours alone, as the state dir's
            # (our adds pass no option that takes a value: their first operand is the new folder)
            os.chmod(next(a for a in args[1:] if not a.startswith("-")), 0o700)
        return proc

    @contextlib.contextmanager
    def _locked(self):
        """Our processes one at a time (a file lock in the state dir): worktree add/remove, the stash list."""
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.state_dir / ".worktree.lock"  # within a task's reach: never through a symlink nor a FIFO
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def reload(self) -> None:
        """Read the journal again: other processes (the agents) append the branches they create."""
        with self._lock:
            self._load()

    def _record(self, branch: str, **fields) -> None:
        self._append({"branch": branch, **fields})

    def owned(self) -> dict[str, dict]:
        """Every branch this run created -> its record (task, path, base_commit, state, tip, landed)."""
        with self._lock:
            return {b: dict(r) for b, r in self._entries.items()}

    def is_ours(self, branch: str) -> bool:
        with self._lock:
            return branch in self._entries

    def workspace(self, branch: str) -> Workspace:
        rec = self.owned()[branch]
        return Workspace(rec.get("path") or "", branch, rec["base_commit"], rec["task"])

    # -- one attempt

    def create(self, task_id: str, start_commit: str | None = None) -> Workspace:
        """A fresh worktree on a new branch wvo/<run>/<task> at `start_commit` (default: `into`'s tip)."""
        start = start_commit or self._ref(self.into)
        if start is None:  # deleted by the user since: start it again where the run began
            self.git.run(self.repo, "branch", "--no-track", self.into, self.base_commit, check=False)  # another agent may race
            start = self.tip()
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", start):
            start = self.git.out(self.repo, "rev-parse", "--verify", f"{start}^{{commit}}")
        stem = branch_name(self.run, task_id)
        self.worktrees_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in range(1, 1000):
            branch = stem if n == 1 else f"{stem}-{n}"
            path = self.worktrees_dir / branch.rsplit("/", 1)[1]
            if self.is_ours(branch) or path.exists():
                continue  # ours from an earlier attempt, or a leftover folder
            sparse = self._is_sparse()
            # Only the registration is under the run's lock; the branch (made only if no branch has the name)
            # and the checkout (seconds in a big repository) are not, so agents set up side by side.
            if not self.git.ok(self.repo, "update-ref", "-m", "wvo-batch: attempt", f"refs/heads/{branch}", start, ""):
                if self._ref(branch):
                    continue  # someone else's branch has the name
                raise GitError(["update-ref", f"refs/heads/{branch}", start], 1, "cannot create the branch")
            proc = self._worktree("add", "-q", "--no-checkout", str(path), branch, check=False)
            if proc.returncode != 0:
                self.git.run(self.repo, "update-ref", "-d", f"refs/heads/{branch}", start, check=False)  # ours, unused
            if proc.returncode == 0:
                self._record(branch, task=task_id, path=str(path), base_commit=start, state=BranchState.RUNNING.value)
                ws = Workspace(str(path), branch, start, task_id)
                if not sparse:
                    self.git.run(ws.path, "reset", "-q", "--hard", start)
                left = sealed.make_full(self.git, ws.path, self.common_dir()) if sparse else []
                if left:  # the user's sparse-checkout would hide files from the task, and its work would not land
                    self._worktree("remove", "--force", ws.path, check=False)
                    self._record(branch, path=None, state=BranchState.REFUSED.value, why="sparse")
                    raise WorkspaceError(
                        f"the repository's sparse-checkout makes worktree {path} sparse and it could not be made whole "
                        f"({len(left)} file(s) left out, e.g. {left[0]}); run `git sparse-checkout disable`, or use "
                        f"workspace mode shared")
                return ws
            raise GitError(["worktree", "add", str(path), branch], proc.returncode, proc.stderr)
        raise WorkspaceError(f"no free branch name for task {task_id!r} under {stem}")

    def hooks(self) -> Path:
        """The run's hooks folder for a task's git (runner.coding.refguard); written again should it be gone."""
        if not refguard.installed(self.state_dir):
            refguard.install(self.state_dir, self.common_dir(), refguard.user_hooks_path(self.git, self.repo))
        return refguard.folder_of(self.state_dir)

    def _is_sparse(self) -> bool:
        """Whether a new worktree would be sparse: the user's sparse-checkout reaches it through the common .git."""
        if self._sparse is None:
            proc = self.git.run(self.repo, "config", "--bool", "core.sparseCheckout", check=False)
            self._sparse = proc.stdout.strip() == "true"
        return self._sparse

    def common_dir(self) -> Path:
        """The repository's common .git folder (refs, objects, config; shared by all its worktrees)."""
        if self._common is None:
            self._common = sealed.common_dir_of(self.repo)
            if self._common is None:  # a layout the files do not tell: ask git
                p = Path(self.git.out(self.repo, "rev-parse", "--git-common-dir"))
                self._common = (p if p.is_absolute() else self.repo / p).resolve()
        return self._common

    def _snapshot(self, ws: Workspace, message: str, author: str) -> tuple[str, str]:
        """Commit everything in the worktree onto its branch, keeping the agent's commits; (new tip, tip before).

        Plumbing (add, write-tree, commit-tree, update-ref) rather than `git commit`: no hook or config can
        interfere, and work the agent committed on a detached HEAD or another branch is kept on ours. Every
        command names the worktree's admin folder and work tree: nothing but this worktree can be staged.
        Raises WorkspaceError (nothing committed) when the folder is no longer our worktree, or when work
        inside a submodule would be lost.
        """
        admin, (head, head_tree, tip) = sealed.check_worktree(
            self.git, ws.path, self.common_dir(), "HEAD", "HEAD^{tree}", f"refs/heads/{ws.branch}")
        if (admin / "index.lock").exists():
            (admin / "index.lock").unlink()  # left by a killed agent's git; the attempt is over
        g = self.git
        at = (f"--git-dir={admin}", f"--work-tree={ws.path}")
        g.run(ws.path, *at, "add", "-A")
        tree = g.out(ws.path, *at, "write-tree")
        sealed.refuse_lost_submodule_work(g, ws.path, admin, ws.base_commit, tree)
        if sealed.stash_entries_of(self.common_dir(), ws.branch):
            with self._locked():  # our other agents move their entries one at a time
                sealed.take_stash(g, self.repo, ws.branch, f"{STASH_REFS}/{ws.branch}")
        if head == tip:
            if tree == head_tree:
                return tip, tip
            parents = [tip]
        elif g.ok(ws.path, *at, "merge-base", "--is-ancestor", tip, head):
            parents = [head]
        else:
            parents = [tip, head]
        if tree == head_tree and parents == [head]:
            new = head  # the agent's commits, nothing uncommitted: just bring the branch along
        else:
            argv = ["commit-tree", tree, "-m", message]
            for p in parents:
                argv += ["-p", p]
            new = g.out(ws.path, *at, *argv, author=author)
        g.run(ws.path, *at, "update-ref", "-m", f"wvo-batch: {message.splitlines()[0]}", f"refs/heads/{ws.branch}", new, tip)
        return new, tip

    def commit_all(self, ws: Workspace, message: str, author: str = "wvo-batch") -> str | None:
        """Commit what the agent left (untracked too, .gitignore respected); the branch tip, or None when nothing changed since base.

        Raises WorkspaceError when the branch no longer contains the commit the attempt started from (the task
        moved it back): that is not a result to land.
        """
        tip, before = self._snapshot(ws, message, author)
        if tip == ws.base_commit:
            self._record(ws.branch, state=BranchState.NO_CHANGES.value, tip=tip)
            return None
        # the branch still at base before: the new commit is on it. Else ask: did it go back behind base?
        if before != ws.base_commit and not self.git.ok(self.repo, "merge-base", "--is-ancestor", ws.base_commit, tip):
            why = (f"the task moved its branch {ws.branch} to {tip[:12]}, which does not contain {ws.base_commit[:12]}, "
                   f"the commit it started from (a `git reset` backwards?): its history is not a result to land")
            self._record(ws.branch, state=BranchState.REFUSED.value, tip=tip, why=why)
            raise WorkspaceError(why)
        self._record(ws.branch, state=BranchState.COMMITTED.value, tip=tip)
        return tip

    def wip_commit(self, ws: Workspace, reason: str) -> str | None:
        """Commit what is in the worktree as "WIP: <reason>"; the new commit, or None when nothing was uncommitted."""
        new, before = self._snapshot(ws, f"WIP: {reason}", "wvo-batch")
        if new == before:
            return None
        self._record(ws.branch, state=BranchState.WIP.value, tip=new)
        return new

    def remove(self, ws: Workspace, reason: str = "worktree removed", saved: bool = False) -> str | None:
        """WIP-commit what is left, then remove the worktree (its branch stays); the WIP commit or None.

        saved: the caller has just committed everything in it (and nothing has run there since), so the
        WIP snapshot, two scans of the whole tree, is skipped. Raises GitError (and removes nothing) when
        the WIP commit fails, WorkspaceError when the folder is no longer our worktree (its .git deleted or
        replaced): no attempt's work is lost.
        """
        wip = None if saved else self.wip_commit(ws, reason)  # a worktree no longer ours raises: it is kept
        # Everything in it is committed now. Journalled before its files go, so that a run killed while they go
        # (outside the run's lock, which the other agents wait on) is not mistaken by recover() for an attempt
        # whose work was deleted: that would be snapshotted as a commit deleting every file.
        self._record(ws.branch, removing=True)
        _empty_checkout(Path(ws.path))
        # Twice --force: also when the task locked it (`git worktree lock`); everything in it is committed.
        self._worktree("remove", "--force", "--force", ws.path)
        self._record(ws.branch, path=None, removing=False)
        return wip

    def discard(self, ws: Workspace, why: str) -> None:
        """An attempt that never began (its set-up failed): the worktree removed with nothing committed (what
        is in it is set-up output, never the task's work), the branch deleted while it is still at its start."""
        self._worktree("remove", "--force", "--force", ws.path)
        self._record(ws.branch, path=None, state=BranchState.REFUSED.value, why=why)
        if self.git.ok(self.repo, "update-ref", "-d", f"refs/heads/{ws.branch}", ws.base_commit):
            self._record(ws.branch, deleted=True)

    def mark(self, branch: str, state: BranchState, **fields) -> None:
        """Record a branch's state (the Lander's verdicts); only branches of this run."""
        if not self.is_ours(branch):
            raise WorkspaceError(f"branch {branch!r} was not created by this run")
        self._record(branch, state=state.value, **fields)

    # -- what an attempt changed

    def diff_stats(self, branch: str, base_commit: str) -> DiffStats:
        """Files changed, lines added and deleted (binary files count 0), and the paths, from base to branch."""
        return diff_stats(self.git, self.repo, base_commit, f"refs/heads/{branch}")

    def diff_text(self, branch: str, base_commit: str, cap_bytes: int = 100_000) -> str:
        """The diff from base to branch for a reviewer's prompt, at most about `cap_bytes`; says so when cut."""
        return diff_text(self.git, self.repo, base_commit, f"refs/heads/{branch}", cap_bytes)

    # -- end of run and recovery

    def finish(self, keep_worktrees: bool = False) -> Cleanup:
        """Remove worktrees (unless kept) and the landing worktree; delete landed branches that are merged into `into`.

        A worktree that cannot be removed (its .git deleted or re-initialised, the worktree locked) is kept and
        named in Cleanup.problems; the others are removed all the same.
        """
        kept_paths, problems = [], []
        for branch, rec in self.owned().items():
            if rec.get("path") and Path(rec["path"]).exists():
                if keep_worktrees:
                    kept_paths.append(rec["path"])
                    continue
                try:
                    self.remove(self.workspace(branch), "end of run")
                except (GitError, WorkspaceError, OSError) as exc:
                    kept_paths.append(rec["path"])
                    problems.append(f"{branch}: worktree {rec['path']} kept: {exc}")
        try:
            remove_landing_worktree(self)
        except (GitError, OSError) as exc:
            problems.append(f"landing worktree {self.landing_path}: {exc}")
        into_tip = self.tip()
        deleted, kept = [], []
        for branch, rec in self.owned().items():
            tip = self._ref(branch)
            if tip is None:
                continue
            state = rec.get("state", "")
            if (state == BranchState.LANDED.value and not (rec.get("path") and keep_worktrees)
                    and self.git.ok(self.repo, "merge-base", "--is-ancestor", tip, into_tip)
                    and self.git.ok(self.repo, "update-ref", "-d", f"refs/heads/{branch}", tip)):
                deleted.append(branch)
                self._record(branch, deleted=True)
                self._drop_stash_refs(branch)
            else:
                kept.append((branch, state))
        return Cleanup(deleted, kept, kept_paths, problems)

    def _drop_stash_refs(self, branch: str) -> None:
        """Delete the stash entries kept for a landed branch (refs/wvo-stash/<branch>/<n>): its work is on `into`.

        A kept branch keeps its entries, as its work is kept; a ref that moved meanwhile is left alone.
        """
        found = self.git.run(self.repo, "for-each-ref", "--format=%(refname) %(objectname)",
                             f"{STASH_REFS}/{branch}/", check=False).stdout.split("\n")
        for line in found:
            if " " in line:
                self.git.run(self.repo, "update-ref", "-d", *line.split(" ", 1), check=False)

    def recover(self) -> Recovery:
        """After a dead run: clean the landing worktree, save and remove leftover worktrees, say what is ready to land."""
        problems = []
        try:
            remove_landing_worktree(self)
        except (GitError, OSError) as exc:
            problems.append(f"landing worktree {self.landing_path}: {exc}")
        lock = self.common_dir() / "refs" / "heads" / f"{self.into}.lock"
        if lock.exists():
            problems.append(f"{lock} exists (a git command died holding it): remove it if no git is running")
        saved, removed = {}, []
        for branch, rec in self.owned().items():
            path = rec.get("path")
            if not path:
                continue
            if Path(path).exists() and not rec.get("removing"):
                try:
                    wip = self.remove(self.workspace(branch), "interrupted: the run died")
                except (GitError, WorkspaceError, OSError) as exc:
                    problems.append(f"{branch}: worktree {path} kept: {exc}")
                    continue
            else:  # gone already, or being removed with its work committed: unregister just this one (not
                # `worktree prune`, which prunes the user's too); what is left of its files goes with it
                wip = None
                self._worktree("remove", "--force", "--force", path, check=False)
                self._record(branch, path=None, removing=False)
            removed.append(path)
            if wip:
                saved[branch] = wip
        removed += self._remove_strays()
        into_tip = self.tip()
        finished, landed = [], []
        for branch, rec in self.owned().items():
            tip = self._ref(branch)
            if rec.get("state") != BranchState.COMMITTED.value or tip is None:
                continue
            if tip != rec.get("tip"):
                problems.append(f"{branch}: moved since its attempt was committed; not landed")
            elif self.git.ok(self.repo, "merge-base", "--is-ancestor", tip, into_tip):
                self._record(branch, state=BranchState.LANDED.value, landed=into_tip)
                landed.append(branch)
            else:
                finished.append(self.workspace(branch))
        return Recovery(finished, landed, saved, removed, problems)

    def _remove_strays(self) -> list[str]:
        """Folders under worktrees/ that no journal line names (a crash right after `worktree add`): removed when clean."""
        if not self.worktrees_dir.is_dir():
            return []
        known = {rec.get("path") for rec in self._entries.values()} | {
            str(self.worktrees_dir / b.rsplit("/", 1)[1]) for b in self._entries}
        removed = []
        for child in sorted(self.worktrees_dir.iterdir()):
            if str(child) in known or not (child / ".git").exists():
                continue
            if self._worktree("remove", str(child), check=False).returncode == 0:  # no --force: a dirty one stays
                removed.append(str(child))
        return removed


def recover(state_dir: str | Path, git: Git | None = None) -> tuple[Workspaces, Recovery]:
    """Reopen a dead run's workspaces from its state dir and recover them (see Workspaces.recover)."""
    spaces = Workspaces.open(state_dir, git)
    return spaces, spaces.recover()


def _empty_checkout(path: Path) -> None:
    """Delete what is in a linked worktree of ours but its `.git` file (git removes the rest); best effort."""
    if not (path / ".git").is_file():
        return  # not a linked worktree any more: git decides what happens to it
    for entry in os.scandir(path):
        if entry.name == ".git":
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def ensure_landing_worktree(sp: "Workspaces", path: Path | None = None, at: str | None = None) -> Path:
    """The landing worktree (or another of the landing queue's, at `path`), created the first time detached at
    `at` (default: `into`'s tip). Only its registration is under the run's lock; the checkout is not, so the
    landing queue's slots and the agents' worktrees fill side by side."""
    path = path or sp.landing_path
    if not (path / ".git").exists():
        if path.exists():
            shutil.rmtree(path)
        sp.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        at = at or f"refs/heads/{sp.into}"
        if not sp._worktree("add", "-q", "--no-checkout", "--detach", str(path), at, check=False).returncode == 0:
            sp._worktree("remove", "--force", str(path), check=False)  # a stale registration (a crash): once more
            sp._worktree("add", "-q", "--no-checkout", "--detach", str(path), at)
        sp.git.run(path, "reset", "-q", "--hard", at)
    return path


def remove_landing_worktree(sp: "Workspaces", path: Path | None = None) -> None:
    """Remove the landing worktree (or another of the landing queue's, at `path`), whatever state a crash
    left it in (mid-merge, stale index.lock).

    It holds nothing of value: every merge in it is of branches that are kept, so no WIP commit first.
    """
    path = path or sp.landing_path
    sp._worktree("remove", "--force", str(path), check=False)
    if path.exists():  # git refused (e.g. a stale lock): the folder is ours alone
        shutil.rmtree(path)
        # Unregister just this one; `git worktree prune` would also prune the user's missing worktrees.
        sp._worktree("remove", "--force", str(path), check=False)


def _journal_header(state_dir: str | Path, missing: str) -> dict:
    """The first line of a run's workspace journal; WorkspaceError naming the file when it cannot be read."""
    path = Path(state_dir) / JOURNAL
    try:
        with open(path) as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        raise WorkspaceError(f"{path}: {missing}") from None
