"""The manager <-> agent channel: pickled messages in length-prefixed frames over two pipes.

What multiprocessing.Pipe gives, without importing multiprocessing (~18 ms of every start-up):
send(obj), recv() (EOFError once the other side is gone), poll(timeout) and fileno() for waiting.
Both ends are made before the fork; each process closes the two descriptors that are not its own.
"""

from __future__ import annotations

import os
import pickle
import select
import struct

_HEADER = struct.Struct("!Q")


class Channel:
    """One end: reads from one pipe, writes to the other."""

    def __init__(self, read_fd: int, write_fd: int):
        self._r = read_fd
        self._w = write_fd
        self._closed = False

    def fileno(self) -> int:
        """The descriptor that turns readable when a message (or EOF) arrives."""
        return self._r

    def fds(self) -> tuple[int, int]:
        return self._r, self._w

    def send(self, obj) -> None:
        """Raises OSError (BrokenPipeError) once the other side is gone."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self._w, view):]

    def recv(self):
        """The next message; raises EOFError once the other side is gone."""
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        return pickle.loads(self._read(size))

    def _read(self, size: int) -> bytes:
        chunk = os.read(self._r, size)
        if len(chunk) == size:
            return chunk
        buf = bytearray(chunk)
        while len(buf) < size:
            if not chunk:
                raise EOFError
            chunk = os.read(self._r, size - len(buf))
            buf += chunk
        return bytes(buf)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True when recv() would not block (a message, or EOF)."""
        return bool(wait_readable([self._r], timeout))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self._r, self._w):
                try:
                    os.close(fd)
                except OSError:
                    pass


def pair() -> tuple[Channel, Channel]:
    """Two connected ends; their descriptors are not inherited by exec'd programs."""
    a_r, b_w = os.pipe()
    b_r, a_w = os.pipe()
    return Channel(a_r, a_w), Channel(b_r, b_w)


def wait_readable(objects: list, timeout: float | None) -> list:
    """Those of objects (descriptors, or anything with fileno()) that are readable, within timeout."""
    poller = select.poll()
    by_fd = {}
    for obj in objects:
        fd = obj if isinstance(obj, int) else obj.fileno()
        by_fd[fd] = obj
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [by_fd[fd] for fd, _ in poller.poll(ms)]
