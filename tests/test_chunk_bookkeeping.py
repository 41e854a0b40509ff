"""A chunk's bookkeeping in one pass gives what the one-task-at-a-time path gives (property tests).

Each fast path is checked against the path it replaces, on random inputs: Outcomes.record_chunk
against recording the results one by one, Scheduler.assign_chunk against assign_more called k
times, the scheduler's set-up against entering its ready tasks one at a time, and summarize()
against the implementation it replaced.
"""

from __future__ import annotations

import copy
import random

import pytest

pytestmark = pytest.mark.timeout(60)

from helpers import roadmap
from runner.agents.messages import BatchResult, TaskResult, plain_row
from runner.manager import events as ev
from runner.manager.components import Component, Hooks
from runner.manager.context import RunContext
from runner.manager.ledger import Attempt, Ledger
from runner.manager.options import Reporter, RunOptions
from runner.manager.outcomes import Outcomes
from runner.manager.scheduler import AgentView, Scheduler
from runner.manager.telemetry import percentile, summarize
from runner.model import Complexity, Priority, Task, TaskState

W0 = AgentView("worker-0", "worker")
PRIORITIES = list(Priority)


class Spy(Component):
    """Every hook a chunk's record calls, with what it was called with, in order."""

    def __init__(self, calls: list):
        self.calls = calls

    def attempt_fields(self, task_id, attempt):
        self.calls.append(("attempt_fields", task_id, attempt))
        return {"model": "m-" + task_id} if task_id.endswith("7") else {}

    def event_fields(self, task_id, attempt):
        self.calls.append(("event_fields", task_id, attempt))
        return {"model": "m-" + task_id} if task_id.endswith("3") else {}

    def on_outcome(self, task_id, attempt, outcome, result):
        self.calls.append(("on_outcome", task_id, attempt, outcome.value))


def _tasks(rng: random.Random, n: int) -> list[Task]:
    tasks = []
    for i in range(n):
        deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(0, 2))}) if i and rng.random() < 0.3 else []
        tasks.append(Task(id=f"t{i}", call="m:f", dependencies=deps, priority=rng.choice(PRIORITIES),
                          args=[i] if rng.random() < 0.3 else []))  # fmt: skip
    return tasks


def _context(tmp_path, name: str, tasks: list[Task], calls: list, reporter: Reporter | None = None):
    rm = roadmap([copy.copy(t) for t in tasks])
    ctx = RunContext(rm, RunOptions(state_dir=str(tmp_path)), reporter or Reporter(), None, {"worker": 1})
    ctx.ledger = Ledger(str(tmp_path / f"{name}.sqlite"))
    ctx.run_id = ctx.ledger.start_run(rm, 1, "", None, set())
    ctx.sched = Scheduler(rm.tasks, now=0.0, rng=random.Random(0))
    ctx.note_changes(1000.0)
    out = ctx.outcomes = Outcomes(ctx, Hooks([Spy(calls)]))
    return ctx, out


def _hand_out_chunk(ctx, k: int, wall: float) -> list[str]:
    """What Run._hand_out and Chunks.chunk do for one chunk: reserve it, and a record per task."""
    pairs = ctx.sched.assign([W0], 0.0)
    if not pairs:
        return []
    head = pairs[0][1]
    chunk = [head] + ctx.sched.assign_chunk(W0, 0.0, lambda t: True, None, k - 1)
    for t in chunk:
        attempt = ctx.sched.next_attempt(t.id)
        ctx.records[(t.id, attempt)] = {"task": t.id, "attempt": attempt, "agent": W0.id, "queued": ctx.queued_at.get(t.id),
                                        "reserved": wall if t is head else None, "start": None, "end": None,
                                        "log": f"/logs/{t.id}.{attempt}.log"}  # fmt: skip
    return [t.id for t in chunk]


def _results(rng: random.Random, ctx, ids: list[str], clock: list[float], outcome: str = "succeeded") -> list[TaskResult]:
    out = []
    for task_id in ids:
        start = clock[0] + rng.random() / 1000
        end = start + rng.random() / 1000
        clock[0] = end
        value = rng.choice([None, None, 3, "x", {"a": [1, 2]}])
        out.append(TaskResult(task_id, ctx.sched.next_attempt(task_id), outcome, 0, start, end, value=value,
                              error=rng.choice([None] * 5 + ["a warning"]), log=rng.random() < 0.5))  # fmt: skip
    return out


