"""Workload 11: landing throughput: worktree tasks with `checks:` on 8 and 16 agents vs the agent-limited ideal.

Each task works 2 s and has a 1 s check, which runs in its worktree (on the agent) and again on the merged
result (in the landing queue). When the agents are the limit, the run takes ceil(tasks / agents) rounds of
work + check, then the last landing's check: the ideal. A landing queue that checks one merged result at a
time caps the run at one landing per check instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from bench.context import Bench
from bench.harness import PROGRAMS, BenchError, Sample, interleave, measure, med, paired_ratio, span, walls
from bench.inputs import make_git_repo, worktree_task
from bench.report import Verdict, table
from bench.workloads.w9_worktrees import worktree_events

FILES = 200


def write_landing_roadmap(path: Path, n: int, repo: Path, work_s: float, check_s: float) -> Path:
    """n worktree tasks of work_s seconds each (then an edit of a file of their own), with a check of check_s seconds."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"workspace:\n  mode: worktree\n  repo: {json.dumps(str(repo))}\n  base: main\n"
                f"  checks: [{json.dumps(f'sleep {check_s:g}')}]\ntasks:\n")
        f.writelines(f"  - id: l{i}\n    command: {json.dumps(f'sleep {work_s:g} && ' + worktree_task(i, FILES))}\n" for i in range(n))
    return path


def ideal_s(n: int, agents: int, work_s: float, check_s: float) -> float:
    """The agent-limited makespan: rounds of work + the worktree's check, then the last merged result's check."""
    return math.ceil(n / agents) * (work_s + check_s) + check_s


