"""Fast paths of a run's set-up and bookkeeping give what the paths they replace give (property tests).

task_hashes (one hash for tasks that do the same thing) against task_hash of each task.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(120)

from runner.manager.ledger import task_hash, task_hashes
from runner.model import Task

_TEXT = st.sampled_from(["", "a", "b", "true", "1", "ü", '"q"'])
_EMPTY = st.sampled_from([None, [], (), {}, ""])
_SCALAR = st.one_of(st.none(), _TEXT, st.sampled_from([0, 1, True, False, 0.0, -0.0, 1.0, 2.5, float("inf")]))


def _command():
    return st.one_of(st.none(), _TEXT, st.lists(_TEXT, max_size=3), st.tuples(_TEXT),
                     st.lists(st.sampled_from(["a", 1, 1.0, True, None]), max_size=2))  # fmt: skip


@st.composite
def _task(draw, i):
    t = Task(id=f"t{i}")
    t.command = draw(_command())
    t.call = draw(st.one_of(st.none(), st.sampled_from(["m:f", "m:g", ""]), st.just(1)))
    for name in ("args", "kwargs", "env", "dependencies"):
        setattr(t, name, draw(st.one_of(_EMPTY, st.sampled_from([["x"], {"k": "v"}, [1], ("x",)]))))
    t.cwd = draw(st.one_of(st.none(), _TEXT))
    t.timeout = draw(st.sampled_from([None, 1, 1.0, True, 0.0, -0.0, 2.5, "3"]))
    t.title = draw(st.one_of(st.none(), _TEXT, st.just(1)))
    t.description = draw(st.one_of(st.none(), _TEXT))
    return t


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_task_hashes_are_each_tasks_hash(data):
    n = data.draw(st.integers(1, 12))
    tasks = [data.draw(_task(i)) for i in range(n)]
    tasks += [tasks[j] for j in data.draw(st.lists(st.integers(0, n - 1), max_size=4))]  # repeats hit the memo
    assert task_hashes(tasks) == [task_hash(t) for t in tasks]


def test_task_hashes_tell_apart_what_json_tells_apart():
    """Pairs a careless key would merge: each pair must hash differently, and task_hashes must say so."""
    pairs = [("timeout", 1, 1.0), ("timeout", 1, True), ("timeout", 0.0, -0.0), ("command", "a", ["a"]),
             ("args", [], None), ("kwargs", {}, None), ("title", "", None), ("command", ["1"], "1")]  # fmt: skip
    for name, x, y in pairs:
        a, b = Task(id="a"), Task(id="b")
        setattr(a, name, x)
        setattr(b, name, y)
        assert task_hash(a) != task_hash(b), name
        assert task_hashes([a, b]) == [task_hash(a), task_hash(b)], (name, x, y)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.floats(), max_size=2)))  # fmt: skip
def test_json_value_is_the_event_encoders_spelling(v):
    """An event written as text spells each value as the encoder of the dicts does (nan, inf, -0.0, True ...)."""
    from runner.manager.telemetry import _encode, json_value

    assert json_value(v) == _encode(v)


@pytest.mark.parametrize("seed", range(10))
def test_a_chunks_messages_are_what_message_gives_each_task(tmp_path, seed):
    """Run._chunk_messages (one loop, rows of a template) against Run._message, task by task: the agent
    makes of the TaskBatch it receives the same TaskMessages, field for field (env, args, kwargs,
    feedback of an earlier attempt, odd ids)."""
    import pickle
    import random

    from runner.agents.messages import TaskBatch, batch_messages

    from helpers import roadmap
    from runner.manager.options import RunOptions
    from runner.manager.run import Run

    rng = random.Random(seed)
    tasks = []
    for i in range(rng.randint(2, 30)):
        t = Task(id=rng.choice([f"t{i}", f"t {i}/ü", f"t{i}.x"]))
        if rng.random() < 0.5:
            t.call, t.args, t.kwargs = "m:f", rng.choice([[], [1, "a"], (2,)]), rng.choice([{}, {"k": [1]}])
        else:
            t.command = rng.choice(["true", ["echo", "x"]])
        t.env = rng.choice([{}, {}, {"A": 1, "B": "b"}])
        t.cwd = rng.choice([None, "/tmp"])
        t.timeout = rng.choice([None, 2.5])
        tasks.append(t)
    run = Run(roadmap(tasks), RunOptions(state_dir=str(tmp_path), grace=rng.choice([1.0, 2.0]), rate_limit=rng.choice([None, "429"])))
    run._build()
    run.ctx.logs = str(tmp_path / "logs")
    for t in tasks:
        if rng.random() < 0.15:
            run.ctx.feedback_note(t.id, 1, "it failed")
    attempts = [rng.randint(1, 3) for _ in tasks]
    items, template = run._chunk_messages(tasks, attempts, "worker", "worker-0")
    got = batch_messages(pickle.loads(pickle.dumps(TaskBatch(tuple(items), template))))
    want = [run._message(t, "worker", n, "worker-0") for t, n in zip(tasks[1:], attempts[1:])]
    assert got == want
    for a, b in zip(got, want):
        assert [type(v) for v in vars(a).values()] == [type(getattr(b, k)) for k in vars(a)]
    assert any(type(item) is tuple for item in items), "quick tasks go as rows"


def test_a_chunk_calls_result_is_the_dataclass_field_for_field_and_in_order(tmp_path):
    """The agent's result of a chunk's call: a success as its row, a failure as a TaskResult made without
    __init__ (every field set, in field order); either is, through a BatchResult and through the outbox
    (pickled and read back), the TaskResult the call would have had."""
    import dataclasses
    import mmap
    import pickle

    from runner.agents import outbox
    from runner.agents.agent import _ChunkCalls
    from runner.agents.execute import LogFiles
    from runner.agents.messages import BatchResult, TaskMessage, TaskResult

    calls = _ChunkCalls(LogFiles("t"))
    msgs = [TaskMessage(task_id=f"t{i}", attempt=i + 1, log_path=str(tmp_path / f"t{i}.log"), call=call,
                        env={"WVO_TASK_ID": f"t{i}", "WVO_ATTEMPT": "1"})  # fmt: skip
            for i, call in enumerate(["os:getpid", "os:no_such_function", "os:getcwd"])]
    try:
        items = [calls.run(m)[0] for m in msgs]
    finally:
        calls.end()
    assert [type(item) for item in items] == [tuple, TaskResult, tuple], "a success travels as its row"
    names = [f.name for f in dataclasses.fields(TaskResult)]
    assert list(vars(items[1])) == names
    results = pickle.loads(pickle.dumps(BatchResult(tuple(items)))).results
    buf = mmap.mmap(-1, outbox.SIZE)
    box = outbox.Outbox(buf)
    for item, res, msg in zip(items, results, msgs):
        assert type(res) is TaskResult and res == TaskResult(**{n: getattr(res, n) for n in names})
        assert (res.task_id, res.attempt, res.pid) == (msg.task_id, msg.attempt, None)
        assert box.add(item)
    assert outbox.read(buf) == list(results)
    assert [r.outcome for r in results] == ["succeeded", "failed", "succeeded"]
    assert [r.value for r in results] == [os.getpid(), None, os.getcwd()]
    assert [r.exit_code for r in results] == [0, 1, 0] and results[1].error.startswith("AttributeError")
    assert [r.log for r in results] == [False, True, False], "only the traceback left a log"


def test_a_chunks_calls_see_their_own_environment_and_the_agents_comes_back(monkeypatch, tmp_path):
    """Each call of a chunk sees its own WVO_* (set or left as it is when the value is the same), a variable
    a call is no longer given is put back, and the chunk's end restores the agent's environment."""
    import os

    from runner.agents.agent import _ChunkCalls
    from runner.agents.execute import LogFiles
    from runner.agents.messages import TaskMessage

    monkeypatch.setenv("WVO_ATTEMPT", "agent's own")
    monkeypatch.delenv("EXTRA_VAR", raising=False)
    seen = []

    def call_value(msg):
        seen.append((os.environ.get("WVO_TASK_ID"), os.environ.get("WVO_ATTEMPT"), os.environ.get("EXTRA_VAR")))
        if msg.task_id == "t1":  # a call that changes what it was given: the next one is given its own again
            os.environ["WVO_ATTEMPT"] = "changed by the call"

    monkeypatch.setattr("runner.agents.execute.call_value", call_value)
    envs = [{"WVO_TASK_ID": "a", "WVO_ATTEMPT": "1"}, {"WVO_TASK_ID": "b", "WVO_ATTEMPT": "1", "EXTRA_VAR": "x"},
            {"WVO_TASK_ID": "c", "WVO_ATTEMPT": "1"}, {"WVO_TASK_ID": "d", "WVO_ATTEMPT": "2"},
            {"WVO_TASK_ID": "e", "WVO_ATTEMPT": "2"}]  # fmt: skip
    calls = _ChunkCalls(LogFiles("t"))
    try:
        for i, env in enumerate(envs):
            calls.run(TaskMessage(task_id=f"t{i}", attempt=1, log_path=str(tmp_path / f"t{i}.log"), call="m:f", env=env))
    finally:
        calls.end()
    assert seen == [("a", "1", None), ("b", "1", "x"), ("c", "1", None), ("d", "2", None), ("e", "2", None)]
    assert os.environ["WVO_ATTEMPT"] == "agent's own" and "EXTRA_VAR" not in os.environ and "WVO_TASK_ID" not in os.environ


def test_a_run_freezes_what_it_set_up_for_its_length_only(tmp_path):
    """The collector leaves the run's set-up alone while it runs (gc.freeze), and everything is collectable again
    after it: a program that runs again (batches, a library's caller) keeps no run's objects."""
    import gc
    import weakref

    from helpers import Recorder, roadmap
    from runner.manager.components import Component
    from runner.manager.options import RunOptions
    from runner.manager.run import Run

    frozen_during = []

    class Looks(Component):
        def __init__(self, ctx):
            self.ctx = ctx

        def on_outcome(self, task_id, attempt, outcome, result):
            frozen_during.append(gc.get_freeze_count())

    gc.unfreeze()
    runs = []
    for i in range(2):
        run = Run(roadmap([Task(id=f"t{i}", command=["true"])]), RunOptions(state_dir=str(tmp_path / "s"), agents=1, grace=1.0),
                  Recorder(), plugins=[Looks])  # fmt: skip
        assert run.execute().exit_code == 0
        runs.append(weakref.ref(run.ctx))
        del run
        assert gc.get_freeze_count() == 0, "nothing stays frozen after the run"
    assert frozen_during and all(n > 0 for n in frozen_during), "frozen while it ran"

    class Breaks(Looks):
        def on_outcome(self, task_id, attempt, outcome, result):
            raise RuntimeError("a component's bug")

    run = Run(roadmap([Task(id="t", command=["true"])]), RunOptions(state_dir=str(tmp_path / "s"), agents=1, grace=1.0),
              Recorder(), plugins=[Breaks])  # fmt: skip
    with pytest.raises(RuntimeError):
        run.execute()
    runs.append(weakref.ref(run.ctx))
    del run
    assert gc.get_freeze_count() == 0, "nothing stays frozen after a run that raised"
    gc.collect()
    assert [r() for r in runs] == [None, None, None], "a finished run's objects are collected"
