"""cProfile of the manager (and its agents) on workloads 1 and 4: where the time of one process goes."""

from __future__ import annotations

import os
import pstats
import shutil
from pathlib import Path

from bench.context import Bench
from bench.harness import BIN, ROOT, fmt_s, measure
from bench.inputs import write_call_roadmap, write_noop_roadmap
from bench.report import generic, table


def run(b: Bench) -> None:
    b.log("profile: cProfile of the manager (and its agents), workloads 1 and 4")
    py = BIN / "python"
    wrapper = b.modules / "profile_cli.py"
    parts = [
        "cProfile of the manager's main thread; each agent, forked with that profiler off, profiles itself"
        " into its own file (the agents' table sums both agents). cProfile measures wall-clock time, so a"
        " process that is descheduled inside a call (2 cores, 3 busy processes) is charged for it there;"
        " the profiler also slows Python code by roughly 1.5–2×: read shares and per-task costs, not totals."
    ]
    n1, n4 = b.n(2000, 300), b.n(20000, 2000)
    cases = [
        ("1", write_noop_roadmap(b.scratch / "prof-noop.yaml", n1), b.env, n1, f"{n1:,} no-op tasks"),
        ("4", write_call_roadmap(b.scratch / "prof-call.yaml", n4, "benchmod:noop"), b.mod_env, n4, f"{n4:,} callables"),
    ]
    for w, rm, env, n, what in cases:
        out = b.scratch / f"profile-{w}.prof"
        sd = b.state_dir()
        argv = [py, wrapper, out, rm, "--agents", "2", "--quiet", "--state-dir", sd]
        s = measure(argv, env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))})
        shutil.rmtree(sd, ignore_errors=True)
        b.report.command(
            f"profile {w}",
            [py, "$BENCH/modules/profile_cli.py", "$BENCH/profile.prof", rm, "--agents", "2", "--quiet", "--state-dir", "$BENCH/state/N"],
        )
        agents = sorted(b.scratch.glob(f"profile-{w}.prof.*"))
        parts.append(f"### Workload {w}: {what} on 2 agents (wall under the profiler: {fmt_s(s.wall)})")
        parts.append(profile_summary(out, agents))
        parts.append(profile_section([out], "The manager", MANAGER_PHASES, n, b.scratch))
        if agents:
            parts.append(profile_section(agents, f"The agents ({len(agents)}, summed)", AGENT_PHASES, n, b.scratch))
    b.report.sections.append("## Profile\n\n" + "\n\n".join(parts))


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
