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
"""

from __future__ import annotations

import enum
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import BatchError, UsageError

JOURNAL = "workspaces.jsonl"
WORKTREES = "worktrees"
LANDING = "landing"
IDENTITY_EMAIL = "{name}@wvo-batch.invalid"  # .invalid: reserved, never a real address

# Options that make our commands independent of the user's config (but not of .gitignore).
_GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",  # --no-verify alone still runs post-checkout, prepare-commit-msg
    "-c", "commit.gpgSign=false",
    "-c", "tag.gpgSign=false",
    "-c", "rerere.enabled=false",  # a recorded resolution would make a conflict silently "resolve"
    "-c", "gc.auto=0",  # no background gc mid-run
    "-c", "core.fsmonitor=false",  # a daemon would outlive the run
    "-c", "merge.autoStash=false",
    "-c", "advice.detachedHead=false",
)


class GitError(BatchError):
    """A git command failed; carries the command and git's message."""

    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {returncode}"
        super().__init__(f"git {' '.join(args)}: {last}")


class WorkspaceError(UsageError):
    """The workspace setting cannot be honoured (not a repository, `into` checked out, bad base)."""


class BranchState(str, enum.Enum):
    RUNNING = "running"  # worktree created, attempt under way
    COMMITTED = "committed"  # the attempt finished and its result is committed: ready to land
    NO_CHANGES = "no_changes"
    WIP = "wip"  # an unfinished attempt's work, saved before its worktree went
    LANDED = "landed"
    CONFLICT = "conflict"
    CHECKS_FAILED = "checks_failed"


@dataclass(frozen=True)
class Workspace:
    """One attempt's worktree: where it is, its branch, the commit it started from."""

    path: str
    branch: str
    base_commit: str
    task_id: str


@dataclass(frozen=True)
class DiffStats:
    files_changed: int
    added: int
    deleted: int
    paths: list[str]


@dataclass(frozen=True)
class Cleanup:
    """What the end of a run did: branches deleted (landed, ours, merged) and those kept, with why."""

    deleted: list[str]
    kept: list[tuple[str, str]]  # (branch, state)
    worktrees_kept: list[str]


@dataclass(frozen=True)
class Recovery:
    """What `recover` found and did after a dead run."""

    finished: list[Workspace]  # committed attempts not landed yet: land these instead of rerunning
    landed: list[str]  # branches found already on `into` (the run died after moving it)
    saved: dict[str, str]  # branch -> WIP commit made from a leftover worktree
    removed: list[str]  # leftover worktree paths removed
    problems: list[str] = field(default_factory=list)


# --- plain git helpers -------------------------------------------------------------------------


