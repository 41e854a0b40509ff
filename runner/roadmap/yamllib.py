"""The fallback reader: libyaml through PyYAML, bounded, for whatever runner.roadmap.yamlfast leaves to it.

Imported only when it is needed (runner.roadmap.yamlread and yamlfast import it lazily): an ordinary roadmap is
read without PyYAML, whose import costs more than reading the roadmap. Bounded in time and memory: nesting
deeper than MAX_DEPTH, recursive aliases and alias bombs are refused before libyaml builds anything from them.
"""

from __future__ import annotations

import re
TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from runner.roadmap.yamldoc import MAX_DEPTH, Doc

if TYPE_CHECKING:
    from runner.roadmap.check import Problems

_SC = SafeConstructor()
_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers  # first character -> [(tag, regexp)]


def resolve_plain(v: str):
    """A plain scalar starting like a number -> its value as SafeLoader reads it. Raises ValueError, OverflowError."""
    for tag, regexp in _IMPLICIT.get(v[0], ()):
        if regexp.match(v):
            return _SC.yaml_constructors[tag](_SC, ScalarNode(tag, v))
    return v


_BaseLoader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class LineLoader(_BaseLoader):
    """SafeLoader that remembers where each mapping and sequence started."""

    def __init__(self, stream):
        super().__init__(stream)
        self.map_lines: dict[int, int] = {}
        self.seq_lines: dict[int, SequenceNode] = {}
        self.dup_keys: dict[int, list] = {}

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as e:  # e.g. `!!int abc`, `!!bool maybe`, a date like 2025-02-30
            value = node.value if isinstance(node, ScalarNode) else node.tag
            raise ConstructorError(None, None, f"cannot read value {value!r}: {e}", node.start_mark) from None


def _construct_map(loader: LineLoader, node: MappingNode):
    data: dict = {}
    loader.map_lines[id(data)] = node.start_mark.line + 1
    yield data
    merges = any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value)
    value = loader.construct_mapping(node)
    if not merges and len(value) < len(node.value):
        first: dict = {}  # key -> line it first appears on
        for k, _ in node.value:
            key = loader.construct_object(k)
            line = k.start_mark.line + 1
            if key in first:
                loader.dup_keys.setdefault(id(data), []).append((key, first[key], line))
            else:
                first[key] = line
    data.update(value)


def _construct_seq(loader: LineLoader, node: SequenceNode):
    data: list = []
    loader.seq_lines[id(data)] = node
    yield data
    data.extend(loader.construct_sequence(node))


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)

_PAIR = re.compile(rb"[\[{][\]}]")
_BRACKETS_DELETE = bytes(b for b in range(256) if b not in b"[]{}")
_COMPACT_RUN = re.compile(rb"[ ?-]{1000}")


def _may_be_deep(data: bytes) -> bool:
    """False when cheap byte scans prove the nesting stays under about 4000 levels."""
    brackets = data.translate(None, _BRACKETS_DELETE)
    passes = 0
    while brackets:
        shorter = _PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):
            break
        if passes == 64 or len(brackets) - len(shorter) < len(brackets) // 8:
            return True  # peeling pairs is not getting far: let the exact check decide
        brackets, passes = shorter, passes + 1
    flow = passes + brackets.count(b"[") + brackets.count(b"{")
    # Each block level needs a deeper column, reached by indentation or a run of `- ` / `? ` indicators:
    # without a 1000-character run of those, block nesting stays under about 2000 levels.
    return flow > 2000 or _COMPACT_RUN.search(data) is not None


def read(data: bytes, text: str, path: str, problems: Problems) -> Doc | None:
    """Roadmap text -> Doc through libyaml, or None after recording the problem."""
    try:
        if _may_be_deep(data):  # libyaml's C composer recurses: keep it far from the end of the C stack
            deep = _too_deep_at(text)
            if deep is not None:
                problems.error(f"nesting deeper than {MAX_DEPTH} levels", path, deep)
                return None
        loader = LineLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                problems.error("empty roadmap: expected a mapping with `tasks:` or `epics:`", path, 1)
                return None
            bad = _check_nodes(node)
            if bad is not None:
                problems.error(bad[0], path, bad[1])
                return None
            value = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        problems.error(_yaml_message(e, text), path, e.problem_mark.line + 1 if e.problem_mark else None)
        return None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        problems.error(f"invalid YAML: character {e.character!r} is not allowed ({e.reason})", path, line)
        return None
    except yaml.YAMLError as e:
        problems.error(f"invalid YAML: {' '.join(str(e).split())}", path)
        return None
    return Doc(value, loader.map_lines, loader.seq_lines, loader.dup_keys)


def _too_deep_at(text: str) -> int | None:
    """Line where the event stream nests deeper than MAX_DEPTH, or None. libyaml's parser does not recurse."""
    loader = _BaseLoader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    finally:
        loader.dispose()
    return None


def _check_nodes(root) -> tuple[str, int | None] | None:
    """Refuse recursive aliases, documents that aliases blow up ("billion laughs") and deep nesting."""
    state: dict[int, int] = {id(root): 1}  # node id -> 1 on the current path, 2 finished
    height: dict[int, int] = {}
    size: dict[int, int] = {}

    def kids(node):
        if isinstance(node, SequenceNode):
            return node.value
        if isinstance(node, MappingNode):
            return [n for pair in node.value for n in pair]
        return ()

    stack = [(root, iter(kids(root)))]
    while stack:
        node, it = stack[-1]
        for child in it:
            s = state.get(id(child))
            if s == 1:
                return "recursive alias (a value contains itself)", child.start_mark.line + 1
            if s is None:
                state[id(child)] = 1
                stack.append((child, iter(kids(child))))
                break
        else:
            stack.pop()
            children = kids(node)
            h = 1 + max((height[id(c)] for c in children), default=0)
            if h > MAX_DEPTH + 1:
                return f"nesting deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
            height[id(node)] = h
            n = size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if n > 10 * len(state) + 100_000:
                message = f"aliases expand this value to {n} values, from {len(state)} written; refusing"
                return f"{message} (a 'billion laughs' document?)", node.start_mark.line + 1
            state[id(node)] = 2
    return None


def _yaml_message(e: yaml.MarkedYAMLError, text: str) -> str:
    problem = " ".join((e.problem or str(e)).split())
    mark = e.problem_mark
    msg = f"invalid YAML: {problem}"
    if mark is not None:
        msg += f" (column {mark.column + 1})"
    if isinstance(e, ConstructorError) and "could not determine a constructor" in problem:
        tag = re.search(r"'([^']*)'", problem)
        tag = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "?"
        msg = f"unsupported YAML tag `{tag}`: roadmaps are read safely and tags that build objects are refused"
    elif "cannot start any token" in problem and mark is not None:
        lines = text.split("\n", mark.line + 1)
        ch = lines[mark.line][mark.column : mark.column + 1] if mark.line < len(lines) else ""
        if ch:
            msg += f"; a plain value cannot start with {ch!r}: quote the value"
    elif e.context and e.context_mark is not None and e.context_mark.line != getattr(mark, "line", None):
        msg += f"; {' '.join(e.context.split())} at line {e.context_mark.line + 1}"
    return msg
