"""Workload 7: memory of the manager and its agents."""

from __future__ import annotations

from bench.context import Bench
from bench.harness import interleave, med, sample_pool
from bench.inputs import write_noop_roadmap
from bench.report import Verdict, table


def run(b: Bench) -> None:
    n = b.n(160, 48)
    title = f"7. Memory: manager and agents, 16 agents, {n} × `sleep 0.3`"
    b.log(title)
    rm = write_noop_roadmap(b.scratch / f"mem-{n}.yaml", n, ("sleep", "0.3"), prefix="m")
    res = interleave({"wvo-batch --quiet, 16 agents": lambda: b.run_wvo(rm, 16, sampler=sample_pool, workload="7")}, b.reps, b.log)
    samples = res["wvo-batch --quiet, 16 agents"]
    mb = lambda key: [s.extra[key] / 2**20 for s in samples if key in s.extra]  # noqa: E731
    rows = []
    for who, prefix in (("manager", "manager"), ("one agent (the largest)", "agent_max"), ("one agent (median of agents)", "agent_med")):
        rows.append([who] + [f"{med(v):.1f} MB ({min(v):.1f}–{max(v):.1f})" if (v := mb(f"{prefix}_{m}")) else "n/a" for m in ("rss", "uss", "pss")])
    all_agents = mb("agents_pss_sum")
    body = table(["process", "peak RSS", "peak USS", "peak PSS"], rows)
    body += (
        f"\n\nSampled every 50 ms with psutil (`memory_full_info`) over {len(samples)} runs; each figure is the peak"
        " over a run, then the median (min–max) over runs. RSS counts pages the forked agents share with the manager;"
        " USS is what an agent alone holds, PSS its fair share."
    )
    if all_agents:
        body += f" All 16 agents together, PSS: {med(all_agents):.0f} MB."
    agent_rss = med(mb("agent_max_rss"))
    agent_uss = med(mb("agent_max_uss")) if mb("agent_max_uss") else None
    b.report.verdicts.append(Verdict("7 per-agent memory (largest agent)", f"RSS {agent_rss:.1f} MB" + (f", USS {agent_uss:.1f} MB" if agent_uss else ""), "≤ 40 MB", agent_rss <= 40))
    b.report.sections.append(f"### {title}\n\n{body}")