def git_env(author: str = "wvo-batch") -> dict[str, str]:
    """The environment for our git commands: no inherited GIT_* variables, a fixed identity, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    email = IDENTITY_EMAIL.format(name=re.sub(r"[^A-Za-z0-9._-]", "-", author) or "wvo-batch")
    env.update(
        LC_ALL="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_EDITOR="true",
        GIT_AUTHOR_NAME=author,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=author,
        GIT_COMMITTER_EMAIL=email,
    )
    return env


class Git:
    """Runs `git -C DIR ...` with our options and environment; raises GitError unless told not to."""

    def __init__(self, executable: str = "git"):
        self.executable = executable
        self._envs: dict[str, dict[str, str]] = {}

    def env(self, author: str = "wvo-batch") -> dict[str, str]:
        if author not in self._envs:
            self._envs[author] = git_env(author)
        return self._envs[author]

    def run(self, cwd: str | Path, *args: str, check: bool = True, author: str = "wvo-batch") -> subprocess.CompletedProcess:
        argv = [self.executable, "-C", str(cwd), *_GIT_OPTIONS, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(author), stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise GitError(list(args), proc.returncode, proc.stderr)
        return proc

    def out(self, cwd: str | Path, *args: str, author: str = "wvo-batch") -> str:
        return self.run(cwd, *args, author=author).stdout.strip()

    def ok(self, cwd: str | Path, *args: str) -> bool:
        return self.run(cwd, *args, check=False).returncode == 0


def find_repo(path: str | Path, git: Git | None = None) -> Path:
    """The top of the git checkout holding `path` (a file or a folder); raises WorkspaceError."""
    git = git or Git()
    p = Path(path).resolve()
    folder = p if p.is_dir() else p.parent
    if not folder.is_dir():
        raise WorkspaceError(f"{path}: no such folder, so no git repository")
    proc = git.run(folder, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise WorkspaceError(f"{path}: not inside a git repository (workspace mode worktree needs one)")
    return Path(proc.stdout.strip())


def checked_out_branch(repo: str | Path, git: Git | None = None) -> str | None:
    """The branch checked out in `repo` (short name), or None when HEAD is detached."""
    git = git or Git()
    proc = git.run(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def worktree_branches(repo: str | Path, git: Git | None = None) -> dict[str, str]:
    """Every worktree of the repository that has a branch checked out: branch (short) -> path."""
    git = git or Git()
    out: dict[str, str] = {}
    path = None
    for line in git.out(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
        elif line.startswith("branch refs/heads/") and path is not None:
            out[line[len("branch refs/heads/"):]] = path
    return out


def refuse_if_checked_out(repo: str | Path, into: str, git: Git | None = None) -> None:
    """Raise WorkspaceError when `into` is checked out anywhere: moving its ref would make that checkout look dirty."""
    where = worktree_branches(repo, git).get(into)
    if where is not None:
        raise WorkspaceError(
            f"branch {into!r} is checked out in {where}: results cannot land on it without changing that "
            f"checkout; choose another `into` or check out a different branch there"
        )


_REF_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def ref_component(text: str, limit: int = 80) -> str:
    """`text` as one valid ref path component (git check-ref-format's rules), never empty."""
    s = _REF_UNSAFE.sub("-", text)
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"-{2,}", "-", s)
    s = s[:limit].strip(".-")
    if s.endswith(".lock"):
        s = s[: -len(".lock")] + "-lock"
    return s or "task"


def branch_name(run: str, task_id: str) -> str:
    return f"wvo/{ref_component(run)}/{ref_component(task_id)}"


def _gitdir_of(worktree: str | Path) -> Path | None:
    """The admin folder of a linked worktree (from its .git file), without running git."""
    try:
        text = (Path(worktree) / ".git").read_text()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    p = Path(text[len("gitdir:"):].strip())
    return p if p.is_absolute() else (Path(worktree) / p).resolve()


# --- the run's workspaces ---------------------------------------------------------------------


