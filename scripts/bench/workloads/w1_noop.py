"""Workload 1: no-op tasks on 2 agents vs xargs -P2 and GNU parallel."""

from __future__ import annotations

from bench.context import Bench
from bench.harness import interleave, med, paired_ratio, walls
from bench.inputs import write_noop_roadmap
from bench.report import Verdict, comparison_table


def run(b: Bench) -> None:
    n = b.n(2000, 300)
    title = f"1. {n:,} no-op tasks (`true`) on 2 agents"
    b.log(title)
    rm = write_noop_roadmap(b.scratch / f"noop-{n}.yaml", n)
    lst = b.lines(n)
    w = "1"
    c = {
        "wvo-batch --quiet": lambda: b.run_wvo(rm, 2, workload=w),
        "wvo-batch (default display, not a TTY)": lambda: b.run_wvo(rm, 2, quiet=False, workload=w),
        "wvo-batch --quiet, state dir in $TMPDIR": lambda: b.run_wvo(rm, 2, workload=w, tmp=True),
        "xargs -P2": lambda: b.run_cmd(w, ["xargs", "-P2", "-n1", "true"], lst),
    }
    if b.tools.get("parallel"):
        c["parallel -j2"] = lambda: b.run_cmd(w, ["parallel", "-j2", "true"], lst)
    res = interleave(c, b.reps, b.log)
    per_task = lambda s: f"{med(walls(s)) / n * 1000:.2f} ms/task"  # noqa: E731
    body = comparison_table(res, "xargs -P2", per_task)
    body += (
        "\n\nEvery wvo-batch task gets a ledger row and four events; `true` prints nothing, so it leaves no log file."
        " After their first runs, the `true` tasks travel in chunks of quick tasks (README, Architecture)."
        " The `$TMPDIR` row puts the state dir in `$TMPDIR` instead of the scratch folder."
    )
    r = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["xargs -P2"]))
    b.report.verdicts.append(Verdict("1 no-op tasks vs xargs -P2", f"{r:.2f} × xargs", "≤ 0.7 ×", r <= 0.7))
    if "parallel -j2" in res:
        rp = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["parallel -j2"]))
        body += f"\n\nwvo-batch --quiet / GNU parallel: {rp:.2f} (paired)."
    else:
        body += "\n\nGNU parallel is not installed: that comparison was skipped."
    b.report.sections.append(f"### {title}\n\n{body}")
