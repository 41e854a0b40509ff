"""wvo-batch against the tools people would otherwise use: xargs, GNU parallel, concurrent.futures.

    make bench  ==  .venv/bin/python scripts/bench               (--reps 5; --quick for a smoke run;
                                                           --only 10 for one workload)

Every comparison runs in one process, interleaved: each repetition runs every contender of a workload
once, in an order rotated per repetition, so drift in the machine's load lands on all of them alike.
Figures are medians with min-max; ratios are ratios of medians, and the median of the ratios paired
within a repetition (the steadier figure on a busy machine). Results go to docs/benchmarks.md, with
the machine, the exact commands and a cProfile of the manager. Targets are reported, never enforced.

Paths written to the report are generic: $BENCH is the scratch folder, `.` the project root.

Layout: harness.py (running, timing, statistics), inputs.py (generated roadmaps and repositories),
report.py (tables, verdicts, docs/benchmarks.md), machine.py (tools, the machine), context.py (what a
workload works with), workloads/ (one module per workload, each a run(Bench)), programs/ (what the
workloads run beside wvo-batch, as real files), cli.py (the options).
"""
