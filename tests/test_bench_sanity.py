"""Generous sanity bounds on speed, so a gross slowdown fails a test; the real figures are `make bench`'s.

These bounds are several times the measured costs (docs/benchmarks.md) so that a loaded CI machine
passes them; they are not the performance targets.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, wvo

pytestmark = pytest.mark.timeout(120)


def _bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _bench()


def test_500_noop_tasks_on_2_agents_finish_in_under_10s(tmp_path):
    roadmap = bench.write_noop_roadmap(tmp_path / "noop.yaml", 500)
    t0 = time.monotonic()
    r = wvo(roadmap, "--agents", "2", "--quiet", "--state-dir", tmp_path / "state", timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "500 succeeded" in r.stdout + r.stderr
    assert elapsed < 10, f"500 no-op tasks took {elapsed:.1f}s"


def test_check_of_10000_tasks_with_dependencies_in_under_10s(tmp_path):
    roadmap = bench.write_dependency_roadmap(tmp_path / "deps.yaml", 10_000)
    t0 = time.monotonic()
    r = wvo(roadmap, "--check", timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "10000" in r.stdout.replace(",", "")
    assert elapsed < 10, f"--check of 10,000 tasks took {elapsed:.1f}s"


def test_200_callables_on_2_agents_finish_in_under_10s(tmp_path):
    (tmp_path / "benchmod.py").write_text(bench.NOOP_MODULE)
    roadmap = bench.write_call_roadmap(tmp_path / "calls.yaml", 200, "benchmod:noop")
    t0 = time.monotonic()
    r = wvo(roadmap, "--agents", "2", "--quiet", "--state-dir", tmp_path / "state", env={"PYTHONPATH": str(tmp_path)})
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "200 succeeded" in r.stdout + r.stderr
    assert elapsed < 10, f"200 callables took {elapsed:.1f}s"


def test_bench_quick_run_writes_a_report_without_machine_paths(tmp_path):
    """The bench itself runs end to end (small sizes) and writes only generic paths."""
    out = tmp_path / "benchmarks.md"
    code = bench.main(
        ["--quick", "--only", "3,5", "--no-install", "--no-million", "--out", str(out), "--scratch", str(tmp_path)]
    )
    assert code == 0
    text = out.read_text()
    assert "## Targets" in text and "## Machine" in text and "--check" in text
    for path in (str(tmp_path), str(ROOT), str(Path.home())):
        assert path not in text, f"{path} leaked into the report"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(bench.SCRATCH_PREFIX)], "scratch folder left behind"


def test_loglog_slope_recovers_the_exponent():
    xs = [1_000, 10_000, 100_000]
    assert bench.loglog_slope(xs, [2e-3 * x for x in xs]) == pytest.approx(1.0)
    assert bench.loglog_slope(xs, [1e-6 * x**1.5 for x in xs]) == pytest.approx(1.5)
