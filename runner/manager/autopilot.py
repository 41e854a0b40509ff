"""Batches and the autopilot loop: select what runs, run it, re-read the roadmap, go again.

A plain `wvo-batch ROADMAP` is one batch of every task. `--only`, `--max-tasks` shape a batch;
`--iterations N` / `--once` repeat: after each batch the roadmap is read again from disk (its agents
may have added, removed or changed tasks), validated again, and the next batch selected. Tasks that
succeeded in an earlier batch of the loop are not run again; those that failed are not retried by
the loop (their `retries:` already were), so `--iterations 0` always ends.
"""

from __future__ import annotations

import os
import signal
from dataclasses import field, replace

from runner.errors import Problem
from runner.manager.exits import Ending, decide
from runner.manager.run import Reporter, Run, RunOptions, RunResult, decide_pool
from runner.model import record


@record
class BatchPlan:
    """Which tasks each batch of the loop runs, how many batches, and the pause between them."""

    only: list[str] = field(default_factory=list)
    with_deps: bool = False
    max_tasks: int | None = None
    iterations: int = 1  # 0: until nothing is runnable
    interval: float = 0.0

    @property
    def selecting(self) -> bool:
        return bool(self.only) or self.max_tasks is not None


@record
class LoopResult:
    """What the autopilot loop did: its exit code, each batch's result, and why it stopped."""

    exit_code: int
    batches: list[RunResult]
    errors: list[Problem] = field(default_factory=list)  # an invalid edit that stopped the loop
    stop_reason: str = ""

    def document(self) -> dict:
        """The --json document: totals over every batch, and each batch."""
        keys = ("total", "succeeded", "failed", "skipped", "interrupted")
        doc: dict = {k: sum(b.summary[k] for b in self.batches) for k in keys}
        doc["makespan_s"] = round(sum(b.summary["makespan_s"] for b in self.batches), 4)
        doc["exit_code"] = self.exit_code
        if len(self.batches) == 1:
            doc.update({k: v for k, v in self.batches[0].summary.items() if k not in doc})
            doc["tasks"] = self.batches[0].tasks
        doc["batches"] = [{**b.summary, "tasks": b.tasks} for b in self.batches]
        if self.errors:
            doc["errors"] = [p.as_dict() for p in self.errors]
        if self.stop_reason:
            doc["stop_reason"] = self.stop_reason
        return doc


