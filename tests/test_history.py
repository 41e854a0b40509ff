"""`--history RUN`: every attempt of a run from the ledger's rows (issue 23); pure parts with plain calls.

End to end on a real run: tests/test_demo_fleet.py.
"""

from __future__ import annotations

from runner.cli import history
from runner.manager.ledger import Attempt


def attempt(task: str, n: int, outcome: str, error: str | None = None, log: str | None = None) -> Attempt:
    return Attempt(task, n, "worker-0", 10.0 * n, 10.0 * n + 1.5, 0, outcome, log, error, model="m", usage={"input": 1200, "output": 30},
                   cost_usd=0.01)


def test_without_the_events_a_verdict_is_inferred_from_the_outcomes_that_follow_a_review():
    rows = history.attempt_rows([
        attempt("t", 1, "needs_review"),
        attempt("t", 2, "rejected", "rejected by the critic: name the world"),
        attempt("t", 3, "needs_review"),
        attempt("t", 4, "failed", "no verdict"),  # the critic's CLI failed: the review is retried
        attempt("t", 5, "conflict"),  # approved, then its landing conflicted
        attempt("u", 1, "succeeded"),  # never reviewed
    ], folder=None)
    assert [(r["attempt"], r["review"], r["verdict"]) for r in rows if r["task"] == "t"] == [
        (1, False, None), (2, True, "reject"), (3, False, None), (4, True, None), (5, True, "approve")]
    assert rows[1]["reason"] == "name the world"
    assert rows[-1]["review"] is False and rows[-1]["verdict"] is None
    assert [r["class"] for r in rows] == ["succeeded", "failed", "succeeded", "failed", "failed", "succeeded"]


def test_checks_are_read_from_the_markers_in_the_attempts_log(tmp_path):
    passed, failed_on_landing, none = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    passed.write_text("work\n\n===== wvo-batch check 1/1: make test =====\n====== not a marker\n===== exit 0 (succeeded) =====\n")
    failed_on_landing.write_text(passed.read_text() + "\n===== wvo-batch landing check: make test (on the merged result) =====\n"
                                 "boom\n===== exit 2 =====\n")
    none.write_text("just the agent's output\n")
    rows = history.attempt_rows([attempt("a", 1, "succeeded", log=str(passed)), attempt("b", 1, "check_failed", log=str(failed_on_landing)),
                                 attempt("c", 1, "succeeded", log=str(none)), attempt("d", 1, "succeeded", log=str(tmp_path / "gone"))],
                                folder=None)
    assert [r["checks"] for r in rows] == ["✓", "✗", None, None]


def test_the_table_has_a_row_per_attempt_and_the_totals():
    from runner.manager.ledger import RunRow

    run = RunRow(3, 0.0, 5.0, "failed", 1, 4, None, {})
    rows = history.attempt_rows([attempt("t", 1, "needs_review"), attempt("t", 2, "rejected", "rejected by the critic: no")], None)
    lines = history.attempt_lines(run, rows)
    assert lines[0].startswith("run 3 ·") and "2 attempt(s)" in lines[0]
    assert lines[1].split() == ["task", "#", "agent", "model", "outcome", "checks", "verdict", "tokens", "in/out", "cost", "duration"]
    assert lines[3].split()[:7] == ["t", "2", "worker-0", "m", "rejected", "-", "reject"]
    assert "1.2k / 30" in lines[2] and "$0.010" in lines[2]
    assert lines[-2] == "  t #2 rejected: no" and lines[-1] == "tokens 2.4k in / 60 out · $0.02"


def test_a_check_whose_header_is_beyond_the_tail_still_counts(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("agent output\n===== wvo-batch check 1/1: make test =====\n" + "x" * 80 + "\n" * 20_000
                   + "y\n" * (history._LOG_TAIL // 2) + "===== exit 2 (failed) =====\n")
    assert log.stat().st_size > history._LOG_TAIL
    assert history.checks_in_log(str(log)) == "✗"


def test_a_run_never_closed_reads_the_same_in_the_list_and_in_its_own_table():
    # A run whose manager was SIGKILLed stays "running" in the ledger: the list said "running/crashed",
    # `--history N` of the same run said "running".
    from runner.manager.ledger import RunRow

    run = RunRow(3, 0.0, None, "running", 1, 4, None, {})
    assert "running/crashed" in history.run_lines([run])[1]
    assert history.attempt_lines(run, history.attempt_rows([attempt("t", 1, "failed")], None))[0].split(" · ")[2] == "running/crashed"
