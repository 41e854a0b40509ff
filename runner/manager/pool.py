"""The agent table and the reservations, and the board that shows them to other processes.

The manager process owns both and is the only one that changes them, under `lock`. It mutates them
in its own memory (no proxy round trip on the per-task path); a thread of the same process serves a
read-only snapshot (JSON) over a Unix socket in the run folder, after a challenge-response each way
on a key in a 0600 file, so `wvo-batch ROADMAP --status` in another shell reads the same table.
"""

from __future__ import annotations

import os
import _thread
import time
from dataclasses import field

from runner.errors import InvariantError
from runner.model import record


@record
class AgentRow:
    """One row of the agent table."""

    id: str
    role: str
    pid: int | None = None
    state: str = "idle"  # starting | idle | busy | cooling | retiring
    task: str | None = None
    task_title: str = ""
    since: float = 0.0  # wall-clock time of the last state change
    busy_s: float = 0.0  # seconds spent on tasks so far
    tasks_run: int = 0
    task_pid: int | None = None  # the running task's pid, which is also its process group


class Pool:
    """Agent table + reservation dict; every change goes through reserve() / release() under the lock."""

    def __init__(self):
        self.lock = _thread.allocate_lock()  # threading.Lock, without importing threading at start-up
        self.agents: dict[str, AgentRow] = {}  # agent id -> row; owned by the manager's main thread
        self.reservations: dict[str, str] = {}  # agent id -> task id; owned by the manager's main thread
        self._holder: dict[str, str] = {}  # task id -> agent id (the inverse, to refuse a double reservation)
        self.stats: dict = {}  # queue and progress figures for the board; set by the run loop

    def add(self, agent_id: str, role: str, pid: int | None, state: str = "idle") -> None:
        """A new agent; "starting" until the backend says it is up (it is handed no task before)."""
        with self.lock:
            self.agents[agent_id] = AgentRow(agent_id, role, pid, state=state, since=time.time())

    def remove(self, agent_id: str) -> str | None:
        """The agent is gone; returns the task it held, whose reservation is released."""
        with self.lock:
            task_id = self._release_locked(agent_id)
            self.agents.pop(agent_id, None)
            return task_id

    def reserve(self, agent_id: str, task_id: str, title: str = "") -> None:
        with self.lock:
            row = self.agents.get(agent_id)
            if row is None or row.state != "idle" or agent_id in self.reservations:
                raise InvariantError(f"agent {agent_id} is not idle; refusing to reserve it for {task_id}")
            if task_id in self._holder:
                raise InvariantError(f"task {task_id} is already reserved by {self._holder[task_id]}")
            self.reservations[agent_id] = task_id
            self._holder[task_id] = agent_id
            row.state, row.task, row.task_title, row.since, row.task_pid = "busy", task_id, title, time.time(), None

    def release(self, agent_id: str) -> str | None:
        with self.lock:
            return self._release_locked(agent_id)

    def _release_locked(self, agent_id: str) -> str | None:
        task_id = self.reservations.pop(agent_id, None)
        if task_id is not None:
            self._holder.pop(task_id, None)
        row = self.agents.get(agent_id)
        if row is not None and row.state == "busy":
            now = time.time()
            row.busy_s += now - row.since
            row.tasks_run += 1
            row.state, row.task, row.task_title, row.since, row.task_pid = "idle", None, "", now, None
        return task_id

    def set_task_pid(self, agent_id: str, pid: int | None) -> None:
        row = self.agents.get(agent_id)
        if row is not None:
            row.task_pid = pid

    def set_state(self, agent_id: str, state: str) -> None:
        """idle <-> cooling / retiring: states in which an agent holds no reservation."""
        with self.lock:
            row = self.agents.get(agent_id)
            if row is not None and row.state != "busy":
                row.state, row.since = state, time.time()

    def idle(self) -> list[AgentRow]:
        return [r for r in self.agents.values() if r.state == "idle"]

    def busy_count(self) -> int:
        return len(self.reservations)

    def snapshot(self) -> dict:
        """A plain copy of the board, taken under the lock (what --status receives)."""
        with self.lock:
            return {
                "agents": [vars(r).copy() for r in self.agents.values()],
                "reservations": dict(self.reservations),
                "stats": dict(self.stats),
                "time": time.time(),
            }


_SUN_PATH_MAX = 100  # a Unix socket path must fit in sockaddr_un (108 bytes on Linux)
_HELLO = b"wvo-board 1 "
_PAYLOAD_MAX = 64 << 20  # the largest board a client reads (bytes of JSON)
_SERVE_TIMEOUT_S = 2.0  # a client that does not answer the challenge in time is dropped


