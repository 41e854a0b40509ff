"""The document both YAML readers produce: the data plus where each mapping and sequence item started.

yamlfast (the line-based reader) and yamllib (the libyaml fallback) both build a Doc; neither needs
the other for it.
"""

from __future__ import annotations

MAX_DEPTH = 100  # deepest nesting of YAML collections accepted


class Doc:
    """Parsed YAML plus where each mapping and sequence item started (1-based lines)."""

    __slots__ = ("data", "map_lines", "seq_lines", "dup_keys", "plain_text")

    def __init__(self, data, map_lines: dict, seq_lines: dict, dup_keys: dict, plain_text: bool = False):
        self.data = data
        # True when every string is a slice of the decoded file (the fast reader reads no escapes), so none
        # holds a NUL or a lone surrogate; libyaml's "\0" and "\ud800" escapes can make both.
        self.plain_text = plain_text
        self.map_lines = map_lines  # id(dict) -> line
        self.seq_lines = seq_lines  # id(list) -> [line of each item] or the composed SequenceNode
        self.dup_keys = dup_keys  # id(dict) -> [(key, line of the first, line of the later one)]

    def line(self, mapping) -> int | None:
        return self.map_lines.get(id(mapping))

    def item_line(self, seq: list, i: int, default: int | None) -> int | None:
        info = self.seq_lines.get(id(seq))
        if info is None:
            return default
        if isinstance(info, list):
            return info[i] if i < len(info) else default
        return info.value[i].start_mark.line + 1 if i < len(info.value) else default
