"""The roadmap's data model: tasks, their settings, and the states a task and an attempt go through."""

from __future__ import annotations

from dataclasses import _FIELD_INITVAR, MISSING, FrozenInstanceError, dataclass, field, fields as fields_of
from enum import Enum
from operator import attrgetter
from reprlib import recursive_repr


def record(cls=None, /, *, frozen: bool = False, eq: bool = True, repr: bool = True, slots: bool = False):
    """`dataclasses.dataclass` for the project's records, at a quarter of its cost at import.

    The standard decorator compiles each generated method of each class with `exec` when the module is
    imported: ~0.5 ms a frozen class, ~15 ms for the 27 records on the way to running one task (a fifth of
    start-up). Here only `__init__` is compiled per class, on its first call; `__repr__`, `__eq__`, `__hash__`
    and the frozen `__setattr__`/`__delattr__` are the functions below, shared, reading the class's field
    names. The class is a dataclass all the same (`fields`, `replace`, `asdict`, `__match_args__`,
    `__dataclass_params__`, `field(...)` options, keyword-only fields, inheriting from a dataclass or being
    inherited by one), and behaves as `dataclass(frozen=..., eq=..., repr=..., slots=...)` would:
    tests/test_record.py holds each method to the standard one's. Neither `__post_init__` (nor `InitVar`) nor
    a frozen record with slots. Before the first instance, `inspect.signature` of the class reads
    (*args, **kwargs), and the class's docstring is not made from its signature.
    """

    def wrap(cls):
        if hasattr(cls, "__post_init__") or (slots and frozen):
            raise TypeError(f"{cls.__qualname__}: record has no __post_init__, nor frozen slots; use dataclasses.dataclass")
        own = cls.__dict__
        based_on = any("__dataclass_fields__" in b.__dict__ for b in cls.__mro__[1:])
        if frozen and not based_on:  # (inheriting, dataclass itself checks both, and refuses them)
            for name in ("__setattr__", "__delattr__"):
                if name in own:
                    raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
        class_hash = own.get("__hash__", MISSING)
        explicit_hash = not (class_hash is MISSING or (class_hash is None and "__eq__" in own))
        # Fields and their checks, nothing compiled; a base's frozenness is checked by dataclass, as frozen
        # (which compiles its __setattr__ and __delattr__, replaced below) only when there is a base to check.
        cls = dataclass(cls, init=False, repr=False, eq=False, frozen=frozen and based_on, slots=slots)
        params = cls.__dataclass_params__  # as dataclass(frozen=..., eq=..., repr=...) says it (a subclass reads it)
        params.init, params.repr, params.eq, params.frozen = True, repr, eq, frozen
        fields = fields_of(cls)  # neither ClassVar nor InitVar pseudo-fields
        if len(fields) != len(cls.__dataclass_fields__) and any(
                f._field_type is _FIELD_INITVAR for f in cls.__dataclass_fields__.values()):  # fmt: skip
            raise TypeError(f"{cls.__qualname__}: record has no __post_init__ to take an InitVar; use dataclasses.dataclass")
        seen_default = False  # dataclass's check, made by its __init__'s compilation: here, now
        for f in fields:
            if f.init and not f.kw_only:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    seen_default = True
                elif seen_default:
                    raise TypeError(f"non-default argument {f.name!r} follows default argument")
        if "__init__" not in own:
            cls.__init__ = _first_init(cls, frozen, slots)
        if repr and "__repr__" not in own:
            cls.__repr__ = _repr
            cls._record_repr = tuple(f.name for f in fields if f.repr)
        if eq and "__eq__" not in own:
            cls.__eq__ = _eq
            cls._record_key = _key_of([f.name for f in fields if f.compare])
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_delattr
            cls._record_frozen = (cls, frozenset(f.name for f in fields))
        if eq and not explicit_hash:  # dataclass's rule: frozen and eq hash their fields; eq alone is unhashable
            cls.__hash__ = _hash if frozen else None
            cls._record_hash = _key_of([f.name for f in fields if (f.compare if f.hash is None else f.hash)])
        return cls

    return wrap if cls is None else wrap(cls)


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()  # the default of a parameter whose field has a default_factory


