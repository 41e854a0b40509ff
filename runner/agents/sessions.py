"""A task's agent-CLI session, resumed in whatever folder its next attempt runs in.

Codex keeps its sessions by id under $CODEX_HOME/sessions, whatever the folder: `codex exec resume <id>`
finds one from anywhere, and nothing needs doing. Claude Code files a session under a folder named
after the directory it ran in (<config>/projects/<cwd, every character but letters and digits made
"-", cut at 200 characters and a hash added when longer>/<id>.jsonl, <config> being $CLAUDE_CONFIG_DIR or ~/.claude) and `--resume <id>` looks only in
the current directory's folder; each attempt of a worktree task runs in a new worktree folder. So
before a claude attempt resumes a session, its file is copied into the new folder's project dir
(copied, not moved: the earlier folder's history stays as it was).
"""

from __future__ import annotations

import os
import re
import shutil

from runner.agents.messages import TaskMessage


def carry_session(msg: TaskMessage, env: dict) -> str | None:
    """Make the session a claude attempt resumes visible from msg.cwd; returns the path written, or None."""
    if msg.output != "claude-json" or isinstance(msg.command, str) or not msg.command:
        return None
    argv = list(msg.command)
    try:
        session = argv[argv.index("--resume") + 1]
    except (ValueError, IndexError):
        return None
    if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", session):
        return None
    projects = os.path.join(claude_config_dir(env), "projects")
    cwd = os.path.realpath(msg.cwd or os.getcwd())
    target = os.path.join(projects, project_folder(cwd), f"{session}.jsonl")
    if os.path.exists(target):
        return None
    found = _newest(projects, f"{session}.jsonl")
    if found is None:
        return None
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        shutil.copy2(found, target)
    except OSError:
        return None  # the CLI then says the session is unknown, and the manager starts a fresh one
    return target


def claude_config_dir(env: dict) -> str:
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured:
        return configured
    return os.path.join(env.get("HOME") or os.path.expanduser("~"), ".claude")


_NAME_MAX = 200  # a longer name is cut there and ends with a hash of the whole path


def project_folder(cwd: str) -> str:
    """The name Claude Code (2.1.332) gives a directory's project folder."""
    name = re.sub(r"[^A-Za-z0-9]", "-", cwd)
    if len(name) <= _NAME_MAX:
        return name
    units = cwd.encode("utf-16-le")  # JavaScript's 32-bit string hash, over UTF-16 code units
    h = 0
    for i in range(0, len(units), 2):
        h = (h * 31 + int.from_bytes(units[i:i + 2], "little")) & 0xFFFFFFFF
    h = abs(h - (1 << 32) if h >= 1 << 31 else h)
    digits = ""
    while True:
        h, r = divmod(h, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if not h:
            break
    return f"{name[:_NAME_MAX]}-{digits}"


def _newest(projects: str, name: str) -> str | None:
    best, best_time = None, -1.0
    try:
        folders = os.listdir(projects)
    except OSError:
        return None
    for folder in folders:
        path = os.path.join(projects, folder, name)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if mtime > best_time:
            best, best_time = path, mtime
    return best
