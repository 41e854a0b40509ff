"""Workload 6: scaling: no-op tasks on 2 agents, 1,000 to 100,000."""

from __future__ import annotations

from bench.context import Bench
from bench.harness import fmt_s, interleave, loglog_slope, med, span, walls
from bench.inputs import write_noop_roadmap
from bench.report import Verdict, table


def run(b: Bench) -> None:
    sizes = [300, 1000, 3000] if b.quick else [1000, 10000, 100000]
    title = "6. Scaling: no-op tasks on 2 agents"
    b.log(title)
    w = "6"
    files = {n: write_noop_roadmap(b.scratch / f"scale-{n}.yaml", n) for n in sizes}
    small = {f"{n:,} tasks": (lambda p=files[n]: b.run_wvo(p, 2, workload=w)) for n in sizes[:-1]}
    res = interleave(small, b.reps, b.log)
    big_reps = b.reps if b.quick else max(1, b.args.big_reps)
    res.update(interleave({f"{sizes[-1]:,} tasks": lambda: b.run_wvo(files[sizes[-1]], 2, workload=w)}, big_reps, b.log))
    rows = []
    medians = []
    for n, (k, samples) in zip(sizes, res.items()):
        m = med(walls(samples))
        medians.append(m)
        net = m - (b.startup_s or 0.0)
        rows.append([k, str(len(samples)), span(walls(samples)), f"{m / n * 1000:.3f} ms", f"{net / n * 1000:.3f} ms" if b.startup_s else "-"])
    body = table(["roadmap", "runs", "wall: median (min–max)", "per task", "per task, start-up (workload 3) taken off"], rows)
    slope = loglog_slope(sizes, medians)
    body += f"\n\nFitted exponent of wall time vs n (log-log least squares over the medians): **{slope:.2f}**"
    if b.startup_s:
        net = [max(1e-6, m - b.startup_s) for m in medians]
        body += f"; with the one-task start-up ({fmt_s(b.startup_s)}) taken off: {loglog_slope(sizes, net):.2f}"
    body += f". The largest roadmap ran {big_reps} time(s) (`--big-reps`)."
    b.report.verdicts.append(Verdict(f"6 scaling exponent, {sizes[0]:,}→{sizes[-1]:,} tasks", f"{slope:.2f}", "≤ 1.1", slope <= 1.1 if not b.quick else None))
    for p in files.values():
        p.unlink()
    b.report.sections.append(f"### {title}\n\n{body}")
