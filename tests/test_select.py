"""Choosing a batch: --only patterns, dependencies outside it, --with-deps, --max-tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner.errors import UsageError
from runner.model import Priority, Task
from runner.roadmap.selection import Selection, select

ROADMAPS = Path(__file__).resolve().parents[2] / "shared" / "roadmaps"
WEATHERVANE = ROADMAPS / "weathervane-2025-11-19.yaml"


def tasks(*specs: tuple) -> list[Task]:
    """Tasks in roadmap order from (id, dependencies, keyword fields...) tuples."""
    out = []
    for i, (tid, deps, *rest) in enumerate(specs):
        kw = dict(rest[0]) if rest else {}
        if isinstance(kw.get("priority"), str):
            kw["priority"] = Priority(kw["priority"])
        kw.setdefault("status", "pending")
        meta = {k: kw.pop(k) for k in list(kw) if k not in Task.__dataclass_fields__}
        out.append(Task(id=tid, dependencies=list(deps), order=i, meta=meta, **kw))
    return out


def check_partition(ts: list[Task], sel: Selection, done: frozenset[str] = frozenset()) -> None:
    """Every task lands in exactly one place, and what runs has everything it needs."""
    places = [*sel.run, *sel.blocked, *sel.deferred, *sel.done]
    assert len(places) == len(set(places))
    assert len(places) + sel.excluded == len(ts)
    by_id = {t.id: t for t in ts}
    running = set(sel.run)
    for i in sel.run:
        assert by_id[i].runnable_status
        for d in by_id[i].dependencies:
            assert d in running or d in done or by_id[d].status == "done", (i, d)


# -- patterns -------------------------------------------------------------------------------------


@pytest.fixture
def plan() -> list[Task]:
    return tasks(
        ("T1.1", [], {"epic": "E1", "milestone": "M1", "domain": "mcp", "set_id": "quality"}),
        ("T1.2", ["T1.1"], {"epic": "E1", "milestone": "M1", "domain": "mcp"}),
        ("T1.10", [], {"epic": "E1", "milestone": "M2", "domain": "ops"}),
        ("T2.1", [], {"epic": "E2", "milestone": "M3", "domain": "product", "set_id": "quality"}),
        ("X", [], {"domain": "mcp", "tags": ["fast", "nightly"]}),
    )


def test_no_pattern_selects_every_task(plan):
    sel = select(plan)
    assert sel.run == ["T1.1", "T1.2", "T1.10", "T2.1", "X"]
    assert sel.excluded == 0 and sel.blocked == {}


@pytest.mark.parametrize(
    "only, expected",
    [
        (["T1.*"], ["T1.1", "T1.2", "T1.10"]),
        (["T1.?"], ["T1.1", "T1.2"]),
        (["X"], ["X"]),
        (["E2"], ["T2.1"]),
        (["M1"], ["T1.1", "T1.2"]),
        (["M*"], ["T1.1", "T1.2", "T1.10", "T2.1"]),
        (["domain=mcp"], ["T1.1", "T1.2", "X"]),
        (["domain = ops"], ["T1.10"]),
        (["domain=p*"], ["T2.1"]),
        (["set_id=quality"], ["T1.1", "T2.1"]),
        (["milestone=M3"], ["T2.1"]),
        (["priority=medium"], ["T1.1", "T1.2", "T1.10", "T2.1", "X"]),
        (["epic=E2"], ["T2.1"]),
        (["tags=nightly"], ["X"]),
        (["E2", "M2", "T2.1"], ["T1.10", "T2.1"]),
    ],
)
def test_patterns_select_by_id_epic_milestone_and_field(plan, only, expected):
    sel = select(plan, only=only)
    assert sel.run == expected
    assert sel.excluded == len(plan) - len(expected)
    check_partition(plan, sel)


def test_field_pattern_finds_set_id_moved_to_affinity():
    """A loader may keep `set_id` only as the task's affinity; `set_id=` still finds it."""
    ts = [Task(id="A", affinity="w0m1-quality-automation"), Task(id="B", affinity="other", order=1)]
    assert select(ts, only=["set_id=w0m1-*"]).run == ["A"]


