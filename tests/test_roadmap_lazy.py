"""An ordinary roadmap is read without PyYAML, into exactly what libyaml reads; the rest still goes to libyaml."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from runner.roadmap import yamlread
from runner.roadmap.loader import load
from runner.roadmap.yamlfast import _DECIMAL, _NUMBER_START, Bail, _number

# Loads the roadmaps given, prints the whole CheckResult, then whether PyYAML was imported.
LOAD = "import sys; from runner.roadmap.loader import load; print(repr(load(sys.argv[1:]))); print('yaml' in sys.modules)"

ORDINARY = """
    # the release
    tasks:
      - id: build
        title: Build the wheel
        command: ["true"]
        dependencies: []
        priority: high
        timeout: 30
        retries: 2
      - id: test
        title: 'Test it: all of it'
        command: [sh, -c, "exit 0"]
        dependencies: [build]
        priority: low
        timeout: 1.5
        retries: 0
        complexity_score: 3
        weight: -0.25
        rank: +7
      - {id: ship, command: ["true"], dependencies: [build, test], timeout: 120, retries: 10}
"""

NEEDS_LIBYAML = {
    "anchor": """
        tasks:
          - id: a
            command: &true ["true"]
          - id: b
            command: *true
    """,
    "hex": """
        tasks:
          - id: a
            command: ["true"]
            timeout: 0x1f
            retries: 010
    """,
    "float forms": """
        tasks:
          - {id: a, command: ["true"], timeout: 1.0e+3, retries: 1_0, size: 1e3, weight: .5, at: 2024-01-01, span: 1:30}
    """,
}


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def _load_in_fresh_process(path: str) -> tuple[str, bool]:
    """(repr of load([path]), whether PyYAML got imported), from a new interpreter."""
    r = subprocess.run(
        [sys.executable, "-c", LOAD, path], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    result, imported = r.stdout.splitlines()
    return result, imported == "True"


def _load_with_libyaml(path: str, monkeypatch) -> str:
    with monkeypatch.context() as m:
        m.setattr(yamlread, "fast_ok", lambda data, text: False)
        return repr(load([path]))


def test_an_ordinary_roadmap_loads_without_importing_pyyaml(tmp_path, monkeypatch):
    path = _write(tmp_path, "roadmap.yaml", ORDINARY)
    result, imported = _load_in_fresh_process(path)
    assert not imported, "loading an ordinary roadmap imported PyYAML"
    assert "Task(id='ship'" in result and "timeout=1.5" in result and "'weight': -0.25" in result
    assert result == _load_with_libyaml(path, monkeypatch)


@pytest.mark.parametrize("name", NEEDS_LIBYAML)
def test_a_roadmap_the_fast_reader_leaves_to_libyaml_loads_as_before(tmp_path, monkeypatch, name):
    path = _write(tmp_path, "roadmap.yaml", NEEDS_LIBYAML[name])
    result, imported = _load_in_fresh_process(path)
    assert imported
    assert result == _load_with_libyaml(path, monkeypatch)
    assert "errors=[]" in result


def _same(a, b) -> bool:
    """Same type and value, down to the sign of a zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or math.isnan(a) and math.isnan(b)
    return a == b


_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _pyyaml(v: str):
    """A plain scalar as PyYAML's SafeLoader reads it: the loader's own resolve() and constructor."""
    tag = _RESOLVER.resolve(yaml.ScalarNode, v, (True, False))
    return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, v))


def _taken_without_pyyaml(v: str) -> bool:
    return _DECIMAL.fullmatch(v) is not None or _NUMBER_START.match(v) is None


def test_every_short_scalar_starting_like_a_number_is_read_as_pyyaml_reads_it():
    taken = 0
    for n in range(1, 5):
        for chars in itertools.product("0179+-._:bxeEiInNtTZ c\n", repeat=n):
            v = "".join(chars)
            if v[0] in "0123456789+-." and _taken_without_pyyaml(v):
                taken += 1
                assert _same(_number(v), _pyyaml(v)), v
    assert taken > 30_000  # 17, -0.1, -c, ./x, 1x, +.e, ...


numberish = st.text(alphabet="0123456789+-._:bxeEiInNaAfFtTZ \t\nc", min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.from_regex(_DECIMAL, fullmatch=True),
        numberish.filter(lambda v: v[0] in "0123456789+-."),
        st.dates().map(str),
        st.datetimes().map(str),
    )
)
def test_scalars_starting_like_a_number_are_read_as_pyyaml_reads_them(v):
    try:
        want = _pyyaml(v)
    except ValueError:
        with pytest.raises(Bail):
            _number(v)
        return
    assert _same(_number(v), want), v


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_numbers_as_python_writes_them_are_read_back_as_pyyaml_does(x):
    v = repr(x)
    assert _same(_number(v), _pyyaml(v)), v


@pytest.mark.parametrize(
    "v",
    [
        "0", "-0", "+0", "7", "-12", "+30", "0.0", "-0.0", "3.14159", "-2.50", "123456789012345678901234567890",
        "0.1000000000000000055511151231257827", "-c", "--all", "./run.sh", "10m", "1h30m",
        "3 apples", "1st", "1e3", "+x", "-.x",
    ],
)  # fmt: skip
def test_ordinary_values_are_read_without_pyyaml(v):
    assert _taken_without_pyyaml(v)
    assert _same(_number(v), _pyyaml(v)), v


@pytest.mark.parametrize(
    "v",
    [
        "010", "-010", "0x1f", "0b101", "1_000", "1:30", "-1:30", "190:20:30.15", ".5", "-.5", "1.", "1.0e+3",
        "1.5e-3", ".inf", "-.Inf", ".NaN", "2024-01-01", "2001-12-14 21:59:43.10 -5", "0.", "00", "1.2.3", "1-2",
        "1.7976931348623157e308",
    ],
)  # fmt: skip
def test_the_other_forms_are_left_to_pyyaml(v):
    assert not _taken_without_pyyaml(v)
    assert _same(_number(v), _pyyaml(v)), v


def test_more_digits_than_int_converts_bails_as_before():
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if not limit:
        pytest.skip("this Python converts ints of any length")
    assert _number("9" * limit) == int("9" * limit)
    assert _number("-" + "9" * limit) == -int("9" * limit)
    for v in ("9" * (limit + 1), "-" + "9" * (limit + 1)):
        with pytest.raises(Bail):
            _number(v)
        with pytest.raises(ValueError):
            _pyyaml(v)
