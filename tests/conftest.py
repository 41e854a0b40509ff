"""Shared fixtures: every test runs with a clean state dir and fails if it leaves a process behind.

The session also keeps the machine's temporary directory clean: whatever the tests (and every process
they start, Ray's included) write through $TMPDIR goes to a folder of the session's own, removed at the
end; files left there outside pytest's tmp_path fail the session. tmp_path itself is kept only for
failed tests (`tmp_path_retention_policy = "failed"`).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_ROADMAPS = ROOT.parent / "shared" / "roadmaps"

# -- the temporary directory --------------------------------------------------------------------------------

LEFT_IN_TMP_LIMIT = 5 << 20  # bytes the suite may leave outside tmp_path before the session fails
SYSTEM_TMP = tempfile.gettempdir()
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", SYSTEM_TMP)  # tmp_path stays where users look for it
if os.environ.get("WVO_TEST_SESSION") == str(os.getpid()):  # imported a second time (as tests.conftest)
    SESSION_TMP = os.environ["TMPDIR"]
else:
    SESSION_TMP = tempfile.mkdtemp(prefix="wvo-tests-")  # short: Ray's socket paths go under it
os.environ["TMPDIR"] = SESSION_TMP
tempfile.tempdir = None  # recomputed from $TMPDIR on next use
os.environ["WVO_TEST_SESSION"] = str(os.getpid())  # every process the suite starts carries it

# Recent Ray versions make a new local instance demand a token: one of the session's own, never the
# user's, given to the session's instance (ray_head) and to every wvo-batch that joins it (the `backend`
# fixture). Set for the whole session, before anything imports Ray: Ray reads it once, at import, so a
# test process that joins that instance as a driver (ray_driver) must have it from the start. Every
# Ray instance a test starts of its own uses it too.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ.get("WVO_TEST_RAY_TOKEN") or secrets.token_hex(32)}
os.environ["WVO_TEST_RAY_TOKEN"] = RAY_AUTH["RAY_AUTH_TOKEN"]  # the same token if imported a second time
os.environ.update(RAY_AUTH)


def _size(folder: str, skip: tuple[str, ...] = ()) -> tuple[int, list[tuple[int, str]]]:
    total, files = 0, []
    for where, dirs, names in os.walk(folder):
        if where == folder:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            path = os.path.join(where, name)
            try:
                n = os.lstat(path).st_size
            except OSError:
                continue
            total += n
            files.append((n, os.path.relpath(path, folder)))
    return total, sorted(files, reverse=True)


@pytest.hookimpl(trylast=True)  # after pytest's own tmp_path clean-up
def pytest_sessionfinish(session, exitstatus):
    session_tag = os.environ["WVO_TEST_SESSION"]
    deadline = time.monotonic() + 10.0  # Ray's helpers take a few seconds to go after its shutdown
    while (left := _processes(descendants=False, WVO_TEST_SESSION=session_tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Ray's session folders (logs, sockets) are expected here; they go with the folder.
    total, files = _size(SESSION_TMP, skip=("ray",))
    shutil.rmtree(SESSION_TMP, ignore_errors=True)
    problems = []
    if left:
        for pid in left:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        problems.append(f"processes of this session outlived it: {left}")
    if total > LEFT_IN_TMP_LIMIT:
        top = ", ".join(f"{name} ({n >> 10} KiB)" for n, name in files[:5])
        problems.append(f"the tests left {total >> 20} MiB in $TMPDIR outside tmp_path: {top}")
    basetemp = session.config._tmp_path_factory._basetemp
    if exitstatus == 0 and basetemp is not None and basetemp.exists():
        problems.append(f"pytest's tmp_path base {basetemp} was kept although every test passed")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for text in problems:
            if reporter is not None:
                reporter.write_line(f"wvo-tests: {text}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_ANCESTORS: set[int] = set()


def _ancestors() -> set[int]:
    """The test process's parents (pytest's launcher, the shell, ...): looked up once, they outlive the session."""
    if not _ANCESTORS:
        _ANCESTORS.update(a.pid for a in psutil.Process().parents())
    return _ANCESTORS


def _processes(descendants: bool = True, **tags: str) -> dict[int, str]:
    """Live processes (no zombies) that descend from this one, or whose environment has one of `tags`
    (NAME=value) wherever they went (any parent, any session): pid -> command line. One pass over /proc,
    two reads a process, no parsing of environments: it runs twice a test."""
    me, ancestors = os.getpid(), _ancestors()
    needles = [f"\0{name}={value}\0".encode() for name, value in tags.items()]
    children: dict[int, list[int]] = {}
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me or pid in ancestors:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state, ppid = f.read().rpartition(b")")[2].split()[:2]
            if state == b"Z":
                continue
            children.setdefault(int(ppid), []).append(pid)
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = b"\0" + f.read() + b"\0"
        except (OSError, ValueError):  # gone, or not ours to read
            continue
        if any(needle in env for needle in needles):
            found.add(pid)
    if descendants:
        stack = [me]
        while stack:
            for pid in children.get(stack.pop(), ()):
                if pid not in found:
                    found.add(pid)
                    stack.append(pid)
    out = {}
    for pid in found:
        try:
            out[pid] = " ".join(psutil.Process(pid).cmdline())[:120]
        except psutil.Error:
            pass
    return out


_test_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def no_leftover_processes(request):
    """Fail the test if any process it started (or a task's orphan, wherever it went) is still alive afterwards.

    Every process a test starts inherits WVO_TEST_ID, unique to the test: a grandchild that started a
    session of its own and was re-parented to PID 1 still carries it. Descendants are checked too, for
    processes that cleared their environment. A test on the `ray` backend starts the session's Ray
    instance first: its daemons belong to the session, not to the test.
    """
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "ray":
        request.getfixturevalue("ray_head")
    session = os.environ.get("WVO_TEST_SESSION")
    test_id = f"{session}-{next(_test_numbers)}"
    os.environ["WVO_TEST_ID"] = test_id
    before = set(_processes(WVO_TEST_SESSION=session))
    yield
    deadline = time.monotonic() + 5.0
    leftovers = {}
    while time.monotonic() < deadline:
        ours = _processes(WVO_TEST_ID=test_id, WVO_TEST_SESSION=session)
        leftovers = {pid: cmd for pid, cmd in ours.items() if pid not in before}
        if not leftovers:
            return
        time.sleep(0.05)  # processes that were just killed need a moment to disappear from /proc
    described = {pid: _describe(pid, cmd) for pid, cmd in leftovers.items()}
    for pid in leftovers:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    pytest.fail(f"test left processes behind: {described}")


def _describe(pid: int, cmd: str) -> str:
    """A leftover as it can be traced back: an exiting process has no command line left, but a name and a parent."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            return f"{cmd or '(no command line)'} [name {p.name()!r}, {p.status()}, parent {p.ppid()}, threads {p.num_threads()}]"
    except psutil.Error as exc:
        return f"{cmd} [{type(exc).__name__}]"


@pytest.fixture
def state_dir(tmp_path) -> Path:
    d = tmp_path / "state"
    return d


def write_roadmap(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def wvo(*args: str, timeout: float = 60, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the wvo-batch command as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )


# -- backends ----------------------------------------------------------------------------------------------

# Holds a local Ray instance for the whole session: prints its GCS address, then waits for its stdin to
# close. Ray's processes go with it (ray.shutdown, and the kernel's parent-death signal if it is killed).
# Holds a local Ray instance for the whole session: leaves the test process's tree first (a fork whose
# parent exits), prints its pid and the GCS address, then waits for its stdin to close. Out of the tree,
# Ray's processes are never re-parented to the test process (a subreaper while a test runs a Run in
# process), so no orphan sweep of a run can take them; Ray's processes go with it (ray.shutdown).
RAY_HEAD = """
import logging, os, sys
if os.fork():
    os._exit(0)
os.setsid()
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
print(os.getpid(), ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


@pytest.fixture(scope="session")
def ray_head():
    """The GCS address and credentials of one local Ray instance shared by every `ray` test of the session (start-up: ~5-15 s)."""
    pytest.importorskip("ray")
    auth = RAY_AUTH
    # Without the test tags: Ray starts and stops workers of its own at any time, no test's leftovers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WVO_TEST_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", RAY_HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, cwd=ROOT, env={**env, **auth},
    )  # fmt: skip
    proc.wait()  # the fork's parent: the holder goes on outside our tree, on the same pipes
    pid, _, address = proc.stdout.readline().strip().partition(" ")
    if not address:
        proc.stdin.close()
        pytest.fail("the session's Ray instance did not start")
    _RAY_HEAD["pid"] = int(pid)
    yield address, auth
    proc.stdin.close()  # the holder reads its end: ray.shutdown()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running(int(pid)):
        time.sleep(0.05)
    if _running(int(pid)):
        os.kill(int(pid), signal.SIGKILL)
    proc.stdout.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for PID 1, which may take a second or more to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


_RAY_HEAD: dict[str, int] = {}  # "pid": the holder of the session's Ray instance, once it is up


def _ray_workers() -> dict[int, str]:
    """The session Ray instance's worker processes that hold an actor or run a task (not idle ones)."""
    try:
        procs = psutil.Process(_RAY_HEAD["pid"]).children(recursive=True)
    except (KeyError, psutil.Error):
        return {}
    out = {}
    for p in procs:
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and not title.startswith(("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")):
            out[p.pid] = title[:120]
    return out


@pytest.fixture
def ray_driver(ray_head):
    """This test process joins the session's Ray instance as a driver of its own (~0.05 s, where a new
    instance costs seconds): the test's own job, namespace and actors, which Ray kills when the driver
    disconnects at the end of the test. Fails the test if an actor's worker outlives that (the leftover
    check cannot see them: the instance's processes carry no test tag).
    """
    import logging

    import ray

    address, _ = ray_head  # the session's token is in this process's environment from the start
    before = set(_ray_workers())
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield address
    finally:
        ray.shutdown()
    deadline = time.monotonic() + 20.0
    while (left := {p: t for p, t in _ray_workers().items() if p not in before}) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        pytest.fail(f"the test's Ray workers outlived its driver: {left}")


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def backend(request, monkeypatch) -> list[str]:
    """The same test on each backend: the wvo-batch arguments that choose it.

    On `ray`, wvo-batch joins the session's Ray instance (`--ray-address`) as a user joins a cluster, so
    the tasks see the environment that instance was started with plus their roadmap's `env:`, not
    variables given to the wvo-batch process alone.
    """
    if request.param == "local":
        return ["--backend", "local"]
    address, auth = request.getfixturevalue("ray_head")
    for name, value in auth.items():
        monkeypatch.setenv(name, value)
    return ["--backend", "ray", "--ray-address", address]
