"""Running and timing what the workloads compare: one process to the end, interleaved repetitions, medians."""

from __future__ import annotations

import math
import os
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

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"  # the programs the workloads run, as real files
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
# Scratch files (roadmaps, state dirs, logs) go in a folder made under bench-out/ (git-ignored,
# `make clean` removes it) and shown as $BENCH, so that the state dirs sit on the project's disk like
# a user's default state dir; workload 1 also runs once per repetition with the state dir in $TMPDIR.
SCRATCH_ROOT = ROOT / "bench-out"
SCRATCH_PREFIX = "run-"


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
        epoch0 = time.time()  # for lining the run up with the events it stamps (wall clock)
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
        extra["epoch"] = (epoch0, time.time())
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


def loglog_slope(xs, ys) -> float:
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


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
