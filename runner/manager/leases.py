"""Resource leases: the reservation dict generalised from agents to ports and database names. Pure logic.

    resources: {port: {range: 8100-8199}, db: [test_a, test_b]}  ──roadmap.fleet──▶ {name: PortRange | NamePool}
    task `uses: [port, db]` ──lease(task, attempt, uses)──▶ {port: "8100", db: "test_a"} (WVO_PORT, WVO_DB)
                           ◀──release(task)── the attempt's outcome (after its checks, and its landing's)

A slot is held by at most one task at a time (DESIGN invariant 11). A task holds all its slots or none.
Which port is free on the machine is not known here: an injected probe says whether a port is in use
outside the run, and a port found in use is skipped (and asked again at the next lease). No sockets,
processes or clock of its own; the scheduler calls it (runner.manager.scheduler) and the run writes
rows() to the ledger, so a resumed run can tell which leases a dead run never released.
"""

from __future__ import annotations

import heapq

from runner.model import record
from runner.roadmap.fleet import NamePool, Pool, PortRange  # noqa: F401 - the pools, as the roadmap declares them

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up
if TYPE_CHECKING:
    from typing import Callable


@record(frozen=True)
class LeaseRow:
    """One slot held by one attempt, as the ledger stores it."""

    task_id: str
    attempt: int
    resource: str
    value: str


def env_name(resource: str) -> str:
    """The variable an attempt finds its slot in: `port` -> WVO_PORT."""
    return "WVO_" + resource.upper()


class Leases:
    """Which task holds which slot of each pool. Only the scheduler (inside the manager) changes it."""

    def __init__(self, pools: dict[str, Pool], in_use: Callable[[str, str], bool] | None = None):
        """in_use(resource, value): whether a port is taken outside the run (None: never asked)."""
        self.pools = dict(pools)
        self._values = {name: pool.values() for name, pool in self.pools.items()}
        self._position = {name: {v: i for i, v in enumerate(vs)} for name, vs in self._values.items()}
        self._busy = dict.fromkeys(self.pools, 0)  # pool -> slots held
        self._probe = in_use
        self._holder: dict[tuple[str, str], str] = {}  # (resource, value) -> task id holding it
        self._held: dict[str, list[LeaseRow]] = {}  # task id -> its rows, one per resource it uses
        self.skipped: dict[tuple[str, str], int] = {}  # (resource, value) -> times found in use outside the run
        self.last_refused: str | None = None  # the pool that had no slot for the last lease() refused
        self.last_refused_outside = False  # ... and whether only ports in use outside the run were left

    def can_lease(self, uses) -> bool:
        """Whether every pool named in uses has a slot no task holds (the probe is not asked)."""
        return all(self._free_count(name) > 0 for name in uses)

    def lease(self, task_id: str, attempt: int, uses) -> dict[str, str] | None:
        """Hold one slot of each pool in uses for the task; None (and nothing held) when one is busy.

        Raises ValueError for a pool not declared, or a task that already holds slots.
        """
        if task_id in self._held:
            raise ValueError(f"task {task_id} already holds {self._describe(self._held[task_id])}")
        taken: dict[str, str] = {}
        self.last_refused, self.last_refused_outside = None, False
        for name in uses:
            if name not in self.pools:
                raise ValueError(f"unknown resource {name!r}")
            value, outside = self._first_free(name)
            if value is None:
                self.last_refused, self.last_refused_outside = name, outside
                return None
            taken[name] = value
        rows = [LeaseRow(task_id, attempt, name, value) for name, value in taken.items()]
        for row in rows:
            self._holder[(row.resource, row.value)] = task_id
            self._busy[row.resource] += 1
        self._held[task_id] = rows
        return taken

    def release(self, task_id: str) -> list[LeaseRow]:
        """Free every slot the task holds; returns the rows freed (none: it held nothing)."""
        rows = self._held.pop(task_id, [])
        for row in rows:
            del self._holder[(row.resource, row.value)]
            self._busy[row.resource] -= 1
        return rows

    def values(self, task_id: str) -> dict[str, str]:
        """What the task holds now: resource -> value."""
        return {row.resource: row.value for row in self._held.get(task_id, ())}

    def env(self, task_id: str) -> dict[str, str]:
        """The attempt's variables: WVO_PORT=8100, WVO_DB=test_a."""
        return {env_name(row.resource): row.value for row in self._held.get(task_id, ())}

    def rows(self, task_id: str) -> list[LeaseRow]:
        return list(self._held.get(task_id, ()))

    def held(self) -> dict[str, dict[str, str]]:
        """For the board and --json: resource -> {value: task id}, in pool order."""
        out: dict[str, dict[str, str]] = {name: {} for name in self.pools}
        for (name, value), task_id in self._holder.items():
            out[name][value] = task_id
        pos = self._position
        return {name: dict(sorted(got.items(), key=lambda kv: pos[name][kv[0]])) for name, got in out.items()}

    def holders(self) -> int:
        return len(self._held)

    def _free_count(self, name: str) -> int:
        if name not in self._values:
            return 0
        return len(self._values[name]) - self._busy[name]

    def _first_free(self, name: str) -> tuple[str | None, bool]:
        """(the first slot nobody holds and the probe does not find in use, whether one was refused by the probe)."""
        if self._busy[name] >= len(self._values[name]):
            return None, False  # every slot held: no need to look
        outside = False
        probe = self._probe if isinstance(self.pools[name], PortRange) else None
        for value in self._values[name]:
            if (name, value) in self._holder:
                continue
            if probe is not None and probe(name, value):
                self.skipped[(name, value)] = self.skipped.get((name, value), 0) + 1
                outside = True
                continue
            return value, False
        return None, outside

    @staticmethod
    def _describe(rows: list[LeaseRow]) -> str:
        return ", ".join(f"{r.resource}={r.value}" for r in rows)


