#!/usr/bin/env python3
"""Per-task cost of the workspace layer (create + commit + land + remove) beside a shell script doing the same git commands.

Usage: scripts/bench_workspace.py [--files 10000] [--tasks 30]

Both sides work on one repository of --files files, each task editing its own file, and alternate
task by task (script, library, script, ...) so that the file system's noise falls on both alike. The
script runs once per task; the start-up of `bash` is measured and taken off. Prints per-task medians,
the median of the paired ratios, and the library's stages.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.coding.landing import Landed, Lander  # noqa: E402
from runner.coding.workspace import Workspaces  # noqa: E402

SCRIPT = r"""
set -e
R=$1; S=$2; L=$3; INTO=$4; i=$5
tip=$(git -C "$R" rev-parse "refs/heads/$INTO")
git -C "$R" worktree add -q -b "sh/t$i" "$S/wt$i" "$tip"
echo "changed by sh $i" > "$S/wt$i/d$((i % 100))/f$i.txt"
git -C "$S/wt$i" add -A
git -C "$S/wt$i" commit -q -m "t$i"
git -C "$L" merge -q --no-ff -m "Land t$i" "sh/t$i"
new=$(git -C "$L" rev-parse HEAD)
git -C "$R" update-ref "refs/heads/$INTO" "$new" "$tip"
git -C "$R" worktree remove --force "$S/wt$i"
"""


def _timed(argv: list[str]) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def sh(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    repo.mkdir()
    sh("git", "init", "-q", "-b", "main", str(repo))
    sh("git", "-C", str(repo), "config", "user.name", "bench")
    sh("git", "-C", str(repo), "config", "user.email", "bench@example.invalid")
    for i in range(files):
        d = repo / f"d{i % 100}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n" * 20)
    sh("git", "-C", str(repo), "add", "-A")
    sh("git", "-C", str(repo), "commit", "-q", "-m", "10k files")
    return repo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--tasks", type=int, default=30, help="tasks per side")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as tmp:
        root = Path(tmp)
        t = time.monotonic()
        repo = make_repo(root, args.files)
        print(f"repository: {args.files} files, built in {time.monotonic() - t:.1f} s")
        sh("git", "-C", str(repo), "branch", "bench-sh", "main")
        sh("git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(root / "sh-landing"), "bench-sh")
        (root / "sh").mkdir()
        spaces = Workspaces(repo, root / "state", "bench", "bench-py")
        lander = Lander(spaces)
        lander_ready = spaces.create("warm-up")  # landing worktree made outside the timing, as for the script
        Path(lander_ready.path, "d0", "f0.txt").write_text("warm-up\n")
        spaces.commit_all(lander_ready, "warm-up")
        lander.land(lander_ready, "warm-up")
        spaces.remove(lander_ready)

        bash_start = statistics.median(_timed(["bash", "-c", ":"]) for _ in range(20))
        script_s, lib_s, stages = [], [], {"create": [], "commit": [], "land": [], "remove": []}
        for i in range(args.tasks):
            script_s.append(_timed(["bash", "-c", SCRIPT, "bench", str(repo), str(root / "sh"),
                                    str(root / "sh-landing"), "bench-sh", str(i)]) - bash_start)
            t0 = time.monotonic()
            ws = spaces.create(f"t{i}")
            t1 = time.monotonic()
            Path(ws.path, f"d{i % 100}", f"f{i}.txt").write_text(f"changed by py {i}\n")
            spaces.commit_all(ws, f"t{i}")
            t2 = time.monotonic()
            result = lander.land(ws, f"t{i}")
            assert isinstance(result, Landed), result
            t3 = time.monotonic()
            spaces.remove(ws)
            t4 = time.monotonic()
            lib_s.append(t4 - t0)
            for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[name].append(dt)
        t = time.monotonic()
        cleanup = spaces.finish()
        finish_s = time.monotonic() - t
        script_ms, lib_ms = statistics.median(script_s) * 1000, statistics.median(lib_s) * 1000
        ratios = [lib / script for lib, script in zip(lib_s, script_s)]
        print(f"per task, median of {args.tasks} (bash start-up {bash_start * 1000:.1f} ms taken off the script):")
        print(f"  shell script (same git commands, serial):  {script_ms:7.1f} ms")
        print(f"  runner.coding (create+commit+land+remove): {lib_ms:7.1f} ms")
        print(f"  ratio library / script: {lib_ms / script_ms:.2f} (medians), {statistics.median(ratios):.2f} (median of pairs)")
        print("  library stages (median ms): " + ", ".join(
            f"{k} {statistics.median(v) * 1000:.1f}" for k, v in stages.items()))
        print(f"finish: {len(cleanup.deleted)} branches deleted in {finish_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
