#!/usr/bin/env python3
"""wvo-batch against the tools people would otherwise use: xargs, GNU parallel, concurrent.futures.

    make bench  ==  .venv/bin/python scripts/bench.py            (--reps 5; --quick for a smoke run)

Every comparison runs in one process, interleaved: each repetition runs every contender of a workload
once, in an order rotated per repetition, so drift in the machine's load lands on all of them alike.
Figures are medians with min-max; ratios are ratios of medians, and the median of the ratios paired
within a repetition (the steadier figure on a busy machine). Results go to docs/benchmarks.md, with
the machine, the exact commands and a cProfile of the manager. Targets are reported, never enforced.

Paths written to the report are generic: $BENCH is the scratch folder, `.` the project root.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
# Scratch files (roadmaps, state dirs, logs) go in a folder made under bench-out/ (git-ignored,
# `make clean` removes it) and shown as $BENCH, so that the state dirs sit on the project's disk like
# a user's default state dir; workload 1 also runs once per repetition with the state dir in $TMPDIR.
SCRATCH_ROOT = ROOT / "bench-out"
SCRATCH_PREFIX = "run-"


# -- generated inputs -----------------------------------------------------------------------------------


def write_noop_roadmap(path: Path, n: int, argv: tuple[str, ...] = ("true",), prefix: str = "t") -> Path:
    """n independent tasks running argv."""
    item = "[" + ", ".join(json.dumps(a) for a in argv) + "]"
    with open(path, "w", encoding="utf-8") as f:
        f.write("tasks:\n")
        f.writelines(f"  - id: {prefix}{i}\n    command: {item}\n" for i in range(n))
    return path


def write_call_roadmap(path: Path, n: int, call: str) -> Path:
    """n independent tasks calling a Python function inside the agent."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("tasks:\n")
        f.writelines(f'  - id: c{i}\n    call: "{call}"\n' for i in range(n))
    return path


def write_dependency_roadmap(path: Path, n: int, shell: bool = False, seed: int = 7) -> Path:
    """n tasks; task i depends on 0-3 tasks drawn (seeded) from the 1,000 before it: a wide, deep DAG."""
    import random

    rng = random.Random(seed)
    command = "command: exit 0" if shell else 'command: ["true"]'
    with open(path, "w", encoding="utf-8") as f:
        f.write("tasks:\n")
        for i in range(n):
            f.write(f"  - id: t{i}\n    {command}\n")
            if i:
                k = rng.randint(0, min(3, i))
                deps = sorted(set(rng.randrange(max(0, i - 1000), i) for _ in range(k)))
                if deps:
                    f.write("    dependencies: [" + ", ".join(f"t{d}" for d in deps) + "]\n")
    return path


def make_git_repo(path: Path, files: int) -> Path:
    """A repository of `files` small files in 100 folders (d0/f0.txt ...), one commit on `main`."""
    path.mkdir(parents=True)
    git = lambda *a: subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q", "-b", "main")
    for k, v in (("user.name", "bench"), ("user.email", "bench@example.invalid"), ("gc.auto", "0")):
        git("config", k, v)
    for d in range(min(100, files)):
        (path / f"d{d}").mkdir()
    for i in range(files):
        (path / f"d{i % 100}" / f"f{i}.txt").write_text(f"file {i}\n" * 20)
    git("add", "-A")
    git("commit", "-q", "-m", f"{files} files")
    return path


def worktree_task(i: int, files: int) -> str:
    """The shell command of worktree task i: overwrite one file of its own."""
    return f"echo changed by task {i} > d{i % min(100, files)}/f{i % files}.txt"


def write_worktree_roadmap(path: Path, n: int, repo: Path, files: int) -> Path:
    """n shell tasks, each in a worktree of its own (top-level `workspace:`), each editing its own file."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"workspace:\n  mode: worktree\n  repo: {json.dumps(str(repo))}\n  base: main\ntasks:\n")
        f.writelines(f"  - id: w{i}\n    command: {json.dumps(worktree_task(i, files))}\n" for i in range(n))
    return path


# The same git commands, serially, as a user would script them: per task a worktree on a new branch at
# into's tip, the task (the same `sh -c` command line), add + commit, a --no-ff merge in a landing
# worktree, into moved by compare-and-swap, the worktree removed; at the end the landed branches deleted.
WORKTREE_SCRIPT = r"""
set -e
R=$1; S=$2; INTO=$3; FILES=$4; N=$5
D=$(( FILES < 100 ? FILES : 100 ))
g() { git -c core.hooksPath=/dev/null -c gc.auto=0 "$@"; }
g -C "$R" branch "$INTO" main
g -C "$R" worktree add -q --detach "$S/landing" "$INTO"
for ((i = 0; i < N; i++)); do
  tip=$(g -C "$R" rev-parse "refs/heads/$INTO")
  g -C "$R" worktree add -q -b "$INTO-t$i" "$S/wt$i" "$tip"
  (cd "$S/wt$i" && sh -c "echo changed by task $i > d$((i % D))/f$((i % FILES)).txt")
  g -C "$S/wt$i" add -A
  g -C "$S/wt$i" commit -q -m "t$i"
  g -C "$S/landing" merge -q --no-ff -m "Land t$i" "$INTO-t$i"
  g -C "$R" update-ref "refs/heads/$INTO" "$(g -C "$S/landing" rev-parse HEAD)" "$tip"
  g -C "$R" worktree remove --force "$S/wt$i"
done
g -C "$R" worktree remove --force "$S/landing"
g -C "$R" branch -q -D $(g -C "$R" for-each-ref --format='%(refname:short)' "refs/heads/$INTO-t*")
"""

# A `git` first on PATH that logs each call (subcommand, seconds) and runs the real one: where the time goes.
GIT_SHIM = r"""#!/bin/bash
t0=$EPOCHREALTIME
"$WVO_BENCH_REAL_GIT" "$@"
rc=$?
sub=""; skip=0
for a in "$@"; do
  if (( skip )); then skip=0; continue; fi
  case $a in -C|-c) skip=1 ;; -*) ;; *) sub=$a; break ;; esac
done
echo "$sub $t0 $EPOCHREALTIME" >> "$WVO_BENCH_GIT_LOG"
exit $rc
"""


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
        if name == "task:queued":
            points.append((ts, "wait", +1))
        elif name == "task:reserved":
            points.append((ts, "wait", -1))
            points.append((ts, "busy:" + e["agent"], +1))
            busy_from[e["agent"]] = ts
            holder[(e["task"], e.get("attempt"))] = e["agent"]
            seen.add(e["agent"])
        elif name in ("task:landing", "task:finished"):
            agent = e.get("agent") if name == "task:landing" else holder.pop((e["task"], e.get("attempt")), None)
            if name == "task:landing":
                holder.pop((e["task"], e.get("attempt")), None)
                points.append((ts, "land", +1))
                landing_from[e["task"]] = ts
            if agent is not None and agent in busy_from:
                spans.append(ts - busy_from.pop(agent))
                points.append((ts, "busy:" + agent, -1))
        if name == "task:finished" and e.get("status") != "succeeded":
            failed.append(f"{e['task']}: {e.get('status')}: {e.get('error') or ''}")
        if name in ("task:landed", "task:not_landed"):
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


NOOP_MODULE = "def noop(*args, **kwargs):\n    return None\n"

POOL_SCRIPT = """\
import sys
from benchmod import noop
n, how = int(sys.argv[1]), sys.argv[2]
if how == "ppe":
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2) as ex:
        for f in [ex.submit(noop) for _ in range(n)]:
            f.result()
