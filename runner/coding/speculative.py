"""The run's landing queue: the next k branches checked at once, each merged on top of the ones ahead (Zuul).

    submit(job) ──▶ incoming (FIFO) ──▶ window of at most k candidates, in landing order
                                          │ candidate i: merge_commit(base = what candidate i-1 leaves on
                                          │   `into` if it lands; `into`'s tip for the first): no worktree;
                                          │ then, in a thread of its own, the merge checked out in slot i and
                                          │   its checks (landing_checks: TERM → grace → KILL)
                                          ▼
    the head, once its base is `into`'s tip and its checks are over:
       passed   ──▶ update-ref refs/heads/<into> <merge> <tip>  (compare-and-swap) ──▶ Landed
                    (with the passed ones right behind it: one update-ref to the last of them)
       failed   ──▶ ChecksFailed       conflict ──▶ Conflict      ──▶ on_verdict(job, verdict), in order

A candidate is built on the assumption that those ahead of it land (one whose checks still run) or do
not (one that conflicted or failed). When that changes, every candidate behind whose base is no longer
what the ones ahead leave is stopped (its checks cancelled) and merged again on the new base: a failed
candidate drops only itself. A verdict is given only at the head, on `into`'s real tip, so each branch
gets the verdict the one-at-a-time queue (runner.coding.landing.Lander) would give it, in the same order,
with the same merge commits; with k = 1 the two do the same thing.

Each slot is a landing worktree of its own (<state>/landing, landing.2, ...), made ahead while the agents
work (warm) or on first use, and reset to the merge before every check (what an earlier check left goes
then). One thread (the coordinator) merges
and gives verdicts; it never waits on a checkout: merges are made without a worktree (merge-tree,
commit-tree), and each candidate's thread checks its merge out, runs its checks and hands back (ok,
detail). A slot that cannot be made ready drops only its candidate. Verdicts go to on_verdict from the
coordinator thread.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import field
from pathlib import Path
from typing import Callable

from runner.coding.landing import (
    _CAS_TRIES,
    Checks,
    ChecksFailed,
    Conflict,
    Interrupted,
    Landed,
    landing_message,
    merge_commit,
    reset_to,
)
from runner.coding.workspace import (
    BranchState,
    GitError,
    WorkspaceError,
    Workspaces,
    ensure_landing_worktree,
    refuse_if_checked_out,
    remove_landing_worktree,
)
from runner.model import record

# checks_for(slot path, cancel) -> the checks to run there (None: none); cancel is set to stop them
ChecksFor = Callable[[str, threading.Event], "Checks | None"]

NEW, CHECKING, PASSED, FAILED, CONFLICT = "new", "checking", "passed", "failed", "conflict"
_WARMERS = 4  # slots made ahead at once: 16 checkouts of a small repository in ~0.5 s while the agents work
BROKEN = "broken"  # its landing worktree could not be made ready: dropped with the error as its verdict


def slot_path(sp: Workspaces, index: int) -> Path:
    """The landing worktree of slot `index`: the first is the one-at-a-time queue's own."""
    return sp.landing_path if index == 0 else sp.landing_path.with_name(f"{sp.landing_path.name}.{index + 1}")


def remove_slots(sp: Workspaces) -> list[str]:
    """Remove the landing worktrees of slots 2.. (a crash may have left them); problems, one line each."""
    problems = []
    for path in sorted(sp.state_dir.glob(f"{sp.landing_path.name}.*")):
        try:
            remove_landing_worktree(sp, path)
        except (GitError, OSError) as exc:
            problems.append(f"landing worktree {path}: {exc}")
    return problems


