"""runner.model.record behaves as dataclasses.dataclass: each class below is made twice, once by each, and
every method is held to the standard one's on the same values."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import sys
import types

import pytest

from runner.model import record

# One class body per case: frozen or not, defaults, factories, field(...) options, inheritance.
BODIES = {
    "plain": """
class C:
    a: int
    b: str = "x"
""",
    "frozen": """
class C:
    a: int
    b: tuple = ()
    c: dict = field(default_factory=dict)
    d: float | None = None
""",
    "options": """
class C:
    a: int
    hidden: object = field(default=None, repr=False)
    loose: int = field(default=0, compare=False)
    unhashed: int = field(default=0, hash=False)
    made: list = field(default_factory=list, init=False)
    fixed: int = field(default=7, init=False)
""",
    "empty": """
class C:
    pass
""",
    "one": """
class C:
    only: float
""",
}
OPTIONS = [{}, {"frozen": True}, {"eq": False}, {"repr": False}, {"frozen": True, "eq": False}, {"slots": True}]


def _make(decorator, body: str, **options):
    """The class of `body` under `decorator(**options)`, with a subclass that adds a field."""
    module = types.ModuleType(f"record_case_{id(decorator)}")
    sys.modules[module.__name__] = module  # dataclass reads the module's globals for string annotations
    try:
        exec("from __future__ import annotations\nfrom dataclasses import field\n" + body, module.__dict__)
        base = decorator(**options)(module.C)
        sub = decorator(**options)(type("D", (base,), {"__annotations__": {"extra": "int"}, "extra": 5, "__module__": module.__name__}))
        return base, sub
    finally:
        del sys.modules[module.__name__]


def _args(cls) -> list[tuple[tuple, dict]]:
    """Ways to call cls: its init fields' names, positionally and by keyword, with defaults left out."""
    init = [f for f in dataclasses.fields(cls) if f.init]
    values = {f.name: (i + 1 if f.type in ("int", "float | None", "float") else f"v{i}") for i, f in enumerate(init)}
    nan = {f.name: float("nan") for f in init[:1]}
    required = {f.name: values[f.name] for f in init if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return [((), required), (tuple(values.values()), {}), ((), values), ((), {**values, **nan})]


def _parameters(cls) -> list[tuple]:
    return [(p.name, p.kind, repr(p.default)) for p in inspect.signature(cls).parameters.values()]


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # the same exception type and message, or it differs
        return (type(exc).__name__, str(exc).replace("_std", "").replace("_rec", ""))


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_a_record_behaves_as_the_dataclass_of_the_same_body(body, options):
    for std, rec in zip(_make(dataclasses.dataclass, BODIES[body], **options), _make(record, BODIES[body], **options)):
        assert dataclasses.is_dataclass(rec)
        assert [(f.name, f.default, f.init, f.repr, f.compare) for f in dataclasses.fields(rec)] == [
            (f.name, f.default, f.init, f.repr, f.compare) for f in dataclasses.fields(std)]
        assert rec.__match_args__ == std.__match_args__
        assert (rec.__hash__ is None) == (std.__hash__ is None)
        for args, kwargs in _args(std):
            s, r = std(*args, **kwargs), rec(*args, **kwargs)
            if options.get("repr", True):
                assert repr(r).replace(rec.__qualname__, "X") == repr(s).replace(std.__qualname__, "X")
            else:
                assert repr(r).startswith("<") and repr(s).startswith("<")  # object's own
            names = [f.name for f in dataclasses.fields(std)]
            assert [getattr(r, n) for n in names] == [getattr(s, n) for n in names] or "nan" in repr(s)
            assert ("__dict__" in dir(r)) == ("__dict__" in dir(s))
            same, twin = rec(*args, **kwargs), std(*args, **kwargs)
            assert (r == same) == (s == twin)  # by value, or by identity with eq=False; NaN equal to itself
            assert (r == r) == (s == s) and (r != same) == (s != twin)
            assert (r == s) is False and r.__eq__(object()) is NotImplemented or not options.get("eq", True)
            assert _outcome(lambda: hash(r) == hash(same)) == _outcome(lambda: hash(s) == hash(twin))
            if options.get("frozen") and options.get("eq", True):
                assert _outcome(lambda: hash(r)) == _outcome(lambda: hash(s))
            victim, its_twin = rec(*args, **kwargs), std(*args, **kwargs)
            assert _outcome(lambda: setattr(victim, "a", 9)) == _outcome(lambda: setattr(its_twin, "a", 9))
            assert _outcome(lambda: delattr(victim, "a")) == _outcome(lambda: delattr(its_twin, "a"))
            fields = [f.name for f in dataclasses.fields(std) if f.init]
            for name in fields:  # one field changed: equal only where that field is not compared
                assert (dataclasses.replace(r, **{name: -1}) == r) == (dataclasses.replace(s, **{name: -1}) == s), name
            if fields:
                changed = dataclasses.replace(r, **{fields[-1]: 42})
                assert getattr(changed, fields[-1]) == 42 and type(changed) is rec
            assert dataclasses.asdict(r).keys() == dataclasses.asdict(s).keys()
            assert copy.copy(r) == r or not options.get("eq", True) or "nan" in repr(r)
        assert _parameters(rec) == _parameters(std)  # its own __init__ is in place now
        assert _outcome(lambda: rec(*range(50))) [0] == _outcome(lambda: std(*range(50)))[0] == "TypeError"
        assert _outcome(lambda: rec(nope=1))[0] == "TypeError"


def test_a_factory_gives_each_record_its_own_value():
    @record(frozen=True)
    class Holder:
        items: list = dataclasses.field(default_factory=list)

    one, two = Holder(), Holder()
    assert one.items == [] and one.items is not two.items
    assert Holder(items=[1]).items == [1]


def test_a_frozen_record_refuses_assignment_with_dataclass_error():
    @record(frozen=True)
    class Point:
        x: int

    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x
    assert p.x == 1


def test_records_pickle_and_keep_their_class_methods():
    from runner.agents.messages import Started, TaskResult  # real records that cross the agents' pipes

    r = TaskResult("t", 1, "succeeded", 0, 1.0, 2.0, checks=(("make", 0),))
    back = pickle.loads(pickle.dumps(r))
    assert back == r and hash(back) == hash(r) and back is not r
    assert Started("t", 1, 3, 1.5) != Started("t", 1, 4, 1.5)
    assert "TaskResult(task_id='t', attempt=1" in repr(r)


def test_a_record_compiles_only_its_init():
    """What it is for: the shared methods are the same function objects in every record."""
    from runner.agents.messages import Cancel, TaskMessage

    assert Cancel.__repr__ is TaskMessage.__repr__ and Cancel.__eq__ is TaskMessage.__eq__
    assert Cancel.__init__ is not TaskMessage.__init__
    assert Cancel.__init__.__qualname__ == "Cancel.__init__"


def test_what_a_record_cannot_be_is_refused():
    with pytest.raises(TypeError, match="__post_init__"):
        @record
        class WithPost:
            a: int

            def __post_init__(self):
                pass


@pytest.mark.parametrize("decorator", [dataclasses.dataclass, record])
def test_frozen_and_not_frozen_do_not_mix_in_inheritance(decorator):
    @decorator(frozen=True)
    class Frozen:
        a: int = 0

    @decorator
    class Loose:
        a: int = 0

    with pytest.raises(TypeError):
        decorator(type("Thaw", (Frozen,), {"__module__": __name__}))
    with pytest.raises(TypeError):
        decorator(frozen=True)(type("Freeze", (Loose,), {"__module__": __name__}))


# -- found in review: behaviours of dataclass a record did not have ------------------------------------------


def _cls(name: str, annotations: dict, **body):
    return type(name, (), {"__annotations__": annotations, "__module__": __name__, **body})


@pytest.mark.parametrize("decorator", [dataclasses.dataclass, record])
def test_a_plain_subclass_of_a_frozen_record_may_set_its_own_attributes(decorator):
    """dataclass's frozen __setattr__ refuses only on the class itself, or a field's name."""
    Frozen = decorator(frozen=True)(_cls("Frozen", {"a": "int"}))

    class Plain(Frozen):
        pass

    p = Plain(1)
    p.note = "x"
    del p.note
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.a = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        Frozen(1).note = "x"


@pytest.mark.parametrize("frozen", [False, True])
def test_a_records_dataclass_params_say_what_it_is(frozen):
    rec = record(frozen=frozen)(_cls("R", {"a": "int"}))
    std = dataclasses.dataclass(frozen=frozen)(_cls("S", {"a": "int"}))
    for name in ("init", "repr", "eq", "frozen", "order", "unsafe_hash"):
        assert getattr(rec.__dataclass_params__, name) == getattr(std.__dataclass_params__, name), name


@pytest.mark.parametrize("frozen", [False, True])
def test_records_and_dataclasses_inherit_from_each_other(frozen):
    rec = record(frozen=frozen)(_cls("R", {"a": "int"}))
    std = dataclasses.dataclass(frozen=frozen)(_cls("S", {"a": "int"}))
    more = {"__annotations__": {"b": "int"}, "b": 0, "__module__": __name__}
    Sub = dataclasses.dataclass(frozen=frozen)(type("Sub", (rec,), dict(more)))
    Rub = record(frozen=frozen)(type("Rub", (std,), dict(more)))
    assert Sub(1, 2) == Sub(1, 2) and repr(Rub(1)) == "Rub(a=1, b=0)"
    if frozen:
        assert hash(Sub(1)) == hash(Sub(1)) and hash(Rub(1)) == hash(Rub(1))


@pytest.mark.parametrize("decorator", [dataclasses.dataclass, record])
def test_a_field_without_default_after_one_with_is_refused_when_the_class_is_made(decorator):
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        decorator(_cls("Order", {"a": "int", "b": "int"}, a=0))


@pytest.mark.parametrize("decorator", [dataclasses.dataclass, record])
@pytest.mark.parametrize("frozen", [False, True])
def test_fields_may_have_any_name_the_init_uses_itself(decorator, frozen):
    annotations = {"self": "object", "_d": "object", "_FACTORY": "object", "_factory_x": "object", "x": "list",
                   "_default_y": "int", "y": "int"}  # the names record's __init__ used for its own
    body = {"x": dataclasses.field(default_factory=list), "y": 5, "_default_y": 6}
    C = decorator(frozen=frozen)(_cls("Names", annotations, **body))
    c = C(1, 2, 3, 4)
    assert (c.self, c._d, c._FACTORY, c._factory_x, c.x, c._default_y, c.y) == (1, 2, 3, 4, [], 6, 5)


@pytest.mark.parametrize("decorator", [dataclasses.dataclass, record])
def test_keyword_only_fields_are_keyword_only(decorator):
    C = decorator(_cls("K", {"a": "int", "b": "int", "c": "int"}, a=0, b=dataclasses.field(kw_only=True), c=1))
    assert repr(C(1, b=2, c=3)) == "K(a=1, b=2, c=3)" and repr(C(b=2)) == "K(a=0, b=2, c=1)"
    with pytest.raises(TypeError):
        C(1, 2, 3)
    assert C.__match_args__ == ("a", "c")
    K2 = decorator(_cls("K2", {"a": "int", "_": "dataclasses.KW_ONLY", "b": "int"}))
    assert repr(K2(1, b=2)) == "K2(a=1, b=2)"
    with pytest.raises(TypeError):
        K2(1, 2)


def test_an_initvar_is_refused_as_post_init_is():
    """A record has no __post_init__ to take it; dataclass would take it and drop it."""
    with pytest.raises(TypeError, match="InitVar"):
        record(_cls("I", {"a": "int", "i": "dataclasses.InitVar[int]"}))


@pytest.mark.parametrize("decorator", [dataclasses.dataclass, record])
@pytest.mark.parametrize("method", ["__setattr__", "__delattr__"])
def test_a_frozen_class_that_defines_its_own_setattr_is_refused(decorator, method):
    with pytest.raises(TypeError, match=f"Cannot overwrite attribute {method}"):
        decorator(frozen=True)(_cls("SA", {"a": "int"}, **{method: lambda self, *args: None}))


def test_a_records_init_is_annotated_as_dataclasses_is():
    rec = record(_cls("R", {"a": "int", "b": "str"}, b="x"))
    std = dataclasses.dataclass(_cls("S", {"a": "int", "b": "str"}, b="x"))
    rec(1)
    assert rec.__init__.__annotations__ == std.__init__.__annotations__


@pytest.mark.parametrize("options", OPTIONS[:5], ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("own", ["__eq__", "__hash__", "__repr__", "__eq__+__hash__", "__hash__=None"])
def test_a_class_that_defines_its_own_methods_keeps_them_as_with_dataclass(options, own):
    def body():
        methods = {}
        if "__eq__" in own:
            methods["__eq__"] = lambda self, other: "own eq"
        if own == "__hash__=None":
            methods["__hash__"] = None
        elif "__hash__" in own:
            methods["__hash__"] = lambda self: 7
        if own == "__repr__":
            methods["__repr__"] = lambda self: "own repr"
        return _cls("Own", {"a": "int"}, **methods)

    std, rec = dataclasses.dataclass(**options)(body()), record(**options)(body())
    s, r = std(1), rec(1)
    assert repr(r).replace("Rec", "") == repr(s).replace("Std", "") or repr(s).startswith("<")
    assert (r == rec(1)) == (s == std(1)) and (r == 1) == (s == 1)
    assert _outcome(lambda: hash(r) == hash(rec(1))) == _outcome(lambda: hash(s) == hash(std(1)))
    assert (rec.__hash__ is None) == (std.__hash__ is None)


def test_a_local_record_class_crosses_cloudpickle_by_value_before_and_after_its_first_instance():
    cloudpickle = pytest.importorskip("ray.cloudpickle")

    def make():
        @record(frozen=True)
        class Local:
            a: int
            b: list = dataclasses.field(default_factory=list)

        return Local

    Local = make()
    fresh = pickle.loads(cloudpickle.dumps(Local))  # its __init__ not compiled yet
    assert repr(fresh(1)) == repr(Local(1)) and fresh(1) == fresh(1) and fresh(1).b is not fresh(1).b
    compiled = pickle.loads(cloudpickle.dumps(Local))  # now with the compiled one
    assert compiled(2, [3]).b == [3] and compiled(2).b == []
    back = pickle.loads(cloudpickle.dumps(Local(5, [2])))
    assert back == Local(5, [2])


@pytest.mark.timeout(60)
def test_first_instances_made_in_threads_at_once_are_all_whole():
    import threading

    for _ in range(50):
        C = record(frozen=True)(_cls("T", {"a": "int", "b": "list"}, b=dataclasses.field(default_factory=list)))
        barrier, made, errors = threading.Barrier(8), [], []

        def make():
            barrier.wait(10)
            try:
                made.append(C(1))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=make) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not errors and len(made) == 8 and all(m == C(1) for m in made)