else:
    import multiprocessing
    with multiprocessing.Pool(2) as pool:
        if how == "imap":
            for _ in pool.imap(noop, range(n)):
                pass
        else:
            pool.map(noop, range(n))
"""

# The floor of a Python pool: fork the agents, pipe each a byte per task, posix_spawn, wait, reply.
# No imports beyond the interpreter's own, no ledger, no log files, no scheduling.
BARE_POOL_SCRIPT = """\
import os, select, shutil, sys
n, agents, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
argv[0] = shutil.which(argv[0])
env = dict(os.environ)
def agent(r, w):
    while os.read(r, 1) == b"t":
        pid = os.posix_spawn(argv[0], argv, env, setsid=True)
        os.waitpid(pid, 0)
        os.write(w, b"d")
    os._exit(0)
ends, sent, done = {}, 0, 0
for _ in range(agents):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    if os.fork() == 0:
        agent(r1, w2)
    ends[r2] = w1
poll = select.poll()
for r, w in ends.items():
    poll.register(r, select.POLLIN)
    if sent < n:
        os.write(w, b"t")
        sent += 1
while done < n:
    for fd, _ in poll.poll():
        os.read(fd, 1)
        done += 1
        if sent < n:
            os.write(ends[fd], b"t")
            sent += 1
for w in ends.values():
    os.write(w, b"q")
for _ in ends:
    os.wait()
"""

# Runs the CLI in this process with cProfile on the manager's main thread; each forked agent switches
# that off and profiles itself into its own file.
PROFILE_SCRIPT = """\
import cProfile, os, sys
out = sys.argv[1]
sys.argv = ["wvo-batch", *sys.argv[2:]]
prof = cProfile.Profile()
os.register_at_fork(after_in_child=prof.disable)
import runner.agents.local as local
import runner.cli.command
from runner.cli.command import main

runner.cli.command._exit = sys.exit  # main() ends in os._exit, which would skip dumping the profile

_agent_main = local.agent_main


def profiled_agent(agent_id, *args):
    agent_prof = cProfile.Profile()
    agent_prof.enable()
    try:
        _agent_main(agent_id, *args)
    finally:
        agent_prof.disable()
        agent_prof.dump_stats(f"{out}.{agent_id}")


local.agent_main = profiled_agent
prof.enable()
try:
    main()
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
"""


# -- measuring ------------------------------------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    maxrss_kb: int
    rc: int
    extra: dict = field(default_factory=dict)
    cpu: float = 0.0  # user + system seconds of the process and every descendant it (or they) reaped


class BenchError(Exception):
    pass


def measure(argv, *, env=None, stdin=None, stdout=None, sampler=None, timeout: float = 900.0) -> Sample:
    """Run argv to the end; wall time, peak RSS of it and its reaped children (wait4), exit code."""
    err = tempfile.TemporaryFile()
    stdin_f = open(stdin, "rb") if stdin else subprocess.DEVNULL
    stdout_f = open(stdout, "wb") if stdout else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(a) for a in argv], stdin=stdin_f, stdout=stdout_f, stderr=err, env=env, cwd=ROOT
        )
        stop = threading.Event()
        extra: dict = {}
        threads = [threading.Thread(target=_watchdog, args=(proc.pid, timeout, stop), daemon=True)]
        if sampler is not None:
            threads.append(threading.Thread(target=sampler, args=(proc.pid, stop, extra), daemon=True))
        for t in threads:
            t.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        for t in threads:
            t.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        for f in (stdin_f, stdout_f):
            if f is not subprocess.DEVNULL:
                f.close()
    if proc.returncode != 0:
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
        raise BenchError(f"{' '.join(map(str, argv))[:200]} exited {proc.returncode}: {tail}")
    return Sample(wall, usage.ru_maxrss, proc.returncode, extra, usage.ru_utime + usage.ru_stime)


def _watchdog(pid: int, timeout: float, stop: threading.Event) -> None:
    if not stop.wait(timeout):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def interleave(contenders: dict, reps: int, log) -> dict[str, list[Sample]]:
    """Run each contender once per repetition, rotating the order; name -> samples."""
    names = list(contenders)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            s = contenders[name]()
            out[name].append(s)
            log(f"    rep {r + 1}/{reps}  {name:<34} {s.wall:8.3f} s")
    return out


def med(values) -> float:
    return statistics.median(values)


def fmt_s(x: float) -> str:
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1000:.0f} ms" if x >= 0.1 else f"{x * 1000:.1f} ms"


def span(values, f=fmt_s) -> str:
    return f"{f(med(values))} ({f(min(values))}–{f(max(values))})"


def paired_ratio(a: list[float], b: list[float]) -> float:
    return med([x / y for x, y in zip(a, b)])


def walls(samples: list[Sample]) -> list[float]:
    return [s.wall for s in samples]


# -- the report's pieces --------------------------------------------------------------------------------


@dataclass
class Verdict:
    workload: str
    figure: str
    target: str
    met: bool | None  # None: not measured


class Report:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.sections: list[str] = []
        self.verdicts: list[Verdict] = []
        self.commands: list[tuple[str, str]] = []  # (workload, command line)
        self.notes: list[str] = []

    def show(self, argv) -> str:
        """A command line with this machine's paths replaced by generic ones."""
        return " ".join(_quote(generic(str(a), self.scratch)) for a in argv)

    def command(self, workload: str, argv, stdin: str | None = None) -> None:
        line = self.show(argv) + (f" < {generic(stdin, self.scratch)}" if stdin else "")
        if (workload, line) not in self.commands:
            self.commands.append((workload, line))


def generic(text: str, scratch: Path) -> str:
    for real, shown in (
        (str(scratch), "$BENCH"),
        (str(BIN / "wvo-batch"), ".venv/bin/wvo-batch"),
        (str(BIN / "python"), ".venv/bin/python"),
        (sys.executable, ".venv/bin/python"),
        (str(BIN), ".venv/bin"),
        (str(ROOT), "."),
        (tempfile.gettempdir(), "$TMPDIR"),
        (str(Path.home()), "~"),
    ):
        text = text.replace(real, shown)
    return text


def _quote(a: str) -> str:
    import re
    import shlex

    return a if re.fullmatch(r"[\w@%+=:,./$~{}-]+", a) else shlex.quote(a)


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def comparison_table(results: dict[str, list[Sample]], baseline: str, unit=None) -> str:
    base = walls(results[baseline])
    rows = []
    for name, samples in results.items():
        w = walls(samples)
        rows.append(
            [name, span(w), f"{med(w) / med(base):.2f}", f"{paired_ratio(w, base):.2f}"]
            + ([unit(samples)] if unit else [])
        )
    headers = ["contender", "wall: median (min–max)", f"× {baseline} (medians)", "× paired"]
    return table(headers + (["throughput"] if unit else []), rows)


