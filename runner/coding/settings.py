"""The coding-agent settings of a roadmap: `workspace:`, `files:`, `allow_empty:`, `checks:`, as written -> typed.

    workspace:              # top level, or under defaults: (a task may override mode, checks, files)
      mode: worktree        # worktree | shared
      repo: .               # relative to the roadmap file (default: the repository holding it)
      base: main            # where the first tasks start (default: `into` if it exists, else the checked-out branch)
      into: wvo/landed      # where results land (default: wvo/<roadmap file name without .yaml>)
      land: merge           # merge | branch
    tasks:
      - id: auth
        files: [src/auth/**]
        allow_empty: true
        checks: [make test]

Pure: reads values, returns settings or a list of problems (message, field) for the loader to place at
file:line. The git checks (is it a repository, is `into` checked out) are runner.coding.workspace's.
The command line (--workspace, --land, --into) wins over the file.
"""

from __future__ import annotations

import os

from runner.model import record

MODES = ("worktree", "shared")
LANDS = ("merge", "branch")
WORKSPACE_KEYS = ("mode", "repo", "base", "into", "land", "checks", "files")
TASK_WORKSPACE_KEYS = ("mode", "checks", "files")  # what a task's own `workspace:` may override
TASK_KEYS = ("files", "allow_empty", "checks", "workspace")  # task fields this module reads from Task.meta


@record(frozen=True)
class Workspace:
    """Where one task's attempts run, and where their results go."""

    mode: str  # worktree | shared
    repo: str | None  # absolute path of the repository's top folder (None: shared mode outside git)
    base: str | None  # None: `into` if it exists, else the checked-out branch
    into: str
    land: str  # merge | branch
    files: tuple[str, ...] = ()
    allow_empty: bool = False
    checks: tuple[str, ...] = ()


@record(frozen=True)
class Overrides:
    """The command line's word on workspaces (None: the file's, or the default)."""

    mode: str | None = None
    land: str | None = None
    into: str | None = None
    keep_worktrees: bool = False


def _text_list(v, where: str, problems: list) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        problems.append(f"`{where}` must be a list of non-empty strings; got {v!r}")
        return ()
    for x in v:
        if "\0" in x:
            problems.append(f"`{where}` has a NUL byte in {x!r}")
            return ()
    return tuple(v)


def parse_block(raw, where: str, problems: list, keys: tuple[str, ...] = WORKSPACE_KEYS) -> dict:
    """A `workspace:` mapping as written -> the settings it states (only those), problems appended."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"`{where}` must be a mapping with {', '.join(keys)}; got {raw!r}")
        return {}
    out: dict = {}
    for key, v in raw.items():
        w = f"{where}.{key}"
        if key not in keys:
            problems.append(f"unknown key `{w}` (known: {', '.join(keys)})")
        elif key == "mode":
            if v not in MODES:
                problems.append(f"`{w}` must be one of {', '.join(MODES)}; got {v!r}")
            else:
                out[key] = v
        elif key == "land":
            if v not in LANDS:
                problems.append(f"`{w}` must be one of {', '.join(LANDS)}; got {v!r}")
            else:
                out[key] = v
        elif key in ("repo", "base", "into"):
            if not isinstance(v, str) or not v.strip() or "\0" in v:
                problems.append(f"`{w}` must be a non-empty string; got {v!r}")
            elif key != "repo" and not valid_branch(v):
                problems.append(f"`{w}` is not a valid branch name: {v!r}")
            else:
                out[key] = v
        elif key in ("checks", "files"):
            out[key] = _text_list(v, w, problems)
    return out


def valid_branch(name: str) -> bool:
    """git check-ref-format's rules for a branch name, without running git."""
    bad = (" ", "~", "^", ":", "?", "*", "[", "\\", "..", "@{", "//")
    if not name or name.startswith(("-", "/", ".")) or name.endswith(("/", ".", ".lock")) or name == "@":
        return False
    if any(b in name for b in bad) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return False
    return all(part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/"))


def default_into(roadmap_file: str) -> str:
    name = os.path.basename(roadmap_file)
    for suffix in (".yaml", ".yml", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-") or "roadmap"
    return f"wvo/{safe}"


def for_task(
    task,
    top: dict,
    defaults: dict,
    overrides: Overrides,
    is_agent_task: bool,
    repo_of,
    problems: list,
) -> Workspace:
    """The settings of one task: its own fields over `defaults.workspace` over the top-level block.

    `top` and `defaults` are parse_block() results for the task's file. repo_of(folder) returns the
    top folder of the git repository holding `folder`, or None. Problems are appended as messages.
    """
    meta = task.meta
    own = parse_block(meta.get("workspace"), "workspace", problems, TASK_WORKSPACE_KEYS)
    merged = {**top, **defaults, **own}
    folder = os.path.dirname(os.path.abspath(task.file)) if task.file else os.getcwd()
    if "repo" in merged:
        repo_dir = os.path.normpath(os.path.join(folder, os.path.expanduser(merged["repo"])))
        repo = repo_of(repo_dir)
    elif task.file and os.path.exists(task.file):
        repo_dir = folder
        repo = repo_of(folder)
    else:  # a roadmap built in memory is in no repository, whatever the current folder is
        repo_dir, repo = folder, None
    mode = overrides.mode or merged.get("mode") or ("worktree" if is_agent_task and repo else "shared")
    if mode == "worktree" and repo is None:
        problems.append(f"workspace mode `worktree` needs a git repository, and {repo_dir} is not in one")
    files = _text_list(meta["files"], "files", problems) if "files" in meta else merged.get("files", ())
    checks = _text_list(meta["checks"], "checks", problems) if "checks" in meta else merged.get("checks", ())
    allow_empty = meta.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        problems.append(f"`allow_empty` must be true or false; got {allow_empty!r}")
        allow_empty = False
    into = overrides.into or merged.get("into") or default_into(task.file or "roadmap")
    if overrides.into is not None and not valid_branch(overrides.into):
        problems.append(f"--into: not a valid branch name: {overrides.into!r}")
    return Workspace(
        mode=mode,
        repo=repo,
        base=merged.get("base"),
        into=into,
        land=overrides.land or merged.get("land") or "merge",
        files=files,
        allow_empty=allow_empty,
        checks=checks,
    )
