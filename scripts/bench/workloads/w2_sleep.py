"""Workload 2: sleep 0.1 on 20 agents vs xargs -P20, GNU parallel and a bare fork pool."""

from __future__ import annotations

import shutil

from bench.context import Bench
from bench.harness import BIN, interleave, measure, med, paired_ratio, walls
from bench.inputs import write_noop_roadmap
from bench.report import Verdict, comparison_table


def run(b: Bench) -> None:
    n = b.n(200, 60)
    title = f"2. {n} × `sleep 0.1` on 20 agents (ideal: {n / 20 * 0.1:.1f} s)"
    b.log(title)
    rm = write_noop_roadmap(b.scratch / f"sleep-{n}.yaml", n, ("sleep", "0.1"), prefix="s")
    lst = b.lines(n)
    w = "2"
    c = {
        "wvo-batch --quiet": lambda: b.run_wvo(rm, 20, workload=w, phases=True),
        "xargs -P20": lambda: b.run_cmd(w, ["xargs", "-P20", "-I{}", "sleep", "0.1"], lst),
        "bare Python fork pool (the floor)": lambda: b.run_cmd(
            w, [BIN / "python", b.modules / "bare_pool.py", str(n), "20", "sleep", "0.1"]
        ),
        "bare fork pool with a ledger and logs": lambda: ledger_pool(b, w, n),
    }
    if b.tools.get("parallel"):
        c["parallel -j20"] = lambda: b.run_cmd(w, ["parallel", "-j20", "-N0", "sleep", "0.1"], lst)
    res = interleave(c, b.reps, b.log)
    body = comparison_table(res, "xargs -P20")
    body += (
        "\n\nThe bare Python fork pool (`scripts/bench/programs/bare_pool.py`) is the least any Python pool"
        " can do: fork 20 children, pipe each a byte per task, `posix_spawn`, wait, reply; no imports beyond"
        " the interpreter's, no ledger, no logs, no scheduling. It shows how much of the target a Python"
        " runner has left once it has started. The bare fork pool with a ledger and logs"
        " (`scripts/bench/programs/bare_ledger_pool.py`) adds what a runner that keeps wvo-batch's record must do:"
        " a SQLite ledger in WAL mode with the run's and the tasks' rows, each attempt's row committed (group"
        " commit, at most 50 ms late) before its events line is written, and a log file per task."
    )
    body += phases_text(res["wvo-batch --quiet"], res["xargs -P20"])
    r = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["xargs -P20"]))
    fl = paired_ratio(walls(res["bare Python fork pool (the floor)"]), walls(res["xargs -P20"]))
    fl_ledger = paired_ratio(walls(res["bare fork pool with a ledger and logs"]), walls(res["xargs -P20"]))
    b.report.verdicts.append(
        Verdict("2 sleep 0.1 on 20 agents vs xargs -P20",
                f"{r:.2f} × xargs (floors: {fl:.2f} ×; with a ledger and logs {fl_ledger:.2f} ×)", "≤ 1.06 ×", r <= 1.06)
    )
    if "parallel -j20" not in res:
        body += "\n\nGNU parallel is not installed: that comparison was skipped."
    b.report.sections.append(f"### {title}\n\n{body}")


def ledger_pool(b: Bench, w: str, n: int):
    """bare_ledger_pool.py in a folder of its own, removed afterwards."""
    folder = b.state_dir()
    tail = [str(n), "20", "sleep", "0.1"]
    b.report.command(w, [BIN / "python", b.modules / "bare_ledger_pool.py", "$BENCH/state/N", *tail])
    try:
        return measure([BIN / "python", b.modules / "bare_ledger_pool.py", folder, *tail], env=b.env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def phases_text(ours: list, xargs: list) -> str:
    """Where wvo-batch's time over xargs goes, from its runs' events (medians)."""
    ph = [s.extra.get("phases") for s in ours]
    ph = [p for p in ph if p]
    if not ph:
        return ""
    mid = {k: med([p[k] for p in ph]) * 1000 for k in ph[0]}
    over = (med(walls(ours)) - med(walls(xargs))) * 1000
    return (
        f"\n\nWhere wvo-batch's {over:.0f} ms over xargs go (medians, from the events file of each run):"
        f" start-up to its first task {mid['start-up']:.0f} ms (workload 3 is the start-up alone);"
        f" the twenty agents forked one after another, the last one's first task starting {mid['stagger']:.0f} ms"
        f" after the first's; the tasks {mid['tasks']:.0f} ms from there to the last one's end (ten `sleep 0.1`"
        f" in a row: each costs ~103 ms, with the exec of `sleep`, here and under xargs); exit {mid['exit']:.0f} ms"
        " (the agents told to stop and reaped, the ledger's last commit, the summary)."
    )