def _rows(ledger: Ledger) -> list[tuple]:
    return ledger.db.execute("SELECT * FROM attempts ORDER BY id").fetchall()


@pytest.mark.parametrize("seed", range(8))
def test_attempts_recorded_short_or_whole_are_read_back_alike_and_in_order(tmp_path, seed):
    rng = random.Random(seed)
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    run_id = ledger.start_run(roadmap([Task(id="t", call="m:f")]), 1, "", None, set())
    want = []
    for i in range(rng.randint(1, 40)):
        value = rng.choice([None, 1, "v", [1, {"a": None}]])
        short = (f"t{i}", 1, "worker-0", 1.0 + i, 2.0 + i, rng.choice([None, 0, 1]), "succeeded", rng.choice([None, "/l"]),
                 rng.choice([None, None, "e"]), value)  # fmt: skip
        if rng.random() < 0.5:
            ledger.record(run_id, short)
            want.append(Attempt(*short))
        else:
            whole = Attempt(*short, session_id="s", model="m", usage={"input": 1}, cost_usd=0.5, cost_estimated=True,
                            failure=None, num_turns=2, executor="codex")  # fmt: skip
            ledger.record(run_id, whole)
            want.append(whole)
        if rng.random() < 0.2:
            ledger.commit()
    ledger.commit()
    assert ledger.attempts(run_id) == want


def _comparable(events: list[dict]) -> list[dict]:
    """Events as both paths must give them; a task:finished's time stamp differs by design (the fast path
    stamps the end of the call), so it is left out."""
    return [{k: v for k, v in e.items() if not (k == "ts" and e["event"] == ev.TASK_FINISHED)} for e in events]


class _Clock:
    """time for runner.manager.outcomes: one fixed reading, so both paths stamp alike."""

    @staticmethod
    def time():
        return 5000.0

    @staticmethod
    def monotonic():
        return 0.0


def _chunks_in_lockstep(a, b, rng, clock):
    """The same chunks handed out in both contexts (asserted), up to 100, until none is left."""
    for _ in range(100):
        k = rng.randint(1, 12)
        ids = _hand_out_chunk(a, k, clock[0])
        assert ids == _hand_out_chunk(b, k, clock[0])
        if not ids:
            return
        yield ids


@pytest.mark.parametrize("seed", range(12))
def test_record_chunk_gives_the_rows_events_states_and_hook_calls_of_recording_one_by_one(tmp_path, seed, monkeypatch):
    import runner.manager.outcomes

    monkeypatch.setattr(runner.manager.outcomes, "time", _Clock)
    rng = random.Random(seed)
    tasks = _tasks(rng, rng.randint(5, 60))
    calls_fast: list = []
    calls_slow: list = []
    fast, fast_out = _context(tmp_path, "fast", tasks, calls_fast)
    slow, slow_out = _context(tmp_path, "slow", tasks, calls_slow)
    clock = [2000.0]
    for ids in _chunks_in_lockstep(fast, slow, rng, clock):
        results = _results(rng, fast, ids, clock)
        # as a BatchResult brings them: mostly rows, a TaskResult here and there (a dead agent's are all TaskResults)
        items = [plain_row(r) if rng.random() < 0.8 else r for r in results]
        assert BatchResult(tuple(items)).results == tuple(results)
        fast_out.record_chunk(W0.id, items)
        slow_out._record_chunk_one_by_one(W0.id, results)
    assert fast.sched.finished() and slow.sched.finished(), "every task ran, and was counted"
    fast.ledger.commit()
    slow.ledger.commit()
    assert _rows(fast.ledger) == _rows(slow.ledger), "the same ledger rows, in the same order"
    # The same events; a dependent's task:queued comes after its chunk's last task:finished, not right
    # after the task it waited for: the order of the others, and of the task:queued, is the same.
    got, want = _comparable(fast.pending), _comparable(slow.pending)
    assert [e for e in got if e["event"] != ev.TASK_QUEUED] == [e for e in want if e["event"] != ev.TASK_QUEUED]
    assert [e for e in got if e["event"] == ev.TASK_QUEUED] == [e for e in want if e["event"] == ev.TASK_QUEUED]
    assert fast.records == slow.records
    assert fast_out.last == slow_out.last and fast_out.unrecorded == slow_out.unrecorded
    assert fast.sched.state == slow.sched.state and fast.sched.attempts == slow.sched.attempts
    assert sorted(calls_fast) == sorted(calls_slow), "each hook called once per task"
    for e in fast.pending:
        if e["event"] == ev.TASK_FINISHED:
            rec = fast.records[(e["task"], e["attempt"])]
            assert e["ts"] == rec["end"], "a chunk task's task:finished is stamped with the end of its call"


