"""The fast reader's flat-item path (FastReader._flat_items) against the same reader walking line by line,
and against libyaml: the same data, types, lines of every mapping and item, and repeated keys, or a bail."""

from __future__ import annotations

import sys

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SHARED_ROADMAPS
from runner.roadmap.yamlfast import Bail, FastReader, fast_ok
from test_roadmap_props import TRICKY, check_against_libyaml

sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark's roadmap generators
from bench.inputs import write_dependency_roadmap  # noqa: E402


class LineReader(FastReader):
    """The reader without its flat-item path: every item walked line by line by _seq and _map."""

    def _flat_items(self, i, indent, seq, item_lines):
        return i


def shape(doc, x) -> tuple:
    """Everything a Doc says about x, with types: data, the line of each mapping and of each sequence item,
    the keys given twice in each mapping."""
    if isinstance(x, dict):
        dups = tuple((type(k), k, first, again) for k, first, again in doc.dup_keys.get(id(x), ()))
        return ("map", doc.map_lines.get(id(x)), dups, tuple((type(k), k, shape(doc, v)) for k, v in x.items()))
    if isinstance(x, list):
        return ("seq", doc.seq_lines.get(id(x)), tuple(shape(doc, v) for v in x))
    return (type(x), x)


def containers(x) -> list:
    """Every list and dict in x, itself included."""
    if isinstance(x, dict):
        return [x] + [c for v in x.values() for c in containers(v)]
    if isinstance(x, list):
        return [x] + [c for v in x for c in containers(v)]
    return []


def read(reader: type, text: str):
    if not fast_ok(text.encode("utf-8"), text):
        return "not for the fast reader"
    try:
        doc = reader(text).read()
    except (Bail, IndexError):  # what parse_yaml hands to libyaml
        return "bail"
    found = containers(doc.data)
    assert len({id(c) for c in found}) == len(found), "two places hold the same list or mapping"
    return shape(doc, doc.data), sum(map(len, doc.dup_keys.values()))


def check(text: str) -> None:
    assert read(FastReader, text) == read(LineReader, text), text
    check_against_libyaml(text)


def flat_reads(text: str) -> bool:
    """Whether _flat_items read any item of text."""
    calls = []

    class Counting(FastReader):
        def _flat_items(self, i, indent, seq, item_lines):
            j = super()._flat_items(i, indent, seq, item_lines)
            calls.append(j - i)
            return j

    Counting(text).read()
    return any(calls)


def test_generated_and_shared_roadmaps_read_the_same(tmp_path):
    for shell in (False, True):
        path = write_dependency_roadmap(tmp_path / f"deps-{shell}.yaml", 3000, shell=shell)
        text = path.read_text()
        assert flat_reads(text)
        assert read(FastReader, text) == read(LineReader, text)
    for path in sorted(SHARED_ROADMAPS.glob("*.yaml")):
        text = path.read_text(encoding="utf-8", errors="replace")
        assert read(FastReader, text) == read(LineReader, text), path.name


def test_a_typical_item_list_is_read_by_the_flat_path():
    item = '  - id: t{0}\n    command: ["true"]\n    dependencies: [t0, t{0}]\n'
    text = "tasks:\n" + "".join(item.format(i) for i in range(9))
    assert flat_reads(text)
    check(text)


COMMON_KEYS = ["id", "command", "dependencies", "status", "title", "timeout"]
ODD_KEYS = ["on", "1", "x y", "k-1", "-k", "'q'", "a:b", ""]
COMMON_VALUES = ["t1", "two words", '["true"]', "[t0, t1]", "exit 0", "pending", "10m", "yes", "x # c", "7"]
ODD_VALUES = TRICKY + [
    '["true"]', "[a, true]", "[a,b]", "[ a ]", "[]", "[a, [b]]", "{a: 1}", "{}", "'open", "'a'' b'", '"d"', '"e\\n"',
    "x#c", "|", ">", "&a x", "*a", "!!str 1", "-2", "0x1f", "1:30", "x  ", "",
]  # fmt: skip
ODD_LINES = ["key:", "key:  two", "- x", "[a]", "x", "key: 'a", "  b'", "# note", "# note: x", "", "more text", "after: 1"]  # fmt: skip


def test_values_met_again_are_read_again_as_the_first_time():
    """The flat path keeps one-line values by their text: the second `status: yes` is True too, a list a new list."""
    item = '  - id: t{}\n    status: yes\n    n: 7\n    x: null\n    y: ~\n    command: ["true"]\n    deps: [a, b]\n'
    text = "tasks:\n" + "".join(item.format(i) for i in range(4))
    assert flat_reads(text)
    check(text)
    tasks = FastReader(text).read().data["tasks"]
    assert [t["status"] for t in tasks] == [True] * 4 and [t["y"] for t in tasks] == [None] * 4


def test_every_other_kind_of_line_in_a_typical_list_is_read_the_same():
    """Each odd line, at each indent, after each line of three flat items: the flat path leaves those items to _seq."""
    typical = ["tasks:", "  - id: t0", "    command: exit 0", "  - id: t1", "    dependencies: [t0]", "  - id: t2"]
    for odd in ODD_LINES + ["- ", "-", "- id: odd", "-  id: odd", "-id: odd", "- - x", "- 'q': x", "- [a]", "- {a: 1}"]:
        for pad in range(7):
            for at in range(2, len(typical) + 1):
                check("\n".join(typical[:at] + [" " * pad + odd] + typical[at:]) + "\n")


@st.composite
def item_lists(draw):
    """A block sequence of mappings, mostly one `key: value` per line at one column, and now and then
    another kind of line: a comment, a blank, a deeper or shallower one, a block value, a repeated key."""
    indent = draw(st.sampled_from([0, 2, 4]))
    col = indent + 2
    lines = ["tasks:" if indent < 4 else "top:\n  tasks:"]
    for _ in range(draw(st.integers(1, 8))):
        dash = draw(st.sampled_from(["- "] * 8 + ["-  ", "-"]))
        for j in range(draw(st.integers(1, 4))):
            odd = draw(st.integers(0, 29))  # one entry in 30 has an odd key, one in 15 an odd value
            key = draw(st.sampled_from(ODD_KEYS if odd == 0 else COMMON_KEYS))
            entry = f"{key}: {draw(st.sampled_from(ODD_VALUES if odd < 2 else COMMON_VALUES))}"
            lines.append((" " * indent + dash if j == 0 else " " * (indent + len(dash))) + entry)
            if draw(st.integers(0, 24)) == 0:
                pad = draw(st.sampled_from([0, indent, indent + 1, col, col + 1, col + 2]))
                lines.append(" " * pad + draw(st.sampled_from(ODD_LINES)))
    end = ["", "\n", "\n\n", "\nafter: 1\n", f"\n{' ' * indent}- id: last\n", f"\n{' ' * indent}# end"]
    return "\n".join(lines) + draw(st.sampled_from(end))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item_lists())
def test_flat_items_read_as_the_line_reader_and_libyaml_do(text):
    check(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(COMMON_KEYS + ODD_KEYS), st.sampled_from(COMMON_VALUES + ODD_VALUES),
                                min_size=1, max_size=4), min_size=1, max_size=6))
def test_dumped_task_lists_read_the_same(tasks):
    check(yaml.safe_dump({"tasks": tasks}, default_flow_style=False))
    text = "tasks:\n" + "".join(
        "  - " + "\n    ".join(f"{k}: {v}" for k, v in task.items()) + "\n" for task in tasks
    )
    check(text)