def test_glob_is_case_sensitive_and_anchored(plan):
    with pytest.raises(ValueError):
        select(plan, only=["t1.*"])
    assert select(plan, only=["T1.1"]).run == ["T1.1"]  # not T1.10


@pytest.mark.parametrize("pattern", ["NOPE-*", "domain=nope", "colour=red", "=mcp", ""])
def test_pattern_matching_nothing_is_a_usage_error_naming_it(plan, pattern):
    with pytest.raises(ValueError) as err:
        select(plan, only=["T1.1", pattern])
    assert repr(pattern) in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2


def test_pattern_matching_only_done_tasks_is_not_an_error(plan):
    sel = select(plan, only=["T1.1"], done={"T1.1"})
    assert sel.run == [] and sel.done == ["T1.1"]


# -- dependencies ---------------------------------------------------------------------------------


def chain() -> list[Task]:
    # C -> B -> A (C depends on B, B on A); D depends on C.
    return tasks(("A", []), ("B", ["A"]), ("C", ["B"]), ("D", ["C"]), ("Other", []))


def test_dependency_outside_the_selection_blocks_with_reason_naming_it():
    sel = select(chain(), only=["C", "D"])
    assert sel.run == []
    assert sel.blocked == {
        "C": "depends on B, which is not selected and not done",
        "D": "depends on C, which is blocked",
    }
    assert sel.excluded == 3


def test_dependency_outside_the_selection_that_is_done_does_not_block():
    ts = chain()
    ts[1].status = "done"  # B done in the roadmap
    assert select(ts, only=["C"]).run == ["C"]
    assert select(chain(), only=["C"], done={"B"}).run == ["C"]  # B succeeded in the ledger


def test_with_deps_pulls_in_dependencies_transitively():
    sel = select(chain(), only=["D"], with_deps=True)
    assert sel.run == ["A", "B", "C", "D"]
    assert sel.excluded == 1 and sel.blocked == {}


def test_with_deps_does_not_pull_in_what_is_done_nor_what_lies_behind_it():
    sel = select(chain(), only=["D"], with_deps=True, done={"B"})
    assert sel.run == ["C", "D"]
    assert sel.excluded == 3  # A is only needed by B, which is done


def test_with_deps_pulls_in_a_dependency_that_cannot_run_and_says_so():
    ts = chain()
    ts[1].status = "on_hold"
    sel = select(ts, only=["D"], with_deps=True)
    assert sel.run == []
    assert sel.blocked == {
        "B": "status is 'on_hold'",
        "C": "depends on B, whose status is 'on_hold'",
        "D": "depends on C, which is blocked",
    }
    assert sel.excluded == 2  # A would not help B run: not pulled in


def test_unknown_dependency_blocks_unless_done_elsewhere():
    ts = tasks(("A", ["GHOST"]), ("B", []))
    assert select(ts).blocked == {"A": "depends on GHOST, which is not in the roadmap"}
    sel = select(ts, done={"GHOST"})
    assert sel.run == ["A", "B"]
    check_partition(ts, sel, done=frozenset({"GHOST"}))


def test_status_that_does_not_run_is_never_in_the_batch():
    ts = tasks(("A", [], {"status": "blocked"}), ("B", [], {"status": "cancelled"}), ("C", [], {"status": ""}))
    sel = select(ts, with_deps=True)
    assert sel.run == ["C"]
    assert sel.blocked == {"A": "status is 'blocked'", "B": "status is 'cancelled'"}


def test_done_tasks_are_not_run_again():
    ts = tasks(("A", []), ("B", ["A"]), ("C", [], {"status": "done"}))
    sel = select(ts, done={"A"})
    assert sel.run == ["B"]
    assert sel.done == ["A", "C"]
    check_partition(ts, sel, done={"A"})


