"""Workload 10: worktrees at scale: a repository of 100,000 small files, 50 worktree tasks on 8 agents.

Beside it, the same git commands by hand, serially, each step timed (programs/worktree_steps.sh). The
figures: an attempt's set-up (reserved -> the task started: the worktree is made in between) and
tear-down (the task started -> handed to the landing queue: the task, commit, diff stats, removal), the
disk a live worktree takes, and the landing queue's throughput.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bench.context import Bench
from bench.harness import BenchError, Sample, interleave, measure, med, paired_ratio, span, walls
from bench.inputs import make_git_repo, write_worktree_roadmap
from bench.report import Verdict, table
from runner.manager.events import TASK_LANDED, TASK_LANDING, TASK_NOT_LANDED, TASK_RESERVED, TASK_STARTED

AGENTS = 8
ONE_AGENT_TASKS = 10  # the 1-agent row, a per-attempt figure without contention, needs no more


def run(b: Bench) -> None:
    files = b.args.files or b.n(100_000, 2_000)
    n = b.args.tasks or b.n(50, 6)
    title = f"10. Worktrees at scale: {n} tasks on a {files:,}-file repository, {AGENTS} agents and 1"
    b.log(title)
    w = "10"
    t0 = time.perf_counter()
    repo = make_git_repo(b.scratch / "repo10", files)
    built = time.perf_counter() - t0
    rm = write_worktree_roadmap(b.scratch / f"worktrees10-{n}.yaml", n, repo, files)
    n1 = min(n, ONE_AGENT_TASKS)
    rm1 = write_worktree_roadmap(b.scratch / f"worktrees10-one-agent-{n1}.yaml", n1, repo, files)
    runs = {"k": 0}
    figures: dict[str, list[dict]] = {}
    steps: list[dict[str, list[float]]] = []

    def wvo_run(agents: int, rm: Path, n: int):
        def go() -> Sample:
            runs["k"] += 1
            k, sd, ev = runs["k"], b.state_dir(), b.scratch / f"events10-{runs['k']}.jsonl"
            out = b.scratch / f"summary10-{k}.json"
            argv = b.wvo(rm, agents, "--state-dir", sd, "--into", f"bench/w10-{k}", "--events", ev, "--json", "--retries", "3")
            b.report.command(w, b.wvo(rm, agents, "--state-dir", "$BENCH/state/N", "--into", "bench/w10-K",
                                      "--events", "$BENCH/events-K.jsonl", "--json", "--retries", "3"))
            os.sync()  # the previous run's checkouts written out first: each run starts with no dirty pages
            try:
                s = measure(argv, env=b.env, stdout=out)
            finally:
                shutil.rmtree(sd, ignore_errors=True)
            fig = attempt_spans(ev)
            fig["utilization"] = json.loads(out.read_text())["telemetry"]["utilization"]
            if fig["landed"] != n:
                raise BenchError(f"workload 10: {fig['landed']} of {n} tasks landed")
            figures.setdefault(f"wvo-batch --agents {agents}", []).append(fig)
            return s
        return go

    def sh_run() -> Sample:
        runs["k"] += 1
        k, where = runs["k"], b.scratch / f"sh10-{runs['k']}"
        where.mkdir()
        out = b.scratch / f"steps10-{k}.txt"
        argv = ["bash", b.modules / "worktree_steps.sh", repo, where, f"bench/sh10-{k}", str(files), str(n)]
        b.report.command(w, ["bash", "$BENCH/modules/worktree_steps.sh", "$BENCH/repo10", "$BENCH/sh10-K",
                             "bench/sh10-K", str(files), str(n)])
        os.sync()
        s = measure(argv, env=b.env, stdout=out)
        shutil.rmtree(where, ignore_errors=True)
        steps.append(read_steps(out))
        return s

    names = {f"wvo-batch --quiet --agents {AGENTS}": wvo_run(AGENTS, rm, n), "wvo-batch --quiet --agents 1": wvo_run(1, rm1, n1),
             "bash, the same git commands, serial": sh_run}
    reps = b.reps if b.quick else 1  # each run writes a checkout per task: ~400 MB at 100,000 files
    res = interleave(names, reps, b.log)
    ms = lambda x: f"{x * 1000:.0f} ms" if x >= 0.1 else f"{x * 1000:.1f} ms"  # noqa: E731
    bare = {k: med([med(s[k]) for s in steps]) for k in ("add", "commit", "land", "remove")}
    disk = steps[0]["disk_kb"]
    rows = []
    for name, samples in res.items():
        if name.startswith("wvo-batch"):
            f = {k: med([x[k] for x in figures[name.replace("--quiet ", "")]]) for k in ("setup_s", "teardown_s", "landing_s", "utilization")}
            rows.append([name, span(walls(samples)), ms(f["setup_s"]), ms(f["teardown_s"]), ms(f["landing_s"]),
                         f"{f['utilization']:.0%}"])
        else:
            rows.append([name, span(walls(samples)), ms(bare["add"]), ms(bare["commit"] + bare["remove"]), ms(bare["land"]), "-"])
    body = table(["contender", "wall: median (min–max)", "set-up per attempt", "tear-down per attempt",
                  "landing per task", "utilisation (summary)"], rows)
    one = {k: med([x[k] for x in figures["wvo-batch --agents 1"]]) for k in ("setup_s", "teardown_s")}
    eight = {k: med([x[k] for x in figures[f"wvo-batch --agents {AGENTS}"]]) for k in ("setup_s", "landing_s")}
    body += (
        f"\n\nThe repository: {files:,} files of ~200 bytes in 100 folders, one commit, built in {built:.1f} s. Disk per live"
        f" worktree (a full checkout): {disk[0] / 1024:.1f} MB of files plus {disk[1] / 1024:.1f} MB in its admin folder"
        " under `.git/worktrees/` (the index, mostly); both sides make the same checkout."
        "\n\nwvo-batch's set-up is from `task:reserved` to `task:started` (the message to the agent, `Workspaces`, the"
        " journal, `git worktree add -b` at into's tip, the task's spawn); its tear-down from `task:started` to"
        " `task:landing` (the task itself, `sh -c 'echo … > file'`, ~2 ms; `add -A`, `commit`, diff stats, the WIP check,"
        " `worktree remove`); landing per task is the landing queue's service time, from the later of its"
        " `task:landing` and the previous landing's end to its `task:landed` (merge --no-ff, compare-and-swap), medians"
        f" over tasks and runs. The script's columns time its own steps: `worktree add -b`, `add -A` + `commit` +"
        f" `worktree remove --force`, and `merge --no-ff` + `update-ref`. With {AGENTS} agents on the machine's cores, attempts"
        f" contend for the CPU and disk: the 1-agent row ({n1} tasks) is the per-attempt cost without that contention."
        " Every worktree is a full checkout written to disk, so a run's time depends on the disk's write rate"
        " as much as on git: the workload runs once (one repetition) outside --quick."
    )
    r = one["setup_s"] / bare["add"] if bare["add"] else float("nan")
    b.report.verdicts.append(Verdict("10 worktree set-up per attempt (1 agent) vs a bare `git worktree add`",
                                     f"{r:.2f} × ({ms(one['setup_s'])} vs {ms(bare['add'])})", "≤ 1.2 ×", r <= 1.2 if not b.quick else None))
    b.report.verdicts.append(Verdict(f"10 worktree set-up per attempt ({AGENTS} agents)", ms(eight["setup_s"]), "reported", None))
    b.report.verdicts.append(Verdict("10 disk per live worktree", f"{(disk[0] + disk[1]) / 1024:.1f} MB", "reported", None))
    b.report.verdicts.append(Verdict("10 landing throughput", f"{1 / eight['landing_s']:.1f} tasks/s" if eight["landing_s"] else "n/a",
                                     "reported", None))
    rw = paired_ratio(walls(res[f"wvo-batch --quiet --agents {AGENTS}"]), walls(res["bash, the same git commands, serial"]))
    body += f"\n\nwvo-batch with {AGENTS} agents / the serial script, wall (paired): {rw:.2f}."
    rm.unlink()
    rm1.unlink()
    b.report.sections.append(f"### {title}\n\n{body}")


def read_steps(path: Path) -> dict:
    """worktree_steps.sh's output -> {"add": [seconds, ...], ..., "disk_kb": (checkout, admin)}."""
    out: dict = {"add": [], "commit": [], "land": [], "remove": []}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts[0] == "disk_kb":
            out["disk_kb"] = (int(parts[1]), int(parts[2]))
        elif parts[0] in out:
            out[parts[0]].append(int(parts[1]) / 1e6)
    return out


