"""A chunk's finished results, kept in memory shared with the manager until the chunk is reported.

An agent that dies mid-chunk (SIGKILL, OOM, killed as hung) has finished some of the chunk's tasks
without reporting them; they must not run again. So each result is written here as soon as its
task ends (a pickle and a copy, ~1 µs: no system call), and the manager reads what is here when it
sees the agent's death. A plain result is kept as its row (runner.agents.messages.BatchResult), any
other as the TaskResult itself. Layout: [u32 bytes used][u32 size][pickle]...; the count is written last,
and the manager reads only after the agent is dead, so a half-written record is never seen.
"""

from __future__ import annotations

import pickle
import struct

from runner.agents.messages import plain_result

SIZE = 1 << 18  # bytes per agent; a chunk whose results do not fit ends early (the rest is given back)
_U32 = struct.Struct("I")


class Outbox:
    """The agent's side: clear() at a chunk's start, add() each result; False when it does not fit."""

    def __init__(self, buf):
        self._buf = buf  # a shared mmap of SIZE bytes, or None (then nothing is kept)
        self._used = 0

    def clear(self) -> None:
        if self._buf is not None and self._used:
            self._used = 0
            _U32.pack_into(self._buf, 0, 0)

    def add(self, result) -> bool:
        """result: a TaskResult, or a plain one's row."""
        if self._buf is None:
            return False
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        at = _U32.size + self._used
        if at + _U32.size + len(data) > len(self._buf):
            return False
        _U32.pack_into(self._buf, at, len(data))
        self._buf[at + _U32.size : at + _U32.size + len(data)] = data
        self._used += _U32.size + len(data)
        _U32.pack_into(self._buf, 0, self._used)
        return True


def read(buf) -> list:
    """The results a dead agent kept (the manager's side); [] when none, or the bytes make no sense."""
    try:
        (used,) = _U32.unpack_from(buf, 0)
        out, at, end = [], _U32.size, _U32.size + used
        while at < end:
            (size,) = _U32.unpack_from(buf, at)
            at += _U32.size
            item = pickle.loads(buf[at : at + size])
            out.append(plain_result(item) if type(item) is tuple else item)
            at += size
        return out
    except Exception:  # noqa: BLE001 - a dying agent's memory is evidence, not trusted input for a crash
        return []
