"""A line-based reader for the subset of YAML that roadmaps are written in; Bail on anything else.

It produces a Doc (the data plus where each mapping and sequence item started), exactly as libyaml
would read the same text; runner.roadmap.yamlread falls back to libyaml whenever it bails.
"""

from __future__ import annotations

import re

from runner.roadmap.yamldoc import MAX_DEPTH, Doc
from runner.roadmap.yamlscalar import (  # noqa: F401  (_DECIMAL, _NUMBER_START: tests)
    _DECIMAL,
    _NOT_PLAIN_FIRST,
    _NUMBER_START,
    _NUMERIC_FIRST,
    _PLAIN_FIRST,
    _WORDS,
    Bail,
    _number,
)

# Characters the fast reader accepts anywhere; anything else (tabs, CR, odd line breaks, control
# characters, a BOM inside the text) sends the file to libyaml, which knows every rule about them.
_ASCII_OK = bytes(range(0x20, 0x7F)) + b"\n"
# Left to re's cache, compiled on the first non-ASCII file: compiling it takes ~5 ms.
_UNICODE_BAD = "[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"


def fast_ok(data: bytes, text: str) -> bool:
    if text.isascii():
        return not data.translate(None, _ASCII_OK)
    return re.search(_UNICODE_BAD, text) is None


_SINGLE = re.compile(r"'([^']*(?:''[^']*)*)'(?: +#.*)? *\Z")  # a whole single-quoted value, maybe a comment
_DOUBLE = re.compile(r'"([^"\\]*)"(?: +#.*)? *\Z')  # the same, double-quoted without escapes

# Inside a one-line flow collection: plain text stops at , [ ] { } : # (the reader bails on the last two).
_FLOW_PLAIN = re.compile(r"(?:[^\s\[\]{},:#'\"?&*!|>%@`<=-]|-(?=[^\s\[\]{},]))[^\[\]{},:#]*")
_FLOW_SINGLE = re.compile(r"'([^']*(?:''[^']*)*)'")
_FLOW_DOUBLE = re.compile(r'"([^"\\]*)"')
_FLOW_FIRST_BAD = frozenset("[]{},:#'\"?&*!|>%@`<=")
_FLOW_MAP_HARD = re.compile(r"[{}#'\"]")  # for FastReader._flow_map: leave these to the full flow reader
_FLOW_SEQ_HARD = re.compile(r"[\[{}#:]")  # the same for FastReader._flow_seq
_FLOW_NESTED = re.compile(r"\[[^\]]*\[|\][^\[]*\]")  # a list inside a list, or a stray ]
_FLOW_LIST = re.compile(r"\[[^\]]*\]")
# The most common one-line list, [a, b-1, c/d]: plain items (each of them text, unless one of _WORDS) split by ", ".
_FLOW_SIMPLE_SEQ = re.compile(r"\[([A-Za-z_/$()^;][^\s,\[\]{}#:'\"]*(?:, [A-Za-z_/$()^;][^\s,\[\]{}#:'\"]*)*)\]")


# _flat_items: an item's text is looked for within this many characters; the one-line values it keeps
# (by their line as written), at most this many; the characters that do not start an item it reads.
_FLAT_ITEM_MAX = 16384
_FLAT_FIELDS_MAX = 4096
_FLAT_NOT_FIRST = frozenset(" #-[{'\"\n")
_FLAT_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def _protect_commas(m: re.Match) -> str:
    return m.group().replace(",", "\x00")  # NUL cannot occur in the text (fast_ok)