def unreleased(rows: list[tuple[LeaseRow, bool]]) -> list[LeaseRow]:
    """From a ledger's lease rows in write order ((row, released?) each), those a run never released.

    A resumed run records them released (their holders died with the dead run) before it leases anything.
    """
    live: dict[tuple[str, str], LeaseRow] = {}
    for row, released in rows:
        key = (row.resource, row.value)
        if released:
            if key in live and live[key].task_id == row.task_id:
                del live[key]
        else:
            live[key] = row
    return list(live.values())


RECHECK_S = 1.0  # how soon a task that found only ports in use outside the run asks again


class LeaseGate:
    """Which queued tasks wait for a slot, and which to wake when one is freed. Used by the scheduler.

    A task refused a slot waits out of the ready queue, parked on the pool that refused it, so it holds
    back no task that could run now (DESIGN invariant 3). Each freed slot wakes the pool's oldest waiter
    (critical ones first), and every overdue waiter that uses the pool. Against starvation: a waiting task that is overdue (aged past the top
    priority, see runner.manager.scheduler) keeps the pools it uses for itself; younger tasks that use
    one of them wait too ("guarded") until it has its slots. Tasks that use other pools, or none, run on.
    A port refused only because it is in use outside the run is asked for again after RECHECK_S.
    """

    def __init__(self, leases: Leases, uses: dict[str, tuple[str, ...]]):
        self.leases = leases
        self.uses = uses  # task id -> the pools it uses (tasks without `uses:` are not here)
        self._parked: dict[str, list] = {}  # pool -> heap of (tier, queued at, order, seq, task id)
        self._waiting: dict[str, tuple[str, int]] = {}  # parked task id -> (the pool it waits on, "" = guarded; seq)
        self._seq = 0  # tells a live heap entry from a stale one
        self._wanted: dict[str, tuple[float, tuple[str, ...]]] = {}  # overdue waiting task -> (queued at, its pools)
        self._woken: list[str] = []  # tasks to put back into the ready queue, drained by the scheduler
        self.recheck_at: float | None = None  # when to ask again for ports that were in use outside

    def try_lease(self, task_id: str, attempt: int, rank: tuple, overdue: bool, now: float) -> dict[str, str] | None:
        """Lease the task's slots, or park it and return None. rank = (tier, queued at, order)."""
        uses = self.uses[task_id]
        if self._wanted and self._kept_for_others(task_id, rank[1], uses):
            self._park(task_id, "", rank)
            return None
        got = self.leases.lease(task_id, attempt, uses)
        if got is not None:
            if self._wanted.pop(task_id, None) is not None:
                self._wake("", None)  # the tasks that waited behind it may try again
            return got
        if overdue:
            self._wanted[task_id] = (rank[1], uses)
        if self.leases.last_refused_outside:
            self.recheck_at = now + RECHECK_S if self.recheck_at is None else min(self.recheck_at, now + RECHECK_S)
        self._park(task_id, self.leases.last_refused or "", rank)
        return None

    def release(self, task_id: str) -> None:
        """The task's attempt is over (its landing too): free its slots and wake one waiter per slot."""
        for row in self.leases.release(task_id):
            for other, (_, theirs) in self._wanted.items():
                if other in self._waiting and row.resource in theirs:  # an overdue task goes first, whatever the pool's order
                    del self._waiting[other]
                    self._woken.append(other)
            self._wake(row.resource, 1)

    def tick(self, now: float) -> None:
        """Wake every waiter once the recheck time for ports in use outside has come."""
        if self.recheck_at is not None and now >= self.recheck_at:
            self.recheck_at = None
            for pool in list(self._parked):
                self._wake(pool, None)

    def drain_woken(self) -> list[str]:
        woken, self._woken = self._woken, []
        return woken

    def waiting(self) -> int:
        return len(self._waiting)

    def clear(self) -> None:
        """The run stops handing out tasks: nobody waits any more."""
        self._parked.clear()
        self._waiting.clear()
        self._wanted.clear()
        self._woken.clear()
        self.recheck_at = None

    def _kept_for_others(self, task_id: str, since: float, uses: tuple[str, ...]) -> bool:
        for other, (their_since, theirs) in self._wanted.items():
            if other != task_id and their_since <= since and any(u in theirs for u in uses):
                return True
        return False

    def _park(self, task_id: str, pool: str, rank: tuple) -> None:
        self._seq += 1
        self._waiting[task_id] = (pool, self._seq)
        heapq.heappush(self._parked.setdefault(pool, []), (*rank, self._seq, task_id))

    def _wake(self, pool: str, count: int | None) -> None:
        heap = self._parked.get(pool)
        while heap and (count is None or count > 0):
            *_, seq, task_id = heapq.heappop(heap)
            if self._waiting.get(task_id) != (pool, seq):
                continue  # stale: woken since, or parked again
            del self._waiting[task_id]
            self._woken.append(task_id)
            if count is not None:
                count -= 1
