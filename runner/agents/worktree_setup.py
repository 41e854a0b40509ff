"""A fresh worktree made a working environment before its task runs: `workspace.copy`, then `workspace.setup`.

    user's checkout ──copy_ignored()──▶ each file a `copy:` glob matches, to the same place in the worktree
      │                                 (.env, local configs: gitignored, so no commit takes them)
      ▼
    `setup:` commands ──run_checks(label="setup")──▶ one after another at the worktree's top, with the
      │               attempt's sealed environment; past the attempt's deadline or on a Cancel: TERM its
      │               tree, KILL after grace (runner.agents.checks, the one check runner)
      ▼
    git status of the worktree: clean but for ignored files, or the attempt is refused (setup_failed)

Why refuse rather than leave out what set-up made that git does not ignore: the snapshot commits
everything git does not ignore, so leaving it out would need an ignore list for this worktree only,
and git has none that is not shared with the user's checkout (info/exclude lives in the common
.git); resetting it after set-up would undo what set-up was for. A set-up that dirties the worktree
(a venv without a .gitignore entry, a lock file rewritten) is one line of .gitignore away from
working, and refusing says which line; committing it would land set-up output with the task's work.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time

from runner.model import record

SHOWN_PATHS = 5  # paths named in a refusal


@record(frozen=True)
class SetUp:
    """How the set-up of one worktree went; error is None when the task may run."""

    seconds: float
    copied: int = 0
    error: str | None = None  # one line
    outcome: str = "setup_failed"  # when error: setup_failed | timed_out | interrupted
    tail: str = ""  # the failing command's last lines, for the next attempt's feedback
    output: str = ""  # the set-up's part of the log, written once the task's log is made


def set_up(git, repo: str, worktree: str, copy: tuple, setup: tuple, env: dict, grace: float,
           cancel=None, deadline: float | None = None) -> SetUp:
    """Copy, then run each set-up command in `worktree`; never raises for what the user's lists do."""
    began = time.monotonic()
    lines: list[str] = []
    try:
        copied, missing = copy_ignored(repo, worktree, copy)
    except OSError as exc:
        why = f"workspace.copy: {exc.filename or ''}: {exc.strerror or exc}"
        return SetUp(time.monotonic() - began, error=why, output=f"wvo-batch: {why}\n")
    lines += [f"wvo-batch: workspace.copy: {g!r} matches no file in {repo}\n" for g in missing]
    if copied:
        lines.append(f"wvo-batch: workspace.copy: {len(copied)} file(s) copied from {repo}: {', '.join(copied[:SHOWN_PATHS])}"
                     f"{' ...' if len(copied) > SHOWN_PATHS else ''}\n")
    if setup:
        import tempfile

        from runner.agents.checks import run_checks

        with tempfile.TemporaryDirectory(prefix="wvo-setup-") as tmp:
            out = os.path.join(tmp, "setup.log")
            r = run_checks(setup, worktree, env, grace, out, cancel=cancel, deadline=deadline, label="setup")
            try:
                with open(out, encoding="utf-8", errors="replace") as f:
                    lines.append(f.read())
            except OSError:
                pass
        if not r.passed:
            shown = _shown(r.failed)
            why = {"failed": f"exit {r.exit_code}", "timed_out": "timed out"}.get(r.outcome, r.outcome)
            return SetUp(time.monotonic() - began, len(copied), f"setup failed: {shown} ({why})",
                         r.outcome if r.outcome in ("timed_out", "interrupted") else "setup_failed", r.tail, "".join(lines))
    dirty = _not_ignored(git, worktree)
    if dirty:
        more = f" and {len(dirty) - SHOWN_PATHS} more" if len(dirty) > SHOWN_PATHS else ""
        why = (f"setup left files git does not ignore, which the task's commit would take: "
               f"{', '.join(dirty[:SHOWN_PATHS])}{more}; add them to .gitignore (set-up output is never committed)")
        lines.append(f"wvo-batch: {why}\n")
        return SetUp(time.monotonic() - began, len(copied), why, output="".join(lines))
    return SetUp(time.monotonic() - began, len(copied), output="".join(lines))


def copy_ignored(repo: str, worktree: str, globs) -> tuple[list[str], list[str]]:
    """Copy the files each glob matches in `repo` to the same place in `worktree`; (copied, globs matching none).

    A file's contents and mode are copied (a symbolic link is followed). A place in the worktree that
    leads out of it (a committed symbolic link) raises OSError, as a file that cannot be read does.
    """
    import glob as globbing

    copied, missing = [], []
    top = os.path.realpath(worktree)
    for g in globs:
        found = sorted(p for p in globbing.glob(g, root_dir=repo, recursive=True, include_hidden=True)
                       if os.path.isfile(os.path.join(repo, p)))
        if not found:
            missing.append(g)
        for rel in found:
            dst = os.path.join(worktree, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.commonpath([top, os.path.realpath(os.path.dirname(dst))]) != top:
                raise OSError(0, "leads out of the worktree", rel)
            if os.path.islink(dst):
                os.unlink(dst)
            shutil.copy2(os.path.join(repo, rel), dst)
            copied.append(rel)
    return copied, missing


def _not_ignored(git, worktree: str) -> list[str]:
    """What differs from HEAD in the worktree and is not ignored: tracked changes and untracked files."""
    proc = git.run(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=none",
                   check=False)
    if proc.returncode != 0:
        return [f"(git status failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]})"]
    out, records = [], proc.stdout.split("\0")
    i = 0
    while i < len(records):
        rec = records[i]
        i += 1
        if len(rec) > 3:
            out.append(rec[3:])
            if rec[0] in "RC":  # a rename's source follows
                i += 1
    return out


def _shown(command) -> str:
    return command if isinstance(command, str) else shlex.join(command)

