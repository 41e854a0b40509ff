"""What may reach a terminal: text from roadmaps, ledgers and runs, with its control characters made visible.

A roadmap is data, not a script for the terminal: an ESC, OSC or CSI sequence in a task id or title
could clear the screen, retitle the window or write to the clipboard. `visible()` spells every
control character as an escape (ESC as \\x1b, a C1 character as \\x9b, a bidi override as \\u202e, an
invisible one such as a zero-width space as \\u200b) and a byte that was not UTF-8 (a surrogate-escaped
path) as \\xNN. Everything the CLI writes goes through it,
except the CLI's own cursor movements.
"""

from __future__ import annotations

import re

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # direction marks and overrides: text that reads otherwise
# The other invisible characters (Unicode's format characters, line and paragraph separators): zero-width
# spaces, word joiners, tags, ... make two different ids read the same. The zero-width (non-)joiners U+200C and
# U+200D are kept: they are parts of words in many scripts, and of emoji.
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u2028\u2029\u2060-\u2064\u206a-\u206f"
    "\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_SURROGATES = "\ud800-\udfff"  # os.fsdecode's stand-ins for bytes that were not UTF-8
# Compiled on first use (by re's cache): ~0.8 ms of start-up, and plain ASCII text never needs them.
_TEXT = f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}{_SURROGATES}]"  # keeps tab and newline
_LINE = f"[\x00-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}{_SURROGATES}]"  # one line: tab and newline escaped too


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters escaped; with `one_line`, tab and newline too."""
    if text.isascii() and (text if one_line else text.replace("\n", "").replace("\t", "")).isprintable():
        return text  # ASCII's only non-printable characters are the controls, \x00-\x1f and \x7f
    return re.sub(_LINE if one_line else _TEXT, _escape, text)


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    c = ord(char)
    if c < 0x100:
        return f"\\x{c:02x}"
    if 0xDC80 <= c <= 0xDCFF:
        return f"\\x{c - 0xDC00:02x}"  # the byte os.fsdecode could not decode
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"


def one_line(text: str) -> str:
    """A roadmap string made safe for one terminal line: control characters (escapes, newlines) spelt out."""
    return visible(text, one_line=True)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
