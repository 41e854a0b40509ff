"""What a plain YAML scalar means, exactly as PyYAML's SafeLoader reads it, for runner.roadmap.yamlfast.

The common words and numbers are resolved here without PyYAML; anything rarer is handed to
runner.roadmap.yamllib.resolve_plain (which imports PyYAML) or makes the fast reader Bail.
"""

from __future__ import annotations

import re


class Bail(Exception):
    """The fast reader met YAML outside its subset; libyaml reads the file instead."""


_NUMERIC_FIRST = frozenset("0123456789+-.")  # may start an int, float or timestamp
# Decimals that PyYAML reads as int(text) or float(text) and as nothing else; tests compare them with it.
# The rest (010 is octal, 0x1f, 1_000, 1:30, .5, 1e3, .inf, 2024-01-01, ...) is left to PyYAML itself.
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(\.[0-9]+)?")
# How every int, float and timestamp of YAML 1.1 starts (see the regexps of yaml.resolver): after a sign,
# digits followed by one of _.:-bx or nothing, or a dot and a digit, inf or nan. Anything else (-c, --all,
# ./run.sh, 10m, 3 apples) is text. \n: those regexps end in $, which also matches before a final newline.
_NUMBER_START = re.compile(r"[-+]?(?:[0-9]+(?:[-_.:bx\n]|\Z)|\.[0-9iInN])")
_WORDS = {  # the other plain scalars YAML 1.1 does not read as text
    **dict.fromkeys(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("~", "null", "Null", "NULL"), None),
}
_NOT_PLAIN_FIRST = frozenset("?:,[]{}#&*!|>'\"%@`<=")  # '<' and '=' start YAML's merge and value keys
# First characters after which a one-line plain scalar is text, unless it is one of _WORDS.
_PLAIN_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_/$()^;")


def _number(v: str):
    """A plain scalar that starts like a number -> its value as PyYAML's SafeLoader reads it. Raises Bail."""
    decimal = _DECIMAL.fullmatch(v)
    if decimal is not None:
        try:
            return float(v) if decimal.group(1) else int(v)
        except ValueError:  # more digits than int() converts: PyYAML fails on it too
            pass
    elif _NUMBER_START.match(v) is None:
        return v
    from runner.roadmap.yamllib import resolve_plain  # imports PyYAML, which an ordinary roadmap does without

    try:
        return resolve_plain(v)
    except (ValueError, OverflowError):
        raise Bail from None