def test_a_chunk_with_a_failure_is_recorded_one_by_one_with_its_retry(tmp_path):
    rng = random.Random(1)
    tasks = [Task(id=f"t{i}", call="m:f", retries=1) for i in range(4)]
    ctx, out = _context(tmp_path, "f", tasks, [])
    ids = _hand_out_chunk(ctx, 4, 2000.0)
    results = _results(rng, ctx, ids, [2000.0])
    results[2] = TaskResult("t2", 1, "failed", 1, results[2].start, results[2].end, error="exit code 1")
    out.record_chunk(W0.id, results)
    assert [ctx.sched.state[t] for t in ids] == [TaskState.SUCCEEDED, TaskState.SUCCEEDED, TaskState.QUEUED, TaskState.SUCCEEDED]
    assert [e["task"] for e in ctx.pending if e["event"] == ev.TASK_RETRY] == ["t2"]
    ctx.ledger.commit()
    assert [r[2] for r in _rows(ctx.ledger)] == ids


@pytest.mark.parametrize("seed", range(20))
def test_assign_chunk_reserves_what_assign_more_would_in_the_same_order(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 80)
    roles = {"worker", "critic"}

    def make() -> Scheduler:
        r = random.Random(seed)
        tasks = []
        for i in range(n):
            kw = {}
            if r.random() < 0.1:
                kw["role"] = "critic"  # held for a critic a while: assign_chunk takes assign_more's way then
            if r.random() < 0.05:
                kw["affinity"] = f"k{r.randrange(3)}"
            tasks.append(Task(id=f"t{i}", call="m:f", priority=r.choice(PRIORITIES), order=i, **kw))
        return Scheduler(tasks, now=0.0, roles=roles, rng=random.Random(0), age_every=5.0)

    fits = lambda t: int(t.id[1:]) % 7 != 3  # noqa: E731 - some tasks do not fit: a chunk stops there
    a, b = make(), make()
    now = 0.0
    for _ in range(10 * n):  # a bound: a scheduler that never finishes fails below, it does not hang
        if a.finished():
            break
        now += rng.random() * 2
        k = rng.randint(1, 10)
        pa, pb = a.assign([W0], now), b.assign([W0], now)
        assert [t.id for _, t in pa] == [t.id for _, t in pb]
        if not pa:
            now += 1.0
            continue
        head = pa[0][1].id
        more_a = [t.id for t in a.assign_chunk(W0, now, fits, None, k - 1)]
        more_b = []
        while len(more_b) < k - 1:
            t = b.assign_more(W0, now, fits)
            if t is None:
                break
            more_b.append(t.id)
        assert more_a == more_b
        for s, ids in ((a, [head] + more_a), (b, [head] + more_b)):
            s.finish_succeeded(ids, W0.id, now)
        assert a.state == b.state
        assert a.queue_length() == b.queue_length()
    assert a.finished() and b.finished()


