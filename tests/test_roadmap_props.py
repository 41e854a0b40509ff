"""Property tests: the fast YAML reader agrees with libyaml, load() never raises, every problem has a place."""

from __future__ import annotations

import math
import os
import string
import tempfile

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner.roadmap import loader as rm
from runner.model import RUN_STATUSES, Task
from runner.roadmap.loader import TASK_FIELDS, load

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Strings that YAML 1.1 reads as something else, or that need quoting, next to ordinary ones.
TRICKY = [
    "yes", "No", "on", "OFF", "true", "False", "null", "~", "", "1", "-1", "+1", "0x1F", "0o17", "017", "1_000",
    "1:30", "1.5", ".5", "-.inf", ".NaN", "1e3", "2025-01-02", "2001-12-14 21:59:43.10 -5", "<<", "=", "-", "--",
    "---", "...", "a: b", "a:b", "a #b", "a#b", "#x", "- x", "? x", ": x", "x:", "'q", '"q', "it's", "[a]", "{a}",
    "a, b", "*a", "&a", "!t", "|", ">", "%", "@x", "`x`", " lead", "trail ", "two  spaces", "tab\tin", "line\nbreak",
    "caf\u00e9", "\u2603 snow", "\U0001f600", "back\\slash", "quote\"d", "x" * 120, "word " * 30,
]  # fmt: skip
text = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=string.ascii_letters + string.digits + " -_.:#'\"/[]{},!&*?|>%@`", max_size=30),
    st.text(max_size=12),
)
scalars = st.one_of(
    text,
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=True),
    st.booleans(),
    st.none(),
)
keys = st.one_of(
    st.sampled_from(["id", "title", "command", "dependencies", "on", "yes", "1", "a b", "x-y", "k:v"]), text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, min_size=1, max_size=5)
dump_options = st.fixed_dictionaries(
    {
        "default_flow_style": st.sampled_from([False, None, True]),
        "width": st.sampled_from([20, 40, 80, 4096]),
        "indent": st.sampled_from([2, 3, 4]),
        "allow_unicode": st.booleans(),
        "sort_keys": st.booleans(),
        "explicit_start": st.booleans(),
    }
)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (1, 1.0 and True are not the same value here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            len(a) == len(b)
            and all(k in b and same(type(k), type(next(k2 for k2 in b if k2 == k))) for k in a)
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def fast(text: str):
    """The fast reader's document, or None when it hands the text to libyaml."""
    if not rm._fast_ok(text.encode("utf-8"), text):
        return None
    try:
        return rm._FastReader(text).read()
    except rm._Bail:
        return None


def lib(text: str):
    loader = rm._LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        data = loader.construct_document(node)
        return rm._Doc(data, loader.map_lines, loader.seq_lines, loader.dup_keys)
    finally:
        loader.dispose()


def same_lines(a: rm._Doc, b: rm._Doc, x, y) -> bool:
    """Every mapping starts on the same line in both readings."""
    stack = [(x, y)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, dict):
            if x and a.line(x) is not None and a.line(x) != b.line(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            stack.extend(zip(x, y))
    return True


def check_against_libyaml(text: str) -> None:
    got = fast(text)
    try:
        want = lib(text)
    except yaml.YAMLError:
        assert got is None, f"the fast reader accepted YAML that libyaml rejects:\n{text}"
        return
    if got is not None:
        assert want is not None
        assert same(got.data, want.data), f"{text!r}\nfast: {got.data!r}\nlibyaml: {want.data!r}"
        assert same_lines(got, want, got.data, want.data), text


@SETTINGS
@given(documents, dump_options)
def test_fast_reader_reads_dumped_yaml_as_libyaml_does(doc, options):
    check_against_libyaml(yaml.safe_dump(doc, **options))


MUTANT_LINES = [
    "  - x", "k: v", "  # c", "---", "...", "  'open", "[a, b", ": x", "? k", "x: &a 1", "y: *a", "z: !!str 1",
    "x: |", "  folded >", "  - - x", "-", "  -", "key:", "    deeper: 1", "'q': 1", '"d\\n": 2', "k: v # c",
    "a: b: c", "\t- tab", "k:  two  spaces  ", "- {a: 1}", "- []", "k: {}", "k: {} # c", "  cont inued",
]  # fmt: skip


@st.composite
def mutated(draw):
    base = yaml.safe_dump(draw(documents), **draw(dump_options))
    lines = base.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        kind = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "insert", "truncate"]))
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
        elif kind == "dedent":
            lines[i] = lines[i][draw(st.integers(1, 3)) :] if lines[i].startswith(" ") else lines[i]
        elif kind == "insert":
            lines.insert(i, draw(st.sampled_from(MUTANT_LINES)))
        else:
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]))))]
    return "\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_reader_never_accepts_what_libyaml_would_not(text):
    check_against_libyaml(text)


