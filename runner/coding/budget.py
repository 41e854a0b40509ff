"""Whether a run's budget can count: --budget with agent CLIs that report no cost is refused unless accepted.

    --budget / `budget:` + the executor ──budget_check()──▶ nothing · one warning (--budget-unknown-cost ok)
                                                            · UsageError (exit 2, one line) at --check and at run start

A budget that could never stop a run would only look like a safeguard, so it is refused rather than
ignored. Claude reports its cost; codex reports tokens, priced by the executor's `prices:` (runner.coding.pricing).
"""

from __future__ import annotations

from runner.coding import executors, pricing
from runner.errors import UsageError


def uncounted(executor, tasks) -> str | None:
    """Why the spend of these agent-CLI tasks cannot be counted against a budget, or None when it can.

    Claude reports its cost. Codex reports tokens only: its cost is estimated from `prices:`, which must
    price every model the tasks may use (or have a `default` entry). Any other CLI reports no cost.
    """
    name = executor.source or executor.program
    if executor.output == "claude-json":
        return None
    if executor.output != "codex-json":
        return f"executor {name} reports no cost (output: {executor.output or 'plain'})"
    if not executor.prices:
        return f"executor {name} reports tokens but no cost, and has no `prices:` table to estimate it from"
    if pricing.DEFAULT in executor.prices:
        return None
    models = set(executor.escalate)
    for entry in executor.models.values():
        models |= set(entry.values()) if isinstance(entry, dict) else {entry}
    models |= {t.meta["model"] for t in tasks if isinstance(t.meta.get("model"), str)}
    models = {m for m in models if isinstance(m, str) and m.strip()}
    missing = sorted(models - set(executor.prices)) or ([] if models else ["(the CLI's own default model)"])
    if missing:
        return f"executor {name}: `prices:` has no price for {missing[0]} and no `default` entry"
    return None


def budget_check(roadmap, budget, executor_spec, accept: str | None) -> list[str]:
    """--budget (else the roadmap's `budget:`) with agent-CLI tasks whose spend cannot be counted.

    Raises UsageError (one line) unless `accept` is "ok" (--budget-unknown-cost), which makes it one warning,
    returned. A run without agent-CLI tasks spends nothing on them: nothing to say.
    """
    if accept not in (None, "error", "ok"):
        raise UsageError(f"--budget-unknown-cost: must be one of error, ok (got {accept!r})")
    budget = budget if budget is not None else roadmap.settings.get("budget")
    tasks = [t for t in roadmap.tasks if t.command is None and t.call is None]
    executor = executors.parse(executor_spec if executor_spec is not None else roadmap.executor)
    if budget is None or not tasks or executor is None:
        return []
    why = uncounted(executor, tasks)
    if why is None:
        return []
    if accept == "ok":
        return [f"budget ${float(budget):.2f}: {why}; that spend is not counted (--budget-unknown-cost ok)"]
    raise UsageError(f"--budget ${float(budget):.2f}: {why}, so the budget could never stop the run; give the CLI's "
                     "prices, or --budget-unknown-cost ok to run anyway")
