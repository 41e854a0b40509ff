"""Plain git for the coding layer: one command at a time, as a subprocess, our options and identity.

The types runner.coding.workspace and runner.coding.landing share (errors, a worktree, what a run's
end or a recovery did) live here too.
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
import time
from dataclasses import field
from pathlib import Path

from runner.errors import BatchError, UsageError
from runner.model import record

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
    REFUSED = "refused"  # the attempt's result cannot be landed as it is (see the journal's `why`)
    COMMITTED = "committed"  # the attempt finished and its result is committed: ready to land
    NO_CHANGES = "no_changes"
    WIP = "wip"  # an unfinished attempt's work, saved before its worktree went
    LANDED = "landed"
    CONFLICT = "conflict"
    CHECKS_FAILED = "checks_failed"


@record(frozen=True)
class Workspace:
    """One attempt's worktree: where it is, its branch, the commit it started from."""

    path: str
    branch: str
    base_commit: str
    task_id: str


@record(frozen=True)
class DiffStats:
    files_changed: int
    added: int
    deleted: int
    paths: list[str]


@record(frozen=True)
class Cleanup:
    """What the end of a run did: branches deleted (landed, ours, merged) and those kept, with why."""

    deleted: list[str]
    kept: list[tuple[str, str]]  # (branch, state)
    worktrees_kept: list[str]
    problems: list[str] = field(default_factory=list)  # worktrees that could not be removed, and why


@record(frozen=True)
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
    """Runs `git -C DIR ...` with our options and environment; raises GitError unless told not to.

    DIR is always the top of a checkout (the user's, a worktree, the landing worktree), so git is
    told never to look above it (GIT_CEILING_DIRECTORIES = its parent): a worktree whose `.git` a
    task deleted is an error, not the enclosing repository. climb=True looks upwards (find_repo).
    """

    def __init__(self, executable: str = "git"):
        self.executable = executable
        self._envs: dict[str, dict[str, str]] = {}

    def env(self, author: str = "wvo-batch") -> dict[str, str]:
        if author not in self._envs:
            self._envs[author] = git_env(author)
        return self._envs[author]

    def run(self, cwd: str | Path, *args: str, check: bool = True, author: str = "wvo-batch",
            climb: bool = False, index: str | None = None) -> subprocess.CompletedProcess:
        """`index`: an index file of ours for this command (GIT_INDEX_FILE), instead of the checkout's."""
        argv = [self.executable, "-C", str(cwd), *_GIT_OPTIONS, *args]
        env = self.env(author)
        if index is not None:
            env = {**env, "GIT_INDEX_FILE": index}
        if not climb:
            env = {**env, "GIT_CEILING_DIRECTORIES": os.path.dirname(os.path.abspath(cwd))}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
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
    proc = git.run(folder, "rev-parse", "--show-toplevel", check=False, climb=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise WorkspaceError(f"{path}: not inside a git repository (workspace mode worktree needs one)")
    return Path(proc.stdout.strip())


def checked_out_branch(repo: str | Path, git: Git | None = None) -> str | None:
    """The branch checked out in `repo` (short name), or None when HEAD is detached."""
    git = git or Git()
    proc = git.run(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


_LIST_TRIES = 10  # `git worktree list` while another process adds a worktree: tries, 20 ms more apart each


def worktree_branches(repo: str | Path, git: Git | None = None) -> dict[str, str]:
    """Every worktree of the repository that has a branch checked out: branch (short) -> path."""
    git = git or Git()
    out: dict[str, str] = {}
    path = None
    for attempt in range(_LIST_TRIES):
        proc = git.run(repo, "worktree", "list", "--porcelain", check=False)
        if proc.returncode == 0:
            break
        # Another process's `worktree add` is half done ("failed to read .git/worktrees/<name>/commondir"):
        # git takes no lock there, so look again once it has written the rest.
        time.sleep(0.02 * (attempt + 1))
    else:
        raise GitError(["worktree", "list", "--porcelain"], proc.returncode, proc.stderr)
    for line in proc.stdout.splitlines():
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


def diff_stats(git: Git, repo: Path, base: str, tip: str) -> DiffStats:
    """Files changed, lines added and deleted (binary files count 0), and the paths, from base to tip."""
    out = git.run(repo, "diff", "--numstat", "-z", "--no-renames", "--no-ext-diff", base, tip).stdout
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


def diff_text(git: Git, repo: Path, base: str, tip: str, cap_bytes: int = 100_000) -> str:
    """The diff from base to tip, at most about `cap_bytes`; when cut, it says so and names the changed files."""
    argv = [git.executable, "-C", str(repo), *_GIT_OPTIONS, "diff", "--no-color", "--no-ext-diff", "--no-textconv", base, tip]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=git.env())
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
    stats = diff_stats(git, repo, base, tip)
    from runner.coding.review import changed_files  # every file named, or how many were left out

    return (cut.decode("utf-8", "replace")
            + f"\n[diff cut at {len(cut)} bytes; in all {stats.files_changed} files, +{stats.added} -{stats.deleted}: "
              f"{changed_files(stats.paths)}]\n")
