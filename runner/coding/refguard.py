"""The ref guard: a task's git may move its own branch and HEAD, never the user's branches, tags or config.

    task's git (GIT_CONFIG_*: core.hooksPath = <state>/hooks, set by runner.coding.gitenv)
      │ every ref update: reference-transaction "prepared" ──▶ our guard (POSIX sh, no Python)
      │     in this repository: refs/heads/<the attempt's branch>, refs/remotes/*, and in the attempt's own
      │     worktree HEAD, refs/stash and per-worktree refs; anything else refused (exit 1, one line on stderr)
      ▼ any other hook, or the guard once it passed ──▶ the repository's own hook, exactly as git would run it
    <state>/hooks: seal.conf, and a link per hook name to runner/coding/githooks/{reference-transaction,forward}
    <common>/config (+ config.worktree) ──snapshot before──▶ compared after the attempt: a change fails it

Why a hook and not an undo after the attempt: a wrong undo reverts the user's own work (they may commit
to their branch meanwhile; `into` moves as results land). The refs database is shared through the common
`.git`, so prevention must be in the task's own git. The hooks folder is the run's, found through the
task's environment (GIT_CONFIG_COUNT), never through the user's config. Our own git runs with
`core.hooksPath=/dev/null` (runner.coding.git) and is not guarded.

A hook cannot stop `git config` from writing the shared config: that is compared byte for byte, and a
change fails the attempt naming the keys (not their values: a remote's URL may hold a token). It is not
put back: the user may have changed the config meanwhile, and a restore would revert their change.
A guard in the task's environment stops a careless agent's git, not a determined process: anything
that clears the environment or writes `.git/refs` itself gets past it, as it would any hook.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

FOLDER = "hooks"  # under the run's state dir
GUARD = "reference-transaction"
CONF = "seal.conf"  # what the scripts read: the repository's common dir and the user's hooks (0600, sourced)
SCRIPTS = Path(__file__).with_name("githooks")  # the guard and the forwarder, POSIX sh (read them there)
# The hooks git 2.39 looks up in the hooks folder (githooks(5)). Each forwards to the repository's own.
# push-to-checkout and proc-receive are left out unless the user has them: their mere presence changes
# what git does (a push-to-checkout that exits 0 replaces updateInstead's checkout).
HOOKS = (
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit", "prepare-commit-msg",
    "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge", "pre-push", "pre-receive", "update",
    "post-receive", "post-update", "pre-auto-gc", "post-rewrite", "sendemail-validate", "p4-changelist",
    "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit", "post-index-change",
)
ONLY_IF_THE_USER_HAS = ("push-to-checkout", "proc-receive")


def folder_of(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / FOLDER


def installed(state_dir: str | os.PathLike) -> bool:
    """Whether the run's hooks folder has its guard and settings (two looks, no git): an agent looks before each attempt."""
    folder = folder_of(state_dir)
    return os.path.exists(folder / GUARD) and os.path.exists(folder / CONF)


def install(state_dir: str | os.PathLike, common_dir: str | os.PathLike, user_hooks: str) -> Path:
    """Make the run's hooks folder (0700): seal.conf (0600), and for each hook a link to the guard or the forwarder.

    user_hooks: the user's core.hooksPath as git reads it ('' when unset: <common>/hooks). Links, not copies:
    the scripts are code of ours, and every file a run writes is private (0600), which a hook, executable,
    cannot be. Should the installed scripts have lost their executable bit, copies (0700) are made instead.
    """
    folder = folder_of(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    common = str(Path(common_dir).resolve())
    _replace(folder / CONF, f"common={shlex.quote(common)}\nuser_hooks={shlex.quote(user_hooks)}\n", 0o600)
    names = list(HOOKS)
    where = Path(user_hooks) if user_hooks else Path(common) / "hooks"
    if where.is_absolute():
        names += [n for n in ONLY_IF_THE_USER_HAS if os.access(where / n, os.X_OK)]
    for name in [*names, GUARD]:  # the guard last: installed() looks for it
        script = SCRIPTS / (GUARD if name == GUARD else "forward")
        if os.access(script, os.X_OK):
            tmp = _tmp(folder / name)
            os.symlink(script.resolve(), tmp)
            os.replace(tmp, folder / name)
        else:
            _replace(folder / name, script.read_text(), 0o700)
    return folder


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")  # agents and landing threads race


def _replace(path: Path, text: str, mode: int) -> None:
    tmp = _tmp(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def user_hooks_path(git, repo: str | os.PathLike) -> str:
    """The user's core.hooksPath as their own git reads it in `repo` ('' when unset); ours (-c) is skipped."""
    proc = git.run(repo, "config", "--show-scope", "--path", "--get-all", "core.hooksPath", check=False)
    found = [line.split("\t", 1)[1] for line in proc.stdout.splitlines()
             if "\t" in line and not line.startswith("command\t")]
    return found[-1] if found else ""


# --- the shared config ------------------------------------------------------------------------------

CONFIG_FILES = ("config", "config.worktree")  # the repository's, and the main worktree's own


def config_snapshot(common_dir: str | os.PathLike) -> tuple[bytes | None, ...]:
    """The bytes of the repository's shared config files (None for one that does not exist)."""
    out = []
    for name in CONFIG_FILES:
        try:
            with open(Path(common_dir) / name, "rb") as f:
                out.append(f.read())
        except OSError:
            out.append(None)
    return tuple(out)


def config_change(before: tuple, after: tuple) -> str:
    """What changed between two snapshots, by key (values left out: they may be secrets); '' when nothing."""
    parts = []
    for name, old, new in zip(CONFIG_FILES, before, after):
        if old == new:
            continue
        a, b = _entries(old), _entries(new)
        keys = [f"{k} added" for k in b if k not in a] + [f"{k} removed" for k in a if k not in b] + \
               [f"{k} changed" for k in a if k in b and a[k] != b[k]]
        what = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") if keys else "rewritten"
        parts.append(f".git/{name}: {what}")
    return _USERINFO.sub(r"\1***@", "; ".join(parts))  # a key may hold a URL: `url.<base>.insteadOf`


_USERINFO = re.compile(r"(//)[^/@\s]+@")


def _entries(data: bytes | None) -> dict[str, list[str]]:
    """section.key -> its values, read loosely from a git config file (enough to name what changed)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (data or b"").decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            head = line[1:line.find("]")] if "]" in line else line[1:]
            name, _, sub = head.partition(" ")
            section = name.lower() + (f".{sub.strip().strip(chr(34))}" if sub else "")
            line = line[line.find("]") + 1:].strip() if "]" in line else ""
            if not line:
                continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip().lower()}", []).append(value.strip())
    return out
