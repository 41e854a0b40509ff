"""Workload 9: worktree tasks vs a serial git script."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bench.context import Bench
from bench.harness import PROGRAMS, BenchError, Sample, interleave, measure, med, paired_ratio, span, walls
from bench.inputs import make_git_repo, write_worktree_roadmap
from bench.report import Verdict, table
from runner.manager.events import TASK_FINISHED, TASK_LANDED, TASK_LANDING, TASK_NOT_LANDED, TASK_QUEUED, TASK_RESERVED


def run(b: Bench) -> None:
    files, n, agents = b.n(10_000, 50), b.n(100, 6), 8
    title = f"9. Worktrees: {n} tasks, each editing its own file of a {files:,}-file repository, on {agents} agents"
    b.log(title)
    w = "9"
    t0 = time.perf_counter()
    repo = make_git_repo(b.scratch / "repo", files)
    built = time.perf_counter() - t0
    rm = write_worktree_roadmap(b.scratch / f"worktrees-{n}.yaml", n, repo, files)
    script = b.modules / "worktree_tasks.sh"
    runs = {"k": 0}
    # Concurrent `git worktree add`s make another agent's `git worktree list` fail now and then ("failed to
    # read .git/worktrees/<name>/commondir"): a setup_failed or failed landing, counted below; retries keep
    # the run whole so that its figures are of all the tasks.
    retries = ("--retries", "3")
    figures: dict[str, list[dict]] = {"wvo": [], "sh": []}

    def wvo_run() -> Sample:
        runs["k"] += 1
        k, sd, ev = runs["k"], b.state_dir(), b.scratch / f"events-{runs['k']}.jsonl"
        argv = b.wvo(rm, agents, "--state-dir", sd, "--into", f"bench/wvo-{k}", "--events", ev, *retries)
        b.report.command(w, b.wvo(rm, agents, "--state-dir", "$BENCH/state/N", "--into", "bench/wvo-K",
                                        "--events", "$BENCH/events-K.jsonl", *retries))
        try:
            s = measure(argv, env=b.env, stdout=b.scratch / "wvo.out")
        finally:
            shutil.rmtree(sd, ignore_errors=True)
        fig = worktree_events(ev)
        if fig["landed"] != n:
            raise BenchError(f"workload 9: {fig['landed']} of {n} tasks landed")
        figures["wvo"].append(fig)
        return s

    def sh_run() -> Sample:
        runs["k"] += 1
        k, where = runs["k"], b.scratch / f"sh-{runs['k']}"
        where.mkdir()
        argv = ["bash", script, repo, where, f"bench/sh-{k}", str(files), str(n)]
        b.report.command(w, ["bash", "$BENCH/modules/worktree_tasks.sh", "$BENCH/repo", "$BENCH/sh-K",
                                "bench/sh-K", str(files), str(n)])
        s = measure(argv, env=b.env)
        shutil.rmtree(where, ignore_errors=True)
        return s

    wvo_name, sh_name = f"wvo-batch --quiet --agents {agents}", "bash script, the same git commands, serial"
    reps = b.reps if b.quick else max(1, b.args.big_reps)
    res = interleave({wvo_name: wvo_run, sh_name: sh_run}, reps, b.log)
    ww, sw = walls(res[wvo_name]), walls(res[sh_name])
    wc, sc = [s.cpu for s in res[wvo_name]], [s.cpu for s in res[sh_name]]
    ms = lambda x: f"{x * 1000:.0f} ms" if x >= 0.1 else f"{x * 1000:.1f} ms"  # noqa: E731
    per = lambda xs: f"{ms(med(xs) / n)} ({ms(min(xs) / n)}–{ms(max(xs) / n)})"  # noqa: E731
    rows = [
        [wvo_name, span(ww), per(ww), per(wc), f"{paired_ratio(ww, sw):.2f}", f"{paired_ratio(wc, sc):.2f}"],
        [sh_name, span(sw), per(sw), per(sc), "1.00", "1.00"],
    ]
    body = table(["contender", "wall: median (min–max)", "per task: wall / tasks", "per task: CPU (user+sys) / tasks",
                  "wall × script (paired)", "CPU × script (paired)"], rows)
    f = {k: med([x[k] for x in figures["wvo"]]) for k in figures["wvo"][0] if k != "failed"}
    failed = [a for x in figures["wvo"] for a in x["failed"]]
    body += (
        f"\n\nThe repository ({files:,} files in 100 folders, one commit, built in {built:.1f} s) is made in the scratch"
        " folder; each run lands on a branch of its own (`--into bench/wvo-K`, the script's `bench/sh-K`), started from"
        " `main`. Task i is the shell command `echo changed by task i > d<i mod 100>/f<i>.txt`, run in a worktree of its own; the script runs the same command line with `sh -c` in its worktree."
        " The script (`$BENCH/modules/worktree_tasks.sh`, `scripts/bench/programs/worktree_tasks.sh`) does per task:"
        " `rev-parse`, `worktree add -b`, the task, `add -A`, `commit`, `merge --no-ff` in a landing worktree,"
        " `rev-parse`, `update-ref` (compare-and-swap), `worktree remove --force`; at the end, one `branch -D` of"
        " the landed branches. wvo-batch does the same and more: a journal, a WIP check before removal, diff stats,"
        " its ledger and events."
        "\n\n*Per task: wall / tasks* is what a user waits per task: wvo-batch runs up to"
        f" {agents} tasks at once and the script one, so on {os.cpu_count()} cores this mostly measures parallelism."
        " *Per task: CPU / tasks* is the work (user + system time of the run and everything it started,"
        " from `wait4`), whatever the parallelism: it is the per-task overhead the goal means"
        " (≤ 1.3 × the script's per-task cost), and the verdict uses it."
        f"\n\nFrom wvo-batch's events (`--events`), median of runs: an agent held a task (hand-out to result: worktree"
        f" add, the task, commit, diff stats, worktree removal) for {ms(f['agent_span_s'])} a task (median), and landing"
        f" took {ms(f['landing_span_s'])} a task (queue wait and merge); the serial work per task, agent span + landing"
        f" ({ms((f['agent_busy_s'] + f['landing_s']) / max(1, f['tasks']))} on average), counts the waits for a core among"
        f" {agents} agents on {os.cpu_count()} cores, so it is above the CPU figure."
        f"\n\nDid landing idle agents? Agents were busy {f['busy_share']:.1%} of the time from the first hand-out to the last"
        f" result. While tasks waited to be handed out, agents sat without a task for {f['idle_with_work_s']:.3f}"
        f" agent-seconds in all ({ms(f['idle_with_work_s'] / max(1, f['tasks']))} a task: the manager's round trip from"
        f" a result to the next hand-out), of which {f['idle_while_landing_s']:.3f} s while the landing queue was"
        f" non-empty, which was non-empty for {f['landing_busy_s']:.2f} s in all; the longest stretch one agent waited"
        f" for its next task was {ms(f['longest_idle_s'])}. Landing overlapped running agents {f['landing_overlap']:.0%}"
        " of its time. An agent is busy from `task:reserved` to `task:landing` (the hand-over to the landing queue) or"
        " `task:finished`, and counts from its first task on (its start-up is not landing's doing); the landing queue"
        " is non-empty from `task:landing` to `task:landed`. The verdict: agents' idle time while landing was under way"
        " is under 10% of the time landing was under way (an agent that waited for the merges would sit idle for all"
        " of it)."
    )
    body += (
        f"\n\nwvo-batch ran with `--retries 3`: concurrent `git worktree add`s make another agent's (or the landing"
        " thread's) `git worktree list --porcelain` fail now and then (`failed to read .git/worktrees/<name>/commondir`),"
        f" which fails that attempt. Attempts that failed, over {len(figures['wvo'])} run(s): {len(failed)}"
        + (" (" + "; ".join(sorted({_short(a) for a in failed})[:5]) + ")" if failed else "") + "; their cost is in the figures."
    )
    shim_rm = write_worktree_roadmap(b.scratch / "worktrees-git-calls.yaml", min(n, 16), repo, files)
    body += "\n\n" + _worktree_git_calls(b, shim_rm, files, agents)
    shim_rm.unlink()
    r = paired_ratio(wc, sc)
    b.report.verdicts.append(Verdict("9 worktree tasks: CPU per task vs a serial git script", f"{r:.2f} × script", "≤ 1.3 ×", r <= 1.3 if not b.quick else None))
    idle = f["idle_while_landing_s"] / f["landing_busy_s"] if f["landing_busy_s"] else 0.0
    b.report.verdicts.append(Verdict(
        "9 worktree tasks: agents idle while landing", f"{idle:.1%} of landing time ({ms(f['idle_while_landing_s'] / max(1, f['tasks']))} a task)",
        "landing never idles an agent (< 10%)", idle < 0.1 if not b.quick else None))
    rm.unlink()
    b.report.sections.append(f"### {title}\n\n{body}")


def _worktree_git_calls(b: Bench, rm: Path, files: int, agents: int) -> str:
    """One more wvo-batch run with a logging `git` first on PATH: calls and seconds per git subcommand."""
    real = shutil.which("git")
    if real is None:
        return ""
    shim_dir = b.modules / "git-shim"
    shim_dir.mkdir(exist_ok=True)
    shutil.copy(PROGRAMS / "git_shim.sh", shim_dir / "git")
    (shim_dir / "git").chmod(0o755)
    log_path = b.scratch / "git-calls.log"
    env = {**b.env, "PATH": f"{shim_dir}{os.pathsep}{b.env.get('PATH', '')}", "WVO_BENCH_REAL_GIT": real,
           "WVO_BENCH_GIT_LOG": str(log_path)}
    sd = b.state_dir()
    n = sum(1 for line in rm.read_text().splitlines() if line.startswith("  - id:"))
    try:
        measure(b.wvo(rm, agents, "--state-dir", sd, "--into", "bench/git-calls", "--retries", "3"), env=env, stdout=b.scratch / "wvo.out")
    finally:
        shutil.rmtree(sd, ignore_errors=True)
    calls: dict[str, list[float]] = {}
    for line in log_path.read_text().splitlines():
        sub, a, b = line.rsplit(" ", 2)
        calls.setdefault(sub or "(none)", []).append(float(b) - float(a))
    rows = [[f"`git {k}`", f"{len(v) / n:.2f}", f"{sum(v) / n * 1000:.1f} ms", f"{med(v) * 1000:.1f} ms"]
            for k, v in sorted(calls.items(), key=lambda kv: -sum(kv[1]))]
    total = sum(len(v) for v in calls.values())
    return (
        f"Where wvo-batch's git time goes: one more run, of the first {n} of these tasks, with a `git` first on PATH that logs each call"
        f" ({total / n:.1f} git calls a task; times are wall, {agents} agents sharing {os.cpu_count()} cores; the script"
        " makes 8 a task, plus 4 for the whole run):\n\n"
        + table(["git subcommand", "calls a task", "wall a task", "median call"], rows)
    )


def _short(attempt: str) -> str:
    """An attempt's failure, for the report: its status and the first line of its error, no paths."""
    _, status, error = (attempt.split(": ", 2) + ["", ""])[:3]
    import re

    return f"{status}: " + re.sub(r"/\S+", "…", error.splitlines()[0] if error else "")[:120]


