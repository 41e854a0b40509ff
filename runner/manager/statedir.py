"""The state dir: where it is, its run folders, and the lock that allows one run at a time.

Default: $WVO_STATE_DIR, else $XDG_STATE_HOME/wvo-batch/<name>-<hash>, else
~/.local/state/wvo-batch/<name>-<hash>, where <name> is the first roadmap's file name and <hash> is
taken over the roadmaps' absolute paths: one state dir per roadmap, whatever the current directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time

from runner.errors import LockHeld, StateError
from runner.manager.logs import Logger
from runner.roadmap.hashing import sha256

log = Logger(__name__)


def default_state_dir(files: list[str]) -> str:
    base = os.environ.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec: a relative path is invalid, and ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    paths = "\0".join(os.path.abspath(f) for f in files)
    digest = sha256(os.fsencode(paths)).hexdigest()[:10]  # a path that is not UTF-8 is its bytes
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(files[0]))[0])[:40]
    return os.path.join(base, "wvo-batch", f"{name}-{digest}")


def prepare(state_dir: str) -> str:
    """Create the state dir (mode 0700), check it is ours alone and writable; raises StateError."""
    state_dir = os.path.abspath(state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        raise StateError(f"state dir {state_dir}: not writable ({why}); nothing ran") from None
    check_private(state_dir)
    _private_file(os.path.join(state_dir, "ledger.sqlite"))
    try:
        probe = os.path.join(state_dir, f".probe-{os.getpid()}")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:  # a block's worth: a full disk refuses it at once (no fsync: ~10-100 ms)
            f.write(b"x" * 4096)
            f.flush()
        os.unlink(probe)
    except OSError as exc:
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        raise StateError(f"state dir {state_dir}: not writable ({why}); nothing ran") from None
    return state_dir


def check_private(path: str, what: str = "state dir") -> None:
    """Refuse (StateError) a dir that is not ours alone: another user's, writable by group or others, or a
    symlink someone else planted. Whoever can write there can plant the files a run reads back."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid != os.geteuid():
                raise StateError(
                    f"{what} {path}: a symlink owned by {_user(st.st_uid)}, not by you; remove it or give another"
                    " --state-dir"
                )
            st = os.stat(path)
    except OSError as exc:
        raise StateError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{what} {path}: not a directory; remove it or give another --state-dir")
    if st.st_uid != os.geteuid():
        raise StateError(
            f"{what} {path}: owned by {_user(st.st_uid)}, not by you; give a --state-dir of your own (or remove it)"
        )
    if st.st_mode & 0o022:
        raise StateError(
            f"{what} {path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod go-w {path}"
        )


def _private_file(path: str) -> None:
    """A file of the state dir that exists: ours, a regular file (no symlink), made 0600; raises StateError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # SQLite keeps the mode,
        except FileExistsError:  # another run on this state dir made it this instant: check it as found
            return _private_file(path)
        os.close(fd)  # and gives its -wal and -shm files the same
        return
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        kind = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"owned by {_user(st.st_uid)}, not by you"
        raise StateError(f"{path}: {kind}; move it aside or give another --state-dir")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)  # a ledger made before runs kept their files private


def _user(uid: int) -> str:
    try:
        import pwd  # lazily: only a refusal names the owner

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def latest_folder(state_dir: str) -> str | None:
    """The latest run's folder, as `latest` names it; None when it is missing or points outside runs/."""
    try:
        target = os.readlink(os.path.join(state_dir, "latest"))
    except OSError:
        return None
    parts = target.split("/")
    if len(parts) != 2 or parts[0] != "runs" or parts[1] in ("", ".", ".."):
        return None  # only what new_run_folder writes: a relative runs/<name>, no "..", no absolute path
    folder = os.path.join(state_dir, target)
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return folder


def safe_name(task_id: str) -> str:
    """A task id as a file name."""
    if task_id.isascii() and task_id.isalnum() and len(task_id) <= 100:  # already one (no regex: a chunk's hand-out)
        return task_id
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", task_id)[:100]
    if name != task_id:
        import hashlib  # lazily: only ids that are not file names already need it

        name += "-" + hashlib.sha1(task_id.encode()).hexdigest()[:6]
    return name


def new_run_folder(state_dir: str, run_id: int) -> str:
    """runs/<id>-<time>/ with its logs/ (every level 0700) and an empty events.jsonl (0600); `latest` points at it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = os.path.join(state_dir, "runs")
    folder = os.path.join(runs, f"{run_id:04d}-{stamp}")
    for path in (runs, folder, os.path.join(folder, "logs")):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    events = os.path.join(folder, "events.jsonl")
    os.close(os.open(events, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))  # appended to by the run's EventLog
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
    """One run per roadmap file and state dir: an flock per roadmap file, each on a file holding the holder's pid.

    Every file of a run is locked, so `a.yaml b.yaml` and `b.yaml` never run b's tasks at once. The locks
    are taken in one fixed order (their keys sorted), without waiting: two runs never hold one each and
    wait for the other's. The kernel drops an flock when its holder dies, so a stale lock is simply taken
    over; the pid left in the file tells us it was stale, and we warn.
    """

    def __init__(self, state_dir: str, keys: dict[str, str]):
        # lock file path -> the roadmap it locks (as given), in the order they are taken
        self.paths = {os.path.join(state_dir, f"run-{sha256(os.fsencode(k)).hexdigest()[:10]}.lock"): name
                      for k, name in sorted(keys.items())}
        self._fds: list[int] = []  # held, in the order taken
        self.stale_pid: int | None = None

    @classmethod
    def of_roadmaps(cls, state_dir: str, files: list[str]) -> RunLock:
        """The locks of these roadmap files, each keyed on what the file is (device and inode), not how the
        path is spelt: a symlinked folder or a hard link reaches the same lock. A file that cannot be read
        is keyed on its resolved path."""
        keys = {}
        for f in files:
            try:
                st = os.stat(f)
                keys[f"{st.st_dev}:{st.st_ino}"] = f
            except OSError:
                keys[os.path.realpath(f)] = f
        return cls(state_dir, keys)

    def acquire(self) -> None:
        """Take every lock, or none: raises LockHeld naming the roadmap and the holder's pid."""
        stale = None
        for path, name in self.paths.items():
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                self.release()
                who = f"PID {holder}" if holder else "another process"
                raise LockHeld(f"another wvo-batch run of {name} is in progress ({who} holds {path})") from None
            previous = _read_pid(fd)  # left behind only by a holder that died without releasing
            if previous != os.getpid():
                stale = stale or previous
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fds.append(fd)
        self.stale_pid = stale

    def release(self) -> None:
        for fd in reversed(self._fds):
            os.ftruncate(fd, 0)
            os.close(fd)
        self._fds = []

    def holder(self) -> int | None:
        """The pid of a live holder of any of these locks, for --status; None when no run holds one."""
        for path in self.paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd)
            finally:
                os.close(fd)
        return None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None

