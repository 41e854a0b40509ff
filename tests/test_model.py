"""runner.model: the fast Task constructor gives exactly what the dataclass's does."""

from __future__ import annotations

import dataclasses

from runner.model import Task, new_task


def test_new_task_is_the_dataclass_task_with_every_other_field_at_its_default():
    for args in (("t1", "a.yaml", 3, 0, None, None), ("x", "b.yaml", None, 7, "E", "M")):
        fast = new_task(*args)
        slow = Task(id=args[0], file=args[1], line=args[2], order=args[3], epic=args[4], milestone=args[5])
        for f in dataclasses.fields(Task):  # an unset field raises AttributeError here
            assert getattr(fast, f.name) == getattr(slow, f.name), f.name
            assert type(getattr(fast, f.name)) is type(getattr(slow, f.name)), f.name
        assert fast == slow


def test_new_tasks_share_no_container():
    a, b = new_task("a", "f", 1, 0, None, None), new_task("b", "f", 2, 1, None, None)
    for f in dataclasses.fields(Task):
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(a, f.name) is not getattr(b, f.name), f.name