def worktree_events(path: Path) -> dict:
    """Agent-busy and idle figures of a worktree run, from its events (JSON Lines).

    An agent is busy from a task's `task:reserved` to the moment the manager has its result: the
    task's `task:landing` (handed over to the landing queue) or `task:finished` (not landed). The
    landing queue is non-empty from a `task:landing` to its `task:landed` / `task:not_landed`. Tasks
    wait from `task:queued` to `task:reserved`. `idle_with_work_s` sums, over agents, the time an agent
    held no task while some task waited; `idle_while_landing_s` is the part of it while the landing
    queue was non-empty: the time landing idled agents. `longest_idle_s` is the longest stretch one agent
    held no task while tasks waited; `landing_busy_s` the time the landing queue was non-empty.
    """
    evs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    evs.sort(key=lambda e: e["ts"])
    points = []  # (ts, kind, key)
    busy_from: dict[str, float] = {}
    holder: dict[tuple, str] = {}
    spans: list[float] = []
    landing_spans: list[float] = []
    landing_from: dict[str, float] = {}
    seen = set()
    failed: list[str] = []  # attempts that did not succeed: "task: status: error"
    for e in evs:
        name, ts = e["event"], e["ts"]
        if name == TASK_QUEUED:
            points.append((ts, "wait", +1))
        elif name == TASK_RESERVED:
            points.append((ts, "wait", -1))
            points.append((ts, "busy:" + e["agent"], +1))
            busy_from[e["agent"]] = ts
            holder[(e["task"], e.get("attempt"))] = e["agent"]
            seen.add(e["agent"])
        elif name in (TASK_LANDING, TASK_FINISHED):
            agent = e.get("agent") if name == TASK_LANDING else holder.pop((e["task"], e.get("attempt")), None)
            if name == TASK_LANDING:
                holder.pop((e["task"], e.get("attempt")), None)
                points.append((ts, "land", +1))
                landing_from[e["task"]] = ts
            if agent is not None and agent in busy_from:
                spans.append(ts - busy_from.pop(agent))
                points.append((ts, "busy:" + agent, -1))
        if name == TASK_FINISHED and e.get("status") != "succeeded":
            failed.append(f"{e['task']}: {e.get('status')}: {e.get('error') or ''}")
        if name in (TASK_LANDED, TASK_NOT_LANDED):
            points.append((ts, "land", -1))
            if e["task"] in landing_from:
                landing_spans.append(ts - landing_from.pop(e["task"]))
    counts: dict[str, int] = {}
    idle_work = idle_landing = landing_with_busy = landing_total = 0.0
    first = min((p[0] for p in points if p[1].startswith("busy")), default=0.0)
    last = max((p[0] for p in points if p[1].startswith("busy")), default=0.0)
    gap: dict[str, float] = {}  # agent -> how long it has been without a task while tasks waited
    longest = 0.0
    prev = first  # from the first hand-out: the agents' start-up is not landing's doing
    agents = set()  # an agent counts from its first task on: its start-up is not landing's doing
    for ts, kind, d in sorted(points, key=lambda p: (p[0], p[2])):
        dt = max(0.0, ts - prev)
        busy_agents = sum(1 for a in agents if counts.get("busy:" + a, 0) > 0)
        idle = len(agents) - busy_agents
        if counts.get("wait", 0) > 0:
            idle_work += idle * dt
            for a in agents:
                if counts.get("busy:" + a, 0) <= 0:
                    gap[a] = gap.get(a, 0.0) + dt
                    longest = max(longest, gap[a])
            if counts.get("land", 0) > 0:
                idle_landing += idle * dt
        if counts.get("land", 0) > 0:
            landing_total += dt
            if busy_agents:
                landing_with_busy += dt
        counts[kind] = counts.get(kind, 0) + d
        if kind.startswith("busy:") and d > 0:
            gap[kind[5:]] = 0.0
            agents.add(kind[5:])
        prev = max(prev, ts)
    agents |= seen
    return {
        "agents": len(agents),
        "tasks": len(spans),
        "agent_busy_s": sum(spans),
        "agent_span_s": statistics.median(spans) if spans else 0.0,
        "landing_span_s": statistics.median(landing_spans) if landing_spans else 0.0,
        "landing_s": sum(landing_spans),
        "busy_share": sum(spans) / (len(agents) * (last - first)) if agents and last > first else 0.0,
        "idle_with_work_s": idle_work,
        "idle_while_landing_s": idle_landing,
        "landing_overlap": landing_with_busy / landing_total if landing_total else 1.0,
        "landing_busy_s": landing_total,
        "longest_idle_s": longest,
        "landed": len(landing_spans),
        "failed": failed,
    }
