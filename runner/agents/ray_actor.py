"""The Ray actor side of the Ray backend: one agent, running on some node of the cluster.

    AgentActor (one process on a node)
      run(msg) ──▶ run_attempt_pipeline() (runner.agents.pipeline: worktree, CLI output, checks, as a
      │           local agent runs it) ─▶ task (own session); the log is the driver's path on the driver's
      │           node, a node-local file elsewhere (returned with the result, in `Done`)
      started(task, attempt) answers once the task's process is up; cancel() stops it
      watch() never returns: its ref fails when the actor dies, which is how the driver sees a death
      a watchdog outside the actor kills every process carrying its token once the actor is gone

The driver side (runner.agents.ray_backend) creates these actors and turns their calls into the
messages of the backend interface. Imported by the driver only; Ray imports it on every node.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace

from runner.agents.agent import PR_SET_CHILD_SUBREAPER, prctl, reap_orphans
from runner.agents.messages import Cancel, Started, TaskMessage, TaskResult
from runner.model import record

AGENT_MARK = "WVO_RAY_AGENT"  # the actor's token, in the environment of everything it starts

_INLINE_LOG = 1 << 20  # a log up to this size comes back with the result; a larger one in chunks

@record(frozen=True)
class Done:
    """Actor -> driver: how an attempt ended, and its log when the log is not on the driver's node."""

    result: TaskResult
    node_log: str | None = None  # the log's path on its node, when that is not the driver's node
    data: bytes | None = None  # the whole log, when it is small
    size: int = 0
    refused: str | None = None  # the attempt asked for what this node cannot do; the run stops (exit 2)


# -- the actor (runs on a node) ------------------------------------------------------------------------


class _Attempt:
    """One attempt inside the actor, shared by its run() and started() calls, which Ray may run in either order."""

    def __init__(self):
        import multiprocessing

        self.cancel_r, self.cancel_w = multiprocessing.Pipe(duplex=False)
        self.started: Started | None = None
        self.begun = threading.Event()  # set once Started is known or the attempt is over
        self.cancelled: Cancel | None = None
        self.users = 2  # run() and started(); the last one to finish forgets the attempt


