"""Workload 5: `--check` of generated roadmaps with dependencies."""

from __future__ import annotations

from pathlib import Path

import psutil

from bench.context import Bench
from bench.harness import BIN, fmt_s, interleave, loglog_slope, measure, med, span, walls
from bench.inputs import write_dependency_roadmap
from bench.report import Verdict, table


def run(b: Bench) -> None:
    sizes = [1000, 10000] if b.quick else [10000, 100000]
    title = "5. `--check` of a generated roadmap with dependencies"
    b.log(title)
    w = "5"
    files = {}
    for n in sizes:
        files[f"{n:,} tasks, argv `[\"true\"]`"] = (n, write_dependency_roadmap(b.scratch / f"deps-{n}.yaml", n))
    big = sizes[-1]
    files[f"{big:,} tasks, shell string `exit 0`"] = (big, write_dependency_roadmap(b.scratch / f"deps-{big}-sh.yaml", big, shell=True))
    out = b.scratch / "check.out"

    def check(path: Path):
        b.report.command(w, [BIN / "wvo-batch", path, "--check"])
        return lambda: measure([BIN / "wvo-batch", path, "--check"], env=b.env, stdout=out)

    res = interleave({k: check(p) for k, (_, p) in files.items()}, b.reps, b.log)
    million = None
    if not b.quick and not b.args.no_million:
        rss_100k = med([s.maxrss_kb for s in res[f"{big:,} tasks, argv `[\"true\"]`"]]) * 1024
        need = rss_100k * 10 * 1.5
        avail = psutil.virtual_memory().available
        if need < avail:
            n = 1_000_000
            p = write_dependency_roadmap(b.scratch / f"deps-{n}.yaml", n)
            files[f"{n:,} tasks, argv `[\"true\"]`"] = (n, p)
            reps = max(1, b.args.big_reps)
            million = interleave({f"{n:,} tasks, argv `[\"true\"]`": check(p)}, reps, b.log)
            res.update(million)
            p.unlink()
        else:
            b.report.notes.append(
                f"1M-task --check skipped: it would need about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available."
            )
    rows = []
    for k, samples in res.items():
        n, path = files[k]
        rss = [s.maxrss_kb / 1024 for s in samples]
        rows.append([
            k, f"{path.stat().st_size / 2**20:.1f} MB" if path.exists() else "-", span(walls(samples)),
            span([s.cpu for s in samples]), f"{med(walls(samples)) / n * 1e6:.0f} µs", f"{med(rss):.0f} MB ({min(rss):.0f}–{max(rss):.0f})",
            f"{med(rss) * 1024 / n:.1f} kB",
        ])
    body = table(["roadmap", "file", "wall: median (min–max)", "CPU (user + sys)", "per task", "peak RSS", "RSS per task"], rows)
    body += (
        "\n\nTask i depends on 0–3 tasks drawn (seeded) from the 1,000 before it. Peak RSS is the process's"
        " `ru_maxrss` from `wait4`, CPU its user + system time, which a busy machine inflates less than the wall time."
        " Output (the plan) goes to a file."
    )
    if million:
        body += f" The 1M row ran {max(1, b.args.big_reps)} time(s) (`--big-reps`)."
    k100 = f"{big:,} tasks, argv `[\"true\"]`"
    t = med(walls(res[k100]))
    rss = med([s.maxrss_kb for s in res[k100]]) / 1024
    b.report.verdicts.append(Verdict(f"5 --check of {big:,} tasks: wall", fmt_s(t), "≤ 1 s", t <= 1.0 if not b.quick else None))
    b.report.verdicts.append(Verdict(f"5 --check of {big:,} tasks: peak RSS", f"{rss:.0f} MB", "≤ 200 MB", rss <= 200 if not b.quick else None))
    ns = [files[k][0] for k in res if "argv" in k]
    ts = [med(walls(res[k])) for k in res if "argv" in k]
    if len(ns) >= 2:
        body += f"\n\nFitted exponent of --check time vs n (log-log least squares): {loglog_slope(ns, ts):.2f}."
    for p in files.values():
        if p[1].exists():
            p[1].unlink()
    b.report.sections.append(f"### {title}\n\n{body}")