def _first_init(cls, frozen: bool, slots: bool):
    """An __init__ that compiles the class's own on the first call, puts it in its place and calls it: of the
    records a run imports, most are never made (or not before its first task starts)."""

    def __init__(self, *args, **kwargs):
        init = cls.__init__ = _init_of(cls, fields_of(cls), frozen, slots)
        init(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _init_of(cls, fields, frozen: bool, slots: bool):
    """The class's __init__, compiled in one `exec`: a frozen record writes its __dict__, as dataclass's
    frozen __init__ does through object.__setattr__. Its own names are dunders, so a field may have any name
    (dataclass's rule), `self` included."""
    me = "__dataclass_self__" if any(f.name == "self" for f in fields) else "self"
    params, keywords, body, names = [], [], [], {"__record_factory__": _FACTORY}
    for f in fields:
        target = f"__record_dict__[{f.name!r}]" if frozen else f"{me}.{f.name}"
        factory, default = f"__record_factory_{f.name}__", f"__record_default_{f.name}__"
        into = keywords if f.kw_only else params
        if f.default_factory is not MISSING:
            names[factory] = f.default_factory
            if f.init:
                into.append(f"{f.name}=__record_factory__")
                body.append(f"{target} = {factory}() if {f.name} is __record_factory__ else {f.name}")
            else:
                body.append(f"{target} = {factory}()")
        elif f.default is not MISSING:
            if f.init or slots:  # (else the class attribute holding the default answers, as with dataclass)
                names[default] = f.default
                if f.init:
                    into.append(f"{f.name}={default}")
                body.append(f"{target} = {f.name if f.init else default}")
        elif f.init:
            into.append(f.name)
            body.append(f"{target} = {f.name}")
    if frozen:
        body.insert(0, f"__record_dict__ = {me}.__dict__")
    signature = ", ".join([me, *params, *(["*", *keywords] if keywords else [])])
    text = f"def __init__({signature}):\n    " + "\n    ".join(body or ["pass"]) + "\n"
    exec(text, names)
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{f.name: f.type for f in fields if f.init}, "return": None}
    return init


def _key_of(names: list[str]):
    """obj -> the tuple of those attributes (a tuple compares each item by identity first, as dataclass's do)."""
    if len(names) > 1:
        return attrgetter(*names)  # not a descriptor: a class attribute, called with the object alone
    if names:
        (name,) = names
        return staticmethod(lambda obj: (getattr(obj, name),))
    return staticmethod(lambda obj: ())


@recursive_repr()
def _repr(self) -> str:
    return f"{self.__class__.__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._record_repr) + ")"


def _eq(self, other):
    if other.__class__ is self.__class__:
        key = self._record_key
        return key(self) == key(other)
    return NotImplemented


def _hash(self) -> int:
    return hash(self._record_hash(self))


def _frozen_setattr(self, name, value):
    owner, fields = self._record_frozen  # dataclass's rule: a plain subclass may set what is not a field
    if type(self) is owner or name in fields:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    super(owner, self).__setattr__(name, value)


def _frozen_delattr(self, name):
    owner, fields = self._record_frozen
    if type(self) is owner or name in fields:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
    super(owner, self).__delattr__(name)