@record
class BoardServer:
    """The board's listener: a thread of the manager answering one client at a time."""

    address: str
    key_file: str
    _sock: object = field(default=None, repr=False)
    _dir_fd: int | None = None  # the run folder, held open: the socket is bound and unlinked through it

    def close(self) -> None:
        import socket

        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepter thread out of accept()
        except OSError:
            pass
        self._sock.close()
        for path in (self.address, self.key_file):
            try:
                os.unlink(path)
            except OSError:
                pass
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def serve_board(pool: Pool, folder: str) -> BoardServer:
    """Serve the pool's board on a Unix socket in `folder`, keyed by a random secret in a 0600 file.

    The board travels as JSON, never pickle, and only after both sides proved they hold the key
    (a challenge-response each way: the client proves it first, then the server, over the board's bytes).
    """
    import socket  # lazily, like the rest of the board, paid while tasks run

    key = os.urandom(32)  # what secrets.token_bytes does, without importing secrets (and random, base64...: ~6 ms)
    address = os.path.join(folder, "board.sock")
    key_file = os.path.join(folder, "board.key")
    written = key_file + ".new"
    for path in (address, key_file, written, os.path.join(folder, "board.addr")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.hex().encode())
    # Whole or absent: a --status that came as the run started read the file empty, between its creation and the
    # write, and said the key was corrupted (exit 2) where it waits for a board still to come.
    os.rename(written, key_file)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(_short(address, dir_fd))
        os.chmod(address, 0o600)
        sock.listen(8)
    except OSError:
        sock.close()
        os.close(dir_fd)
        raise
    server = BoardServer(address, key_file, sock, dir_fd)
    import threading

    threading.Thread(target=_accept, args=(sock, pool, key), name="wvo-board", daemon=True).start()
    return server


def _short(address: str, dir_fd: int) -> str:
    """The socket's path as bind()/connect() take it: through /proc/self/fd when the real one is too long."""
    if len(os.fsencode(address)) <= _SUN_PATH_MAX:
        return address
    return f"/proc/self/fd/{dir_fd}/{os.path.basename(address)}"


def _accept(sock, pool: Pool, key: bytes) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return  # closed: the run is ending
        with conn:
            try:
                conn.settimeout(_SERVE_TIMEOUT_S)
                _answer(conn, pool, key)
            except (OSError, ValueError):
                pass  # a client that went away or spoke nonsense: the next one is served


def _answer(conn, pool: Pool, key: bytes) -> None:
    import hmac
    import json
    import secrets

    ours = secrets.token_bytes(32)
    conn.sendall(_HELLO + ours.hex().encode() + b"\n")
    line = _read_line(conn, 200)
    theirs_hex, _, proof_hex = line.decode("ascii").partition(" ")
    theirs = bytes.fromhex(theirs_hex)
    if len(theirs) != 32 or not hmac.compare_digest(bytes.fromhex(proof_hex), _mac(key, b"client", ours, theirs)):
        conn.sendall(b"denied\n")
        return
    payload = json.dumps(pool.snapshot(), default=str, separators=(",", ":")).encode()
    conn.sendall(_mac(key, b"server", ours, theirs, payload).hex().encode() + b"\n" + payload)


def _mac(key: bytes, *parts: bytes) -> bytes:
    import hashlib
    import hmac

    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big") + part)
    return mac.digest()


def _read_line(conn, limit: int) -> bytes:
    """One line from a peer that sent it and now waits for our answer (so nothing follows it)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(limit - len(data) + 1)
        if not chunk:
            raise EOFError("the board closed the connection")
        data += chunk
        if len(data) > limit:
            raise ValueError("a line too long")
    return data[:-1]


class BoardKeyError(Exception):
    """board.key is not what serve_board writes: not ours, not private, or not a key."""


def read_board(folder: str, key: bytes | None = None, timeout: float = 3.0) -> dict:
    """The board of the run whose folder this is; raises FileNotFoundError (no board served),
    BoardKeyError, multiprocessing.AuthenticationError (a side failed to prove it holds the key),
    TimeoutError (no answer in `timeout` s: the manager is stopped or overloaded) or OSError / EOFError."""
    import hmac
    import json
    import secrets
    import socket
    import stat
    import time

    deadline = time.monotonic() + timeout
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if key is None:
            key = _read_key(dir_fd, os.path.join(folder, "board.key"))
        st = os.lstat("board.sock", dir_fd=dir_fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            raise FileNotFoundError(f"{folder}/board.sock is no socket of ours")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(_short(os.path.join(folder, "board.sock"), dir_fd))

            def rest() -> float:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                return left

            conn.settimeout(rest())
            hello = _read_line(conn, 200)
            if not hello.startswith(_HELLO[:-1]):
                raise EOFError("not a board")
            challenge = bytes.fromhex(hello[len(_HELLO):].decode("ascii"))
            ours = secrets.token_bytes(32)
            conn.sendall(ours.hex().encode() + b" " + _mac(key, b"client", challenge, ours).hex().encode() + b"\n")
            chunks, size = [], 0
            while True:  # the answer: a proof line and the board, up to the end of the stream
                conn.settimeout(rest())
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > _PAYLOAD_MAX:
                    raise EOFError("the board is larger than any board")
                chunks.append(chunk)
            proof, _, payload = b"".join(chunks).partition(b"\n")
            if proof == b"denied":
                _auth_error("the run's board refused our key")
            if not hmac.compare_digest(bytes.fromhex(proof.decode("ascii")), _mac(key, b"server", challenge, ours, payload)):
                _auth_error("the board's server did not prove it holds the key")
    except socket.timeout:
        raise TimeoutError from None
    finally:
        os.close(dir_fd)
    return json.loads(payload)


def _read_key(dir_fd: int, path: str) -> bytes:
    import stat

    fd = os.open("board.key", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise BoardKeyError(f"{path}: not a private file of yours (mode 0600); not using it")
        text = os.read(fd, 200).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BoardKeyError(f"{path}: corrupted (not the 64 hex digits of a key); the run must be restarted to serve its board")
    return key


def _auth_error(text: str):
    from multiprocessing import AuthenticationError  # what callers already catch

    raise AuthenticationError(text)