def run(b: Bench) -> None:
    n = b.args.tasks or b.n(16, 4)
    work_s, check_s = (2.0, 1.0) if not b.quick else (0.4, 0.2)
    agent_counts = (8, 16) if not b.quick else (2, 4)
    title = f"11. Landing throughput: {n} worktree tasks of {work_s:g} s with a {check_s:g} s check, on {' and '.join(map(str, agent_counts))} agents"
    b.log(title)
    w = "11"
    repo = make_git_repo(b.scratch / "repo11", FILES)
    rm = write_landing_roadmap(b.scratch / f"landing-{n}.yaml", n, repo, work_s, check_s)
    runs = {"k": 0}
    figures: dict[int, list[dict]] = {a: [] for a in agent_counts}
    floors: dict[int, list[float]] = {a: [] for a in agent_counts}  # the bash floor's makespans

    def wvo_run(agents: int):
        def go() -> Sample:
            runs["k"] += 1
            k, sd, ev = runs["k"], b.state_dir(), b.scratch / f"events11-{runs['k']}.jsonl"
            out = b.scratch / f"summary11-{k}.json"
            argv = b.wvo(rm, agents, "--state-dir", sd, "--into", f"bench/w11-{k}", "--events", ev, "--json")
            b.report.command(w, b.wvo(rm, agents, "--state-dir", "$BENCH/state/N", "--into", "bench/w11-K",
                                      "--events", "$BENCH/events-K.jsonl", "--json"))
            try:
                s = measure(argv, env=b.env, stdout=out)
            finally:
                shutil.rmtree(sd, ignore_errors=True)
            summary = json.loads(out.read_text())
            fig = worktree_events(ev)
            if fig["landed"] != n:
                raise BenchError(f"workload 11: {fig['landed']} of {n} tasks landed")
            fig["makespan_s"] = summary["telemetry"]["makespan_s"]
            fig["utilization"] = summary["telemetry"]["utilization"]
            figures[agents].append(fig)
            return s
        return go

    def floor_run(agents: int):
        def go() -> Sample:
            runs["k"] += 1
            k, where, out = runs["k"], b.scratch / f"floor11-{runs['k']}", b.scratch / f"floor11-{runs['k']}.out"
            where.mkdir()
            args = [str(FILES), str(n), str(agents), f"{work_s:g}", f"{check_s:g}"]
            b.report.command(w, ["bash", "scripts/bench/programs/landing_floor.sh", "$BENCH/repo11", "$BENCH/floor11-K",
                                 "bench/f11-K", *args])
            s = measure(["bash", PROGRAMS / "landing_floor.sh", repo, where, f"bench/f11-{k}", *args], env=b.env, stdout=out)
            shutil.rmtree(where, ignore_errors=True)
            marks = [line.split() for line in out.read_text().splitlines()]
            started = [float(t) for m, t in marks if m == "started"]
            landed = [float(t) for m, t in marks if m == "landed"]
            if s.rc != 0 or len(landed) != n:
                raise BenchError(f"workload 11: the bash floor landed {len(landed)} of {n} tasks (exit {s.rc})")
            floors[agents].append(max(landed) - min(started))
            return s
        return go

    contenders = {}
    for a in agent_counts:
        contenders[f"wvo-batch --quiet --agents {a}"] = wvo_run(a)
        contenders[f"bash floor, {a} at once"] = floor_run(a)
    res = interleave(contenders, b.reps if b.quick else max(1, b.args.big_reps), b.log)
    rows = []
    over = []
    for a in agent_counts:
        samples = res[f"wvo-batch --quiet --agents {a}"]
        figs = figures[a]
        ideal = ideal_s(n, a, work_s, check_s)
        wall = med(walls(samples))
        makespan = med([f["makespan_s"] for f in figs])
        util = [f["utilization"] for f in figs]
        busy = [f["agent_busy_s"] / (a * f["makespan_s"]) if f["makespan_s"] else 0.0 for f in figs]
        over += [u for u in util if u > 1.0]
        floor = med(floors[a])
        rows.append([f"{a} agents", span(walls(samples)), f"{makespan:.1f} s", f"{ideal:.1f} s", f"{makespan / ideal:.2f} ×",
                     f"{floor:.1f} s ({floor / ideal:.2f} ×)", f"{paired_ratio([f['makespan_s'] for f in figs], floors[a]):.2f}",
                     f"{med(util):.0%} ({min(util):.0%}–{max(util):.0%})", f"{med(busy):.0%}",
                     f"{med([f['landing_busy_s'] for f in figs]):.1f} s"])
        b.report.verdicts.append(Verdict(f"11 landing: makespan on {a} agents vs the agent-limited ideal",
                                         f"{makespan / ideal:.2f} × ({makespan:.1f} s vs {ideal:.1f} s)", "≤ 1.2 ×",
                                         makespan / ideal <= 1.2 if not b.quick else None))
    for a in agent_counts:
        b.report.verdicts.append(Verdict(f"11 landing: makespan on {a} agents vs the bash floor ({a} at once)",
                                         f"{paired_ratio([f['makespan_s'] for f in figures[a]], floors[a]):.2f} ×"
                                         f" ({med([f['makespan_s'] for f in figures[a]]):.1f} s vs {med(floors[a]):.1f} s)",
                                         "reported", None))
    b.report.verdicts.append(Verdict("11 landing: the summary's utilisation", f"max {max(f['utilization'] for a in agent_counts for f in figures[a]):.0%}",
                                     "≤ 100%", not over))
    body = table(["agents", "wall: median (min–max)", "makespan (summary)", "agent-limited ideal", "makespan × ideal",
                  "bash floor: makespan (× ideal)", "makespan × floor (paired)", "utilisation (summary)",
                  "agents busy (events)", "landing queue non-empty"], rows)
    body += (
        f"\n\nThe ideal is ceil({n} / agents) × ({work_s:g} s of work + the {check_s:g} s check in the worktree) + the last"
        f" landing's {check_s:g} s check on the merged result: what the run would take if landing never held anyone up"
        " (and git took no time). The makespan is the run summary's, from the first attempt's start to the last landing;"
        " the wall time adds start-up and shutdown."
        " The landing queue checks up to k merged results at once (`--land-parallel`, default: the number of agents),"
        " each merged on top of those ahead of it. *The bash floor* (`scripts/bench/programs/landing_floor.sh`) does"
        " the same git work in plain bash, as many tasks at once as there are agents: per task a worktree on a new branch"
        " (registered under a lock, as concurrent `git worktree add`s fail; checked out outside it), the work, one file"
        " edited, `add` + `commit`, the check, the worktree removed; then, handed over, a `merge-tree` + `commit-tree`"
        " on top of the task ahead, a landing worktree of its own checked out at the merge, the check, and `update-ref`"
        " once the task ahead has landed. Its makespan is from its first task's work to its last landing, as the"
        f" summary's; it shows what the ideal leaves out: up to {max(agent_counts)} checkouts at once (set-up) on"
        f" {os.cpu_count()} cores, and as many again for the landings. *Utilisation (summary)* is the run"
        " summary's figure (busy attempt time / (agents × makespan)); *agents busy (events)* counts an agent busy from"
        " `task:reserved` to `task:landing`, its hand-over to the landing queue, over agents × the makespan: the utilisation"
        " the summary should show."
    )
    if over:
        body += (
            "\n\nThe summary's utilisation went over 100%: the manager's telemetry (`summarize` in"
            " runner/manager/telemetry.py) counts an attempt busy from its start to its `end`, and a landed attempt's"
            " `end` is when it landed (runner/manager/landing.py builds its TaskResult with the landing's time), so the"
            " time a branch waits in the landing queue counts as agent time while the agent already runs its next task."
        )
    b.report.sections.append(f"### {title}\n\n{body}")
