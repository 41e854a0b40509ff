"""Roadmap bytes -> Doc: the fast reader (yamlfast) for the common subset, libyaml (yamllib) for everything else.

yamllib, and with it PyYAML, is imported only when the fast reader bails.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of start-up

from runner.roadmap.yamlfast import MAX_DEPTH, Bail, Doc, FastReader, fast_ok

if TYPE_CHECKING:
    from runner.roadmap.check import Problems


def parse_yaml(data: bytes, path: str, problems: Problems) -> Doc | None:
    """YAML bytes -> Doc, or None after recording the problem. Bounded in time and memory."""
    nul = data.find(b"\x00")
    if nul >= 0:
        problems.error("binary file (contains NUL bytes), not YAML text", path, data.count(b"\n", 0, nul) + 1)
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        problems.error(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} cannot be decoded; save the file as UTF-8", path, line
        )
        return None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        if fast_ok(data, text):
            try:
                return FastReader(text).read()
            except (Bail, IndexError):
                pass
        from runner.roadmap import yamllib

        return yamllib.read(data, text, path, problems)
    except RecursionError:
        problems.error(f"nesting too deep (more than {MAX_DEPTH} levels)", path)
    except MemoryError:
        problems.error("out of memory while reading the file", path)
    except Exception as e:  # a last guard: a bad file must give a problem, never a traceback
        problems.error(f"cannot read YAML: {type(e).__name__}: {' '.join(str(e).split())}", path)
    return None