GRAMMAR_KEYS = st.sampled_from(["id", "a", "b", "on", "1", "x y", "k-1", "Null", "y", "ab:c"])
GRAMMAR_VALUES = st.sampled_from([
    "", "v", "two words", "1", "-2", "0o7", "1:20", "yes", "~", "2025-01-01", "'q'", "'it''s'", "'open", '"dq"',
    '"a\\n"',
    "[a, b]", "[]", "{}", "{k: v}", "{k: [1, 2]}", "[a, {b: c}]", "[a,]", "[ a , b ]", "{a: b, a: c}", "x # c", "x#c",
    "a: b", "- x", "\u00e9", "a  b", "trail ", "'a' b", "[a] x", "{a: }", "[-1, -x]", "[: x]", "cont",
])  # fmt: skip
GRAMMAR_LINES = st.tuples(
    st.sampled_from([0, 0, 2, 2, 4, 4, 1, 3, 6]),
    st.sampled_from(["", "", "- ", "- - ", "-   "]),
    st.one_of(
        st.tuples(GRAMMAR_KEYS, GRAMMAR_VALUES).map(lambda kv: f"{kv[0]}: {kv[1]}".rstrip() if kv[1] else f"{kv[0]}:"),
        GRAMMAR_VALUES,
    ),
).map(lambda t: " " * t[0] + t[1] + t[2])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(GRAMMAR_LINES, min_size=1, max_size=12).map("\n".join))
def test_fast_reader_agrees_on_block_yaml_built_line_by_line(text):
    check_against_libyaml(text)


FLOW_ATOMS = st.sampled_from([
    "a", "b c", "1", "-1", "-x", "- x", "on", "~", "", " ", "x:y", "x: y", "#", "a #b", "'q'", "'a,b'", '"d"',
    "[", "]", "[a]", "[a, b]", "[]", "[ ]", "[a,]", "[[a]]", "{", "}", "{}", "{k: v}", "\u00e9", "?x", "&a", "*a",
    "!x", "<<", "=", "2025-01-01", "1:30", "x]", "a  b",
])  # fmt: skip
FLOW_ENTRIES = st.tuples(FLOW_ATOMS, st.sampled_from([": ", ":", " : "]), FLOW_ATOMS).map("".join)
LIST_ATOMS = st.sampled_from(['"true"', '""', '"', '"a,b"', '"a"b"', "'it''s'", "'a'b'", "a'b", 'a"b', "x"])
FLOW_LINES = st.tuples(
    st.sampled_from(["tasks:\n  - ", "k: ", "- "]),
    st.lists(FLOW_ENTRIES, max_size=5).map(lambda entries: "{" + ", ".join(entries) + "}")
    | st.lists(FLOW_ATOMS | LIST_ATOMS, max_size=5).map(lambda items: "[" + ", ".join(items) + "]"),
    st.sampled_from(["", " # c", "#c", " x", "  "]),
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FLOW_LINES)
def test_fast_reader_agrees_on_one_line_flow_collections(text):
    check_against_libyaml(text)


def test_fast_reader_takes_the_common_roadmap_styles():
    """The 100k-task speed depends on this: generated roadmaps must not fall back to libyaml."""
    tasks = [
        {"id": f"t{i}", "title": f"Task {i}", "command": f"echo {i}", "dependencies": [f"t{i - 1}"] if i else [],
         "priority": "high", "status": "pending", "timeout": "10m", "description": "word " * 30 + "end", "retries": 2}
        for i in range(50)
    ]  # fmt: skip
    for options in ({}, {"sort_keys": False}, {"default_flow_style": None}, {"indent": 4}, {"width": 40}):
        text = yaml.safe_dump({"defaults": {"retries": 1}, "tasks": tasks}, **options)
        doc = fast(text)
        assert doc is not None, options
        assert same(doc.data, yaml.load(text, Loader=LOADER))
    hand_written = "tasks:\n" + "".join(
        f"  - id: t{i}\n    command: make t{i}   # build it\n    dependencies: [t{i - 1}]\n\n" for i in range(1, 20)
    )
    assert fast(hand_written) is not None