class Priority(str, Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 is most urgent."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class Complexity(str, Enum):
    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


# Roadmap statuses: which run, which are skipped. Anything else is unknown (warned, skipped).
RUN_STATUSES = frozenset({"pending", "planned", "in_progress", "needs_improvement", "todo", "open", "ready", ""})
SKIP_STATUSES = frozenset({"done", "blocked", "on_hold", "cancelled", "skipped"})


class Outcome(str, Enum):
    """How one attempt ended. Exactly one per attempt, written to the ledger before it is reported."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    AGENT_DIED = "agent_died"
    INTERRUPTED = "interrupted"
    RATE_LIMITED = "rate_limited"
    # coding-agent attempts (runner.coding): a failure, each with its own reason
    NO_CHANGES = "no_changes"  # exited 0 but changed nothing (and the task does not allow_empty)
    CHECK_FAILED = "check_failed"  # a check run after the attempt failed
    CONFLICT = "conflict"  # landing on `into` conflicted; the branch is kept
    SETUP_FAILED = "setup_failed"  # the worktree (or the agent CLI) could not be set up
    # review (runner.manager.review): the worker's attempt passed its checks and waits for a critic,
    # or a critic's attempt rejected the work (the task goes back for rework, or ends needs_improvement)
    NEEDS_REVIEW = "needs_review"
    REJECTED = "rejected"
    USAGE_LIMITED = "usage_limited"  # an agent CLI's account is out of usage until a reset time
    AUTH_FAILED = "auth_failed"  # an agent CLI is not logged in / its key is refused


class TaskState(str, Enum):
    """Where a task stands in one run."""

    WAITING = "waiting"  # dependencies not yet succeeded
    QUEUED = "queued"  # ready, no agent reserved yet
    RESERVED = "reserved"  # an agent is reserved and has been sent the task
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run: status said so, or a dependency failed / is unknown
    INTERRUPTED = "interrupted"


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.INTERRUPTED})

# The one table of allowed transitions; the scheduler checks every change against it.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.WAITING: frozenset({TaskState.QUEUED, TaskState.SKIPPED, TaskState.INTERRUPTED}),
    TaskState.QUEUED: frozenset({TaskState.RESERVED, TaskState.SKIPPED, TaskState.INTERRUPTED}),
    TaskState.RESERVED: frozenset(
        {TaskState.RUNNING, TaskState.QUEUED, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.INTERRUPTED}
    ),
    TaskState.RUNNING: frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.QUEUED, TaskState.INTERRUPTED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
    TaskState.INTERRUPTED: frozenset(),
}


@record(slots=True)
class Task:
    """One task of a roadmap, with defaults already applied."""

    id: str
    title: str = ""
    command: str | list[str] | None = None  # a string runs under /bin/sh -c; a list is argv, no shell
    call: str | None = None  # "package.module:function", run inside the agent
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    status: str = ""  # the roadmap's status, lower-cased
    dependencies: list[str] = field(default_factory=list)
    priority: Priority = Priority.MEDIUM
    complexity: Complexity | None = None
    complexity_score: int | None = None
    complexity_inferred: bool = False  # neither was written: runner.roadmap.complexity chose `complexity`
    timeout: float | None = None  # seconds; None means no timeout
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    role: str | None = None
    affinity: str | None = None  # `affinity`, or WeatherVane's `set_id`
    description: str = ""
    exit_criteria: list[str] = field(default_factory=list)
    epic: str | None = None  # id of the enclosing epic, if any
    milestone: str | None = None  # id of the enclosing milestone, if any
    meta: dict = field(default_factory=dict)  # every other field, kept as written
    file: str = ""  # roadmap file the task came from
    line: int | None = None  # 1-based line of the task's mapping in that file
    order: int = 0  # position in the roadmap(s), for "roadmap order"

    @property
    def runnable_status(self) -> bool:
        return self.status in RUN_STATUSES

    def place(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


_new = object.__new__
_MEDIUM = Priority.MEDIUM


def new_task(id: str, file: str, line: int | None, order: int, epic: str | None, milestone: str | None) -> Task:
    """Task(id=id, file=file, line=line, order=order, epic=epic, milestone=milestone), in half the time.

    The dataclass's __init__ matches each keyword against its 26 parameters; the roadmap builder makes one
    Task per task (0.1 s per 100,000). Every other field gets its default, as Task() gives it (tests/test_model.py).
    """
    t = _new(Task)
    t.id = id
    t.title = ""
    t.command = None
    t.call = None
    t.args = []
    t.kwargs = {}
    t.status = ""
    t.dependencies = []
    t.priority = _MEDIUM
    t.complexity = None
    t.complexity_score = None
    t.complexity_inferred = False
    t.timeout = None
    t.retries = 0
    t.env = {}
    t.cwd = None
    t.role = None
    t.affinity = None
    t.description = ""
    t.exit_criteria = []
    t.epic = epic
    t.milestone = milestone
    t.meta = {}
    t.file = file
    t.line = line
    t.order = order
    return t


@record
class Roadmap:
    """One or more roadmap files, loaded and validated."""

    files: list[str]
    tasks: list[Task]
    defaults: dict = field(default_factory=dict)
    executor: object | None = None  # the top-level `executor:` as written (template or mapping)
    agents: dict[str, int] | None = None  # an `agents:` block: role -> count
    agents_place: str | None = None  # file:line of that block (the last one read), for the messages that name it
    content_hash: str = ""  # sha256 over the files' bytes, in order
    warnings: list = field(default_factory=list)  # list[errors.Problem]
    settings: dict = field(default_factory=dict)  # top-level blocks of the coding layer as written (`workspace:`)

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}