# -- the workloads --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, scratch: Path, tools: dict[str, str | None]):
        self.args = args
        self.scratch = scratch
        self.tools = tools
        self.report = Report(scratch)
        self.reps = args.reps
        self.quick = args.quick
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WVO_")}
        self.env.pop("PYTHONPATH", None)
        # Measure Python as users run it, with cached bytecode; the cache goes to the scratch folder.
        if self.env.pop("PYTHONDONTWRITEBYTECODE", None):
            self.report.notes.append(
                "PYTHONDONTWRITEBYTECODE was set in this environment: without bytecode caching, every run compiles"
                " runner/ again (~0.1 s). The bench unsets it for what it runs and sets PYTHONPYCACHEPREFIX=$BENCH/pycache,"
                " with one warm-up run first, so the figures are those of an installed program."
            )
        self.env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
        self.modules = scratch / "modules"
        self.modules.mkdir()
        (self.modules / "benchmod.py").write_text(NOOP_MODULE)
        (self.modules / "pools.py").write_text(POOL_SCRIPT)
        (self.modules / "bare_pool.py").write_text(BARE_POOL_SCRIPT)
        (self.modules / "profile_cli.py").write_text(PROFILE_SCRIPT)
        self.mod_env = {**self.env, "PYTHONPATH": str(self.modules)}
        self._state = 0
        self.startup_s: float | None = None

    def warm_up(self) -> None:
        """One small run, so that every later run finds the bytecode cache (and the disk cache) warm."""
        rm = write_noop_roadmap(self.scratch / "warm.yaml", 10)
        measure([BIN / "python", "-c", "import concurrent.futures, multiprocessing.pool"], env=self.env)
        self.run_wvo(rm, 2)
        self.run_wvo(rm, 2, quiet=False)

    def log(self, text: str) -> None:
        print(generic(text, self.scratch), flush=True)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def state_dir(self) -> Path:
        self._state += 1
        return self.scratch / "state" / str(self._state)

    def wvo(self, roadmap: Path, agents: int, *more: str, quiet: bool = True) -> list:
        return [
            BIN / "wvo-batch", roadmap, "--agents", str(agents), *(["--quiet"] if quiet else []), *more,
        ]

    def run_wvo(self, roadmap: Path, agents: int, *, quiet=True, env=None, sampler=None, workload="", tmp=False) -> Sample:
        sd = Path(tempfile.mkdtemp(prefix="wvo-bench-state-")) if tmp else self.state_dir()
        argv = self.wvo(roadmap, agents, "--state-dir", sd, quiet=quiet)
        shown = "$TMPDIR/wvo-bench-state-XXXX" if tmp else "$BENCH/state/N"
        self.report.command(workload, self.wvo(roadmap, agents, "--state-dir", shown, quiet=quiet))
        out = self.scratch / "wvo.out"
        try:
            return measure(argv, env=env or self.env, stdout=out, sampler=sampler)
        finally:
            shutil.rmtree(sd, ignore_errors=True)

    def run_cmd(self, workload: str, argv, stdin: Path | None = None, env=None) -> Sample:
        self.report.command(workload, argv, str(stdin) if stdin else None)
        return measure(argv, env=env or self.env, stdin=stdin)

    def lines(self, n: int) -> Path:
        p = self.scratch / f"list-{n}.txt"
        if not p.exists():
            p.write_text("".join(f"{i}\n" for i in range(1, n + 1)))
        return p

    # 1 ----------------------------------------------------------------------------------------------
    def w1_noop(self) -> None:
        n = self.n(2000, 300)
        title = f"1. {n:,} no-op tasks (`true`) on 2 agents"
        self.log(title)
        rm = write_noop_roadmap(self.scratch / f"noop-{n}.yaml", n)
        lst = self.lines(n)
        w = "1"
        c = {
            "wvo-batch --quiet": lambda: self.run_wvo(rm, 2, workload=w),
            "wvo-batch (default display, not a TTY)": lambda: self.run_wvo(rm, 2, quiet=False, workload=w),
            "wvo-batch --quiet, state dir in $TMPDIR": lambda: self.run_wvo(rm, 2, workload=w, tmp=True),
            "xargs -P2": lambda: self.run_cmd(w, ["xargs", "-P2", "-n1", "true"], lst),
        }
        if self.tools.get("parallel"):
            c["parallel -j2"] = lambda: self.run_cmd(w, ["parallel", "-j2", "true"], lst)
        res = interleave(c, self.reps, self.log)
        per_task = lambda s: f"{med(walls(s)) / n * 1000:.2f} ms/task"  # noqa: E731
        body = comparison_table(res, "xargs -P2", per_task)
        body += (
            "\n\nEvery wvo-batch task gets a ledger row and four events; `true` prints nothing, so it leaves no log file."
            " After their first runs, the `true` tasks travel in chunks of quick tasks (README, Architecture)."
            " The `$TMPDIR` row puts the state dir in `$TMPDIR` instead of the scratch folder."
        )
        r = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["xargs -P2"]))
        self.report.verdicts.append(Verdict("1 no-op tasks vs xargs -P2", f"{r:.2f} × xargs", "≤ 1.3 ×", r <= 1.3))
        if "parallel -j2" in res:
            rp = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["parallel -j2"]))
            body += f"\n\nwvo-batch --quiet / GNU parallel: {rp:.2f} (paired)."
        else:
            body += "\n\nGNU parallel is not installed: that comparison was skipped."
        self.report.sections.append(f"### {title}\n\n{body}")

    # 2 ----------------------------------------------------------------------------------------------
    def w2_sleep(self) -> None:
        n = self.n(200, 60)
        title = f"2. {n} × `sleep 0.1` on 20 agents (ideal: {n / 20 * 0.1:.1f} s)"
        self.log(title)
        rm = write_noop_roadmap(self.scratch / f"sleep-{n}.yaml", n, ("sleep", "0.1"), prefix="s")
        lst = self.lines(n)
        w = "2"
        c = {
            "wvo-batch --quiet": lambda: self.run_wvo(rm, 20, workload=w),
            "xargs -P20": lambda: self.run_cmd(w, ["xargs", "-P20", "-I{}", "sleep", "0.1"], lst),
            "bare Python fork pool (the floor)": lambda: self.run_cmd(
                w, [BIN / "python", self.modules / "bare_pool.py", str(n), "20", "sleep", "0.1"]
            ),
        }
        if self.tools.get("parallel"):
            c["parallel -j20"] = lambda: self.run_cmd(w, ["parallel", "-j20", "-N0", "sleep", "0.1"], lst)
        res = interleave(c, self.reps, self.log)
        body = comparison_table(res, "xargs -P20")
        body += (
            "\n\nThe bare Python fork pool (`$BENCH/modules/bare_pool.py`, generated) is the least any Python pool"
            " can do: fork 20 children, pipe each a byte per task, `posix_spawn`, wait, reply; no imports beyond"
            " the interpreter's, no ledger, no logs, no scheduling. It shows how much of the target a Python"
            " runner has left once it has started."
        )
        r = paired_ratio(walls(res["wvo-batch --quiet"]), walls(res["xargs -P20"]))
        self.report.verdicts.append(Verdict("2 sleep 0.1 on 20 agents vs xargs -P20", f"{r:.2f} × xargs", "≤ 1.06 ×", r <= 1.06))
        if "parallel -j20" not in res:
            body += "\n\nGNU parallel is not installed: that comparison was skipped."
        self.report.sections.append(f"### {title}\n\n{body}")

    # 3 ----------------------------------------------------------------------------------------------
    def w3_startup(self) -> None:
        title = "3. Start-up: a roadmap of one no-op task (`--agents 1`) vs `parallel -j1 true ::: 1`"
        self.log(title)
        rm = write_noop_roadmap(self.scratch / "one.yaml", 1)
        sd = self.scratch / "state" / "startup"  # kept across runs, as cron would keep it
        wvo_argv = self.wvo(rm, 1, "--state-dir", sd)
        w = "3"
        runs = self.n(10, 3)
        if self.tools.get("hyperfine") and self.tools.get("parallel"):
            par = "parallel -j1 true ::: 1"
            wvo_cmd = " ".join(_quote(str(a)) for a in wvo_argv)
            times: dict[str, list[float]] = {"wvo-batch": [], "parallel": []}
            rep_medians: dict[str, list[float]] = {"wvo-batch": [], "parallel": []}
            for r in range(self.reps):
                order = [("wvo-batch", wvo_cmd), ("parallel", par)]
                if r % 2:
                    order.reverse()
                out = self.scratch / "hyperfine.json"
                argv = ["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json", out]
                argv += [cmd for _, cmd in order]
                measure(argv, env=self.env)
                data = json.loads(out.read_text())
                for (name, _), result in zip(order, data["results"]):
                    times[name] += result["times"]
                    rep_medians[name].append(result["median"])
                self.log(f"    rep {r + 1}/{self.reps}  " + "  ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in rep_medians.items()))
            shown = ["hyperfine", "-N", "--warmup", "2", "--runs", str(runs),
                     " ".join(_quote(str(a)) for a in self.wvo(rm, 1, "--state-dir", "$BENCH/state/startup")), par]
            self.report.command(w, shown)
            rows = [
                [k, span(v), f"{med(v) / med(times['parallel']):.2f}", f"{paired_ratio(rep_medians[k], rep_medians['parallel']):.2f}"]
                for k, v in times.items()
            ]
            body = table(["contender", "wall: median (min–max)", "× parallel (medians)", "× paired (per hyperfine block)"], rows)
            body += (
                f"\n\nhyperfine, {self.reps} blocks of {runs} runs (+2 warm-up) each, the two commands' order swapped"
                " every block; `-N` (no intermediate shell)."
            )
            r = paired_ratio(rep_medians["wvo-batch"], rep_medians["parallel"])
            self.startup_s = med(times["wvo-batch"])
        else:
            missing = [t for t in ("hyperfine", "parallel") if not self.tools.get(t)]
            c = {"wvo-batch": lambda: measure(wvo_argv, env=self.env)}
            self.report.command(w, self.wvo(rm, 1, "--state-dir", "$BENCH/state/startup"))
            if self.tools.get("parallel"):
                c["parallel"] = lambda: self.run_cmd(w, ["parallel", "-j1", "true", ":::", "1"])
            res = interleave(c, self.reps * runs, self.log)
            self.startup_s = med(walls(res["wvo-batch"]))
            body = f"{' and '.join(missing)} not installed: timed by this script instead of hyperfine.\n\n"
            if "parallel" in res:
                body += comparison_table(res, "parallel")
                r = paired_ratio(walls(res["wvo-batch"]), walls(res["parallel"]))
            else:
                body += f"wvo-batch: {span(walls(res['wvo-batch']))}; the comparison with GNU parallel was skipped."
                r = None
        self.report.verdicts.append(
            Verdict("3 start-up vs GNU parallel", "skipped" if r is None else f"{r:.2f} × parallel", "≤ 1.0 ×", None if r is None else r <= 1.0)
        )
        self.report.sections.append(f"### {title}\n\n{body}")

    # 4 ----------------------------------------------------------------------------------------------
    def w4_callables(self) -> None:
        n = self.n(20000, 2000)
        title = f"4. {n:,} no-op Python callables on 2 agents vs process pools of 2"
        self.log(title)
        rm = write_call_roadmap(self.scratch / f"call-{n}.yaml", n, "benchmod:noop")
        py = BIN / "python"
        pools = self.modules / "pools.py"
        w = "4"
        c = {
            "wvo-batch --quiet (call: benchmod:noop)": lambda: self.run_wvo(rm, 2, env=self.mod_env, workload=w),
            "ProcessPoolExecutor(2), submit one by one": lambda: self.run_cmd(w, [py, pools, n, "ppe"], env=self.mod_env),
            "multiprocessing.Pool(2).imap (chunksize 1)": lambda: self.run_cmd(w, [py, pools, n, "imap"], env=self.mod_env),
            "multiprocessing.Pool(2).map (default chunksize)": lambda: self.run_cmd(w, [py, pools, n, "map"], env=self.mod_env),
        }
        res = interleave(c, self.reps, self.log)
        base = "ProcessPoolExecutor(2), submit one by one"
        rate = lambda s: f"{n / med(walls(s)):,.0f} calls/s"  # noqa: E731
        body = comparison_table(res, base, rate)
        chunk = math.ceil(n / (2 * 4))
        body += (
            f"\n\nAll four run the same function (`benchmod.noop`, generated) in a fresh interpreter, timed from exec to exit,"
            f" and with PYTHONPATH=$BENCH/modules. `Pool.map` splits the {n:,} calls into chunks of {chunk:,}"
            " (its default: n / (4 × processes)), so it pays the pipe once per chunk, not once per call;"
            " `imap` defaults to chunks of 1, like `submit`. The target compares wvo-batch with ProcessPoolExecutor."
            " Every wvo-batch call also gets its own ledger row and events (and a log file when it prints);"
            " after the first calls, they travel in chunks of quick tasks, wvo-batch's counterpart of Pool.map's chunks."
        )
        wvo_w = walls(res["wvo-batch --quiet (call: benchmod:noop)"])
        r = 1 / paired_ratio(wvo_w, walls(res[base]))
        self.report.verdicts.append(Verdict("4 callables: throughput vs ProcessPoolExecutor(2)", f"{r:.2f} × PPE", "≥ 1.0 ×", r >= 1.0))
        self.report.sections.append(f"### {title}\n\n{body}")

    # 5 ----------------------------------------------------------------------------------------------
    def w5_check(self) -> None:
        sizes = [1000, 10000] if self.quick else [10000, 100000]
        title = "5. `--check` of a generated roadmap with dependencies"
        self.log(title)
        w = "5"
        files = {}
        for n in sizes:
            files[f"{n:,} tasks, argv `[\"true\"]`"] = (n, write_dependency_roadmap(self.scratch / f"deps-{n}.yaml", n))
        big = sizes[-1]
        files[f"{big:,} tasks, shell string `exit 0`"] = (big, write_dependency_roadmap(self.scratch / f"deps-{big}-sh.yaml", big, shell=True))
        out = self.scratch / "check.out"

        def check(path: Path):
            self.report.command(w, [BIN / "wvo-batch", path, "--check"])
            return lambda: measure([BIN / "wvo-batch", path, "--check"], env=self.env, stdout=out)

        res = interleave({k: check(p) for k, (_, p) in files.items()}, self.reps, self.log)
        million = None
        if not self.quick and not self.args.no_million:
            rss_100k = med([s.maxrss_kb for s in res[f"{big:,} tasks, argv `[\"true\"]`"]]) * 1024
            need = rss_100k * 10 * 1.5
            avail = psutil.virtual_memory().available
            if need < avail:
                n = 1_000_000
                p = write_dependency_roadmap(self.scratch / f"deps-{n}.yaml", n)
                files[f"{n:,} tasks, argv `[\"true\"]`"] = (n, p)
                reps = max(1, self.args.big_reps)
                million = interleave({f"{n:,} tasks, argv `[\"true\"]`": check(p)}, reps, self.log)
                res.update(million)
                p.unlink()
            else:
                self.report.notes.append(
                    f"1M-task --check skipped: it would need about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available."
                )
        rows = []
        for k, samples in res.items():
            n, path = files[k]
            rss = [s.maxrss_kb / 1024 for s in samples]
            rows.append([
                k, f"{path.stat().st_size / 2**20:.1f} MB" if path.exists() else "-", span(walls(samples)),
                f"{med(walls(samples)) / n * 1e6:.0f} µs", f"{med(rss):.0f} MB ({min(rss):.0f}–{max(rss):.0f})",
                f"{med(rss) * 1024 / n:.1f} kB",
            ])
        body = table(["roadmap", "file", "wall: median (min–max)", "per task", "peak RSS", "RSS per task"], rows)
        body += (
            "\n\nTask i depends on 0–3 tasks drawn (seeded) from the 1,000 before it. Peak RSS is the process's"
            " `ru_maxrss` from `wait4`. Output (the plan) goes to a file."
        )
        if million:
            body += f" The 1M row ran {max(1, self.args.big_reps)} time(s) (`--big-reps`)."
        k100 = f"{big:,} tasks, argv `[\"true\"]`"
        t = med(walls(res[k100]))
        rss = med([s.maxrss_kb for s in res[k100]]) / 1024
        self.report.verdicts.append(Verdict(f"5 --check of {big:,} tasks: wall", fmt_s(t), "≤ 2 s", t <= 2.0 if not self.quick else None))
        self.report.verdicts.append(Verdict(f"5 --check of {big:,} tasks: peak RSS", f"{rss:.0f} MB", "≤ 300 MB", rss <= 300 if not self.quick else None))
        ns = [files[k][0] for k in res if "argv" in k]
        ts = [med(walls(res[k])) for k in res if "argv" in k]
        if len(ns) >= 2:
            body += f"\n\nFitted exponent of --check time vs n (log-log least squares): {loglog_slope(ns, ts):.2f}."
        for p in files.values():
            if p[1].exists():
                p[1].unlink()
        self.report.sections.append(f"### {title}\n\n{body}")

    # 6 ----------------------------------------------------------------------------------------------
    def w6_scaling(self) -> None:
        sizes = [300, 1000, 3000] if self.quick else [1000, 10000, 100000]
        title = "6. Scaling: no-op tasks on 2 agents"
        self.log(title)
        w = "6"
        files = {n: write_noop_roadmap(self.scratch / f"scale-{n}.yaml", n) for n in sizes}
        small = {f"{n:,} tasks": (lambda p=files[n]: self.run_wvo(p, 2, workload=w)) for n in sizes[:-1]}
        res = interleave(small, self.reps, self.log)
        big_reps = self.reps if self.quick else max(1, self.args.big_reps)
        res.update(interleave({f"{sizes[-1]:,} tasks": lambda: self.run_wvo(files[sizes[-1]], 2, workload=w)}, big_reps, self.log))
        rows = []
        medians = []
        for n, (k, samples) in zip(sizes, res.items()):
            m = med(walls(samples))
            medians.append(m)
            net = m - (self.startup_s or 0.0)
            rows.append([k, str(len(samples)), span(walls(samples)), f"{m / n * 1000:.3f} ms", f"{net / n * 1000:.3f} ms" if self.startup_s else "-"])
        body = table(["roadmap", "runs", "wall: median (min–max)", "per task", "per task, start-up (workload 3) taken off"], rows)
        slope = loglog_slope(sizes, medians)
        body += f"\n\nFitted exponent of wall time vs n (log-log least squares over the medians): **{slope:.2f}**"
        if self.startup_s:
            net = [max(1e-6, m - self.startup_s) for m in medians]
            body += f"; with the one-task start-up ({fmt_s(self.startup_s)}) taken off: {loglog_slope(sizes, net):.2f}"
        body += f". The largest roadmap ran {big_reps} time(s) (`--big-reps`)."
        self.report.verdicts.append(Verdict(f"6 scaling exponent, {sizes[0]:,}→{sizes[-1]:,} tasks", f"{slope:.2f}", "≤ 1.1", slope <= 1.1 if not self.quick else None))
        for p in files.values():
            p.unlink()
        self.report.sections.append(f"### {title}\n\n{body}")

    # 7 ----------------------------------------------------------------------------------------------
    def w7_memory(self) -> None:
        n = self.n(160, 48)
        title = f"7. Memory: manager and agents, 16 agents, {n} × `sleep 0.3`"
        self.log(title)
        rm = write_noop_roadmap(self.scratch / f"mem-{n}.yaml", n, ("sleep", "0.3"), prefix="m")
        res = interleave({"wvo-batch --quiet, 16 agents": lambda: self.run_wvo(rm, 16, sampler=sample_pool, workload="7")}, self.reps, self.log)
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
        self.report.verdicts.append(Verdict("7 per-agent memory (largest agent)", f"RSS {agent_rss:.1f} MB" + (f", USS {agent_uss:.1f} MB" if agent_uss else ""), "≤ 40 MB", agent_rss <= 40))
        self.report.sections.append(f"### {title}\n\n{body}")

    # 8 ----------------------------------------------------------------------------------------------
    def w8_output(self) -> None:
        size = self.n(10**9, 10**8)
        title = f"8. One task printing {size / 1e9:g} GB: manager RSS"
        self.log(title)
        rm = self.scratch / "big-output.yaml"
        rm.write_text(
            "tasks:\n"
            f"  - id: big\n    command: [\"sh\", \"-c\", \"yes 'a line of output from a noisy task' | head -c {size}\"]\n"
            "  - id: after\n    command: [\"sleep\", \"1\"]\n    dependencies: [big]\n"
        )
        res = interleave({"wvo-batch --quiet, 1 agent": lambda: self.run_wvo(rm, 1, sampler=sample_output, workload="8")}, max(1, min(self.reps, 3)), self.log)
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
        self.report.verdicts.append(Verdict(f"8 manager RSS growth with {size / 1e9:g} GB of output", f"{g:+.1f} MB (worst run)", "± 20 MB", g <= 20 if not self.quick else None))
        self.report.sections.append(f"### {title}\n\n{body}")

    # 9 ----------------------------------------------------------------------------------------------
    def w9_worktrees(self) -> None:
        files, n, agents = self.n(10_000, 50), self.n(100, 6), 8
        title = f"9. Worktrees: {n} tasks, each editing its own file of a {files:,}-file repository, on {agents} agents"
        self.log(title)
        w = "9"
        t0 = time.perf_counter()
        repo = make_git_repo(self.scratch / "repo", files)
        built = time.perf_counter() - t0
        rm = write_worktree_roadmap(self.scratch / f"worktrees-{n}.yaml", n, repo, files)
        script = self.modules / "worktree_tasks.sh"
        script.write_text(WORKTREE_SCRIPT)
        runs = {"k": 0}
        # Concurrent `git worktree add`s make another agent's `git worktree list` fail now and then ("failed to
        # read .git/worktrees/<name>/commondir"): a setup_failed or failed landing, counted below; retries keep
        # the run whole so that its figures are of all the tasks.
        retries = ("--retries", "3")
        figures: dict[str, list[dict]] = {"wvo": [], "sh": []}

        def wvo_run() -> Sample:
            runs["k"] += 1
            k, sd, ev = runs["k"], self.state_dir(), self.scratch / f"events-{runs['k']}.jsonl"
            argv = self.wvo(rm, agents, "--state-dir", sd, "--into", f"bench/wvo-{k}", "--events", ev, *retries)
            self.report.command(w, self.wvo(rm, agents, "--state-dir", "$BENCH/state/N", "--into", "bench/wvo-K",
                                            "--events", "$BENCH/events-K.jsonl", *retries))
            try:
                s = measure(argv, env=self.env, stdout=self.scratch / "wvo.out")
            finally:
                shutil.rmtree(sd, ignore_errors=True)
            fig = worktree_events(ev)
            if fig["landed"] != n:
                raise BenchError(f"workload 9: {fig['landed']} of {n} tasks landed")
            figures["wvo"].append(fig)
            return s

        def sh_run() -> Sample:
            runs["k"] += 1
            k, where = runs["k"], self.scratch / f"sh-{runs['k']}"
            where.mkdir()
            argv = ["bash", script, repo, where, f"bench/sh-{k}", str(files), str(n)]
            self.report.command(w, ["bash", "$BENCH/modules/worktree_tasks.sh", "$BENCH/repo", "$BENCH/sh-K",
                                    "bench/sh-K", str(files), str(n)])
            s = measure(argv, env=self.env)
            shutil.rmtree(where, ignore_errors=True)
            return s

        wvo_name, sh_name = f"wvo-batch --quiet --agents {agents}", "bash script, the same git commands, serial"
        reps = self.reps if self.quick else max(1, self.args.big_reps)
        res = interleave({wvo_name: wvo_run, sh_name: sh_run}, reps, self.log)
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
            " The script (`$BENCH/modules/worktree_tasks.sh`, `WORKTREE_SCRIPT` in `scripts/bench.py`) does per task:"
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
        shim_rm = write_worktree_roadmap(self.scratch / "worktrees-git-calls.yaml", min(n, 16), repo, files)
        body += "\n\n" + self._worktree_git_calls(shim_rm, files, agents)
        shim_rm.unlink()
        r = paired_ratio(wc, sc)
        self.report.verdicts.append(Verdict("9 worktree tasks: CPU per task vs a serial git script", f"{r:.2f} × script", "≤ 1.3 ×", r <= 1.3 if not self.quick else None))
        idle = f["idle_while_landing_s"] / f["landing_busy_s"] if f["landing_busy_s"] else 0.0
        self.report.verdicts.append(Verdict(
            "9 worktree tasks: agents idle while landing", f"{idle:.1%} of landing time ({ms(f['idle_while_landing_s'] / max(1, f['tasks']))} a task)",
            "landing never idles an agent (< 10%)", idle < 0.1 if not self.quick else None))
        rm.unlink()
        self.report.sections.append(f"### {title}\n\n{body}")

    def _worktree_git_calls(self, rm: Path, files: int, agents: int) -> str:
        """One more wvo-batch run with a logging `git` first on PATH: calls and seconds per git subcommand."""
        real = shutil.which("git")
        if real is None:
            return ""
        shim_dir = self.modules / "git-shim"
        shim_dir.mkdir(exist_ok=True)
        (shim_dir / "git").write_text(GIT_SHIM)
        (shim_dir / "git").chmod(0o755)
        log_path = self.scratch / "git-calls.log"
        env = {**self.env, "PATH": f"{shim_dir}{os.pathsep}{self.env.get('PATH', '')}", "WVO_BENCH_REAL_GIT": real,
               "WVO_BENCH_GIT_LOG": str(log_path)}
        sd = self.state_dir()
        n = sum(1 for line in rm.read_text().splitlines() if line.startswith("  - id:"))
        try:
            measure(self.wvo(rm, agents, "--state-dir", sd, "--into", "bench/git-calls", "--retries", "3"), env=env, stdout=self.scratch / "wvo.out")
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

    # profile ----------------------------------------------------------------------------------------
    def profile(self) -> None:
        self.log("profile: cProfile of the manager (and its agents), workloads 1 and 4")
        py = BIN / "python"
        wrapper = self.modules / "profile_cli.py"
        parts = [
            "cProfile of the manager's main thread; each agent, forked with that profiler off, profiles itself"
            " into its own file (the agents' table sums both agents). cProfile measures wall-clock time, so a"
            " process that is descheduled inside a call (2 cores, 3 busy processes) is charged for it there;"
            " the profiler also slows Python code by roughly 1.5–2×: read shares and per-task costs, not totals."
        ]
        n1, n4 = self.n(2000, 300), self.n(20000, 2000)
        cases = [
            ("1", write_noop_roadmap(self.scratch / "prof-noop.yaml", n1), self.env, n1, f"{n1:,} no-op tasks"),
            ("4", write_call_roadmap(self.scratch / "prof-call.yaml", n4, "benchmod:noop"), self.mod_env, n4, f"{n4:,} callables"),
        ]
        for w, rm, env, n, what in cases:
            out = self.scratch / f"profile-{w}.prof"
            sd = self.state_dir()
            argv = [py, wrapper, out, rm, "--agents", "2", "--quiet", "--state-dir", sd]
            s = measure(argv, env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))})
            shutil.rmtree(sd, ignore_errors=True)
            self.report.command(
                f"profile {w}",
                [py, "$BENCH/modules/profile_cli.py", "$BENCH/profile.prof", rm, "--agents", "2", "--quiet", "--state-dir", "$BENCH/state/N"],
            )
            agents = sorted(self.scratch.glob(f"profile-{w}.prof.*"))
            parts.append(f"### Workload {w}: {what} on 2 agents (wall under the profiler: {fmt_s(s.wall)})")
            parts.append(profile_summary(out, agents))
            parts.append(profile_section([out], "The manager", MANAGER_PHASES, n, self.scratch))
            if agents:
                parts.append(profile_section(agents, f"The agents ({len(agents)}, summed)", AGENT_PHASES, n, self.scratch))
        self.report.sections.append("## Profile\n\n" + "\n\n".join(parts))


