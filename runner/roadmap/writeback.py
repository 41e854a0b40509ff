"""--write-back: set a task's `status` in the roadmap file itself, keeping everything else as it was.

The file is edited as text, one key line at a time, so comments, key order, quoting, blank lines and
line endings (LF or CRLF) survive untouched. Each task's own mapping is found through the YAML reader's
line table, never by looking for an `id:` line: one inside a `description: |`, or an epic with the same
id, is not the task. The edit holds an advisory lock (flock) on the file, which another wvo-batch run
waits for; tasks that edit the file while the run goes take no lock, so the file is re-read just before
it is replaced, and the edit is done again when it changed. Bytes appended to the old file in the moment
of the replace are carried over to the new one. A symlinked roadmap is written through: the target is
replaced, the link stays. Replaced atomically: a temp file beside it, fsync, rename; a crash leaves the
old or the new file. A file that cannot be edited safely raises WriteBackSkipped and is left as it is.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import re
import tempfile
import time

from runner.roadmap.check import Problems
from runner.roadmap.yamlread import parse_yaml

_ATTEMPTS = 50  # edits redone because the file changed under us, before giving up for this time
_ODD_BREAKS = re.compile("\r(?!\n)|[\x85\u2028\u2029]")  # line breaks to YAML, not to str.split("\n")


class WriteBackSkipped(OSError):
    """The roadmap could not be updated safely and was left as it is; strerror says why, in one line."""

    def __init__(self, code: int, why: str):
        super().__init__(code, f"{why}; its statuses were not written")


def write_statuses(path: str, updates: dict[str, tuple[str, str | None]]) -> list[str]:
    """Set task id -> (status, last_error or None) in the file; returns the ids it could not find.

    Raises WriteBackSkipped (an OSError) when the file is no longer UTF-8 YAML, or kept changing; other
    OSErrors as the file system gives them.
    """
    target = os.path.realpath(path)  # a symlink is written through to its target; the link stays
    fd = _open_locked(target)
    try:
        _settle(target)
        for _ in range(_ATTEMPTS):
            data = _read_all(fd)
            lines, missing = _edit(data, path, updates)
            new = "".join(lines).encode("utf-8")
            if new == data or _replace_if_unchanged(target, fd, data, new):
                return missing
        raise WriteBackSkipped(errno.EAGAIN, f"it kept changing while being updated ({_ATTEMPTS} tries)")
    finally:
        os.close(fd)  # releases the lock


def _open_locked(target: str) -> int:
    """An fd of target holding flock(LOCK_EX), on the file that is at that path now."""
    for _ in range(_ATTEMPTS):
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st, now = os.fstat(fd), os.stat(target)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced while we waited for the lock: lock the file that is there now
    raise WriteBackSkipped(errno.EAGAIN, "it kept being replaced while waiting for its lock")


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, max(size - offset, 0) + 65536, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _edit(data: bytes, path: str, updates: dict) -> tuple[list[str], list[str]]:
    """The file's lines with the updates made, and the ids not found. Raises WriteBackSkipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise WriteBackSkipped(errno.EILSEQ, f"it is not UTF-8 text any more (byte 0x{data[e.start]:02x} on line {line})")
    if _ODD_BREAKS.search(text):
        raise WriteBackSkipped(errno.EINVAL, "it has line breaks other than LF and CRLF")
    problems = Problems()
    doc = parse_yaml(data, path, problems)
    if doc is None:
        first = problems.errors[0] if problems.errors else None
        where = f" (line {first.line}: {first.message})" if first and first.line else f" ({first.message})" if first else ""
        raise WriteBackSkipped(errno.EINVAL, f"it is not valid YAML any more{where}")
    lines = text.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += eol
    starts = _task_lines(doc)
    found = []  # (first line index, task id), edited from the bottom up so earlier indexes stay right
    missing = []
    for task_id in updates:
        line = starts.get(task_id)
        if line is None:
            missing.append(task_id)
        else:
            found.append((line - 1, task_id))
    for start, task_id in sorted(found, reverse=True):
        block = _block(lines, start)
        if block is None:  # a flow mapping, {id: a, ...}: not edited
            missing.append(task_id)
            continue
        end, col = block
        status, error = updates[task_id]
        end = _set_key(lines, start, end, col, "status", status, eol)
        _set_key(lines, start, end, col, "last_error", None if error is None else json.dumps(error), eol)
    return lines, [t for t in updates if t in missing]


def _task_lines(doc) -> dict[str, int]:
    """Task id -> the line where its mapping starts, for every layout the loader reads (first one wins)."""
    root = doc.data
    out: dict[str, int] = {}
    if not isinstance(root, dict):
        return out
    lists = [root.get("tasks")]
    epics = root.get("epics")
    for epic in epics if isinstance(epics, list) else ():
        if isinstance(epic, dict):
            lists.append(epic.get("tasks"))
            milestones = epic.get("milestones")
            for ms in milestones if isinstance(milestones, list) else ():
                if isinstance(ms, dict):
                    lists.append(ms.get("tasks"))
    for items in lists:
        for raw in items if isinstance(items, list) else ():
            if type(raw) is dict and type(raw.get("id")) is str and doc.line(raw):
                out.setdefault(raw["id"], doc.line(raw))
    return out