def run_batches(first, paths: list[str], options: RunOptions, plan: BatchPlan, reporter: Reporter, strict: bool = False):
    """Run batch after batch; `first` is the already-loaded CheckResult of `paths`."""
    from runner.roadmap.loader import load

    loaded = first
    batches: list[RunResult] = []
    done_in_loop: set[str] = set()
    failed_in_loop: dict[str, str] = {}
    iteration = 0
    stop_reason = ""
    ending = Ending()  # over every batch so far
    spent = 0.0  # USD spent by the batches so far: --budget is the loop's, not each batch's
    failures = 0  # tasks failed by the batches so far: so is --max-failures
    set_aside = None  # the last warning that the command line beat the roadmap's `agents:` (a re-read may change it)
    while True:
        iteration += 1
        if iteration > 1:
            loaded = load(paths, strict=strict)
            if loaded.errors:
                for p in loaded.errors:
                    reporter.message(f"error: {p}")
                reporter.message(f"the roadmap became invalid after batch {iteration - 1}; stopping the loop")
                ending = ending.merge(Ending(invalid_roadmap=True))
                return LoopResult(decide(ending), batches, loaded.errors, "invalid roadmap")
        roadmap = loaded.roadmap
        blocked = dict(getattr(loaded, "blocked", {}) or {})
        for task_id, why in failed_in_loop.items():
            blocked.setdefault(task_id, why)
        run_options = replace(options, blocked=blocked, done=set(done_in_loop), spent_usd=spent,
                              failures_before=failures)
        if plan.selecting or iteration > 1:
            done = done_in_loop
            if options.resume:  # what the run it continues finished: the run carries it over, so it is not selected
                done = done | _resumable(roadmap, options)
            selection = _select(roadmap, plan, done, failed_in_loop)
            if not selection.run and (batches or not selection.blocked):
                stop_reason = "nothing left to run" if batches else "nothing selected is runnable"
                if not batches:
                    reporter.message(stop_reason)
                break
            blocked.update(selection.blocked)
            run_options = replace(run_options, blocked=blocked, selected=set(selection.run) | set(selection.blocked))
        pool = decide_pool(run_options, roadmap)  # what Run decides too; said here once, not once a batch
        if pool.set_aside and pool.set_aside != set_aside:
            set_aside = pool.set_aside
            reporter.message(f"warning: {set_aside}")
        result = Run(roadmap, run_options, reporter).execute()
        batches.append(result)
        # what the batch counted: the earlier batches' (or, resumed, its run's) and its own
        spent = result.summary.get("spent_before_usd", 0.0) + ((result.summary.get("usage") or {}).get("cost_usd") or 0.0)
        failures += result.summary["failed"]
        if options.resume:  # the loop continued the run it was killed in: the rest of it goes on from there
            done_in_loop |= result.carried
            options = replace(options, resume=False)
        for row in result.tasks:
            if row["status"] == "succeeded":
                done_in_loop.add(row["task"])
            elif row["status"] in ("failed", "timed_out", "agent_died"):
                failed_in_loop[row["task"]] = f"failed in batch {iteration} (run {result.run_id})"
        ending = ending.merge(result.ending)
        if result.ending.signal is not None:
            return LoopResult(decide(ending), batches, stop_reason="interrupted")
        if result.ending.record_failed:  # the ledger or an events file cannot be written
            return LoopResult(decide(ending), batches, stop_reason="the run's record cannot be written")
        if result.ending.usage_limited:  # the next batch would meet the same limit
            return LoopResult(decide(ending), batches, stop_reason="usage limit beyond --max-wait")
        if result.ending.stopped:  # the budget spent, --max-failures, a failed login or set-up: the next batch would too
            return LoopResult(decide(ending), batches, stop_reason=f"the batch was stopped: {result.ending.stopped}")
        if plan.iterations and iteration >= plan.iterations:
            break
        if plan.interval > 0:
            sig = _pause(plan.interval)
            if sig is not None:
                ending = ending.merge(Ending(signal=sig))
                return LoopResult(decide(ending), batches, stop_reason="interrupted between batches")
    return LoopResult(decide(ending), batches, stop_reason=stop_reason)


def _resumable(roadmap, options: RunOptions) -> set[str]:
    """The tasks a --resume will carry over (runner.manager.ledger.resumable_successes), for the first selection."""
    from runner.manager import statedir
    from runner.manager.ledger import resumable_successes

    state_dir = options.state_dir or statedir.default_state_dir(roadmap.files)
    return resumable_successes(os.path.join(state_dir, "ledger.sqlite"), roadmap.files, roadmap.tasks)


def _select(roadmap, plan: BatchPlan, done: set[str], failed: dict[str, str]):
    from runner.roadmap.selection import select

    done_ids = set(done) | {t.id for t in roadmap.tasks if t.status == "done"}
    candidates = [t for t in roadmap.tasks if t.id not in failed]
    try:
        return select(candidates, only=plan.only, with_deps=plan.with_deps, max_tasks=plan.max_tasks, done=done_ids)
    except ValueError as exc:
        from runner.errors import UsageError

        raise UsageError(str(exc)) from None


def _pause(seconds: float) -> int | None:
    """Wait between batches; returns the signal (SIGINT / SIGTERM) that cut the wait short, if any."""
    wanted = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    try:
        info = signal.sigtimedwait(wanted, seconds)
        return info.si_signo if info else None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