class AgentActor:
    """One agent. Methods run on the actor's threads: run() holds one, watch() another for life."""

    def __init__(self, agent_id: str, role: str, driver_node: str | None, cwd: str | None, node_logs: str | None):
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.remote = self.node != driver_node  # the driver's paths and pids mean nothing here
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        # The machine's temporary folder is everyone's: the default folder is the user's own (by uid).
        self.node_logs = node_logs or os.path.join(tempfile.gettempdir(), f"wvo-batch-logs-{os.geteuid()}")
        self.token = uuid.uuid4().hex
        from runner.coding.gitenv import environment, points_at_repository  # (invariant 7)

        self.base_env = dict(environment(_node_env()), WVO_AGENT_ID=agent_id, WVO_AGENT_ROLE=role, **{AGENT_MARK: self.token})
        for name in [k for k in os.environ if points_at_repository(k)]:  # a `call:` runs in this process
            del os.environ[name]
        self.lock = threading.Lock()
        self.attempts: dict[tuple[str, int], _Attempt] = {}  # (task id, attempt) -> in flight; under lock
        self.early_cancel: tuple[tuple[str, int], Cancel] | None = None  # a Cancel that came before its run()
        self.forever = threading.Event()
        self.watchdog = _start_watchdog(self.token)  # before we become a subreaper: it must not be our child
        _set_subreaper()

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": self.node, "ip": ray.util.get_node_ip_address(), "token": self.token}

    def watch(self) -> None:
        """Never returns: its ref fails when the actor dies, which is how the driver sees a death."""
        self.forever.wait()

    def _attempt(self, key: tuple[str, int]) -> _Attempt:
        with self.lock:
            att = self.attempts.get(key)
            if att is None:
                att = self.attempts[key] = _Attempt()
                if self.early_cancel and self.early_cancel[0] == key:
                    att.cancelled = self.early_cancel[1]
                self.early_cancel = None
            return att

    def _done_with(self, key: tuple[str, int], att: _Attempt) -> None:
        with self.lock:
            att.users -= 1
            if att.users == 0:
                del self.attempts[key]
                att.cancel_r.close()
                att.cancel_w.close()

    def started(self, task_id: str, attempt: int) -> Started | None:
        """Returns once the attempt's process is up (its Started) or the attempt is over (None)."""
        key = (task_id, attempt)
        att = self._attempt(key)
        att.begun.wait()
        self._done_with(key, att)
        return att.started

    def run(self, msg: TaskMessage) -> Done:
        from runner.agents.pipeline import run_attempt_pipeline

        key = (msg.task_id, msg.attempt)
        att = self._attempt(key)
        refused = _cannot_run_here(msg)
        node_log = None
        if refused is None and self.remote:
            try:
                node_log = _node_log_path(self.node_logs, msg.log_path)
            except OSError as exc:
                import socket

                refused = (f"task {msg.task_id}: node {socket.gethostname()} cannot keep its log in {exc.filename}: "
                           f"{exc.strerror or exc} (WVO_RAY_NODE_LOGS gives another folder)")
        if refused is not None:
            att.begun.set()
            self._done_with(key, att)
            now = time.time()
            return Done(TaskResult(msg.task_id, msg.attempt, "setup_failed", None, now, now, error=refused, log=False),
                        refused=refused)
        if node_log is not None:
            msg = replace(msg, log_path=node_log)
        try:
            if att.cancelled is not None:
                now = time.time()
                result = TaskResult(msg.task_id, msg.attempt, "interrupted", None, now, now, error="interrupted")
            else:
                result = run_attempt_pipeline(msg, _Channel(self, att), self.base_env)
        finally:
            att.begun.set()
            self._done_with(key, att)
            reap_orphans()
        if node_log is None:
            return Done(result)
        try:
            size = os.path.getsize(node_log)
        except OSError:
            return Done(result, node_log)
        data = _read(node_log, 0, size) if size <= _INLINE_LOG else None
        return Done(result, node_log, data, size)

    def cancel(self, task_id: str, attempt: int, grace: float) -> None:
        """Stop the attempt: TERM its process tree, KILL after grace (a callable cannot be stopped)."""
        key = (task_id, attempt)
        with self.lock:
            att = self.attempts.get(key)
            if att is None:  # its run() has not begun (or is over: then the next run() clears this)
                self.early_cancel = (key, Cancel(grace))
                return
            att.cancelled = Cancel(grace)
            att.cancel_w.send(att.cancelled)

    def read_log(self, path: str, offset: int, size: int) -> bytes:
        return _read(path, offset, size)

    def terminate(self, grace: float) -> None:
        """TERM every process this agent started, KILL after grace; the driver then has Ray end the actor."""
        _kill_descendants(grace)


class _Channel:
    """What run_attempt talks to: Started goes to the waiting started() call, Cancel comes from cancel()."""

    def __init__(self, actor: AgentActor, att: _Attempt):
        self._actor = actor
        self._att = att

    def send(self, obj) -> None:
        if isinstance(obj, Started):
            self._att.started = replace(obj, pid=None) if self._actor.remote else obj
            self._att.begun.set()

    def recv(self):
        return self._att.cancel_r.recv()

    def fileno(self) -> int:
        return self._att.cancel_r.fileno()

    def poll(self, timeout=0.0):
        return self._att.cancel_r.poll(timeout)


def _cannot_run_here(msg: TaskMessage) -> str | None:
    """Why this node cannot run the attempt as asked (a worktree of a repository it cannot reach), or None.

    Never run it some other way: in the node's own folder, a worktree task would write into whatever
    is there, its checks would pass on the wrong files, and nothing would land.
    """
    w = msg.workspace
    if w is None:
        return None
    import socket

    repo, state_dir = w.get("repo") or "", w.get("state_dir") or ""
    if not os.path.isdir(repo) or not os.path.isfile(os.path.join(state_dir, "workspaces.jsonl")):
        return (f"task {msg.task_id}: workspace: worktree needs the repository {repo} and the state dir on every "
                f"Ray node; node {socket.gethostname()} cannot reach them (run it with --backend local)")
    return None


