"""The state dir: where it is, its run folders, and the lock that allows one run at a time.

Default: $WVO_STATE_DIR, else $XDG_STATE_HOME/wvo-batch/<name>-<hash>, else
~/.local/state/wvo-batch/<name>-<hash>, where <name> is the first roadmap's file name and <hash> is
taken over the roadmaps' absolute paths: one state dir per roadmap, whatever the current directory.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import time

from runner.roadmap.hashing import sha256
from runner.errors import LockHeld, StateError

log = logging.getLogger(__name__)


def default_state_dir(files: list[str]) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    paths = "\0".join(os.path.abspath(f) for f in files)
    digest = sha256(paths.encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(files[0]))[0])[:40]
    return os.path.join(base, "wvo-batch", f"{name}-{digest}")


def prepare(state_dir: str) -> str:
    """Create the state dir (mode 0700) and check it is writable; raises StateError."""
    state_dir = os.path.abspath(state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        probe = os.path.join(state_dir, f".probe-{os.getpid()}")
        with open(probe, "wb") as f:  # a block's worth: a full disk refuses it at once (no fsync: ~10-100 ms)
            f.write(b"x" * 4096)
            f.flush()
        os.unlink(probe)
    except OSError as exc:
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        raise StateError(f"state dir {state_dir}: not writable ({why}); nothing ran") from None
    return state_dir


def safe_name(task_id: str) -> str:
    """A task id as a file name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", task_id)[:100]
    if name != task_id:
        import hashlib  # lazily: only ids that are not file names already need it

        name += "-" + hashlib.sha1(task_id.encode()).hexdigest()[:6]
    return name


def new_run_folder(state_dir: str, run_id: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = os.path.join(state_dir, "runs", f"{run_id:04d}-{stamp}")
    os.makedirs(os.path.join(folder, "logs"), mode=0o700, exist_ok=True)
    latest = os.path.join(state_dir, "latest")
    try:
        tmp = latest + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.relpath(folder, state_dir), tmp)
        os.replace(tmp, latest)
    except OSError:
        pass
    return folder


class RunLock:
    """One run per roadmap and state dir: an flock on a file holding the holder's pid.

    The kernel drops an flock when its holder dies, so a stale lock is simply taken over; the pid left
    in the file tells us it was stale, and we warn.
    """

    def __init__(self, state_dir: str, key: str):
        digest = sha256(key.encode()).hexdigest()[:10]
        self.path = os.path.join(state_dir, f"run-{digest}.lock")
        self._fd: int | None = None
        self.stale_pid: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise LockHeld(f"another wvo-batch run of this roadmap is in progress ({who} holds {self.path})") from None
        previous = _read_pid(fd)  # left behind only by a holder that died without releasing
        self.stale_pid = previous if previous != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid of a live holder, for --status; None when no run holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _read_pid(fd)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None