class FastReader:
    """Reads the YAML that roadmaps are written in, line by line, into plain data, 3-4x faster than libyaml.

    Block mappings and sequences; plain scalars, also over several lines; single-quoted ones, also over
    several lines; double-quoted ones without escapes; flow collections on one line. It accepts only what
    it reads exactly as libyaml would (property tests compare the two, also on broken text) and raises
    Bail on anything else: anchors, aliases, tags, block scalars, escapes, multi-line flow, odd indents.
    """

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")
        self.n = len(self.lines)
        self._at = (0, 0)  # (line index, its offset in text): where _offset last stood
        self.fields: dict[str, tuple] = {}  # one-line `key: value` as written -> (key, value); lists as tuples
        self.map_lines: dict[int, int] = {}
        self.seq_lines: dict[int, list[int]] = {}
        self.dup_keys: dict[int, list] = {}
        self.keys: dict[str, object] = {}  # key as written -> key
        self.numbers: dict[str, object] = {}  # plain scalar starting like a number -> its value
        self.lists: dict[str, tuple] = {}  # one-line list as written -> items (commands repeat: ["true"])

    def read(self) -> Doc:
        i = self._next(0)
        if i == self.n:
            raise Bail
        line = self.lines[i]
        s = line.lstrip(" ")
        if s.startswith("---"):
            if line != s or s != "---" and (s[3] != " " or s[3:].lstrip(" ")[:1] not in ("", "#")):
                raise Bail
            i = self._next(i + 1)
            if i == self.n:
                raise Bail
            line = self.lines[i]
            s = line.lstrip(" ")
        if s[0] == "-" and (len(s) == 1 or s[1] == " "):
            raise Bail
        data, i = self._map(i, len(line) - len(s), None, 1)
        if self._next(i) != self.n:
            raise Bail
        return Doc(data, self.map_lines, self.seq_lines, self.dup_keys, plain_text=True)

    def _next(self, i: int) -> int:
        lines, n = self.lines, self.n
        while i < n:
            s = lines[i].lstrip(" ")
            if s and s[0] != "#":
                return i
            i += 1
        return i

    def _block(self, i: int, indent: int, seq_same_indent: bool, depth: int):
        """The value that starts on the line after a `key:` or `-` with nothing after it."""
        j = self._next(i)
        if j == self.n:
            return None, j
        line = self.lines[j]
        s = line.lstrip(" ")
        ind = len(line) - len(s)
        is_item = s[0] == "-" and (len(s) == 1 or s[1] == " ")
        if ind > indent:
            return self._seq(j, ind, depth) if is_item else self._map(j, ind, None, depth)
        if ind == indent and is_item and seq_same_indent:
            return self._seq(j, ind, depth)
        return None, j

    def _map(self, i: int, indent: int, first: str | None, depth: int):
        if depth > MAX_DEPTH:
            raise Bail
        lines, n, keys, plain_first, words = self.lines, self.n, self.keys, _PLAIN_FIRST, _WORDS
        m: dict = {}
        self.map_lines[id(m)] = i + 1
        s = first
        last = None  # (key, text, line index) of the last plain value, which may go on over more lines
        while True:
            if s is None:
                while i < n:
                    line = lines[i]
                    s = line.lstrip(" ")
                    if s and s[0] != "#":
                        break
                    i += 1
                else:
                    return m, i
                ind = len(line) - len(s)
                if ind != indent:
                    if ind < indent:
                        return m, i
                    if last is None:
                        raise Bail
                    m[last[0]], i = self._plain_lines(last[1], last[2] + 1, indent + 1)
                    last = s = None
                    continue
                if s[0] == "-" and (len(s) == 1 or s[1] == " "):
                    return m, i
            p = s.find(": ")
            if p < 0:
                if s[-1] != ":":
                    raise Bail
                raw_key, rest = s[:-1], ""
            else:
                raw_key, rest = s[:p], s[p + 2 :].lstrip(" ")
            key = keys.get(raw_key, Bail)
            if key is Bail:
                key = self._key(raw_key)
            if key in m:
                self.dup_keys.setdefault(id(m), []).append((key, self._key_line(m, key, indent, i), i + 1))
            s = last = None
            if not rest or rest[0] == "#":
                m[key], i = self._block(i + 1, indent, True, depth + 1)
                continue
            if rest[0] in plain_first:  # the common case, inlined: plain text
                if " #" in rest:
                    rest = rest[: rest.find(" #")].rstrip(" ")
                else:
                    if rest[-1] == " ":
                        rest = rest.rstrip(" ")
                    last = (key, rest, i)
                if rest[-1] == ":" or ": " in rest:
                    raise Bail
                m[key] = words.get(rest, rest) if len(rest) <= 5 else rest
                i += 1
            elif rest[0] == "[" and (flow := self._flow_seq(rest)) is not None:
                m[key] = flow
                i += 1
            else:
                m[key], text, i = self._value(rest, i, indent + 1)
                if text is not None:
                    last = (key, text, i - 1)

    def _key_line(self, m: dict, key, indent: int, upto: int) -> int:
        """1-based line where `key` first appears in the block mapping m (keys at column indent), before line upto."""
        lines, keys = self.lines, self.keys
        for j in range(self.map_lines[id(m)] - 1, upto):
            s = lines[j].lstrip(" ")
            while s[:2] == "- ":  # the mapping's first key may follow its item's dash
                s = s[2:].lstrip(" ")
            if len(lines[j]) - len(s) == indent:
                p = s.find(": ")
                raw = s[:p] if p >= 0 else s[:-1] if s[-1:] == ":" else None
                if raw is not None and keys.get(raw, Bail) == key:
                    return j + 1
        return upto + 1

    def _seq(self, i: int, indent: int, depth: int):
        if depth > MAX_DEPTH:
            raise Bail
        lines, n = self.lines, self.n
        seq: list = []
        item_lines: list[int] = []
        self.seq_lines[id(seq)] = item_lines
        last = None  # (text, line index) of the last plain item, which may go on over more lines
        while i < n:
            line = lines[i]
            s = line.lstrip(" ")
            if not s or s[0] == "#":
                i += 1
                continue
            ind = len(line) - len(s)
            if ind != indent:
                if ind < indent:
                    break
                if last is None:
                    raise Bail
                seq[-1], i = self._plain_lines(last[0], last[1] + 1, indent + 1)
                last = None
                continue
            if s[0] != "-" or (len(s) > 1 and s[1] != " "):
                break
            if s[2:3] in _FLAT_FIRST and ": " in s and depth < MAX_DEPTH:
                j = self._flat_items(i, indent, seq, item_lines)
                if j != i:
                    i, last = j, None
                    continue
            rest = s[1:].lstrip(" ")
            item_lines.append(i + 1)
            last = None
            if not rest or rest[0] == "#":
                value, i = self._block(i + 1, indent, False, depth + 1)
            elif rest[0] == "-" and (len(rest) == 1 or rest[1] == " "):
                raise Bail
            elif rest[0] not in "[{'\"" and (": " in rest or rest[-1] == ":"):
                value, i = self._map(i, indent + len(s) - len(rest), rest, depth + 1)
            else:
                value, text, i = self._value(rest, i, indent + 1)
                if text is not None:
                    last = (text, i - 1)
            seq.append(value)
        return seq, i

    def _offset(self, i: int) -> int:
        """Offset in text of line i; the reader moves forwards, so this adds up only the lines since the last call."""
        at, pos = self._at
        if i < at:
            at = pos = 0
        pos += sum(map(len, self.lines[at:i])) + (i - at)
        self._at = (i, pos)
        return pos

    def _flat_items(self, i: int, indent: int, seq: list, item_lines: list) -> int:
        """Items of the block sequence at column indent, from line i on, that are flat mappings: one
        `key: value` per line, all at the column after the dash (the common task) -> the line after them.

        Each item's text is cut out with str.find and split into its lines with str.split, instead of being
        walked line by line. The first item that holds anything else (a comment, a blank or deeper line, a
        block value, a repeated key, a quoted scalar over several lines) is left, unread, to _seq.
        """
        text, keys, fields, map_lines = self.text, self.keys, self.fields, self.map_lines
        plain_first, words, not_first = _PLAIN_FIRST, _WORDS, _FLAT_NOT_FIRST
        col = indent + 2
        sep = "\n" + " " * indent + "- "
        fsep = "\n" + " " * col
        deeper, comment = fsep + " ", fsep + "#"
        room = _FLAT_FIELDS_MAX - len(fields)
        pos = self._offset(i)
        while True:
            start = pos + col
            end = text.find(sep, start, start + _FLAT_ITEM_MAX)
            if end < 0:
                break
            item = text[start:end]
            entries = item.split(fsep)
            if not item or item[0] in not_first or item.count("\n") != len(entries) - 1:
                break  # not a mapping, or a blank or shallower line among its lines
            if deeper in item or comment in item:
                break  # a deeper line, or a comment
            m: dict = {}
            for f in entries:
                known = fields.get(f)
                if known is not None:
                    key, value = known
                    if key in m:
                        break
                    m[key] = list(value) if type(value) is tuple else value
                    continue
                raw_key, _, rest = f.partition(": ")
                if not rest:
                    break  # `key:` and a block value below, or not a mapping entry
                key = keys.get(raw_key, Bail)
                if key is Bail:
                    key = self._key(raw_key)
                c = rest[0]
                if key in m or c == " " or c == "#":
                    break  # a repeated key, more spaces (rare), or a comment and a block value below
                if c in plain_first:
                    if " #" in rest:
                        rest = rest[: rest.find(" #")].rstrip(" ")
                    elif rest[-1] == " ":
                        rest = rest.rstrip(" ")
                    if rest[-1] == ":" or ": " in rest:
                        raise Bail
                    value = words.get(rest, rest)
                    if room:
                        room -= 1
                        fields[f] = (key, value)
                elif c == "'" and _SINGLE.match(rest) is None:
                    break  # goes on over more lines
                elif c == "[" and (value := self._flow_seq(rest)) is not None:
                    if room:
                        room -= 1
                        fields[f] = (key, tuple(value))
                else:
                    value = self._value(rest, i + len(m), col + 1)[0]  # one line: i + len(m) is the entry's
                    if room and type(value) is not list and type(value) is not dict:
                        room -= 1
                        fields[f] = (key, value)
                m[key] = value
            else:
                map_lines[id(m)] = i + 1
                item_lines.append(i + 1)
                seq.append(m)
                i += len(entries)
                pos = end + 1
                continue
            break
        self._at = (i, pos)
        return i

    def _key(self, raw: str):
        if not raw or raw[0] in _NOT_PLAIN_FIRST or raw[0] in " -" or raw[-1] == " " or " #" in raw:
            raise Bail
        key = self._plain(raw)
        self.keys[raw] = key
        return key

    def _value(self, rest: str, i: int, min_col: int):
        """A value that starts on line i after its key or dash -> (value, its text if plain and open, next line)."""
        c = rest[0]
        if c == "[" or c == "{":
            return self._flow(rest, i + 1), None, i + 1
        if c == "'":
            m = _SINGLE.match(rest)
            if m is None:
                value, i = self._single_lines(rest[1:], i, min_col)
                return value, None, i
            return m.group(1).replace("''", "'"), None, i + 1
        if c == '"':
            m = _DOUBLE.match(rest)
            if m is None:
                raise Bail
            return m.group(1), None, i + 1
        if c in _NOT_PLAIN_FIRST or c == "-" and (len(rest) == 1 or rest[1] == " "):
            raise Bail
        text = rest
        if " #" in rest:
            rest, text = rest[: rest.find(" #")], None
        rest = rest.rstrip(" ")
        if rest[-1] == ":" or ": " in rest:
            raise Bail
        return self._plain(rest), text and rest, i + 1

    def _plain_lines(self, text: str, i: int, min_col: int):
        """A plain scalar that goes on over lines i... indented at least min_col -> (value, next line)."""
        lines, n = self.lines, self.n
        parts = [text]
        breaks = 0
        end = i
        while i < n:
            line = lines[i]
            s = line.lstrip(" ")
            if not s:
                breaks += 1
                i += 1
                continue
            if len(line) - len(s) < min_col or s[0] == "#":
                break
            s = s.rstrip(" ")
            if " #" in s or ": " in s or s[-1] == ":":
                raise Bail
            parts.append("\n" * breaks if breaks else " ")
            parts.append(s)
            breaks = 0
            i = end = i + 1
        return self._plain("".join(parts)), end

    def _single_lines(self, first: str, i: int, min_col: int):
        """A single-quoted scalar opened on line i and closed on a later line -> (value, next line)."""
        if first.replace("''", "").find("'") >= 0:
            raise Bail  # closed on its first line after all, with something after it
        lines, n = self.lines, self.n
        parts = [first.rstrip(" ")]
        breaks = 0
        i += 1
        while i < n:
            line = lines[i]
            s = line.strip(" ")
            if not s:
                breaks += 1
                i += 1
                continue
            if len(line) - len(line.lstrip(" ")) < min_col:
                raise Bail
            parts.append("\n" * breaks if breaks else " ")
            breaks = 0
            close = s.find("'")
            while close >= 0 and s[close + 1 : close + 2] == "'":
                close = s.find("'", close + 2)
            if close < 0:
                parts.append(s)
                i += 1
                continue
            after = s[close + 1 :]
            if after and (after[0] != " " or after.lstrip(" ")[0] != "#"):
                raise Bail
            parts.append(s[:close])
            return "".join(parts).replace("''", "'"), i + 1
        raise Bail

    def _flow(self, text: str, line: int):
        """A flow collection written on one line, like [a, b] or {id: a, deps: [b]}."""
        simple = self._flow_map(text, line) if text[0] == "{" else self._flow_seq(text)
        if simple is not None:
            return simple
        value, pos = self._flow_node(text, 0, line, 0)
        tail = text[pos:]
        if tail and (tail[0] != " " or tail.lstrip(" ")[:1] not in ("", "#")):
            raise Bail
        return value

    def _flow_seq(self, text: str) -> list | None:
        """The common one-line list, [a, b] or ["true"], read with a split; None for anything else."""
        simple = _FLOW_SIMPLE_SEQ.fullmatch(text)
        if simple is not None:
            items = simple.group(1).split(", ")
            if _WORDS.keys().isdisjoint(items):
                return items
        seen = self.lists.get(text)
        if seen is not None:
            return list(seen)
        close = text.find("]")
        tail = text[close + 1 :]
        if close < 0 or tail and (tail[0] != " " or tail.lstrip(" ")[:1] not in ("", "#")):
            return None
        inner = text[1:close]
        if _FLOW_SEQ_HARD.search(inner):
            return None
        if not inner or inner.isspace():
            return []
        plain_first, words, bad_first = _PLAIN_FIRST, _WORDS, _FLOW_FIRST_BAD
        out = []
        for item in inner.split(","):
            item = item.strip(" ")
            if not item:
                return None
            c = item[0]
            if c in plain_first:
                out.append(words.get(item, item) if len(item) <= 5 else item)
            elif c == '"':
                body = item[1:-1]
                if len(item) < 2 or item[-1] != '"' or '"' in body or "\\" in body:
                    return None
                out.append(body)
            elif c == "'":
                body = item[1:-1]
                if len(item) < 2 or item[-1] != "'" or "'" in body.replace("''", ""):
                    return None
                out.append(body.replace("''", "'"))
            elif c in bad_first or c == "-" and (len(item) == 1 or item[1] == " "):
                return None
            else:
                out.append(self._plain(item))
        if len(self.lists) < 4096:
            self.lists[text] = tuple(out)
        return out

    def _flow_map(self, text: str, line: int) -> dict | None:
        """The common one-line task, {id: a, title: Some text, dependencies: [b, c]}, read with splits;
        None when it holds anything else (quotes, nesting, comments), for _flow_node to read."""
        close = text.rfind("}")
        inner = text[1:close]
        tail = text[close + 1 :]
        if tail and (tail[0] != " " or tail.lstrip(" ")[:1] not in ("", "#")) or _FLOW_MAP_HARD.search(inner):
            return None
        lists = "[" in inner
        if lists:
            if _FLOW_NESTED.search(inner):
                return None
            inner = _FLOW_LIST.sub(_protect_commas, inner)
        m: dict = {}
        self.map_lines[id(m)] = line
        if not inner or inner.isspace():
            return m
        keys, plain_first, words, bad_first = self.keys, _PLAIN_FIRST, _WORDS, _FLOW_FIRST_BAD
        for part in inner.split(","):
            raw_key, colon, value = part.partition(":")
            if not colon or value[:1] != " ":
                return None
            raw_key = raw_key.strip(" ")
            value = value.strip(" ")
            if not value or ":" in value or "]" in raw_key or "[" in raw_key:
                return None
            key = keys.get(raw_key, Bail)
            if key is Bail:
                key = self._key(raw_key)
            if key in m:
                self.dup_keys.setdefault(id(m), []).append((key, line, line))
            c = value[0]
            if c == "[":
                if not lists or value[-1] != "]":
                    return None
                body = value[1:-1]
                if not body or body.isspace():
                    m[key] = []
                    continue
                items = []
                for item in body.split("\x00"):
                    item = item.strip(" ")
                    if not item or item[0] in bad_first or item[0] == "-" and (len(item) == 1 or item[1] == " "):
                        return None
                    items.append(self._plain(item))
                m[key] = items
            elif c in plain_first:
                if "]" in value:
                    return None
                m[key] = words.get(value, value) if len(value) <= 5 else value
            elif c in bad_first or c == "-" and (len(value) == 1 or value[1] == " ") or "]" in value:
                return None
            else:
                m[key] = self._plain(value)
        return m

    def _flow_node(self, text: str, pos: int, line: int, depth: int):
        n = len(text)
        while pos < n and text[pos] == " ":
            pos += 1
        if pos == n:
            raise Bail
        c = text[pos]
        if c == "[" or c == "{":
            if depth >= MAX_DEPTH:
                raise Bail
            closing = "]" if c == "[" else "}"
            out: list | dict = [] if c == "[" else {}
            if c == "{":
                self.map_lines[id(out)] = line
            pos += 1
            while pos < n and text[pos] == " ":
                pos += 1
            if pos < n and text[pos] == closing:
                return out, pos + 1
            while True:
                if c == "[":
                    item, pos = self._flow_node(text, pos, line, depth + 1)
                    out.append(item)
                else:
                    key, pos = self._flow_node(text, pos, line, depth + 1)
                    if isinstance(key, (list, dict)) or text[pos : pos + 2] != ": ":
                        raise Bail
                    if key in out:
                        self.dup_keys.setdefault(id(out), []).append((key, line, line))
                    out[key], pos = self._flow_node(text, pos + 2, line, depth + 1)
                while pos < n and text[pos] == " ":
                    pos += 1
                if pos == n:
                    raise Bail
                if text[pos] == closing:
                    return out, pos + 1
                if text[pos] != ",":
                    raise Bail
                pos += 1
        if c == "'":
            m = _FLOW_SINGLE.match(text, pos)
            if m is None:
                raise Bail
            return m.group(1).replace("''", "'"), m.end()
        if c == '"':
            m = _FLOW_DOUBLE.match(text, pos)
            if m is None:
                raise Bail
            return m.group(1), m.end()
        m = _FLOW_PLAIN.match(text, pos)
        if m is None:
            raise Bail
        raw = m.group().rstrip(" ")
        return self._plain(raw), pos + len(raw)

    def _plain(self, v: str):
        """Resolve a plain scalar exactly as PyYAML's SafeLoader does."""
        if v[0] in _NUMERIC_FIRST:
            known = self.numbers.get(v, Bail)
            if known is not Bail:
                return known
            value = _number(v)
            self.numbers[v] = value
            return value
        return _WORDS.get(v, v) if len(v) <= 5 else v
