"""--write-back: set a task's `status` in the roadmap file itself, keeping everything else as it was.

The file is edited as text, one key line at a time, so comments, key order, quoting and blank lines
survive untouched. It is re-read before every write (agents may edit it while the run goes) and
replaced atomically: a temp file beside it, fsync, rename. A crash leaves the old or the new file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

_ID_LINE = re.compile(r"^(?P<lead>\s*(?:-\s+)?)id\s*:\s*(?P<value>.+?)\s*(?:#.*)?$")


def _plain(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _find_block(lines: list[str], task_id: str) -> tuple[int, int, int] | None:
    """(first line, end line exclusive, key indent) of the task's mapping, or None if not found."""
    for i, line in enumerate(lines):
        m = _ID_LINE.match(line.rstrip("\n"))
        if not m or _plain(m.group("value")) != task_id:
            continue
        key_indent = len(m.group("lead"))
        start = i
        if "-" not in m.group("lead"):  # `id:` is not the first key: walk up to the item's dash
            j = i - 1
            while j >= 0:
                stripped = lines[j].strip()
                if stripped and not stripped.startswith("#"):
                    if _indent_of(lines[j]) < key_indent:
                        break
                    if lines[j].lstrip().startswith("- ") and _indent_of(lines[j]) + 2 == key_indent:
                        start = j
                        break
                j -= 1
        end = i + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped and not stripped.startswith("#") and _indent_of(lines[end]) < key_indent:
                break
            end += 1
        while end > i + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1  # trailing blank and comment lines belong to what follows
        return start, end, key_indent
    return None


def _set_key(lines: list[str], start: int, end: int, indent: int, key: str, value: str | None) -> tuple[int, int]:
    """Set (or, with value None, remove) a scalar key at the block's indent; returns the new end."""
    pattern = re.compile(rf"^\s{{{indent}}}(?:-\s+)?{re.escape(key)}\s*:")
    for k in range(start, end):
        line = lines[k]
        if pattern.match(line) and (_indent_of(line) == indent or line.lstrip().startswith("- ")):
            prefix = line[: line.index(key)]
            if value is None:
                if "-" in prefix:
                    return start, end  # the item's first key: leave it rather than break the list
                # drop the key and any continuation lines indented deeper than it
                stop = k + 1
                while stop < end and lines[stop].strip() and _indent_of(lines[stop]) > indent:
                    stop += 1
                del lines[k:stop]
                return start, end - (stop - k)
            lines[k] = f"{prefix}{key}: {value}\n"
            stop = k + 1
            while stop < end and lines[stop].strip() and _indent_of(lines[stop]) > indent:
                stop += 1
            del lines[k + 1 : stop]  # a multi-line old value
            return start, end - (stop - k - 1)
    if value is None:
        return start, end
    lines.insert(end, f"{' ' * indent}{key}: {value}\n")
    return start, end + 1


def write_statuses(path: str, updates: dict[str, tuple[str, str | None]]) -> list[str]:
    """Set task id -> (status, last_error or None) in the file; returns the ids it could not find."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    missing = []
    for task_id, (status, error) in updates.items():
        block = _find_block(lines, task_id)
        if block is None:
            missing.append(task_id)
            continue
        start, end, indent = block
        start, end = _set_key(lines, start, end, indent, "status", status)
        _set_key(lines, start, end, indent, "last_error", None if error is None else json.dumps(error))
    atomic_write(path, "".join(lines))
    return missing


def atomic_write(path: str, text: str) -> None:
    """Replace path with text: a temp file beside it, fsync, rename; a crash leaves the old or the new file."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".wvo-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