def attempt_spans(path: Path) -> dict:
    """Medians over the run's tasks: set-up (reserved -> started), tear-down (started -> landing), landing service.

    The landing queue lands one task at a time: a task's service time runs from the later of its `task:landing`
    and the previous `task:landed` to its own `task:landed`.
    """
    evs = sorted((json.loads(line) for line in open(path, encoding="utf-8") if line.strip()), key=lambda e: e["ts"])
    at: dict[tuple[str, str], float] = {}
    setup, teardown, service = [], [], []
    free = 0.0  # when the landing queue finished its previous landing
    landed = 0
    for e in evs:
        key = (e.get("task"), e.get("attempt"))
        name = e["event"]
        if name in (TASK_RESERVED, TASK_STARTED, TASK_LANDING):
            at[(name, key)] = e["ts"]
        if name == TASK_STARTED and (TASK_RESERVED, key) in at:
            setup.append(e["ts"] - at[(TASK_RESERVED, key)])
        elif name == TASK_LANDING and (TASK_STARTED, key) in at:
            teardown.append(e["ts"] - at[(TASK_STARTED, key)])
        elif name in (TASK_LANDED, TASK_NOT_LANDED) and (TASK_LANDING, key) in at:
            service.append(e["ts"] - max(at[(TASK_LANDING, key)], free))
            free = e["ts"]
            landed += name == TASK_LANDED
    mid = lambda xs: statistics.median(xs) if xs else 0.0  # noqa: E731
    return {"setup_s": mid(setup), "teardown_s": mid(teardown), "landing_s": mid(service), "landed": landed}