# ----------------------------------------------------------------------------- load() on mutated roadmaps

FIELD_VALUES = {
    "title": st.text(max_size=20),
    "command": st.one_of(
        st.text(min_size=1, max_size=20), st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3)
    ),
    "status": st.sampled_from(["pending", "done", "blocked", "in_progress", "on_hold", "weird"]),
    "priority": st.sampled_from(["critical", "high", "medium", "low"]),
    "complexity_score": st.integers(1, 10),
    "timeout": st.sampled_from([30, "90s", "10m", "1h30m"]),
    "retries": st.integers(0, 3),
    "env": st.dictionaries(st.sampled_from(["A", "B", "PATH"]), st.text(max_size=5), max_size=2),
    "role": st.sampled_from(["worker", "critic"]),
    "set_id": st.sampled_from(["s1", "s2"]),
    "exit_criteria": st.lists(st.text(max_size=10), max_size=2),
}
RETYPED = st.one_of(
    st.integers(-5, 5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.none(),
    st.text(max_size=6),
    st.booleans(),
    st.floats(allow_nan=False),
)


@st.composite
def roadmaps(draw):
    n = draw(st.integers(1, 8))
    tasks = []
    for i in range(n):
        task = {"id": f"t{i}"}
        for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=5, unique=True)):
            task[name] = draw(FIELD_VALUES[name])
        deps = draw(st.lists(st.sampled_from([f"t{j}" for j in range(n)] + ["ghost"]), max_size=2, unique=True))
        if deps:
            task["dependencies"] = deps
        tasks.append(task)
    for _ in range(draw(st.integers(0, 4))):
        task = tasks[draw(st.integers(0, n - 1))]
        kind = draw(st.sampled_from(["drop", "duplicate", "retype", "rename"]))
        if not task:
            continue
        field = draw(st.sampled_from(sorted(task)))
        if kind == "drop":
            del task[field]
        elif kind == "duplicate":
            tasks.append(dict(task))
        elif kind == "retype":
            task[field] = draw(RETYPED)
        else:
            task[field + draw(st.sampled_from(["s", "_", "x"]))] = task.pop(field)
    if draw(st.booleans()):
        doc = {"tasks": tasks}
    else:
        doc = {"epics": [{"id": "E", "milestones": [{"id": "M", "tasks": tasks[: n // 2]}]}], "tasks": tasks[n // 2 :]}
    if draw(st.booleans()):
        doc["defaults"] = {"retries": draw(st.integers(0, 2)), "timeout": draw(st.sampled_from([10, "5m"]))}
    text = yaml.safe_dump(doc, **draw(dump_options))
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def check_loaded(text: bytes, *, strict: bool = False):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "roadmap.yaml")
        with open(path, "wb") as f:
            f.write(text)
        result = load([path], strict=strict)
    assert isinstance(result, rm.CheckResult)
    assert (result.roadmap is None) == bool(result.errors)
    for problem in result.errors + result.warnings:
        assert problem.file == path, str(problem)
        assert problem.line is not None, str(problem)
        assert "\n" not in problem.message
        if problem.message.startswith("`") and problem.message.split("`")[1] in TASK_FIELDS:
            assert problem.task is not None, str(problem)
    if result.roadmap is not None:
        assert all(isinstance(t, Task) and t.file == path and t.line for t in result.roadmap.tasks)
    return result


@SETTINGS
@given(roadmaps(), st.booleans())
def test_load_accepts_or_locates_every_problem(text, strict):
    check_loaded(text.encode("utf-8"), strict=strict)


@SETTINGS
@given(st.binary(max_size=300))
def test_load_never_raises_on_arbitrary_bytes(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "r.yaml")
        with open(path, "wb") as f:
            f.write(data)
        result = load([path])
    assert all(p.file == path for p in result.errors + result.warnings)


# ----------------------------------------------------------------------------- blocked tasks and critical path


@st.composite
def graphs(draw):
    n = draw(st.integers(1, 12))
    ids = [f"n{i}" for i in range(n)]
    tasks = []
    for i, tid in enumerate(ids):
        pool = ids if draw(st.booleans()) else ids[:i]  # sometimes allow forward references and cycles
        deps = draw(st.lists(st.sampled_from(pool + ["ghost"]) if pool else st.just("ghost"), max_size=3, unique=True))
        status = draw(st.sampled_from(["", "pending", "done", "on_hold", "odd"]))
        tasks.append(Task(id=tid, dependencies=deps, status=status, order=i))
    return tasks


def naive(tasks: list[Task]):
    """Blocked set and longest runnable chain, by fixed-point iteration and brute force."""
    index = {t.id: t for t in tasks}
    in_cycle = set()
    for t in tasks:  # t reaches itself?
        seen, todo = set(), list(t.dependencies)
        while todo:
            d = todo.pop()
            if d in index and d not in seen:
                seen.add(d)
                todo.extend(index[d].dependencies)
        if t.id in seen:
            in_cycle.add(t.id)
    blocked = set()
    changed = True
    while changed:
        changed = False
        for t in tasks:
            if t.status not in RUN_STATUSES or t.id in blocked:
                continue
            bad = t.id in in_cycle
            for d in t.dependencies:
                dt = index.get(d)
                if dt is None or (
                    dt.status != "done" and (dt.status not in RUN_STATUSES or d in blocked or d in in_cycle)
                ):
                    bad = True
            if bad:
                blocked.add(t.id)
                changed = True
    runnable = {t.id for t in tasks if t.status in RUN_STATUSES and t.id not in blocked}
    longest = 0
    if not in_cycle:
        memo: dict[str, int] = {}

        def chain(tid: str) -> int:
            if tid not in memo:
                memo[tid] = 1 + max((chain(d) for d in index[tid].dependencies if d in runnable), default=0)
            return memo[tid]

        longest = max((chain(t) for t in runnable), default=0)
    return blocked, longest, in_cycle


@settings(max_examples=100, deadline=None)
@given(graphs())
def test_blocked_and_critical_path_match_a_naive_reference(tasks):
    graph = rm._analyse(tasks)
    blocked, longest, in_cycle = naive(tasks)
    assert set(graph.blocked) == blocked
    assert list(graph.blocked) == [t.id for t in tasks if t.id in blocked]  # roadmap order
    assert bool(graph.cycles) == bool(in_cycle)
    for cycle in graph.cycles:
        assert cycle[0] == cycle[-1] and all(
            b in {t.id: t for t in tasks}[a].dependencies for a, b in zip(cycle, cycle[1:])
        )
    assume(not in_cycle)
    path = graph.critical_path
    assert len(path) == longest
    index = {t.id: t for t in tasks}
    assert all(a in index[b].dependencies for a, b in zip(path, path[1:]))
    assert not set(path) & blocked


@st.composite
def ordered_graphs(draw):
    """Tasks that depend only on tasks before them, with many chains of equal length."""
    n = draw(st.integers(1, 30))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.sampled_from([f"n{j}" for j in range(max(0, i - 6), i)] or ["ghost"]), max_size=3, unique=True))
        status = draw(st.sampled_from(["", "", "pending", "done", "on_hold"]))
        tasks.append(Task(id=f"n{i}", dependencies=[d for d in deps if d != "ghost"], status=status, order=i))
    return tasks


@settings(max_examples=200, deadline=None)
@given(ordered_graphs())
def test_the_critical_path_shown_is_the_first_longest_chain(tasks):
    """It ends at the first task (in roadmap order) whose chain is longest, and each step back goes to the first
    dependency whose chain is one shorter: the same path on every run and every version."""
    blocked, longest, _ = naive(tasks)
    runnable = {t.id for t in tasks if t.status in RUN_STATUSES and t.id not in blocked}
    index = {t.id: t for t in tasks}
    memo: dict[str, int] = {}

    def chain(tid: str) -> int:
        if tid not in memo:
            memo[tid] = 1 + max((chain(d) for d in index[tid].dependencies if d in runnable), default=0)
        return memo[tid]

    want = []
    last = next((t.id for t in tasks if t.id in runnable and chain(t.id) == longest), None)
    while last is not None:
        want.append(last)
        last = next((d for d in index[last].dependencies if d in runnable and chain(d) == chain(last) - 1), None)
    assert rm._analyse(tasks).critical_path == want[::-1]
