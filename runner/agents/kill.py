"""The one process-tree kill: TERM, a grace period, then KILL, for every process an attempt started.

    kill_tree(pid, grace, mark=token)
      targets: pid's process group ─ every descendant of pid (also those that left its group)
               ─ every process whose environment carries ATTEMPT_MARK=token (also those that left its
                 session and were re-parented: a `setsid` child of a worker)
      TERM (+CONT: a stopped process cannot handle its TERM) ─▶ wait until gone or grace ─▶ KILL,
      then KILL again for what was forked meanwhile, until a look finds nothing

Every attempt runs with its own ATTEMPT_MARK in its environment (runner.agents.pipeline), inherited
by all it starts; a process that clears its environment is still found as a descendant or a member
of the task's group. Used by the agent, its CLI stall watchdog, the checks (runner.agents.checks),
and the Ray actor; the run-level sweep after the manager's death is runner.agents.watchdog.
"""

from __future__ import annotations

import os
import signal
import time

ATTEMPT_MARK = "WVO_ATTEMPT_MARK"  # one token per attempt, in the environment of everything it starts


def new_mark() -> str:
    return os.urandom(8).hex()  # not uuid: it imports platform (~2 ms of start-up)


def kill_tree(pid: int | None, grace: float, wait_root=None, mark: str | None = None, also=()) -> list[int]:
    """TERM pid's group, its descendants, the processes marked with `mark` and `also`; KILL what outlives grace.

    `wait_root(timeout)` waits for pid itself when it is our child (psutil must not reap it, or its
    exit code is lost); without it, only the others are waited for. Returns the pids signalled.
    """
    targets = set(also)
    if pid:
        targets.add(pid)  # a stray that leads no group of its own is reached by name
        targets.update(descendants(pid))
    if mark:
        targets.update(marked(ATTEMPT_MARK, mark))
    targets.discard(os.getpid())
    if pid:
        _signal_group(pid, signal.SIGTERM)
    for p in targets:
        if not (pid and _group_of(p) == pid):  # the group's TERM reached it: a second would run a TERM trap twice
            _kill(p, signal.SIGTERM)
        _kill(p, signal.SIGCONT)
    deadline = time.monotonic() + grace
    if wait_root is not None and pid:
        wait_root(grace)
    wait_gone(targets, deadline)
    if pid:
        _signal_group(pid, signal.SIGKILL)
    for p in targets:
        _kill(p, signal.SIGKILL)
    if mark:  # what was forked while we killed carries the mark too
        for _ in range(20):
            left = [p for p in marked(ATTEMPT_MARK, mark) if p != os.getpid()]
            if not left:
                break
            for p in left:
                _kill(p, signal.SIGKILL)
            targets.update(left)
            wait_gone(left, time.monotonic() + 0.2)
    return sorted(targets)


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (not pid itself), from /proc; those that left its group too.

    Walked down from pid through each thread's `children` list, which costs a few reads per process of
    ours; on a kernel without those lists (CONFIG_PROC_CHILDREN), from every process's `stat`, which
    costs ~10 us per process on the machine (~1 ms at 80, ~10 ms on a desktop's 1,000). Either is a
    snapshot: what forks meanwhile is found by the caller's next look.
    """
    try:
        return _walk_children(pid)
    except _NoChildrenLists:
        pass
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _stat(int(name))
        if stat is not None:
            children.setdefault(stat[1], []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


class _NoChildrenLists(Exception):
    pass


def _walk_children(pid: int) -> list[int]:
    out, todo, seen = [], [pid], {pid}
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            if parent == pid and not os.path.exists("/proc/self/task"):
                raise _NoChildrenLists from None
            continue  # gone meanwhile: its children went to a reaper, found under it or by the next look
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    listed = f.read().split()
            except FileNotFoundError:
                if os.path.exists(f"/proc/{parent}/task/{tid}"):
                    raise _NoChildrenLists from None  # the thread is there, its list is not: no such lists here
                continue
            except OSError:
                continue
            for child in map(int, listed):
                if child not in seen:
                    seen.add(child)
                    out.append(child)
                    todo.append(child)
    return out


def marked(name: str, token: str) -> list[int]:
    """Live processes whose environment has `name` holding token (one of its colon-separated values)."""
    want = token.encode()
    prefix = name.encode() + b"="
    hits = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(prefix):
                if want in var[len(prefix):].split(b":") and alive(int(entry)):
                    hits.append(int(entry))
                break
    return hits


def alive(pid: int) -> bool:
    """True while pid runs (a zombie does not: its parent may never reap it)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != b"Z"


def is_stopped(pid: int) -> bool:
    """True when pid is stopped (SIGSTOP, or traced): it cannot answer anything."""
    stat = _stat(pid)
    return stat is not None and stat[0] in (b"T", b"t")


def wait_gone(pids, deadline: float) -> None:
    """Wait until every pid has exited (zombies count) or the deadline.

    A bounded back-off on the kill path only: there is no event for the exit of a non-child.
    """
    delay = 0.002
    pending = [p for p in pids if alive(p)]
    while pending and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)
        pending = [p for p in pending if alive(p)]


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
