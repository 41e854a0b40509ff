"""Workload 4: no-op Python callables vs process pools."""

from __future__ import annotations

import math
import shutil

from bench.context import Bench
from bench.harness import BIN, PROGRAMS, interleave, med, paired_ratio, walls
from bench.inputs import write_call_roadmap
from bench.report import Verdict, comparison_table


FLOOR = "floor: bare fork pool of 2, same ledger rows and events"


def run(b: Bench) -> None:
    n = b.n(20000, 2000)
    title = f"4. {n:,} no-op Python callables on 2 agents vs process pools of 2"
    b.log(title)
    rm = write_call_roadmap(b.scratch / f"call-{n}.yaml", n, "benchmod:noop")
    py = BIN / "python"
    pools = b.modules / "pools.py"
    bare = b.modules / "bare_callables.py"
    shutil.copy(PROGRAMS / "bare_callables.py", bare)
    w = "4"
    c = {
        "wvo-batch --quiet (call: benchmod:noop)": lambda: b.run_wvo(rm, 2, env=b.mod_env, workload=w),
        "ProcessPoolExecutor(2), submit one by one": lambda: b.run_cmd(w, [py, pools, n, "ppe"], env=b.mod_env),
        "multiprocessing.Pool(2).imap (chunksize 1)": lambda: b.run_cmd(w, [py, pools, n, "imap"], env=b.mod_env),
        "multiprocessing.Pool(2).map (default chunksize)": lambda: b.run_cmd(w, [py, pools, n, "map"], env=b.mod_env),
        FLOOR: lambda: b.run_cmd(w, [py, bare, rm, b.state_dir(), 2], env=b.mod_env),
    }
    res = interleave(c, b.reps, b.log)
    base = "ProcessPoolExecutor(2), submit one by one"
    rate = lambda s: f"{n / med(walls(s)):,.0f} calls/s"  # noqa: E731
    body = comparison_table(res, base, rate)
    chunk = math.ceil(n / (2 * 4))
    body += (
        f"\n\nAll five run the same function (`benchmod.noop`, `scripts/bench/programs/benchmod.py`) in a fresh interpreter, timed from exec to exit,"
        f" and with PYTHONPATH=$BENCH/modules. `Pool.map` splits the {n:,} calls into chunks of {chunk:,}"
        " (its default: n / (4 × processes)), so it pays the pipe once per chunk, not once per call;"
        " `imap` defaults to chunks of 1, like `submit`. The target compares wvo-batch with ProcessPoolExecutor."
        " Every wvo-batch call also gets its own ledger row and events (and a log file when it prints);"
        " after the first calls, they travel in chunks of quick tasks, wvo-batch's counterpart of Pool.map's chunks."
        f" The floor (`scripts/bench/programs/bare_callables.py`) is a bare fork pool that keeps the same record of each call"
        " (a ledger row in SQLite, one COMMIT per 50 ms, and four events in events.jsonl), in chunks of 256, with nothing else:"
        " no scheduler, no components, no summary. It is what a Python runner with wvo-batch's bookkeeping can reach."
    )
    wvo_w = walls(res["wvo-batch --quiet (call: benchmod:noop)"])
    r = 1 / paired_ratio(wvo_w, walls(res[base]))
    floor = 1 / paired_ratio(walls(res[FLOOR]), walls(res[base]))
    b.report.verdicts.append(Verdict("4 callables: throughput vs ProcessPoolExecutor(2)", f"{r:.2f} × PPE (floor {floor:.2f} ×)", "≥ 3 ×", r >= 3.0))
    b.report.sections.append(f"### {title}\n\n{body}")