def test_dependency_cycle_blocks_its_members_and_what_depends_on_them():
    ts = tasks(("A", ["B"]), ("B", ["A"]), ("C", ["A"]), ("D", ["C"]), ("E", []))
    sel = select(ts)
    assert sel.run == ["E"]
    assert sel.blocked == {
        "A": "depends on B, which is blocked by a dependency cycle",
        "B": "depends on A, which is blocked by a dependency cycle",
        "C": "depends on A, which is blocked by a dependency cycle",
        "D": "depends on C, which is blocked by a dependency cycle",
    }


def test_reason_names_the_first_listed_dependency_at_fault():
    ts = tasks(("A", [], {"status": "blocked"}), ("B", []), ("C", ["B", "GHOST", "A"]))
    assert select(ts).blocked["C"] == "depends on GHOST, which is not in the roadmap"


# -- max_tasks ------------------------------------------------------------------------------------


def test_max_tasks_takes_the_most_urgent_then_roadmap_order():
    ts = tasks(
        ("low", [], {"priority": "low"}),
        ("med1", [], {"priority": "medium"}),
        ("crit", [], {"priority": "critical"}),
        ("med2", [], {"priority": "medium"}),
        ("high", [], {"priority": "high"}),
    )
    sel = select(ts, max_tasks=3)
    assert sel.run == ["med1", "crit", "high"]  # listed in roadmap order
    assert sel.deferred == ["low", "med2"]
    assert sel.blocked == {}
    check_partition(ts, sel)


def test_max_tasks_takes_a_task_only_after_its_dependencies():
    ts = tasks(
        ("dep", [], {"priority": "low"}),
        ("urgent", ["dep"], {"priority": "critical"}),
        ("m1", [], {"priority": "medium"}),
        ("m2", [], {"priority": "medium"}),
    )
    # The critical task waits for its low dependency's turn: medium work goes first.
    assert select(ts, max_tasks=2).run == ["m1", "m2"]
    assert select(ts, max_tasks=3).run == ["dep", "m1", "m2"]
    sel = select(ts, max_tasks=4)
    assert sel.run == ["dep", "urgent", "m1", "m2"] and sel.deferred == []
    # Once the dependency is done, the critical task goes first.
    assert select(ts, max_tasks=1, done={"dep"}).run == ["urgent"]


def test_max_tasks_never_takes_a_blocked_task_and_zero_takes_none():
    ts = tasks(
        ("A", [], {"priority": "critical", "status": "blocked"}),
        ("B", ["A"], {"priority": "critical"}),
        ("C", []),
    )
    sel = select(ts, max_tasks=1)
    assert sel.run == ["C"]
    assert set(sel.blocked) == {"A", "B"}
    sel = select(ts, max_tasks=0)
    assert sel.run == [] and sel.deferred == ["C"]
    with pytest.raises(ValueError):
        select(ts, max_tasks=-1)


def test_max_tasks_with_deps_and_only_together():
    ts = chain()
    sel = select(ts, only=["D"], with_deps=True, max_tasks=2)
    assert sel.run == ["A", "B"]
    assert sel.deferred == ["C", "D"]