def _node_env() -> dict[str, str]:
    """The environment the node was started with: Ray adds its own (OMP_NUM_THREADS=1, ...) to workers."""
    import psutil

    try:
        return dict(psutil.Process(int(os.environ["RAY_RAYLET_PID"])).environ())
    except (KeyError, ValueError, psutil.Error):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        if env.get("PYTHONBREAKPOINT", "").startswith("ray."):
            del env["PYTHONBREAKPOINT"]
        return env


def _node_log_path(root: str, driver_path: str) -> str:
    """<root>/<state dir name>/<run folder>/<file>: the driver's layout, on this node."""
    parts = os.path.normpath(driver_path).split(os.sep)  # [..., state dir, "runs", run folder, "logs", file]
    tail = [parts[-5], parts[-3], parts[-1]] if len(parts) >= 5 else parts[-1:]
    folder = root
    _private_folder(folder, own_symlink=True)  # a root the user gave may be a symlink of theirs
    for name in tail[:-1]:
        folder = os.path.join(folder, name)
        _private_folder(folder)
    return os.path.join(folder, tail[-1])


def _private_folder(path: str, own_symlink: bool = False) -> None:
    """A folder of ours alone (0700), made or found; never another user's, nor reached through a symlink
    (unless `own_symlink`: one of ours, to a folder of ours). Raises OSError naming it."""
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if own_symlink and stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid():
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(errno.EPERM, "not a folder of this user's", path)
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def _read(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _set_subreaper() -> None:
    """Keep a task's daemonised grandchildren our descendants, so terminate() finds them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def _kill_descendants(grace: float) -> None:
    """TERM every process below this one, KILL those alive after grace (none is reaped: run() may wait on one)."""
    from runner.agents.kill import descendants, kill_tree

    kill_tree(None, grace, also=descendants(os.getpid()))


def reap_agent(token: str, grace: float) -> int:
    """On a dead actor's node (a Ray task of its own): TERM every process that carries the actor's token, KILL
    what outlives grace, and return only when none is left; returns how many there were.

    The watchdog does the same on its own, but nobody can wait for it: the driver waits for this before it
    reports the death, so the attempt's reservation and leases are free only once its processes are gone.
    """
    from runner.agents.kill import kill_tree, marked

    found: set[int] = set()
    for _ in range(20):  # what was forked while we killed carries the token too
        left = [p for p in marked(AGENT_MARK, token) if p != os.getpid()]
        if not left:
            break
        kill_tree(None, 0.0 if found else grace, also=left)
        found.update(left)
    return len(found)


# The watchdog: a small process, not a child of the actor (Ray kills a dead worker's children, not
# their descendants), holding the read end of a pipe from the actor. However the actor dies (SIGKILL,
# OOM, its raylet gone), the pipe reads EOF and the watchdog kills every process that carries the
# actor's token in its environment: its tasks' whole trees, also the parts that left their session.
_WATCHDOG = r"""
import os, signal, sys, time
if os.fork():
    os._exit(0)
mark = ("WVO_RAY_AGENT=" + sys.argv[1]).encode() + b"\0"
while sys.stdin.buffer.read(1):
    pass
def marked():
    me, out = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    if mark in f.read():
                        out.append(int(name))
            except OSError:
                pass
    return out
for sig, pause in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 0.0)):
    pids = marked()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    if pids and pause:
        time.sleep(pause)
"""


def _start_watchdog(token: str):
    """Start the watchdog (double-forked, so it is nobody's child here); returns the pipe to it."""
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", _WATCHDOG, token],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    proc.wait()  # the intermediate exits at once; the watchdog lives on with the pipe's read end
    return proc.stdin