@pytest.mark.parametrize("seed", range(10))
def test_the_set_up_queues_the_ready_tasks_as_entering_them_one_by_one_would(seed, monkeypatch):
    rng = random.Random(seed)
    tasks = _tasks(rng, rng.randint(1, 120))
    for i, t in enumerate(tasks):
        t.order = i
        if rng.random() < 0.1:
            t.role = "critic"
        if rng.random() < 0.05:
            t.affinity = "key"
        t.title = rng.choice([None, None, "", "build it", "review the parser", "Validate"])
        if rng.random() < 0.1:
            t.complexity = Complexity.COMPLEX
        if rng.random() < 0.05:
            t.status = "done"
    fast = Scheduler(tasks, now=3.0, roles={"worker", "critic", "orchestrator"}, rng=random.Random(0), age_every=10.0)

    def one_by_one(self, ready, now):
        for t in ready:
            self._move(t.id, TaskState.QUEUED)
            self._enter(t.id, now)

    monkeypatch.setattr(Scheduler, "_enter_ready", one_by_one)
    slow = Scheduler(tasks, now=3.0, roles={"worker", "critic", "orchestrator"}, rng=random.Random(0), age_every=10.0)
    assert fast.drain_changes() == slow.drain_changes()
    for field in ("state", "reason", "queued_at", "_key", "_where", "_seq", "_held", "_pending"):
        assert getattr(fast, field) == getattr(slow, field), field
    assert [fast._preference(t) for t in tasks] == [slow._preference(t) for t in tasks]
    assert {lbl: sorted(h) for lbl, h in fast._heaps.items() if h} == {lbl: sorted(h) for lbl, h in slow._heaps.items() if h}
    assert sorted(fast._oldest) == sorted(slow._oldest)
    assert {w: sorted(b) for w, b in fast._aging_at.items()} == {w: sorted(b) for w, b in slow._aging_at.items()}
    assert {k: v for k, v in fast._dependents.items() if v} == {k: v for k, v in slow._dependents.items() if v}
    agents = [AgentView("worker-0", "worker"), AgentView("critic-0", "critic"), AgentView("orchestrator-0", "orchestrator")]
    for now in (3.0, 4.0, 20.0, 40.0, 100.0):  # hand-out order, aging and holds included
        got_fast = [(a.id, t.id) for a, t in fast.assign(agents, now)]
        assert got_fast == [(a.id, t.id) for a, t in slow.assign(agents, now)]
        for s in (fast, slow):
            for agent, task_id in got_fast:
                s.finish(task_id, agent, _succeeded(), now)


def _succeeded():
    from runner.model import Outcome

    return Outcome.SUCCEEDED


def _summarize_before(attempts, agents, deps, priorities):
    """summarize() as it was before it became one pass (the reference)."""
    ran = [a for a in attempts if a.get("start") is not None and a.get("end") is not None]
    waits = [a["reserved"] - a["queued"] for a in attempts if a.get("reserved") and a.get("queued")]
    out: dict = {}
    makespan = (max(a["end"] for a in ran) - min(a["start"] for a in ran)) if ran else 0.0
    busy = sum(min(a["end"], a.get("released") or a["end"]) - a["start"] for a in ran)
    out["makespan_s"] = round(makespan, 4)
    out["attempts"] = len(attempts)
    out["throughput_per_s"] = round(len(ran) / makespan, 3) if makespan > 0 else 0.0
    out["utilization"] = round(busy / (agents * makespan), 4) if makespan > 0 and agents else 0.0
    out["queue_wait_p50_s"] = round(percentile(waits, 50), 4)
    out["queue_wait_p95_s"] = round(percentile(waits, 95), 4)
    out["queue_wait_max_s"] = round(max(waits, default=0.0), 4)
    by_priority: dict[str, list[float]] = {}
    for a in attempts:
        if a.get("reserved") and a.get("queued"):
            by_priority.setdefault(priorities.get(a["task"], "medium"), []).append(a["reserved"] - a["queued"])
    out["queue_wait_by_priority"] = {
        p: {"queue_wait_p50_s": round(percentile(v, 50), 4), "queue_wait_p95_s": round(percentile(v, 95), 4),
            "queue_wait_max_s": round(max(v), 4)}
        for p, v in sorted(by_priority.items())
    }  # fmt: skip
    last_duration = {a["task"]: a["end"] - a["start"] for a in ran}
    finish: dict[str, float] = {}
    pending = dict(last_duration)
    while pending:  # the longest chain, by brute force
        for t in list(pending):
            ds = [d for d in deps.get(t, ()) if d in last_duration]
            if all(d in finish for d in ds):
                finish[t] = last_duration[t] + max((finish[d] for d in ds), default=0.0)
                del pending[t]
    critical = max(finish.values(), default=0.0)
    bound = max(critical, busy / agents if agents else 0.0)
    out["critical_path_s"] = round(critical, 4)
    out["lower_bound_s"] = round(bound, 4)
    out["efficiency"] = round(bound / makespan, 4) if makespan > 0 else 1.0
    return out