# -- scale ----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_hundred_thousand_task_chain_resolves_without_recursion_or_quadratic_work():
    n = 100_000
    ts = [Task(id=f"T{i}", dependencies=[f"T{i - 1}"] if i else [], order=i) for i in range(n)]
    sel = select(ts, only=["T*"], max_tasks=n // 2)
    assert len(sel.run) == n // 2 and sel.run[-1] == f"T{n // 2 - 1}"
    ts[0].status = "blocked"
    sel = select(ts, only=[f"T{n - 1}"], with_deps=True)
    assert len(sel.blocked) == n
    assert sel.blocked[f"T{n - 1}"] == f"depends on T{n - 2}, which is blocked"


# -- the real WeatherVane roadmap -----------------------------------------------------------------


def _raw_tasks(doc: dict) -> list[tuple[dict, str | None, str | None]]:
    """(task mapping, epic id, milestone id) from both layouts, in file order."""
    out = []
    for epic in doc.get("epics") or []:
        for ms in epic.get("milestones") or []:
            out += [(t, epic["id"], ms["id"]) for t in ms.get("tasks") or []]
    out += [(t, t.get("epic"), None) for t in doc.get("tasks") or []]
    return out


def _load(path: Path) -> tuple[list[Task], list[tuple[dict, str | None, str | None]]]:
    raw = _raw_tasks(yaml.safe_load(path.read_text()))
    try:
        from runner.roadmap.loader import load_roadmap
    except ImportError:
        load_roadmap = None
    if load_roadmap is not None:
        return load_roadmap([str(path)]).tasks, raw
    own = ("id", "title", "status", "dependencies", "priority", "epic")
    ts = [
        Task(
            id=str(t["id"]),
            status=str(t.get("status") or "").lower(),
            dependencies=[str(d) for d in t.get("dependencies") or []],
            priority=Priority(t.get("priority") or "medium"),
            epic=epic,
            milestone=ms,
            meta={k: v for k, v in t.items() if k not in own},
            order=i,
        )
        for i, (t, epic, ms) in enumerate(raw)
    ]
    return ts, raw


@pytest.fixture(scope="module")
def weathervane():
    if not WEATHERVANE.exists():
        pytest.skip(f"{WEATHERVANE.name} not present")
    return _load(WEATHERVANE)


def test_weathervane_selection_by_field_epic_milestone_and_glob(weathervane):
    ts, raw = weathervane
    assert len(ts) == 180
    cases = {
        "domain=mcp": lambda t, e, m: t.get("domain") == "mcp",
        "set_id=w0m1-quality-automation": lambda t, e, m: t.get("set_id") == "w0m1-quality-automation",
        "WAVE-0": lambda t, e, m: e == "WAVE-0",
        "W0.M1": lambda t, e, m: m == "W0.M1",
        "AFP-W5*": lambda t, e, m: str(t["id"]).startswith("AFP-W5"),
        "FOUNDATION-REPAIR": lambda t, e, m: e == "FOUNDATION-REPAIR",  # a flat task's `epic:`
    }
    for pattern, wanted in cases.items():
        expected = {str(t["id"]) for t, e, m in raw if wanted(t, e, m)}
        sel = select(ts, only=[pattern])
        assert expected, pattern
        assert set(sel.run) | set(sel.blocked) | set(sel.done) == expected, pattern
        assert sel.excluded == len(ts) - len(expected)
        check_partition(ts, sel)


def test_weathervane_whole_roadmap_runs_only_what_can_run(weathervane):
    ts, _ = weathervane
    sel = select(ts)
    check_partition(ts, sel)
    status = {t.id: t.status for t in ts}
    assert set(sel.done) == {i for i, s in status.items() if s == "done"}
    assert sel.run and all(status[i] in {"pending", "in_progress"} for i in sel.run)
    # A dependency that is a sentence, not a task id, blocks the task that lists it.
    assert sel.blocked["AFP-E2E-ONLINE-TESTING-MODULE-20251112"].endswith("which is not in the roadmap")


def test_weathervane_outside_dependency_blocks_and_the_ledger_can_unblock(weathervane):
    ts, _ = weathervane
    task, dep = "AFP-W1-M1-S1-BOOTSTRAP", "AFP-W0-M1-EXIT-READINESS"
    sel = select(ts, only=[task])
    assert sel.blocked == {task: f"depends on {dep}, which is not selected and not done"}
    sel = select(ts, only=[task], with_deps=True)
    assert sel.blocked == {dep: "status is 'blocked'", task: f"depends on {dep}, whose status is 'blocked'"}
    assert select(ts, only=[task], done={dep}).run == [task]


def test_weathervane_max_tasks_takes_critical_work_first(weathervane):
    ts, _ = weathervane
    every = select(ts)
    sel = select(ts, max_tasks=5)
    by_id = {t.id: t for t in ts}
    assert len(sel.run) == 5
    assert sorted(sel.run + sel.deferred, key=every.run.index) == every.run
    assert sel.blocked == every.blocked
    worst_taken = max(by_id[i].priority.rank for i in sel.run)
    assert all(by_id[i].priority.rank >= worst_taken for i in sel.deferred)
    assert worst_taken == Priority.CRITICAL.rank
