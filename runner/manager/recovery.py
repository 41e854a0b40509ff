"""Landing exactly once through a crash: `--resume` counts a task whose merge is on `into` as done.

A landing writes three records, one after the other, and a SIGKILL can fall between any two:

    update-ref refs/heads/<into>  ──▶  journal: branch `landed`  ──▶  ledger: attempt `succeeded`
         (runner.coding.landing)        (runner.coding.workspace)      (the run loop, group-committed)

`into` is the truth: a task whose branch is on it has landed, whatever the journal or the ledger says.
Workspaces.recover finds the branches journalled `committed` whose tip is on `into` (killed before the
journal mark); landed_tasks adds those journalled `landed` whose work is on `into` (killed after the
mark, before the ledger). Both are carried over as succeeded and are not run, or landed, again.
A branch journalled `landed` whose work is not on `into` (someone moved `into` back) is not counted.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "WVO_TEST_CRASH_AT"  # tests only: the name of a crash_point at which the manager SIGKILLs itself


def crash_point(name: str) -> None:
    """A crash window made deterministic for tests: SIGKILL this process here when $WVO_TEST_CRASH_AT names it."""
    if os.environ.get(CRASH_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def landed_tasks(spaces) -> set[str]:
    """Tasks of a dead run whose branch the journal calls landed and whose work is on `into`."""
    from runner.coding.git import BranchState
    from runner.manager.refcheck import tip_of

    into = tip_of(spaces, spaces.into)
    if into is None:
        return set()
    done = set()
    for branch, rec in spaces.owned().items():
        if rec.get("state") != BranchState.LANDED.value:
            continue
        work = tip_of(spaces, branch) or rec.get("landed")
        if work and spaces.git.ok(spaces.repo, "merge-base", "--is-ancestor", work, into):
            done.add(rec["task"])
    return done