def sample_pool(pid: int, stop: threading.Event, extra: dict) -> None:
    """Peak RSS/USS/PSS of the manager and of each of its child processes (the agents)."""
    try:
        manager = psutil.Process(pid)
    except psutil.Error:
        return
    peaks: dict[int, dict[str, int]] = {}
    man: dict[str, int] = {}
    pss_sum = 0
    while not stop.wait(0.05):
        try:
            kids = manager.children()
            infos = {pid: manager.memory_full_info()}
        except psutil.Error:
            break
        for k in kids:
            try:
                infos[k.pid] = k.memory_full_info()
            except psutil.Error:
                pass
        total = 0
        for p, info in infos.items():
            d = man if p == pid else peaks.setdefault(p, {})
            for m in ("rss", "uss", "pss"):
                v = getattr(info, m, None)
                if v is not None:
                    d[m] = max(d.get(m, 0), v)
            if p != pid:
                total += getattr(info, "pss", 0) or 0
        if len(kids) >= 16:
            pss_sum = max(pss_sum, total)
    for m, v in man.items():
        extra[f"manager_{m}"] = v
    for m in ("rss", "uss", "pss"):
        vals = [d[m] for d in peaks.values() if m in d]
        if vals:
            extra[f"agent_max_{m}"] = max(vals)
            extra[f"agent_med_{m}"] = statistics.median(vals)
    if pss_sum:
        extra["agents_pss_sum"] = pss_sum