class Workspaces:
    """The worktrees and branches of one run in one repository; the journal in `state_dir` says which are ours.

    Raises WorkspaceError when the setting cannot be honoured, GitError when git fails.
    """

    def __init__(self, repo: str | Path, state_dir: str | Path, run: str, into: str,
                 base: str | None = None, git: Git | None = None):
        self.git = git or Git()
        self.repo = find_repo(repo, self.git)
        self.state_dir = Path(state_dir).resolve()
        self.run = ref_component(run)
        self.into = into
        self.worktrees_dir = self.state_dir / WORKTREES
        self.landing_path = self.state_dir / LANDING
        self._lock = threading.Lock()  # guards the journal file and _entries
        self._entries: dict[str, dict] = {}  # branch -> its journal record (ours only)
        self._torn = False  # the journal ends mid-line (a crash mid-append): start the next record on a new line
        self._journal = self.state_dir / JOURNAL
        if not self.git.ok(self.repo, "check-ref-format", f"refs/heads/{into}"):
            raise WorkspaceError(f"`into` {into!r} is not a valid branch name")
        header = self._load()
        refuse_if_checked_out(self.repo, into, self.git)
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

    @classmethod
    def open(cls, state_dir: str | Path, git: Git | None = None) -> "Workspaces":
        """The workspaces of an earlier run, from its journal; raises WorkspaceError when there is none."""
        path = Path(state_dir) / JOURNAL
        try:
            with open(path) as f:
                header = json.loads(f.readline())
        except (OSError, ValueError):
            raise WorkspaceError(f"{path}: no workspace journal to resume from") from None
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
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, line)
            finally:
                os.close(fd)
            if "branch" in rec:
                self._entries.setdefault(rec["branch"], {}).update(rec)

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
        start = start_commit or self.tip()
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", start):
            start = self.git.out(self.repo, "rev-parse", "--verify", f"{start}^{{commit}}")
        stem = branch_name(self.run, task_id)
        self.worktrees_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in range(1, 1000):
            branch = stem if n == 1 else f"{stem}-{n}"
            path = self.worktrees_dir / branch.rsplit("/", 1)[1]
            if self.is_ours(branch) or path.exists():
                continue  # ours from an earlier attempt, or a leftover folder
            proc = self.git.run(self.repo, "worktree", "add", "-q", "-b", branch, str(path), start, check=False)
            if proc.returncode == 0:
                self._record(branch, task=task_id, path=str(path), base_commit=start, state=BranchState.RUNNING.value)
                return Workspace(str(path), branch, start, task_id)
            if not self._ref(branch):  # the name is not someone else's branch: a real failure
                raise GitError(["worktree", "add", "-b", branch, str(path), start], proc.returncode, proc.stderr)
        raise WorkspaceError(f"no free branch name for task {task_id!r} under {stem}")

    def _snapshot(self, ws: Workspace, message: str, author: str) -> tuple[str, bool]:
        """Commit everything in the worktree onto its branch, keeping the agent's commits; (branch tip, whether it moved).

        Plumbing (add, write-tree, commit-tree, update-ref) rather than `git commit`: no hook or config can
        interfere, and work the agent committed on a detached HEAD or another branch is kept on ours.
        """
        gitdir = _gitdir_of(ws.path)
        if gitdir is not None and (gitdir / "index.lock").exists():
            (gitdir / "index.lock").unlink()  # left by a killed agent's git; the attempt is over
        g = self.git
        g.run(ws.path, "add", "-A")
        tree = g.out(ws.path, "write-tree")
        head, head_tree, tip = g.out(ws.path, "rev-parse", "HEAD", "HEAD^{tree}", f"refs/heads/{ws.branch}").split()
        if head == tip:
            if tree == head_tree:
                return tip, False
            parents = [tip]
        elif g.ok(ws.path, "merge-base", "--is-ancestor", tip, head):
            parents = [head]
        else:
            parents = [tip, head]
        if tree == head_tree and parents == [head]:
            new = head  # the agent's commits, nothing uncommitted: just bring the branch along
        else:
            argv = ["commit-tree", tree, "-m", message]
            for p in parents:
                argv += ["-p", p]
            new = g.out(ws.path, *argv, author=author)
        g.run(ws.path, "update-ref", "-m", f"wvo-batch: {message.splitlines()[0]}", f"refs/heads/{ws.branch}", new, tip)
        return new, True

    def commit_all(self, ws: Workspace, message: str, author: str = "wvo-batch") -> str | None:
        """Commit what the agent left (untracked too, .gitignore respected); the branch tip, or None when nothing changed since base."""
        tip, _ = self._snapshot(ws, message, author)
        if tip == ws.base_commit:
            self._record(ws.branch, state=BranchState.NO_CHANGES.value, tip=tip)
            return None
        self._record(ws.branch, state=BranchState.COMMITTED.value, tip=tip)
        return tip

    def wip_commit(self, ws: Workspace, reason: str) -> str | None:
        """Commit what is in the worktree as "WIP: <reason>"; the new commit, or None when nothing was uncommitted."""
        new, moved = self._snapshot(ws, f"WIP: {reason}", "wvo-batch")
        if not moved:
            return None
        self._record(ws.branch, state=BranchState.WIP.value, tip=new)
        return new

    def remove(self, ws: Workspace, reason: str = "worktree removed") -> str | None:
        """WIP-commit what is left, then remove the worktree (its branch stays); the WIP commit or None.

        Raises GitError (and removes nothing) when the WIP commit fails: no attempt's work is lost.
        """
        wip = self.wip_commit(ws, reason) if (Path(ws.path) / ".git").exists() else None
        self.git.run(self.repo, "worktree", "remove", "--force", ws.path)
        self._record(ws.branch, path=None)
        return wip

    def mark(self, branch: str, state: BranchState, **fields) -> None:
        """Record a branch's state (the Lander's verdicts); only branches of this run."""
        if not self.is_ours(branch):
            raise WorkspaceError(f"branch {branch!r} was not created by this run")
        self._record(branch, state=state.value, **fields)

    # -- what an attempt changed

    def diff_stats(self, branch: str, base_commit: str) -> DiffStats:
        """Files changed, lines added and deleted (binary files count 0), and the paths, from base to branch."""
        out = self.git.run(self.repo, "diff", "--numstat", "-z", "--no-renames", "--no-ext-diff",
                           base_commit, f"refs/heads/{branch}").stdout
        added = deleted = 0
        paths = []
        for rec in out.split("\0"):
            if not rec:
                continue
            a, d, path = rec.split("\t", 2)
            added += int(a) if a.isdigit() else 0
            deleted += int(d) if d.isdigit() else 0
            paths.append(path)
        return DiffStats(len(paths), added, deleted, paths)

    def diff_text(self, branch: str, base_commit: str, cap_bytes: int = 100_000) -> str:
        """The diff from base to branch for a reviewer's prompt, at most about `cap_bytes`; says so when cut."""
        argv = [self.git.executable, "-C", str(self.repo), *_GIT_OPTIONS, "diff", "--no-color", "--no-ext-diff",
                "--no-textconv", base_commit, f"refs/heads/{branch}"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                env=self.git.env())
        try:
            data = proc.stdout.read(cap_bytes + 1)  # never more than the cap in memory
        finally:
            proc.stdout.close()
            proc.kill()
            proc.wait()
        if len(data) <= cap_bytes:
            return data.decode("utf-8", "replace")
        cut = data[:cap_bytes]
        cut = cut[: cut.rfind(b"\n") + 1] or cut
        stats = self.diff_stats(branch, base_commit)
        return (cut.decode("utf-8", "replace")
                + f"\n[diff cut at {len(cut)} bytes; in all {stats.files_changed} files, "
                  f"+{stats.added} -{stats.deleted}: {', '.join(stats.paths[:50])}]\n")

    # -- end of run and recovery

    def finish(self, keep_worktrees: bool = False) -> Cleanup:
        """Remove worktrees (unless kept) and the landing worktree; delete landed branches that are merged into `into`."""
        from runner.coding.landing import remove_landing_worktree  # landing imports this module

        kept_paths = []
        for branch, rec in self.owned().items():
            if rec.get("path") and Path(rec["path"]).exists():
                if keep_worktrees:
                    kept_paths.append(rec["path"])
                else:
                    self.remove(self.workspace(branch), "end of run")
        remove_landing_worktree(self)
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
            else:
                kept.append((branch, state))
        return Cleanup(deleted, kept, kept_paths)

    def recover(self) -> Recovery:
        """After a dead run: clean the landing worktree, save and remove leftover worktrees, say what is ready to land."""
        from runner.coding.landing import remove_landing_worktree

        problems = []
        remove_landing_worktree(self)
        lock = Path(self.git.out(self.repo, "rev-parse", "--git-common-dir"))
        lock = (self.repo / lock if not lock.is_absolute() else lock) / "refs" / "heads" / f"{self.into}.lock"
        if lock.exists():
            problems.append(f"{lock} exists (a git command died holding it): remove it if no git is running")
        saved, removed = {}, []
        for branch, rec in self.owned().items():
            path = rec.get("path")
            if not path:
                continue
            if Path(path).exists():
                wip = self.remove(self.workspace(branch), "interrupted: the run died")
            else:  # gone already: unregister just this one (not `worktree prune`, which prunes the user's too)
                wip = None
                self.git.run(self.repo, "worktree", "remove", "--force", path, check=False)
                self._record(branch, path=None)
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
            if self.git.ok(self.repo, "worktree", "remove", str(child)):  # no --force: a dirty one stays
                removed.append(str(child))
        return removed


def recover(state_dir: str | Path, git: Git | None = None) -> tuple[Workspaces, Recovery]:
    """Reopen a dead run's workspaces from its state dir and recover them (see Workspaces.recover)."""
    spaces = Workspaces.open(state_dir, git)
    return spaces, spaces.recover()