@pytest.mark.parametrize("seed", range(30))
def test_summarize_in_one_pass_gives_what_it_gave_before(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 60)
    attempts, deps, priorities = [], {}, {}
    for i in range(n):
        task = f"t{rng.randrange(max(1, n // 2))}"  # some tasks have several attempts
        queued = rng.choice([None, 100.0 + rng.random()])
        reserved = rng.choice([None, 101.0 + rng.random()])
        start = rng.choice([None, 102.0 + rng.random()])
        end = None if start is None else rng.choice([None, start + rng.random()])
        a = {"task": task, "queued": queued, "reserved": reserved, "start": start, "end": end}
        if end is not None and rng.random() < 0.2:
            a["released"] = start + (end - start) / 2
        attempts.append(a)
        if rng.random() < 0.3:
            deps[task] = [f"t{rng.randrange(max(1, n // 2))}"]
        if rng.random() < 0.3:
            priorities[task] = rng.choice(["high", "low", "critical"])
    deps = {t: [d for d in ds if d < t] for t, ds in deps.items()}  # no cycles: a dependency comes before
    if seed % 3 == 0:  # a run where every task is medium, or none depends on another (the common runs)
        priorities = {}
    if seed % 3 == 1:
        deps = {}
    agents = rng.randint(0, 3)
    got = summarize(attempts, agents, deps, priorities)
    want = _summarize_before(attempts, agents, deps, priorities)
    assert got == want


@pytest.mark.timeout(120)
def test_a_components_own_message_for_a_chunks_task_is_asked_for_once_and_sent(tmp_path, monkeypatch):
    import collections
    import os

    import runner.manager.chunk_sizes
    from helpers import Recorder, read_events
    from runner.agents.messages import TaskMessage
    from runner.manager.run import Run

    monkeypatch.setattr(runner.manager.chunk_sizes, "_QUICK_S", 60.0)  # a loaded machine must not make the calls look slow
    asked: collections.Counter = collections.Counter()

    class Own(Component):  # like a critic's review attempt: a message of its own for some tasks
        def __init__(self, ctx):
            self.ctx = ctx

        def message(self, task, role, attempt, agent_id):
            asked[(task.id, attempt)] += 1
            if not task.id.endswith("7"):
                return None
            return TaskMessage(task.id, attempt, os.path.join(self.ctx.logs, f"{task.id}.{attempt}.log"), call="workloads:quick",
                               args=(-int(task.id[1:]),), env={"WVO_TASK_ID": task.id, "WVO_ATTEMPT": str(attempt)})  # fmt: skip

    n = 400
    rm = roadmap([Task(id=f"c{i}", call="workloads:quick", args=[i]) for i in range(n)])
    result = Run(rm, RunOptions(state_dir=str(tmp_path / "state"), agents=2, grace=1.0), Recorder(), plugins=[Own]).execute()
    assert result.exit_code == 0
    assert [r["value"] for r in result.tasks] == [-i if i % 10 == 7 else i for i in range(n)], "its own message was sent"
    assert set(asked.values()) == {1}, "asked once per attempt (a critic's message makes a worktree)"
    assert any(e.get("chunk", 1) > 1 for e in read_events(result)), "the tasks travelled in chunks"


class _Quiet(Reporter):
    reads_events = False  # as --quiet: the run may write the hot events as text


def _written(pending: list) -> str:
    """What EventLog.write puts in the events files for these pending events."""
    from runner.manager.telemetry import _encode

    return "".join(e if type(e) is str else _encode(e) + "\n" for e in pending)


