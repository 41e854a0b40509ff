"""Workload 3: start-up: one no-op task vs `parallel -j1 true ::: 1`."""

from __future__ import annotations

import json

from bench.context import Bench
from bench.harness import BIN, interleave, measure, med, paired_ratio, span, walls
from bench.inputs import write_noop_roadmap
from bench.report import Verdict, _quote, comparison_table, table


def run(b: Bench) -> None:
    title = "3. Start-up: a roadmap of one no-op task (`--agents 1`) vs `parallel -j1 true ::: 1`"
    b.log(title)
    rm = write_noop_roadmap(b.scratch / "one.yaml", 1)
    sd = b.scratch / "state" / "startup"  # kept across runs, as cron would keep it
    wvo_argv = b.wvo(rm, 1, "--state-dir", sd)
    w = "3"
    runs = b.n(10, 3)
    fl = None
    if b.tools.get("hyperfine") and b.tools.get("parallel"):
        par = "parallel -j1 true ::: 1"
        wvo_cmd = " ".join(_quote(str(a)) for a in wvo_argv)
        floor = "bare Python runner (the floor)"
        bare = [BIN / "python", b.modules / "bare_runner.py", b.scratch / "bare-ledger.db", "true"]
        bare_cmd = " ".join(_quote(str(a)) for a in bare)
        times: dict[str, list[float]] = {"wvo-batch": [], "parallel": [], floor: []}
        rep_medians: dict[str, list[float]] = {"wvo-batch": [], "parallel": [], floor: []}
        for r in range(b.reps):
            order = [("wvo-batch", wvo_cmd), ("parallel", par), (floor, bare_cmd)]
            order = order[r % 3:] + order[:r % 3]
            out = b.scratch / "hyperfine.json"
            argv = ["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json", out]
            argv += [cmd for _, cmd in order]
            measure(argv, env=b.env)
            data = json.loads(out.read_text())
            for (name, _), result in zip(order, data["results"]):
                times[name] += result["times"]
                rep_medians[name].append(result["median"])
            b.log(f"    rep {r + 1}/{b.reps}  " + "  ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in rep_medians.items()))
        shown = ["hyperfine", "-N", "--warmup", "2", "--runs", str(runs),
                 " ".join(_quote(str(a)) for a in b.wvo(rm, 1, "--state-dir", "$BENCH/state/startup")), par,
                 ".venv/bin/python $BENCH/modules/bare_runner.py $BENCH/bare-ledger.db true"]
        b.report.command(w, shown)
        rows = [
            [k, span(v), f"{med(v) / med(times['parallel']):.2f}", f"{paired_ratio(rep_medians[k], rep_medians['parallel']):.2f}"]
            for k, v in times.items()
        ]
        body = table(["contender", "wall: median (min–max)", "× parallel (medians)", "× paired (per hyperfine block)"], rows)
        body += (
            f"\n\nhyperfine, {b.reps} blocks of {runs} runs (+2 warm-up) each, the commands' order rotated"
            " every block; `-N` (no intermediate shell). The bare Python runner (`scripts/bench/programs/bare_runner.py`)"
            " is the floor of a Python runner for one task: the interpreter, one ledger row in SQLite (WAL, one"
            " commit), one `posix_spawn`, nothing else."
        )
        fl = paired_ratio(rep_medians[floor], rep_medians["parallel"])
        r = paired_ratio(rep_medians["wvo-batch"], rep_medians["parallel"])
        b.startup_s = med(times["wvo-batch"])
    else:
        missing = [t for t in ("hyperfine", "parallel") if not b.tools.get(t)]
        c = {"wvo-batch": lambda: measure(wvo_argv, env=b.env)}
        b.report.command(w, b.wvo(rm, 1, "--state-dir", "$BENCH/state/startup"))
        if b.tools.get("parallel"):
            c["parallel"] = lambda: b.run_cmd(w, ["parallel", "-j1", "true", ":::", "1"])
        res = interleave(c, b.reps * runs, b.log)
        b.startup_s = med(walls(res["wvo-batch"]))
        body = f"{' and '.join(missing)} not installed: timed by this script instead of hyperfine.\n\n"
        if "parallel" in res:
            body += comparison_table(res, "parallel")
            r = paired_ratio(walls(res["wvo-batch"]), walls(res["parallel"]))
        else:
            body += f"wvo-batch: {span(walls(res['wvo-batch']))}; the comparison with GNU parallel was skipped."
            r = None
    b.report.verdicts.append(
        Verdict(
            "3 start-up vs GNU parallel",
            "skipped" if r is None else f"{r:.2f} × parallel" + (f" (floor {fl:.2f} ×)" if fl is not None else ""),
            "≤ 0.8 ×",
            None if r is None else r <= 0.8,
        )
    )
    b.report.sections.append(f"### {title}\n\n{body}")
