"""The agent table and the reservations, served to other processes by a multiprocessing manager.

The manager process owns both and is the only one that changes them, under `lock`. It mutates them
in its own memory (no proxy round trip on the per-task path); a `multiprocessing.managers` server,
running on a thread of the same process, serves a read-only board over an authenticated Unix socket,
so `wvo-batch ROADMAP --status` in another shell reads the same table through a proxy.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from runner.manager.scheduler import InvariantError


@dataclass
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
        self.lock = threading.Lock()
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


class _Board:
    """What the listener serves: a read-only view of the pool."""

    def __init__(self, pool: Pool):
        self._pool = pool

    def snapshot(self) -> dict:
        return self._pool.snapshot()




_SUN_PATH_MAX = 100  # a Unix socket path must fit in sockaddr_un (108 bytes on Linux)


@dataclass
class BoardServer:
    address: str
    key_file: str
    addr_file: str
    _server: object = field(default=None, repr=False)
    _own_dir: str | None = None  # a short private dir made for the socket when the run folder's path is too long

    def close(self) -> None:
        try:
            self._server.listener.close()
        except Exception:  # noqa: BLE001 - closing on the way out; nothing left to do about it
            pass
        for path in (self.address, self.key_file, self.addr_file):
            try:
                os.unlink(path)
            except OSError:
                pass
        if self._own_dir:
            try:
                os.rmdir(self._own_dir)
            except OSError:
                pass


def serve_board(pool: Pool, folder: str) -> BoardServer:
    """Serve the pool's board on a Unix socket in `folder`, keyed by a random secret in a 0600 file."""
    import secrets  # lazily, like the rest of the board: ~10 ms of start-up with tempfile
    import tempfile

    key = secrets.token_bytes(32)
    address = os.path.join(folder, "board.sock")
    own_dir = None
    if len(address) > _SUN_PATH_MAX:
        own_dir = tempfile.mkdtemp(prefix="wvo-")  # mode 0700
        address = os.path.join(own_dir, "board.sock")
    key_file = os.path.join(folder, "board.key")
    addr_file = os.path.join(folder, "board.addr")
    with open(addr_file, "w", encoding="utf-8") as f:
        f.write(address)
    for path in (address, key_file):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.hex().encode())
    from multiprocessing.managers import BaseManager  # lazily: ~35 ms of start-up, paid while tasks run

    board = _Board(pool)

    class _ServeManager(BaseManager):
        pass

    _ServeManager.register("board", callable=lambda: board)
    server = _ServeManager(address=address, authkey=key).get_server()
    server.stop_event = threading.Event()  # serve_forever() would set it; we run only its accepter thread
    threading.Thread(target=server.accepter, name="wvo-board", daemon=True).start()
    return BoardServer(address, key_file, addr_file, server, own_dir)


def read_board(folder: str, key: bytes | None = None) -> dict:
    """Connect to a running manager's board; raises FileNotFoundError / AuthenticationError / OSError."""
    with open(os.path.join(folder, "board.addr"), encoding="utf-8") as f:
        address = f.read().strip()
    if key is None:
        with open(os.path.join(folder, "board.key"), "rb") as f:
            key = bytes.fromhex(f.read().decode())
    from multiprocessing.managers import BaseManager

    class _ClientManager(BaseManager):
        pass

    _ClientManager.register("board")
    manager = _ClientManager(address=address, authkey=key)
    manager.connect()
    return manager.board().snapshot()