@pytest.mark.parametrize("seed", range(12))
def test_events_written_as_text_are_the_encoded_dicts_byte_for_byte(tmp_path, seed, monkeypatch):
    """--quiet: task:queued and a chunk's task:reserved/started/finished go out as text, never built as dicts;
    the events files get the same bytes as from the dicts (odd ids, event fields of a hook, failures)."""
    import runner.manager.context
    import runner.manager.outcomes
    import runner.manager.telemetry

    for module in (runner.manager.outcomes, runner.manager.telemetry, runner.manager.context):
        monkeypatch.setattr(module, "time", _Clock)
    rng = random.Random(seed)
    tasks = _tasks(rng, rng.randint(5, 40))
    odd = ['ü"\\', "a\nb", "\u2028", "t", "é 3"]
    for t in tasks:
        if rng.random() < 0.3:
            t.id = f"{t.id}{rng.choice(odd)}"
    # dependencies by the new ids
    names = {f"t{i}": t.id for i, t in enumerate(tasks)}
    for t in tasks:
        t.dependencies = [names[d] for d in t.dependencies]
    loud, loud_out = _context(tmp_path, "loud", tasks, [])
    quiet, quiet_out = _context(tmp_path, "quiet", tasks, [], _Quiet())
    clock = [2000.0]
    for ids in _chunks_in_lockstep(loud, quiet, rng, clock):
        results = _results(rng, loud, ids, clock, outcome=rng.choice(["succeeded"] * 5 + ["failed"]))
        results = [r if rng.random() < 0.7 else TaskResult(r.task_id, r.attempt, r.outcome, rng.choice([None, 0, 3]), r.start,
                                                            r.end, value=r.value, error=rng.choice([None, "x\"é"]), log=r.log)
                   for r in results]  # fmt: skip
        if rng.random() < 0.2:  # a clock gone wrong: the encoder's NaN and Infinity, not repr's nan and inf
            j = rng.randrange(len(results))
            r = results[j]
            results[j] = TaskResult(r.task_id, r.attempt, r.outcome, r.exit_code, r.start, rng.choice([float("inf"), float("nan")]),
                                    value=r.value, error=r.error, log=r.log)  # fmt: skip
        loud_out.record_chunk(W0.id, results)
        quiet_out.record_chunk(W0.id, results)
    assert any(type(e) is str for e in quiet.pending) or not quiet.pending
    assert all(type(e) is dict for e in loud.pending)
    assert _written(quiet.pending) == _written(loud.pending)


@pytest.mark.timeout(120)
def test_a_chunks_tasks_pass_a_components_can_start_one_by_one(tmp_path, monkeypatch):
    """A component that holds some tasks back (can_start False) holds them back from chunks too."""
    import runner.manager.chunk_sizes
    from helpers import Recorder, read_events
    from runner.manager.run import Run

    monkeypatch.setattr(runner.manager.chunk_sizes, "_QUICK_S", 60.0)  # a loaded machine must not make the calls look slow
    recorded: list[str] = []

    class Holds(Component):  # tasks ending in 7 wait until 150 others are recorded
        def __init__(self, ctx):
            self.ctx = ctx

        def can_start(self, task):
            return not task.id.endswith("7") or len(recorded) >= 150

        def on_outcome(self, task_id, attempt, outcome, result):
            recorded.append(task_id)

    n = 400
    rm = roadmap([Task(id=f"c{i}", call="workloads:quick", args=[i]) for i in range(n)])
    result = Run(rm, RunOptions(state_dir=str(tmp_path / "state"), agents=2, grace=1.0), Recorder(), plugins=[Holds]).execute()
    assert result.exit_code == 0 and sorted(recorded) == sorted(f"c{i}" for i in range(n))
    assert not any(t.endswith("7") for t in recorded[:150]), "a held task ran in a chunk"
    assert any(e.get("chunk", 1) > 1 for e in read_events(result)), "the tasks travelled in chunks"


def test_a_chunk_stops_before_a_task_with_a_workspace(tmp_path):
    """A task with a worktree, checks or files (ctx.ws) has an attempt of its own: a chunk of quick calls
    ahead of it in the queue ends before it, and it is handed out alone."""
    from runner.manager.chunks import Chunks
    from runner.manager.run import Run

    tasks = [Task(id=f"t{i}", call="m:f", priority=Priority.MEDIUM) for i in range(20)]
    run = Run(roadmap(tasks), RunOptions(state_dir=str(tmp_path)))
    run._build()
    ctx = run.ctx
    ctx.sched = Scheduler(ctx.roadmap.tasks, now=0.0)
    ctx.backend = type("Local", (), {"name": "local"})()
    chunks = next(c for c in run.components if isinstance(c, Chunks))
    chunks.start()
    chunks.sizes.cost["m:f"] = 1e-5  # known to be quick
    ctx.ws = {"t5": "a workspace"}
    (agent, head), = ctx.sched.assign([W0], 0.0)
    assert [head.id] + [t.id for t in chunks.chunk(agent, head, 0.0)] == [f"t{i}" for i in range(5)]
    ctx.sched.finish_succeeded([f"t{i}" for i in range(5)], W0.id, 0.0)
    (agent, head), = ctx.sched.assign([W0], 0.0)
    assert head.id == "t5" and chunks.chunk(agent, head, 0.0) == []