def _key_col(line: str) -> int:
    """Column of the first key on a line, after its indent and any `- ` of the items it opens."""
    s = line.lstrip(" ")
    while s[:2] == "- ":
        s = s[2:].lstrip(" ")
    return len(line) - len(s)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int) -> tuple[int, int] | None:
    """(end line exclusive, key column) of the block mapping whose first key is on line start, or None."""
    col = _key_col(lines[start])
    if lines[start][col : col + 1] in ("{", "[", "", "\n", "\r"):
        return None
    end = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#") and _indent_of(lines[end]) < col:
            break
        end += 1
    while end > start + 1:  # trailing blank lines and comments at key level belong to what follows
        last = lines[end - 1]
        if last.strip() and not (last.lstrip().startswith("#") and _indent_of(last) <= col):
            break
        end -= 1
    return end, col


def _ending(line: str) -> str:
    return "\r\n" if line.endswith("\r\n") else "\n"


def _set_key(lines: list[str], start: int, end: int, col: int, key: str, value: str | None, eol: str) -> int:
    """Set (or, with value None, remove) a scalar key of the mapping at column col; returns the new end."""
    pattern = re.compile(rf"{re.escape(key)}\s*:(?:\s|$)")
    for k in range(start, end):
        line = lines[k]
        if k == start:
            at = _key_col(line)
        elif _indent_of(line) == col:
            at = col
        else:
            continue  # deeper: a nested value or a block scalar's text
        if not pattern.match(line, at):
            continue
        stop = k + 1  # and the lines of a multi-line old value, indented deeper than the key
        while stop < end and lines[stop].strip() and _indent_of(lines[stop]) > col:
            stop += 1
        if value is None:
            if k == start:
                return end  # the item's first key: leave it rather than break the list
            del lines[k:stop]
            return end - (stop - k)
        lines[k] = f"{line[:at]}{key}: {value}{_ending(line)}"
        del lines[k + 1 : stop]
        return end - (stop - k - 1)
    if value is None:
        return end
    lines.insert(end, f"{' ' * col}{key}: {value}{eol}")
    return end + 1


def _replace_if_unchanged(target: str, fd: int, data: bytes, new: bytes) -> bool:
    """Replace target with new if it still holds data (the fd is on it); False when it changed meanwhile."""
    folder = os.path.dirname(target)
    mode = os.fstat(fd).st_mode & 0o7777
    tmp_fd, tmp = tempfile.mkstemp(prefix=".wvo-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(tmp_fd, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        st, now = os.fstat(fd), os.stat(target)
        if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino) or os.pread(fd, len(data) + 1, 0) != data:
            os.unlink(tmp)
            return False
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
    size = _carry_over_appends(target, fd, len(data))
    _settle(target)
    fcntl.flock(fd, fcntl.LOCK_UN)  # the lock was on the old file; whoever waits for it will find the new one
    held = _replaced.setdefault(target, [])
    held.append([os.dup(fd), size, time.monotonic()])
    return True


# target -> [[fd of a file it replaced, bytes of that file accounted for, when]]. A writer that opened the file
# just before the rename writes into the old file a moment later (later still when it is preempted between
# the open and the write): each write-back of the same file, and the exit of the process, carries such bytes
# over to the new file. A replaced file is watched for _WATCH_S, and at most _WATCH_MAX of them.
_replaced: dict[str, list[list]] = {}
_WATCH_S = 10.0
_WATCH_MAX = 32


def _carry_over_appends(target: str, fd: int, size: int) -> int:
    """Bytes appended to the replaced file (fd) past size: append them to target. Returns the new size."""
    for _ in range(_ATTEMPTS):
        grown = os.fstat(fd).st_size
        if grown <= size:
            break
        tail = os.pread(fd, grown - size, size)
        out = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(out, tail)
            os.fsync(out)
        finally:
            os.close(out)
        size += len(tail)
    return size


def _settle(target: str, *, close_all: bool = False) -> None:
    """Carry over what was appended to the files target replaced; stop watching the old ones."""
    held = _replaced.get(target)
    if not held:
        return
    now = time.monotonic()
    keep = []
    try:
        for entry in held:
            entry[1] = _carry_over_appends(target, entry[0], entry[1])
    finally:
        for i, entry in enumerate(held):
            if close_all or len(held) - i > _WATCH_MAX or now - entry[2] > _WATCH_S:
                os.close(entry[0])
            else:
                keep.append(entry)
        if keep:
            _replaced[target] = keep
        else:
            del _replaced[target]


@atexit.register
def settle() -> None:
    """Carry over what was appended to files replaced by the last write-backs; run at exit."""
    for target in list(_replaced):
        try:
            _settle(target, close_all=True)
        except OSError:
            pass  # the folder is gone or read-only now: nothing more can be kept


def _fsync_dir(folder: str) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temp_beside(folder: str) -> tuple[int, str]:
    """A new file of ours in folder, made 0666 less the umask (mkstemp's are 0600 whatever the umask)."""
    while True:
        tmp = os.path.join(folder, f".wvo-{os.urandom(6).hex()}.yaml")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: str, text: str) -> None:
    """Replace path with text: a temp file beside it, fsync, rename; a crash leaves the old or the new file."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777  # kept
    except FileNotFoundError:
        mode = None  # a new file: 0666 less the user's umask, as any program's (a report holds commands and errors)
    fd, tmp = _temp_beside(folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
