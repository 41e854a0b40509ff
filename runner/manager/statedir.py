"""The state dir: where it is, its run folders, and the lock that allows one run at a time.

Default: $WVO_STATE_DIR, else $XDG_STATE_HOME/wvo-batch/<name>-<hash>, else
~/.local/state/wvo-batch/<name>-<hash>, where <name> is the first roadmap's file name and <hash> is
taken over the roadmaps' paths with their folders resolved (roadmap_path): one state dir per roadmap,
whatever the current directory and however its path is spelt.
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
    """The default state dir of these roadmaps, to read (--status, --history): the canonical one, else one that an
    earlier version made for this spelling of their paths (see run_state_dir), else the canonical one."""
    canonical, legacy = _default_dirs(files)
    if legacy is not None and not os.path.lexists(canonical) and os.path.isdir(legacy):
        return legacy
    return canonical


def run_state_dir(files: list[str]) -> tuple[str, str | None]:
    """The default state dir of these roadmaps, for a run: (the canonical dir, the legacy dir it was made to lead
    to, or None). Every spelling of a roadmap's path has one canonical dir, so one ledger and one set of locks.

    Earlier versions named the dir after the paths as given: through a symlinked folder, another spelling had
    another dir (two locks: a task run twice at once; --resume by the other spelling found nothing). A dir of
    that kind, found for this spelling while the canonical one does not exist, is adopted: the canonical name
    becomes a symlink to it (atomically; whoever makes the canonical name first wins), so its ledger, its locks
    (a run still in it holds them) and its worktrees stay where they are, and every spelling reaches them.
    """
    canonical, legacy = _default_dirs(files)
    if legacy is None or os.path.lexists(canonical) or not os.path.isdir(legacy):
        return canonical, None
    try:
        os.symlink(os.path.basename(legacy), canonical)  # relative: both are in the same folder
    except FileExistsError:
        return canonical, None
    except OSError as exc:
        raise StateError(f"state dir {canonical}: cannot be made to lead to {legacy} ({exc.strerror}); nothing ran") from None
    return canonical, legacy


def shared_lock_dir() -> str | None:
    """The folder beside the default state dirs (made 0700) where a run with a default state dir also locks its
    roadmap files (RunLock.of_roadmaps); None when it cannot be made or is not ours alone."""
    folder = os.path.join(_base(), "wvo-batch-locks")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return folder


def _base() -> str:
    base = os.environ.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec: a relative path is invalid, and ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return base


def _default_dirs(files: list[str]) -> tuple[str, str | None]:
    """(the canonical default state dir, keyed on each roadmap's roadmap_path; the one keyed on the paths as
    given, which earlier versions used, or None when it is the same)."""
    base = _base()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(files[0]))[0])[:40]

    def folder(paths: list[str]) -> str:
        digest = sha256(os.fsencode("\0".join(paths))).hexdigest()[:10]  # a path that is not UTF-8 is its bytes
        return os.path.join(base, "wvo-batch", f"{name}-{digest}")

    canonical = folder([roadmap_path(f) for f in files])
    legacy = folder([os.path.abspath(f) for f in files])
    return canonical, (legacy if legacy != canonical else None)


def roadmap_path(path: str) -> str:
    """A roadmap file's one name, however it is spelt: its folder resolved (symlinks, `..`), its own name kept,
    so that a symlinked file pointed at a new version is still that roadmap."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def prepare(state_dir: str) -> str:
    """Create the state dir (mode 0700), check it is ours alone and writable; raises StateError."""
    state_dir = os.path.abspath(state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        raise StateError(f"state dir {state_dir}: not writable ({why}); nothing ran") from None
    check_private(state_dir)
    ledger = os.path.join(state_dir, "ledger.sqlite")
    _private_file(ledger)
    for side in ("-wal", "-shm", "-journal"):  # SQLite opens (follows) and replays these: ours, or refused
        _private_file(ledger + side, create=False)
    for name in ("latest", "latest.tmp"):  # only ever a symlink of ours, replaced by each run
        _own_symlink(os.path.join(state_dir, name))
    _private_dir(os.path.join(state_dir, "runs"))
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


def _private_file(path: str, create: bool = True) -> None:
    """A file of the state dir: ours, a regular file (no symlink), made 0600; created unless `create` is
    False (then a missing one is fine); raises StateError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # SQLite keeps the mode,
        except FileExistsError:  # another run on this state dir made it this instant: check it as found
            return _private_file(path)
        os.close(fd)  # and gives its -wal and -shm files the same
        return
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        raise _refusal(path, st, "a regular file")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)  # a ledger made before runs kept their files private


def _private_dir(path: str) -> None:
    """A folder of the state dir: made 0700, or found ours, a folder (no symlink: never followed), and made
    0700 if it was not; raises StateError naming it."""
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise _refusal(path, st, "a folder")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def _own_symlink(path: str) -> None:
    """Where the state dir keeps a symlink of its own (`latest`): nothing, or a symlink of ours; raises StateError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        raise _refusal(path, st, "the symlink wvo-batch keeps there")


def _refusal(path: str, st: os.stat_result, wanted: str) -> StateError:
    """Why what was found at a path of the state dir is not used: another user's, or not what it must be."""
    if st.st_uid != os.geteuid():
        why = f"owned by {_user(st.st_uid)}, not by you"
    else:
        why = f"{_kind(st)}, not {wanted}"
    return StateError(f"{path}: {why}; move it aside or give another --state-dir")


def _kind(st: os.stat_result) -> str:
    """What a path is, for a refusal."""
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (never followed in a state dir)"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISREG(st.st_mode):
        return "a regular file"
    return "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a special file"


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
    return _run_folder(state_dir, target)


def run_folder(state_dir: str, folder: str | None) -> str | None:
    """The run folder the ledger names (runs.folder), taken as runs/<its name> of this state dir (however the
    state dir was spelt when it was written); None unless it is ours and private."""
    return _run_folder(state_dir, "runs/" + os.path.basename(folder)) if folder else None


def _run_folder(state_dir: str, target: str) -> str | None:
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
        _private_dir(path)
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

    def __init__(self, state_dir: str, keys: dict[str, str], shared: tuple[str, dict[str, str]] | None = None):
        # lock file path -> the roadmap it locks (as given), in the order they are taken
        self.paths = {os.path.join(state_dir, f"run-{sha256(os.fsencode(k)).hexdigest()[:10]}.lock"): name
                      for k, name in sorted(keys.items())}
        if shared is not None:  # then those that every default state dir shares (of_roadmaps)
            folder, files = shared
            self.paths.update((os.path.join(folder, f"roadmap-{sha256(os.fsencode(k)).hexdigest()[:10]}.lock"), name)
                              for k, name in sorted(files.items()))
        self._fds: list[int] = []  # held, in the order taken
        self.stale_pid: int | None = None

    @classmethod
    def of_roadmaps(cls, state_dir: str, files: list[str], shared: str | None = None) -> RunLock:
        """The locks of these roadmap files, each keyed twice: on what the file is (device and inode), so a
        hard link reaches the same lock, and on its name (roadmap_path), so a file replaced at that path
        (--write-back puts a new file in place of the old, as editors and generators do) still does.

        `shared` (shared_lock_dir): a folder where each file is locked a third time, on what it is, outside its
        state dir: a symlink to the file or a hard link under another name has a default state dir of its own,
        and would otherwise run the same tasks at once."""
        keys, identities = {}, {}
        for f in files:
            try:
                st = os.stat(f)
                keys[f"{st.st_dev}:{st.st_ino}"] = identities[f"{st.st_dev}:{st.st_ino}"] = f
            except OSError:
                pass
            keys[roadmap_path(f)] = f
        return cls(state_dir, keys, (shared, identities) if shared is not None else None)

    def acquire(self) -> None:
        """Take every lock, or none: raises LockHeld naming the roadmap and the holder's pid."""
        stale = None
        for path, name in self.paths.items():
            try:
                fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
            except StateError:
                self.release()
                raise
            taken, holder = _take(fd)
            if not taken:
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
                fd = _open_lock(path, os.O_RDONLY)
            except (FileNotFoundError, StateError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd)
            finally:
                os.close(fd)
        return None


# How long a run waits out a lock held only shared (--status looking: an instant), or a holder's pid not yet
# written (it took the lock this instant), before it gives up on them.
_SETTLE_S = 1.0


def _pause() -> None:
    time.sleep(0.002)  # polling a lock's state, with a deadline (_take)


def _take(fd: int) -> tuple[bool, int | None]:
    """Take a run's lock: (True, None); or (False, the pid of the run that holds it, None: unknown).

    A run holds its lock exclusively. --status (holder) takes it shared for an instant to see whether a
    run holds it: then no run does, and the look is waited out. A run that holds it writes its pid there
    just after taking it: a look in between waits for the pid (a dead run's, left there, is not it).
    """
    deadline = time.monotonic() + _SETTLE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, None
        except BlockingIOError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held exclusively: a run (the pid there may still be a dead one's it took over from)
            holder = _read_pid(fd)
            while not _alive(holder) and time.monotonic() < deadline:
                _pause()
                holder = _read_pid(fd)
            return False, holder
        fcntl.flock(fd, fcntl.LOCK_UN)  # held shared only: someone looking, not a run
        if time.monotonic() >= deadline:
            return False, _read_pid(fd)
        _pause()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        pass
    return True


def _open_lock(path: str, flags: int) -> int:
    """A lock file's fd: a regular file of ours, never through a symlink nor blocking on a FIFO; raises
    StateError naming it (FileNotFoundError for a missing one opened without O_CREAT)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refusal(path, os.lstat(path), "a regular file") from None
        raise StateError(f"{path}: {exc.strerror}; move it aside or give another --state-dir") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise _refusal(path, st, "a regular file")
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None

