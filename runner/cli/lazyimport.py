"""Modules the command imports only when first used.

`inspect` is imported by `dataclasses` at its top, for one call (`inspect.signature`, to write a
docstring for a dataclass that has none), and with it `ast`, `dis`, `tokenize` and `linecache`: ~7 ms
of every start-up (`python -X importtime`), used by no run. It is stood in for by an empty module whose
`__getattr__` (PEP 562) imports the real one on the first attribute anyone reads (typer's --help, a
traceback's formatting, a dataclass without a docstring), takes its namespace, and leaves the real
module in `sys.modules`. (`importlib.util.LazyLoader` cannot do it: the `import` statement reads the
module's `__spec__`, which loads it at once.)
"""

from __future__ import annotations

import sys
from types import ModuleType

DEFERRED = ("inspect",)


def defer(names=DEFERRED) -> None:
    """Stand in for each module until it is used, unless it is imported already (then nothing is saved)."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = _StandIn(name)


class _StandIn(ModuleType):
    def __getattr__(self, attr: str):
        # Any attribute the stand-in lacks is a use, dunders too (`inspect.__file__`): the real module answers.
        # The `import` statement reads only what every module has (`__spec__`), so it loads nothing.
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = __import__(name)
        self.__dict__.update(real.__dict__)  # those that hold the stand-in now hold the real namespace
        return getattr(real, attr)
