"""The generated inputs: roadmaps of n tasks and git repositories of n files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


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