@record(eq=False)
class _Candidate:
    job: object
    branch: str
    title: str
    checks_for: ChecksFor | None
    message: str = ""
    base: str | None = None  # the commit it was merged on; None: not merged yet
    merge: str | None = None  # the merge commit (== base when the branch was on it already)
    state: str = NEW
    detail: object = ""  # ChecksFailed's text, or Conflict's files
    slot: int | None = None
    gen: int = 0  # bumped when it is stopped: a checks thread of an older build hands back nothing
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def leaves(self) -> str | None:
        """What `into` is after this candidate, as those behind it assume: its merge unless it failed."""
        return self.merge if self.state in (CHECKING, PASSED) else self.base


class SpeculativeLander:
    """Lands the branches submitted to it on `into`, in order, checking up to k of them at once."""

    def __init__(self, spaces: Workspaces, k: int, on_verdict: Callable[[object, object], None]):
        self.spaces = spaces
        self.k = max(1, k)
        self._on_verdict = on_verdict  # (job, Landed | Conflict | ChecksFailed | Interrupted | exception)
        self._cv = threading.Condition()
        self._incoming: collections.deque = collections.deque()  # guarded by _cv
        self._changed = False  # a submit, a check's end, cancel or stop since the coordinator last looked; _cv
        self._cancelled = False  # the run is stopping: nothing more lands; _cv
        self._stopping = False  # _cv
        self._window: list[_Candidate] = []  # the coordinator's own
        self._free = list(range(self.k))  # free slots; the coordinator's own
        self._cas_misses = 0  # `into` moved under the head this many times in a row
        self._tip: str | None = None  # `into`'s tip when last read or moved by us; the coordinator's own
        self._thread: threading.Thread | None = None
        self._slot_locks = [threading.Lock() for _ in range(self.k)]  # a slot made or checked out by one thread at a time
        self._dirty = [True] * self.k  # checks may have left untracked files there since it was made or cleaned; under its lock
        self._warm_to = 0  # slots 0..this-1 are to be made ahead of use; _cv
        self._warm_next = 0  # the next slot a warming thread takes; _cv
        self._warmers: list[threading.Thread] = []

    # -- from the run's thread

    def submit(self, job, branch: str, title: str, checks_for: ChecksFor | None) -> None:
        with self._cv:
            self._incoming.append(_Candidate(job, branch, title, checks_for))
            self._changed = True
            self._cv.notify_all()  # the coordinator and the warming thread wait on it
        if self._thread is None:
            self._thread = threading.Thread(target=self._coordinate, name="wvo-landing", daemon=True)
            self._thread.start()

    def warm(self, n: int) -> None:
        """Make the first n slots (at most k) ahead of their first use, in a thread of their own, at `into`'s tip:
        a candidate's checkout there then rewrites the files its merge changed, not every file. Called while
        the agents work (their set-up over), so the checkouts run while the machine is idle and not when the
        branches are handed over all at once. A slot that cannot be made is left to its first use."""
        with self._cv:
            if min(n, self.k) <= self._warm_to or self._stopping or self._cancelled:
                return
            self._warm_to = min(n, self.k)
            self._cv.notify_all()
            more = [threading.Thread(target=self._warm, name="wvo-landing-warm", daemon=True)
                    for _ in range(min(_WARMERS, self._warm_to) - len(self._warmers))]  # fmt: skip
            self._warmers += more
        for t in more:
            t.start()

    def _warm(self) -> None:
        while True:
            with self._cv:
                while self._warm_next >= self._warm_to and not (self._stopping or self._cancelled):
                    self._cv.wait()
                if self._stopping or self._cancelled:
                    return
                i = self._warm_next
                self._warm_next += 1
            path = slot_path(self.spaces, i)
            with self._slot_locks[i]:
                if (path / ".git").exists():
                    continue
                try:
                    ensure_landing_worktree(self.spaces, path)
                except Exception:  # noqa: BLE001 - its first use makes it again, and a failure there drops its candidate
                    continue
                self._dirty[i] = False

    def cancel(self) -> None:
        """The run is stopping: stop every check (TERM, grace, KILL); what waits to land gets Interrupted."""
        with self._cv:
            self._cancelled = self._changed = True
            self._cv.notify_all()

    def stop(self, timeout: float = 60.0) -> None:
        """End the coordinator; checks still running are cancelled (their candidates get no verdict)."""
        with self._cv:
            self._stopping = self._changed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for t in self._warmers:
            t.join(timeout)

    # -- the coordinator thread

    def _coordinate(self) -> None:
        while True:
            with self._cv:
                while not self._changed:
                    self._cv.wait()
                self._changed = False
                while self._incoming and len(self._window) < self.k:
                    self._window.append(self._incoming.popleft())
                stopping, cancelled = self._stopping, self._cancelled
                dropped = list(self._incoming) if cancelled else []
                if cancelled:
                    self._incoming.clear()
            if stopping or cancelled:
                for c in self._window:
                    self._halt(c)
                if stopping:
                    return
                for c in self._window + dropped:
                    self._on_verdict(c.job, Interrupted(c.branch))
                self._window.clear()
                self._free = list(range(self.k))
                continue
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - never lose a job: the head gets the error as its verdict (an
                # error merging another candidate is that candidate's: _step drops it there)
                if self._window:
                    self._drop(0, exc)

    def _step(self) -> None:
        sp = self.spaces
        if self._tip is None or (self._window and self._window[0].state in (PASSED, FAILED, CONFLICT)):
            # read afresh before a verdict; otherwise candidates are merged on the last tip read (one that
            # someone else moved since is seen, and all merged again, before the head gets its verdict)
            self._tip = sp.tip()
        tip = self._tip
        while self._window and self._window[0].base == tip and self._window[0].state in (PASSED, FAILED, CONFLICT):
            head = self._window[0]
            if head.state == PASSED:
                # the passed candidates at the head, each merged on the one before: one compare-and-swap lands
                # them all (`into` gets the same commits in the same order; every one of them on its first-parent line)
                run = [head]
                for c in self._window[1:]:
                    if c.state != PASSED or c.base != run[-1].merge:
                        break
                    run.append(c)
                last = run[-1].merge
                if last != tip:
                    refuse_if_checked_out(sp.repo, sp.into, sp.git)  # the user may have checked it out since
                    why = run[-1].message + (f" (and the {len(run) - 1} before it)" if len(run) > 1 else "")
                    if not sp.git.ok(sp.repo, "update-ref", "-m", f"wvo-batch: {why}", f"refs/heads/{sp.into}", last, tip):
                        self._cas_misses += 1
                        if self._cas_misses >= _CAS_TRIES:
                            raise WorkspaceError(f"{sp.into!r} kept moving while {head.branch} was landed; "
                                                 "is another program writing it?")  # fmt: skip
                        tip = sp.tip()  # moved under us: everything is merged again on its new tip
                        break
                self._cas_misses = 0
                for c in run:
                    sp.mark(c.branch, BranchState.LANDED, landed=c.merge)
                    self._window.pop(0)
                    self._on_verdict(c.job, Landed(c.branch, c.merge, already=c.merge == c.base))
                    self._release(c)
                tip = last
                continue
            self._cas_misses = 0
            if head.state == FAILED:
                sp.mark(head.branch, BranchState.CHECKS_FAILED)
                verdict: object = ChecksFailed(head.branch, str(head.detail))
            else:
                sp.mark(head.branch, BranchState.CONFLICT, conflict=head.detail)
                verdict = Conflict(head.branch, list(head.detail))
            self._window.pop(0)
            self._on_verdict(head.job, verdict)
            self._release(head)
        # every candidate on what those ahead of it leave; the stale ones stopped and merged again
        expected = tip
        i = 0
        while i < len(self._window):
            c = self._window[i]
            if c.state == BROKEN:
                self._drop(i, c.detail)
                continue
            if c.base != expected:
                self._halt(c)
                try:
                    self._build(c, expected)
                except Exception as exc:  # noqa: BLE001 - whatever it is, it is this candidate's verdict, not the head's
                    self._drop(i, exc)
                    continue
            expected = c.leaves()
            i += 1
        self._tip = tip
        with self._cv:  # room freed at the head, or a head with its verdict already: look again now
            if (self._incoming and len(self._window) < self.k) or (self._window and self._window[0].state not in (NEW, CHECKING)):
                self._changed = True

    def _build(self, c: _Candidate, base: str) -> None:
        """Merge c on `base` here (no worktree: a few milliseconds), then check it out and check it in a thread."""
        sp = self.spaces
        if not c.message:
            sp.reload()  # the agent journalled the branch in its own process
            c.message = landing_message(sp, c.branch, c.title)  # refuses a branch not ours, or moved back
        c.base, c.merge, c.detail = base, None, ""
        merged = merge_commit(sp, base, c.branch, c.message)
        if isinstance(merged, list):
            c.state, c.detail = CONFLICT, merged
            return
        c.merge = merged
        if merged == base or c.checks_for is None:
            c.state = PASSED
            return
        if c.slot is None:
            c.slot = self._free.pop(0)
        path = slot_path(sp, c.slot)
        checks = c.checks_for(str(path), c.cancel)
        if checks is None:
            c.state = PASSED
            return
        c.state = CHECKING
        c.thread = threading.Thread(target=self._check, args=(c, c.gen, checks, path, merged), name="wvo-landing-check",
                                    daemon=True)  # fmt: skip
        c.thread.start()

    def _check(self, c: _Candidate, gen: int, checks: Checks, path: Path, merged: str) -> None:
        """A checks thread: the merge checked out in the candidate's landing worktree, then its checks; the verdict
        handed back. The next merge checked out there resets what the checks left (reset --hard, clean -fd)."""
        error = None
        try:
            with self._slot_locks[c.slot]:  # the warming thread may be making it
                if (path / ".git").exists():
                    reset_to(self.spaces, path, merged, clean=self._dirty[c.slot])
                else:
                    ensure_landing_worktree(self.spaces, path, at=merged)
                self._dirty[c.slot] = True  # from here on the checks (and the set-up before them) run there
        except Exception as exc:  # noqa: BLE001 - whatever it is, the candidate gets a verdict (its slot is broken)
            error = exc if isinstance(exc, (GitError, WorkspaceError, OSError)) else WorkspaceError(
                f"landing worktree {path}: {type(exc).__name__}: {exc}")
        if error is not None:
            ok, detail = False, error
        elif c.cancel.is_set():
            ok, detail = False, "cancelled"
        else:
            try:
                ok, detail = checks(str(path))
            except Exception as exc:  # noqa: BLE001 - a checks runner that broke fails the candidate, with why
                ok, detail = False, f"the checks could not run: {exc}"
        with self._cv:
            if c.gen == gen:
                c.detail = "" if ok else detail
                c.state = PASSED if ok else (BROKEN if error is not None else FAILED)  # the state last: read without the lock
                self._changed = True
                self._cv.notify_all()  # the coordinator and the warming thread wait on it

    def _halt(self, c: _Candidate) -> None:
        """Stop a candidate's checks (TERM, grace, KILL through its cancel) and wait for them."""
        with self._cv:
            c.gen += 1
        if c.thread is not None:
            c.cancel.set()
            c.thread.join()
            c.thread = None
            c.cancel = threading.Event()
        c.state, c.base, c.merge = NEW, None, None

    def _release(self, c: _Candidate) -> None:
        if c.thread is not None:  # its checks are over; the reset after them may not be
            c.thread.join()
            c.thread = None
        if c.slot is not None:
            self._free.append(c.slot)
            self._free.sort()
            c.slot = None

    def _drop(self, index: int, exc: Exception) -> None:
        c = self._window.pop(index)
        self._halt(c)
        self._release(c)
        self._on_verdict(c.job, exc)
        with self._cv:
            self._changed = True
