"""Agents as Ray actors: one process per agent on some node of a Ray cluster.

    wvo-batch (the Ray driver)                                  a node of the cluster
    Run loop ── send(TaskMessage) ──▶ actor.run(msg) ───────────▶ AgentActor (one process)
       ▲                              actor.started(task, attempt)   run_attempt() ─▶ task (own session)
       │                                                             log: the driver's path on the
       │                                                             driver's node, a node-local file
       │                                                             elsewhere (returned with the result)
       └── wait(): poll [self-pipe, wake fd] ◀── queue ◀── ObjectRef futures: Started, result, death

This module is the driver side; the actor is runner.agents.ray_actor. Scheduling, reservations,
the ledger and telemetry stay in the driver, behind the interface of local.LocalBackend. Each actor keeps one call pending for its whole life (`watch`), so its death —
SIGKILL, OOM, its node lost — is seen at once, as the local backend sees a process sentinel.
Results reach the manager in order: an attempt's Started, then its result, then the agent's death.
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
import time

from runner.agents.backend import AgentGone, AgentReady
from runner.agents.kill import is_stopped
from runner.agents.messages import Cancel, TaskMessage
from runner.agents.ray_actor import AgentActor, Done, reap_agent
from runner.model import record

log = logging.getLogger(__name__)

INSTALL_HINT = "--backend ray needs Ray: pip install 'wvo-batch[ray]' (or make install-ray)"
ROLE_RESOURCE = "wvo-{role}"  # a custom resource a node may declare to host agents of that role
_CHUNK = 8 << 20
_PENDING_WARN_S = 30.0  # an agent not placed after this long is reported once in the log
_KILL_FALLBACK_S = 3.0  # an actor that has not ended this long after terminate() is killed by Ray
_BECAUSE = re.compile(r"actor (?:is dead|died) because (.+?)\.(?:\s|$)")  # in Ray's ActorDiedError text
_CLEAN_EXIT = "exit code 0"  # what a stopped or retired agent's end reads as, as with local agents
_REAP_WAIT_S = 30.0  # beyond the grace: how long a dead actor's processes may take to go before its death is reported


@record
class _Agent:
    """The driver's record of one actor. Changed under RayBackend._lock (Ray's callback threads too)."""

    id: str
    role: str
    handle: object
    created: float  # monotonic
    pid: int | None = None  # the actor's pid, on its node
    node: str | None = None  # Ray node id
    ip: str | None = None
    token: str | None = None  # the mark in the environment of every process it starts (WVO_RAY_AGENT)
    msg: TaskMessage | None = None  # the attempt in flight
    reap: float | None = None  # it died during an attempt: the grace for killing what that attempt left
    started_done: bool = False  # its started() call has answered
    held: object = None  # its result, held until started() has answered (Started comes first)
    fetching: bool = False  # its log is being fetched in chunks
    dead: str | None = None  # why it ended, once known
    ending: str | None = None  # set when we end it: how its end reads ("killed", _CLEAN_EXIT)
    reported: bool = False  # AgentGone has been queued
    warned: bool = False
    timer: threading.Timer | None = None  # Ray's kill, should terminate() not end it in time


class RayBackend:
    """Agents as Ray actors; the interface of local.LocalBackend."""

    name = "ray"

    def __init__(self, address: str | None = None, node_logs: str | None = None):
        """Join (or start) Ray; raises UsageError when Ray is missing or the cluster cannot be reached."""
        from runner.errors import UsageError

        try:
            import ray
        except ImportError:
            raise UsageError(INSTALL_HINT) from None
        self._ray = ray
        from runner.agents.watchdog import Watchdog, new_token

        # Before Ray's threads start (it forks). The landing's checks run here, in sessions of their own:
        # should the driver die, it kills them (invariant 5), as the local backend's does.
        self._watchdog = Watchdog(new_token())
        _quiet_driver()
        address = address or os.environ.get("WVO_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or "local"
        if address.lower() == "none":
            address = "local"
        if not ray.is_initialized():  # else: tests, an embedding program, or an earlier batch set Ray up
            try:
                ray.init(
                    address=address,  # "local": a new instance of our own, shut down when we exit (or die)
                    include_dashboard=False if address == "local" else None,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean the same to the user
                self._watchdog.stop()
                raise UsageError(f"--ray-address {address}: cannot join the Ray cluster: {exc}") from None
        self.address = address
        from ray.util.client import ray as client

        self._driver_node = None if client.is_connected() else ray.get_runtime_context().get_node_id()
        self._node_logs = node_logs or os.environ.get("WVO_RAY_NODE_LOGS")
        self._actor_class = ray.remote(AgentActor)
        self._reaper = ray.remote(num_cpus=0, max_retries=0)(reap_agent)
        self._lock = threading.Lock()
        self._agents: dict[str, _Agent] = {}  # agent id -> record, until its death is reported
        self._out: list[tuple[str, object]] = []  # events for the manager, in order; under _lock
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._poll = select.poll()
        self._poll.register(self._wake_r, select.POLLIN)
        self._extra: set[int] = set()
        self._closed = False
        self.nodes: dict[str, str] = {}  # agent id -> node id it ran on (kept after it ends)
        self.logs: dict[tuple[str, int], str] = {}  # (task id, attempt) -> "ip:path" of a log kept on another node
        self._refused: str | None = None  # an agent could not run a task as asked: wait() raises it once (exit 2)

    # -- the interface --------------------------------------------------------------------------------

    def start(self, agent_id: str, role: str) -> None:
        """Create the agent's actor; Ray places it where the cluster has room. Returns no pid: it is not up yet."""
        options = dict(max_concurrency=6, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD")
        resource = ROLE_RESOURCE.format(role=role)
        units = self._ray.cluster_resources().get(resource)
        if units is not None:
            # The role's units place it; without num_cpus=0 Ray would also hold a CPU for the actor's life.
            options.update(resources={resource: 1}, num_cpus=0)
            wanted = 1 + sum(1 for a in self._agents.values() if a.role == role and not a.reported)
            if wanted > units:
                log.warning(
                    "agent %s waits for room: the cluster offers %g %s for %d agents", agent_id, units, resource, wanted
                )
        actor = self._actor_class.options(**options)
        handle = actor.remote(agent_id, role, self._driver_node, os.getcwd(), self._node_logs)
        agent = _Agent(agent_id, role, handle, time.monotonic())
        with self._lock:
            self._agents[agent_id] = agent
        self._on_done(handle.info.remote(), lambda value, exc: self._on_info(agent, value, exc))
        self._on_done(handle.watch.remote(), lambda value, exc: self._on_death(agent, exc))
        return None

    def task_pid(self, agent_id: str) -> int | None:
        """Ray agents send every Started at once: the manager's table already has the pid."""
        return None

    def pid(self, agent_id: str) -> int | None:
        """The actor's pid on its node, once it is up."""
        agent = self._agents.get(agent_id)
        return agent.pid if agent else None

    def send(self, agent_id: str, msg) -> bool:
        """Hand a task to an agent, or a Cancel for its task; False when it is already gone."""
        agent = self._agents.get(agent_id)
        if agent is None or agent.dead or agent.ending:
            return False
        if msg is None:
            self.retire(agent_id)
            return True
        if isinstance(msg, Cancel):
            current = agent.msg
            if current is not None:
                agent.handle.cancel.remote(current.task_id, current.attempt, msg.grace)
            return True
        with self._lock:
            agent.msg, agent.started_done, agent.held = msg, False, None
        started = agent.handle.started.remote(msg.task_id, msg.attempt)
        self._on_done(started, lambda v, e: self._on_started(agent, msg, v, e))
        self._on_done(agent.handle.run.remote(msg), lambda v, e: self._on_result(agent, msg, v, e))
        return True

    def wait(self, timeout: float | None, extra: list[int] | None = None) -> tuple[list[tuple[str, object]], list]:
        """Block until a message, a death, or an extra fd is ready; returns (events, ready extra fds)."""
        for fd in extra or ():
            if fd not in self._extra:
                self._extra.add(fd)
                self._poll.register(fd, select.POLLIN)
        if self._out:
            timeout = 0
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        ready = self._poll.poll(ms)  # PEP 475: retried on EINTR with the time left; the wake-up fd says "signal"
        extras = [fd for fd, _ in ready if fd in self._extra]
        try:
            os.read(self._wake_r, 65536)
        except BlockingIOError:
            pass
        with self._lock:
            events, self._out = self._out, []
            refused = self._refused
            if refused:
                self._refused = ""  # said once: stop() waits through here too
        if refused:
            from runner.errors import UsageError

            raise UsageError(refused)
        self._warn_pending()
        return events, extras

    def spared_env(self) -> dict[str, str]:
        """The environment for a process the driver itself starts (a landing's check): killed should it die."""
        from runner.agents.watchdog import MARK

        outer = os.environ.get(MARK)
        return {MARK: f"{outer}:{self._watchdog.token}" if outer else self._watchdog.token}

    def stopped(self, agent_id: str) -> bool:
        """True when the agent's actor is stopped (SIGSTOP, or traced); only an actor on the driver's node is
        looked at (/proc): Ray's health checks are of nodes, and a stopped actor elsewhere is not found."""
        agent = self._agents.get(agent_id)
        if agent is None or agent.pid is None or agent.dead or agent.node != self._driver_node:
            return False
        return is_stopped(agent.pid)

    def kill(self, agent_id: str) -> None:
        """Kill an agent and its task's process tree on its node; its death is reported by wait()."""
        self._end(agent_id, "killed", grace=0.2)

    def retire(self, agent_id: str) -> None:
        """Ask an idle agent to exit; its exit is reported by wait()."""
        self._end(agent_id, _CLEAN_EXIT, grace=1.0)

    def agents(self) -> list[str]:
        return [a.id for a in self._agents.values() if not a.reported]

    def stop(self, timeout: float) -> list[tuple[str, str]]:
        """End every agent (TERM its tasks' trees, KILL after a grace), waiting up to timeout for them to go.

        Returns (agent id, how it ended) for each agent whose end wait() has not returned.
        """
        with self._lock:
            pending, self._out = self._out, []
        ended = [(m.agent_id, m.reason) for _, m in pending if isinstance(m, AgentGone)]
        live = [a for a in self._agents.values() if not a.reported]
        for agent in live:
            self._end(agent.id, _CLEAN_EXIT, grace=min(1.0, timeout / 2))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(not a.dead for a in live):
            self.wait(max(0.0, deadline - time.monotonic()))
        for agent in live:
            if agent.timer is not None:
                agent.timer.cancel()
            if agent.dead is None:
                self._ray.kill(agent.handle, no_restart=True)
                agent.dead = "killed by Ray: did not stop in time"
            ended.append((agent.id, agent.dead))
        with self._lock:
            self._closed = True
            self._out.clear()
        self._poll.unregister(self._wake_r)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._watchdog.stop()
        return ended

    def log_location(self, task_id: str, attempt: int) -> str | None:
        """Where an attempt's log is kept on the node that ran it, when that is not the driver's node."""
        return self.logs.get((task_id, attempt))

    # -- what Ray's callback threads do -----------------------------------------------------------------

    def _on_done(self, ref, callback) -> None:
        def done(future):
            try:
                value, exc = future.result(), None
            except BaseException as e:  # noqa: BLE001 - the actor's death and our own bugs alike end up as a death
                value, exc = None, e
            try:
                callback(value, exc)
            except Exception:  # a bug here must not vanish inside Ray's thread
                log.exception("ray backend: callback failed")

        ref.future().add_done_callback(done)

    def _emit(self, agent_id: str, msg) -> None:
        """Queue an event for the manager and wake its wait(); caller holds _lock."""
        if self._closed:  # after stop(): the pipe's fd numbers may belong to someone else now
            return
        self._out.append((agent_id, msg))
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _on_info(self, agent: _Agent, info, exc) -> None:
        if exc is not None:
            return  # the watch() call reports the death
        with self._lock:
            agent.pid, agent.node, agent.ip, agent.token = info["pid"], info["node"], info["ip"], info.get("token")
            self.nodes[agent.id] = info["node"]
            if not agent.reported:
                self._emit(agent.id, AgentReady(agent.id, info["pid"], info["node"], info["ip"]))

    def _on_started(self, agent: _Agent, msg: TaskMessage, started, exc) -> None:
        with self._lock:
            if agent.msg is not msg:
                return
            agent.started_done = True
            if started is not None and exc is None and not (agent.dead or agent.ending):
                self._emit(agent.id, started)
            if agent.held is not None:
                self._deliver(agent, msg, agent.held)

    def _on_result(self, agent: _Agent, msg: TaskMessage, done, exc) -> None:
        with self._lock:
            if agent.msg is not msg:
                return
            if exc is not None:  # the actor died during the attempt (or run() itself failed)
                agent.dead = agent.dead or agent.ending or _why(exc)
                agent.msg = None
                agent.reap = msg.grace
                self._report(agent)
                return
            if done.refused is not None:  # nothing ran: the run stops, it is not the task's failure
                if self._refused is None:
                    self._refused = done.refused
                agent.msg = None  # idle again: its death, when stop() ends it, is reported (and wakes wait())
                self._emit(agent.id, None)  # wakes wait()
                return
            if done.node_log is not None:
                self.logs[(msg.task_id, msg.attempt)] = f"{agent.ip or agent.node}:{done.node_log}"
                agent.fetching = done.data is None or len(done.data) < done.size
        if done.node_log is not None:
            if agent.fetching:
                threading.Thread(target=self._fetch_log, args=(agent, msg, done), daemon=True).start()
                return
            _write_log(msg.log_path, done.data or b"", "wb")
        self._finish(agent, msg, done)

    def _fetch_log(self, agent: _Agent, msg: TaskMessage, done: Done) -> None:
        """A large log, fetched from its node in chunks (the actor stays alive after its task ends)."""
        note = None
        try:
            with _open_log(msg.log_path) as f:
                offset = 0
                while offset < done.size:
                    chunk = self._ray.get(agent.handle.read_log.remote(done.node_log, offset, _CHUNK))
                    if not chunk:
                        break
                    f.write(chunk)
                    offset += len(chunk)
        except Exception as exc:  # noqa: BLE001 - the node went away mid-fetch: say where the rest is
            where = f"{agent.ip}:{done.node_log}"
            note = f"\nwvo-batch: log incomplete ({type(exc).__name__}); the full log is on {where}\n"
        if note:
            _write_log(msg.log_path, note.encode(), "ab")
        agent.fetching = False
        self._finish(agent, msg, done)

    def _finish(self, agent: _Agent, msg: TaskMessage, done: Done) -> None:
        with self._lock:
            if agent.started_done:
                self._deliver(agent, msg, done)
            else:
                agent.held = done  # _on_started delivers it after the Started

    def _deliver(self, agent: _Agent, msg: TaskMessage, done: Done) -> None:
        """The attempt's result, then the agent's death if that came meanwhile; caller holds _lock."""
        agent.msg, agent.held = None, None
        if agent.ending != "killed" and not agent.reported:  # a killed agent's outcome is its death
            self._emit(agent.id, done.result)
        if agent.dead:
            self._report(agent)

    def _on_death(self, agent: _Agent, exc) -> None:
        """watch() failed: the actor is gone. With an attempt in flight, its run() call reports it."""
        with self._lock:
            agent.dead = agent.dead or agent.ending or _why(exc)
            if agent.msg is None:
                self._report(agent)

    def _report(self, agent: _Agent) -> None:
        """Queue the agent's death once; make sure a half-dead actor is really gone. Caller holds _lock."""
        if agent.reported:
            return
        agent.reported = True
        gone = AgentGone(agent.id, agent.dead)
        if agent.reap is not None and agent.token and agent.node:
            self._report_when_reaped(agent, gone)  # (invariants 2, 11) what its attempt left still runs
        else:
            self._emit(agent.id, gone)
        if agent.ending is None:
            self._kill_actor(agent)

    def _report_when_reaped(self, agent: _Agent, gone: AgentGone) -> None:
        """Report an actor that died during an attempt once that attempt's processes are gone from its node.

        Its watchdog TERMs them, and KILLs a second later, while the death would free the attempt's
        reservation and leases at once: a retry given the same database name ran beside a part of the
        dead attempt that had left its session and ignored TERM. A node that is gone has nothing left
        running, and the reaper then fails at once.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        grace = agent.reap or 0.0

        def reap():
            try:
                strategy = NodeAffinitySchedulingStrategy(agent.node, soft=False)
                ref = self._reaper.options(scheduling_strategy=strategy).remote(agent.token, grace)
                self._ray.get(ref, timeout=grace + _REAP_WAIT_S)
            except Exception as exc:  # noqa: BLE001 - its node is gone, or Ray shut down meanwhile
                log.debug("reaping %s's processes: %s", agent.id, exc)
            with self._lock:
                self._emit(agent.id, gone)

        threading.Thread(target=reap, daemon=True).start()  # not on Ray's callback thread: it blocks

    def _end(self, agent_id: str, why: str, grace: float) -> None:
        """Have the actor kill its processes (terminate()), then Ray kill the actor; `why` is how its end reads.

        Ray's own kill alone would leave a task's grandchildren that left its session; a terminate()
        that hangs (a callable holding the GIL) is cut short after grace + a margin.
        """
        agent = self._agents.get(agent_id)
        if agent is None or agent.dead or agent.ending:
            return
        agent.ending = why
        once = threading.Lock()

        def kill(*_):
            if once.acquire(blocking=False):
                self._kill_actor(agent)

        self._on_done(agent.handle.terminate.remote(grace), kill)
        agent.timer = threading.Timer(grace + _KILL_FALLBACK_S, kill)
        agent.timer.daemon = True
        agent.timer.start()

    def _kill_actor(self, agent: _Agent) -> None:
        """Ray's kill, on a thread of its own: Ray's callback threads must not block on it."""

        def kill():
            try:
                self._ray.kill(agent.handle, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already gone, or Ray shut down meanwhile
                log.debug("ray.kill(%s): %s", agent.id, exc)

        threading.Thread(target=kill, daemon=True).start()

    def _warn_pending(self) -> None:
        now = time.monotonic()
        for agent in self._agents.values():
            if agent.pid is None and not agent.warned and not agent.dead and now - agent.created > _PENDING_WARN_S:
                agent.warned = True
                log.warning(
                    "agent %s is not placed on the Ray cluster after %.0fs: no node has room for it (resources: %s)",
                    agent.id,
                    now - agent.created,
                    self._ray.available_resources(),
                )


def _why(exc) -> str:
    """A death, in a line, for agent:exited: Ray's "The actor is dead because ..." sentence when it has one."""
    if exc is None:
        return "exited"
    text = str(exc)
    m = _BECAUSE.search(text)
    if m:
        return m.group(1)
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {last[-1][:200] if last else ''}".rstrip(": ")


def _quiet_driver() -> None:
    """Ray's driver prints the cluster's error messages (a worker's death, ...) to stdout, which belongs to
    the display and to --json: send them to the log instead. A private hook; without it Ray just prints."""
    try:
        import ray._private.worker as worker
    except ImportError:
        return
    if hasattr(worker, "print_to_stdstream"):
        worker.print_to_stdstream = _log_ray_lines


def _log_ray_lines(data, ignore_prefix=False) -> None:
    for line in data.get("lines", ()):
        logging.getLogger("ray").debug("(%s) %s", data.get("pid"), line)


def _open_log(path: str, mode: str = "wb"):
    """An attempt's log in the run folder, opened to write ("wb") or append ("ab"): 0600 whatever the umask,
    never through a symlink (OSError)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _write_log(path: str, data: bytes, mode: str) -> None:
    try:
        with _open_log(path, mode) as f:
            f.write(data)
    except OSError as exc:
        log.warning("cannot write the log %s: %s", path, exc)
