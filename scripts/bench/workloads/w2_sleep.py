"""Workload 2: sleep 0.1 on 20 agents vs xargs -P20, GNU parallel and a bare fork pool."""

from __future__ import annotations

from bench.context import Bench
from bench.harness import BIN, interleave, paired_ratio, walls
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
        "wvo-batch --quiet": lambda: b.run_wvo(rm, 20, workload=w),
        "xargs -P20": lambda: b.run_cmd(w, ["xargs", "-P20", "-I{}", "sleep", "0.1"], lst),
        "bare Python fork pool (the floor)": lambda: b.run_cmd(
            w, [BIN / "python", b.modules / "bare_pool.py", str(n), "20", "sleep", "0.1"]
        ),
    }
    if b.tools.get("parallel"):
        c["parallel -j20"] = lambda: b.run_cmd(w, ["parallel", "-j20", "-N0", "sleep", "0.1"], lst)
    res = interleave(c, b.reps, b.log)
    body = comparison_table(res, "xargs -P20")
    body += (
        "\n\nThe bare Python fork pool (`scripts/bench/programs/bare_pool.py`) is the least any Python pool"
        " can do: fork 20 children, pipe each a byte per task, `posix_spawn`, wait, reply; no imports beyond"
        " the interpreter's, no ledger, no logs, no scheduling. It shows how much of the target a Python"
        " runner has left once it has started."
    )
    r = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["xargs -P20"]))
    fl = paired_ratio(walls(res["bare Python fork pool (the floor)"]), walls(res["xargs -P20"]))
    b.report.verdicts.append(
        Verdict("2 sleep 0.1 on 20 agents vs xargs -P20", f"{r:.2f} × xargs (floor {fl:.2f} ×)", "≤ 1.06 ×", r <= 1.06)
    )
    if "parallel -j20" not in res:
        body += "\n\nGNU parallel is not installed: that comparison was skipped."
    b.report.sections.append(f"### {title}\n\n{body}")
