"""`make bench`: the options, the chosen workloads, one scratch folder, the report."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.context import Bench
from bench.harness import BenchError, DEFAULT_OUT, SCRATCH_PREFIX, SCRATCH_ROOT, create_cost
from bench.machine import ensure_tools, machine_info
from bench.report import generic, render


# --only's names -> the modules of bench.workloads, each with a run(Bench)
WORKLOADS = {
    "1": "w1_noop", "2": "w2_sleep", "3": "w3_startup", "4": "w4_callables",
    "5": "w5_check", "6": "w6_scaling", "7": "w7_memory", "8": "w8_output", "9": "w9_worktrees",
    "10": "w10_worktrees_at_scale", "11": "w11_landing",
    "profile": "profile",
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description="wvo-batch against the tools people would otherwise use (docs/benchmarks.md).")
    p.add_argument("--reps", type=int, default=5, help="repetitions of each comparison (default 5)")
    p.add_argument("--big-reps", type=int, default=2, help="repetitions of the 100k-task run, the 1M-task --check and the worktree workload (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 repetition")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads: 1-11, profile")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report file (default docs/benchmarks.md)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--no-million", action="store_true", help="skip the 1M-task --check")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--files", type=int, help="workload 10: files in the generated repository (default 100,000; --quick 2,000)")
    p.add_argument("--tasks", type=int, help="workloads 10 and 11: worktree tasks (default 50 and 16; --quick 6 and 4)")
    p.add_argument("--scratch", help="folder to make the scratch folder in (default bench-out/)")
    args = p.parse_args(argv)
    if args.quick:
        args.reps = 1 if "--reps" not in (argv or sys.argv) else args.reps
    chosen = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or args.reps < 1:
        p.error(f"--only: unknown workload(s) {unknown}" if unknown else "--reps must be at least 1")
    if "6" in chosen and "3" not in chosen:
        chosen.insert(0, "3")  # scaling subtracts the start-up measured by 3
    chosen.sort(key=list(WORKLOADS).index)

    started = time.monotonic()
    root = Path(args.scratch) if args.scratch else SCRATCH_ROOT
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root)).resolve()
    tools, notes = ensure_tools(not args.no_install, print)
    bench = Bench(args, scratch, tools)
    bench.report.notes += notes
    machine = machine_info(tools)
    machine.append(["file create (open O_CREAT, 500 new files)", f"scratch folder {create_cost(scratch):.0f} µs, $TMPDIR {create_cost(Path(tempfile.gettempdir())):.0f} µs"])
    failed = []
    try:
        bench.warm_up()
        for w in chosen:
            try:
                importlib.import_module(f"bench.workloads.{WORKLOADS[w]}").run(bench)
            except BenchError as exc:
                msg = generic(str(exc), scratch)
                bench.log(f"workload {w} failed: {msg}")
                failed.append(w)
                bench.report.sections.append(f"### Workload {w}\n\nFailed: `{msg[:500]}`")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    machine.append(["load average at end", " ".join(f"{x:.2f}" for x in os.getloadavg())])
    text = render(bench.report, machine, args, chosen, elapsed, all_workloads=list(WORKLOADS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {generic(str(out.resolve()), scratch)} in {elapsed:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
