"""Workload 8: one task printing a gigabyte: manager RSS."""

from __future__ import annotations

from bench.context import Bench
from bench.harness import interleave, sample_output, span, walls
from bench.report import Verdict, table


def run(b: Bench) -> None:
    size = b.n(10**9, 10**8)
    title = f"8. One task printing {size / 1e9:g} GB: manager RSS"
    b.log(title)
    rm = b.scratch / "big-output.yaml"
    rm.write_text(
        "tasks:\n"
        f"  - id: big\n    command: [\"sh\", \"-c\", \"yes 'a line of output from a noisy task' | head -c {size}\"]\n"
        "  - id: after\n    command: [\"sleep\", \"1\"]\n    dependencies: [big]\n"
    )
    res = interleave({"wvo-batch --quiet, 1 agent": lambda: b.run_wvo(rm, 1, sampler=sample_output, workload="8")}, max(1, min(b.reps, 3)), b.log)
    samples = res["wvo-batch --quiet, 1 agent"]
    get = lambda key: [s.extra[key] / 2**20 for s in samples if key in s.extra]  # noqa: E731
    before, peak, after, agent = get("before"), get("peak"), get("after"), get("agent_peak")
    growth = [p - b for p, b in zip(peak, before)]
    rows = [
        ["manager RSS before the task", span(before, lambda x: f"{x:.1f} MB")],
        ["manager RSS, peak while it printed", span(peak, lambda x: f"{x:.1f} MB")],
        ["manager RSS after (while the next task runs)", span(after, lambda x: f"{x:.1f} MB")],
        ["growth (peak − before)", span(growth, lambda x: f"{x:+.1f} MB")],
        ["agent RSS, peak", span(agent, lambda x: f"{x:.1f} MB")],
        ["wall time of the run", span(walls(samples))],
    ]
    body = table(["figure", "median (min–max)"], rows)
    body += (
        f"\n\nThe task is `yes '…' | head -c {size}`; a second task (`sleep 1`) depends on it so that the manager is"
        " still alive to be sampled after the output ended. Sampled every 20 ms."
    )
    g = max(abs(x) for x in growth) if growth else float("nan")
    b.report.verdicts.append(Verdict(f"8 manager RSS growth with {size / 1e9:g} GB of output", f"{g:+.1f} MB (worst run)", "± 20 MB", g <= 20 if not b.quick else None))
    b.report.sections.append(f"### {title}\n\n{body}")
