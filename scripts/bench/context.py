"""What every workload works with: the scratch folder, the environment, the report, and ways to run things."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.harness import BIN, PROGRAMS, ROOT, Sample, measure
from bench.inputs import write_noop_roadmap
from bench.report import Report, generic


class Bench:
    """One run of the benchmark: its options, scratch folder, environment and report, handed to every workload."""

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
        # The venv's wvo-batch imports runner from wherever its editable install points: another checkout of
        # the project (a git worktree sharing the venv) would be measured instead of this one.
        project = [] if _runner_home(self.env) == ROOT else [str(ROOT)]
        if project:
            self.env["PYTHONPATH"] = str(ROOT)
            self.report.notes.append(
                "The venv's wvo-batch imports runner from another checkout; the bench set PYTHONPATH to this one"
                " (`.`) for what it runs, so that the figures are this checkout's."
            )
        self.modules = scratch / "modules"
        self.modules.mkdir()
        for program in ("benchmod.py", "pools.py", "bare_pool.py", "bare_ledger_pool.py", "bare_runner.py", "spawn_only.py", "profile_cli.py", "worktree_tasks.sh", "worktree_steps.sh"):
            shutil.copy(PROGRAMS / program, self.modules / program)
        self.mod_env = {**self.env, "PYTHONPATH": os.pathsep.join([str(self.modules), *project])}
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

    def run_wvo(self, roadmap: Path, agents: int, *, quiet=True, env=None, sampler=None, workload="", tmp=False, phases=False) -> Sample:
        sd = Path(tempfile.mkdtemp(prefix="wvo-bench-state-")) if tmp else self.state_dir()
        argv = self.wvo(roadmap, agents, "--state-dir", sd, quiet=quiet)
        shown = "$TMPDIR/wvo-bench-state-XXXX" if tmp else "$BENCH/state/N"
        self.report.command(workload, self.wvo(roadmap, agents, "--state-dir", shown, quiet=quiet))
        out = self.scratch / "wvo.out"
        try:
            sample = measure(argv, env=env or self.env, stdout=out, sampler=sampler)
            if phases:
                sample.extra["phases"] = run_phases(sd, *sample.extra["epoch"])
            return sample
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


def run_phases(state_dir: Path, began: float, ended: float) -> dict[str, float]:
    """Where a run's wall time went (seconds), from the events file its run folder keeps.

    start-up: from exec to the first task's start; stagger: to the start of the last agent's first task
    (the agents are forked one after another); tasks: to the last task's end; exit: to the process's end.
    """
    starts: dict[str, float] = {}
    last_end = None
    for path in state_dir.glob("runs/*/events.jsonl"):
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e["event"] == "task:started":
                starts.setdefault(e["agent"], e["ts"])
            elif e["event"] == "task:finished":
                last_end = e["ts"] if last_end is None else max(last_end, e["ts"])
    if not starts or last_end is None:
        return {}
    first, last = min(starts.values()), max(starts.values())
    return {"start-up": first - began, "stagger": last - first, "tasks": last_end - last, "exit": ended - last_end}


def _runner_home(env: dict) -> Path | None:
    """The project folder the venv's Python imports runner from, in env (None if it cannot)."""
    probe = "import os, runner; print(os.path.dirname(os.path.dirname(os.path.abspath(runner.__file__))))"
    out = subprocess.run([BIN / "python", "-c", probe], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return Path(out.stdout.strip()).resolve() if out.returncode == 0 and out.stdout.strip() else None
