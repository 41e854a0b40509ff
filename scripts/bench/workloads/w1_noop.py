"""Workload 1: no-op tasks on 2 agents vs xargs -P2 and GNU parallel."""

from __future__ import annotations

from bench.context import Bench
from bench.harness import BIN, interleave, med, paired_ratio, walls
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
        "bare Python fork pool (the floor)": lambda: b.run_cmd(w, [BIN / "python", b.modules / "bare_pool.py", str(n), "2", "true"]),
        "spawn only, no runner (the floor of any runner)": lambda: b.run_cmd(
            w, [BIN / "python", b.modules / "spawn_only.py", str(n), "2", "true"]
        ),
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
        " The bare Python fork pool (`scripts/bench/programs/bare_pool.py`, as in workload 2) is the least a"
        " Python pool can do per task: a byte down a pipe, `posix_spawn` (vfork + exec, where xargs forks and"
        " searches PATH), wait, a byte back; no ledger, no events, no logs. Most of every contender's time is"
        " the exec of `true` itself (the dynamic loader and libc), which no runner can take away: the bare pool's"
        " ratio is the floor of the 0.7 × target."
        " Below it, `scripts/bench/programs/spawn_only.py` is the floor of any runner at all: two processes,"
        f" each spawning its {n // 2:,} `true`s one after another, with no pipe, no scheduling and no"
        " bookkeeping; what it takes is what the 2,000 execs of `true` cost on these two cores."
    )
    fl = paired_ratio(walls(res["bare Python fork pool (the floor)"]), walls(res["xargs -P2"]))
    so = paired_ratio(walls(res["spawn only, no runner (the floor of any runner)"]), walls(res["xargs -P2"]))
    body += f"\n\nThe floor, bare fork pool / xargs -P2: {fl:.2f} (paired); spawn only / xargs -P2: {so:.2f} (paired)."
    r = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["xargs -P2"]))
    b.report.verdicts.append(Verdict("1 no-op tasks vs xargs -P2", f"{r:.2f} × xargs (floor {fl:.2f} ×; spawn only {so:.2f} ×)", "≤ 0.7 ×", r <= 0.7))
    if "parallel -j2" in res:
        rp = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["parallel -j2"]))
        body += f"\n\nwvo-batch --quiet / GNU parallel: {rp:.2f} (paired)."
    else:
        body += "\n\nGNU parallel is not installed: that comparison was skipped."
    b.report.sections.append(f"### {title}\n\n{body}")
