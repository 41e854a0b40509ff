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
_CHUNK = 1 << 16  # bytes read at once by recv_ready


class Channel:
    """One end: reads from one pipe, writes to the other."""

    def __init__(self, read_fd: int, write_fd: int):
        self._r = read_fd
        self._w = write_fd
        self._closed = False
        self._pending = b""  # bytes read past the last whole frame (recv_ready)
        self._poller = None  # a select.poll on the read end, made on the first poll(0)

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

    def recv_ready(self) -> tuple[list, bool]:
        """Every message that has arrived, read in one go: (messages, True when the other side is gone).

        Call it when fileno() is readable. A frame the other side is still writing is waited for.
        """
        data = os.read(self._r, _CHUNK)
        if not data:
            return [], True
        buf = self._pending + data if self._pending else data
        messages, pos, end = [], 0, len(buf)
        while end - pos >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, pos)
            if end - pos - _HEADER.size < size:
                break
            pos += _HEADER.size
            messages.append(pickle.loads(buf[pos : pos + size]))
            pos += size
        self._pending = bytes(buf[pos:])
        if self._pending:  # the rest of a frame is on its way: the writer is in the middle of it
            try:
                (size,) = _HEADER.unpack(self._read(_HEADER.size))
                messages.append(pickle.loads(self._read(size)))
            except EOFError:
                return messages, True
        return messages, False

    def _read(self, size: int) -> bytes:
        """Exactly size bytes, the buffered ones first; raises EOFError when the pipe ends before."""
        head = b""
        if self._pending:
            head, self._pending = self._pending[:size], self._pending[size:]
            if len(head) == size:
                return head
        buf = bytearray(head)
        while len(buf) < size:
            chunk = os.read(self._r, size - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True when recv() would not block (a message, or EOF)."""
        if len(self._pending) >= _HEADER.size:
            return True
        if timeout == 0:  # between a chunk's quick tasks: one system call, no poll object built each time
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self._r, select.POLLIN)
            return bool(self._poller.poll(0))
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