def sample_output(pid: int, stop: threading.Event, extra: dict) -> None:
    """Manager RSS before the big task's output, its peak, and after (while the dependent task runs)."""
    try:
        manager = psutil.Process(pid)
    except psutil.Error:
        return
    before = peak = after = agent_peak = None
    while not stop.wait(0.02):
        try:
            rss = manager.memory_info().rss
            kids = manager.children()
            grandkids = [g for k in kids for g in k.children()]
            names = [" ".join(g.cmdline()) for g in grandkids]
            agent_rss = max((k.memory_info().rss for k in kids), default=0)
        except psutil.Error:
            continue
        if kids:
            agent_peak = max(agent_peak or 0, agent_rss)
        running_big = any("yes" in n or "head" in n for n in names)
        running_after = any(n.startswith("sleep") for n in names)
        if before is None and running_big:
            before = rss
        if before is not None:
            peak = max(peak or 0, rss)
        if running_after:
            after = rss
    for k, v in (("before", before), ("peak", peak), ("after", after), ("agent_peak", agent_peak)):
        if v is not None:
            extra[k] = v


def create_cost(where: Path, n: int = 500) -> float:
    """Microseconds to create (and close) one new file in a fresh folder under `where`."""
    d = Path(tempfile.mkdtemp(prefix="create-", dir=where))
    try:
        t0 = time.perf_counter()
        for i in range(n):
            os.close(os.open(d / f"{i}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


def loglog_slope(xs, ys) -> float:
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


# Where the time of one process goes: (label, file the function is in, function, "cum" | "tot").
MANAGER_PHASES = [
    ("the whole command", "runner/cli/command.py", "main", "cum"),
    ("  loading and validating the roadmap", "runner/roadmap/loader.py", "load", "cum"),
    ("  starting the agents (fork)", "runner/manager/run.py", "_spawn", "cum"),
    ("  the event loop", "runner/manager/run.py", "_loop", "cum"),
    ("    asleep in poll() (idle: waiting for agents)", "~", "<method 'poll' of 'select.poll' objects>", "tot"),
    ("    reading and unpickling agents' messages", "runner/agents/local.py", "_drain", "cum"),
    ("    handing out tasks (scheduler, message, events)", "runner/manager/run.py", "_hand_out", "cum"),
    ("      of which writing to the agent's pipe", "runner/agents/local.py", "send", "cum"),
    ("    handling Started / TaskResult", "runner/manager/run.py", "_handle", "cum"),
    ("      of which the ledger INSERT", "runner/manager/ledger.py", "record", "cum"),
    ("    group commit: ledger COMMIT, events.jsonl, reporter", "runner/manager/run.py", "_flush", "cum"),
    ("      of which the ledger COMMIT", "runner/manager/ledger.py", "commit", "cum"),
    ("    board and status refresh", "runner/manager/run.py", "_refresh", "cum"),
    ("  stopping the agents", "runner/agents/local.py", "stop", "cum"),
    ("  summary and telemetry", "runner/manager/run.py", "_finish", "cum"),
]
AGENT_PHASES = [
    ("the agent's whole life", "runner/agents/agent.py", "agent_main", "cum"),
    ("  waiting for the next task (recv on the pipe)", "runner/agents/channel.py", "recv", "cum"),
    ("  running attempts", "runner/agents/execute.py", "run_attempt", "cum"),
    ("    starting the command (posix_spawn)", "runner/agents/execute.py", "_start", "cum"),
    ("    waiting for it (pidfd + pipe)", "runner/agents/execute.py", "_supervise", "cum"),
    ("    calling the function, log redirection included", "runner/agents/execute.py", "_run_callable", "cum"),
    ("      of which the call itself", "benchmod.py", "noop", "cum"),
    ("  sending Started / TaskResult", "runner/agents/channel.py", "send", "cum"),
    ("  exit: killing orphans (through /proc)", "runner/agents/agent.py", "_kill_orphans", "cum"),
]


def func_name(func: tuple, scratch: Path) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    text = generic(filename, scratch)
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in text:
            text = text.split(marker, 1)[1]
            if marker == "/lib/python3":
                text = text.split("/", 1)[1] if "/" in text else text
            break
    return f"{text}:{line}({name})"


def _phase_value(data: dict, where: str, name: str, metric: str) -> tuple[float, int] | None:
    hits = [v for f, v in data.items() if f[2] == name and (f[0] == where if where == "~" else f[0].endswith(where))]
    if not hits:
        return None
    v = max(hits, key=lambda v: v[3])
    return (v[3] if metric == "cum" else v[2]), v[1]


def profile_summary(manager: Path, agents: list[Path]) -> str:
    """One paragraph: who waits for whom, and the agents' costliest own-time function."""
    m = pstats.Stats(str(manager)).stats
    loop = _phase_value(m, "runner/manager/run.py", "_loop", "cum")
    idle = _phase_value(m, "~", "<method 'poll' of 'select.poll' objects>", "tot")
    text = []
    if loop and idle:
        text.append(f"The manager's loop was busy {1 - idle[0] / loop[0]:.0%} of its time and asleep in poll() the rest.")
    if agents:
        a = pstats.Stats(*map(str, agents)).stats
        life = _phase_value(a, "runner/agents/agent.py", "agent_main", "cum")
        wait = _phase_value(a, "runner/agents/channel.py", "recv", "cum")
        if life and wait:
            text.append(
                f"The agents spent {wait[0] / life[0]:.0%} of their life waiting for their next task: the manager's"
                " round trip (result in, bookkeeping, next task out) is on every task's path, since an agent holds one task"
                " (or one chunk of quick callables) at a time."
            )
        top = max(a.items(), key=lambda kv: kv[1][2] if kv[0][2] not in ("<built-in method posix.read>",) else 0)
        if life:
            text.append(f"Their costliest own-time call was `{top[0][2]}` ({top[1][2] / life[0]:.0%} of their life).")
    return " ".join(text)


def profile_section(paths: list[Path], heading: str, phases, tasks: int, scratch: Path) -> str:
    """Phases by cumulative time, then the top functions by own time, of one or more .prof files."""
    stats = pstats.Stats(*map(str, paths))
    data = stats.stats  # func -> (primitive calls, calls, tottime, cumtime, callers)
    lines = [f"#### {heading}", ""]
    rows = []
    for label, where, name, metric in phases:
        got = _phase_value(data, where, name, metric)
        if got is None:
            continue
        secs, calls = got
        rows.append([label.replace("  ", " "), f"{secs:.3f}", f"{calls:,}", f"{secs / tasks * 1e6:.0f} µs"])
    lines.append(table(["phase", "seconds", "calls", "per task"], rows))
    top = sorted(data.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    lines += ["", "Top functions by own time (tottime):", ""]
    lines.append(table(["function", "calls", "tottime", "cumtime"], [
        [f"`{func_name(f, scratch)}`", f"{v[1]:,}", f"{v[2]:.3f}", f"{v[3]:.3f}"] for f, v in top
    ]))
    return "\n".join(lines)


# -- tools and the machine ------------------------------------------------------------------------------


def ensure_tools(install: bool, log) -> tuple[dict[str, str | None], list[str]]:
    """Find GNU parallel and hyperfine; install them with apt-get (as root) when missing."""
    notes = []
    wanted = {"parallel": "parallel", "hyperfine": "hyperfine"}
    found = {t: shutil.which(t) for t in wanted}
    missing = [t for t, p in found.items() if p is None]
    if missing and install:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"installing {' '.join(missing)} with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            ok = subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True).returncode == 0
            ok = ok and subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True).returncode == 0
            if not ok:
                notes.append(f"`apt-get install -y {' '.join(missing)}` failed.")
        else:
            notes.append(f"{' and '.join(missing)} missing and not root (or no apt-get): not installed.")
        found = {t: shutil.which(t) for t in wanted}
    if found["parallel"]:
        r = subprocess.run([found["parallel"], "--version"], capture_output=True, text=True)
        if "GNU parallel" not in r.stdout:
            notes.append("`parallel` on PATH is not GNU parallel (moreutils?): its comparisons are skipped.")
            found["parallel"] = None
    for t, p in found.items():
        if p is None:
            skipped = {
                "parallel": "the GNU parallel columns of workloads 1–3",
                "hyperfine": "hyperfine for workload 3 (timed by this script instead)",
            }[t]
            notes.append(f"{t} is not available: skipped {skipped}.")
            log(f"warning: {t} is not available: skipped {skipped}")
    return found, notes


def machine_info(tools: dict) -> list[list[str]]:
    vm = psutil.virtual_memory()

    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "n/a"

    cpu = "n/a"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import yaml

        libyaml = "yes" if getattr(yaml, "CSafeLoader", None) else "no"
    except ImportError:
        libyaml = "n/a"
    return [
        ["date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")],
        ["cores", f"{os.cpu_count()} ({cpu})"],
        ["memory", f"{vm.total / 2**30:.1f} GiB"],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", f"{platform.python_version()} ({platform.python_implementation()}), libyaml: {libyaml}"],
        ["GNU parallel", version([tools["parallel"], "--version"]) if tools.get("parallel") else "not available"],
        ["hyperfine", version([tools["hyperfine"], "--version"]) if tools.get("hyperfine") else "not available"],
        ["xargs", version(["xargs", "--version"])],
        ["load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())],
    ]


WORKLOADS = {
    "1": "w1_noop", "2": "w2_sleep", "3": "w3_startup", "4": "w4_callables",
    "5": "w5_check", "6": "w6_scaling", "7": "w7_memory", "8": "w8_output", "9": "w9_worktrees",
    "profile": "profile",
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions of each comparison (default 5)")
    p.add_argument("--big-reps", type=int, default=2, help="repetitions of the 100k-task run, the 1M-task --check and the worktree workload (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 repetition")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads: 1-9, profile")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report file (default docs/benchmarks.md)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--no-million", action="store_true", help="skip the 1M-task --check")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
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
                getattr(bench, WORKLOADS[w])()
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
    text = render(bench.report, machine, args, chosen, elapsed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {generic(str(out.resolve()), scratch)} in {elapsed:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def render(report: Report, machine, args, chosen, elapsed: float) -> str:
    flags = ["--quick"] * args.quick + ([f"--reps {args.reps}"] if args.reps != 5 and not args.quick else [])
    flags += [f"--big-reps {args.big_reps}"] * (args.big_reps != 2)
    flags += [f"--only {','.join(chosen)}"] * (set(chosen) != set(WORKLOADS))
    run_line = " ".join([".venv/bin/python scripts/bench.py", *flags])
    out = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`{run_line}`) in {elapsed / 60:.1f} minutes. Every comparison ran in that one"
        f" process, interleaved: {args.reps} repetition(s), each running every contender once in an order rotated per"
        " repetition. Figures are medians with min–max. *× paired* is the median of the ratios taken within each"
        " repetition, the steadier figure when the machine is shared; the verdicts use it."
        " wvo-batch runs with `--quiet --state-dir <fresh dir>` (its display cost as under cron) unless a row says otherwise.",
        "",
        "What was changed to reach these figures, and the floor of the one target a Python runner cannot meet:"
        " [performance.md](performance.md).",
        "",
        "## Machine",
        "",
        table(["", ""], machine),
        "",
        "The machine is shared with other work while this runs (see the load average): absolute times are noisy,"
        " the interleaved ratios are what to compare.",
        "",
        "## Targets",
        "",
        table(["workload", "measured", "target", "met"], [
            [v.workload, v.figure, v.target, "n/a (quick run)" if v.met is None else ("yes" if v.met else "**no**")]
            for v in report.verdicts
        ]),
        "",
        "## Results",
        "",
        "\n\n".join(report.sections),
        "",
        "## Commands",
        "",
        "`$BENCH` is the scratch folder the script makes (and removes); `list-N.txt` holds the numbers 1..N, one a line;"
        " the roadmaps are generated there (`write_*_roadmap` in `scripts/bench.py`).",
        "",
        "```",
        *[f"[{w}] {c}" for w, c in report.commands],
        "```",
    ]
    if report.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
