"""No way in through the state dir or the --status channel, and no control character reaches a terminal."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, wvo
from helpers import Fifo, roadmap_file

pytestmark = pytest.mark.timeout(60)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def one_line_refusal(r, path) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], r.stderr
    return lines[0]


def wait_for_board(rm, state) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = wvo(rm, "--state-dir", state, "--status", "--json")
        if r.returncode == 0:
            return
    raise AssertionError(f"the board was never served: {r.stderr}")


def hold_locks(state, rm) -> list[int]:
    """flock the run lock of `rm` in `state`, as a run would: both today's name and the identity-keyed one."""
    import fcntl

    keys = [json.dumps([os.path.abspath(rm)])]
    st = os.stat(rm)
    keys.append(f"{st.st_dev}:{st.st_ino}")
    fds = []
    for key in keys:
        fd = os.open(os.path.join(state, f"run-{hashlib.sha256(key.encode()).hexdigest()[:10]}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        fds.append(fd)
    return fds


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def serve_pickle(folder, marker) -> threading.Thread:
    """A board as an attacker would serve one in a folder of theirs: the old protocol, replying with a pickle."""
    from multiprocessing.connection import Listener

    key = b"k" * 32
    (folder / "board.key").write_text(key.hex())
    address = str(folder / "board.sock")
    (folder / "board.addr").write_text(address)
    listener = Listener(address, family="AF_UNIX", authkey=key)
    connected = threading.Event()

    def serve():
        try:
            conn = listener.accept()
        except Exception:  # noqa: BLE001 - the client refused us: what the test wants
            return
        connected.set()
        try:
            while True:
                conn.recv()
                conn.send(("#RETURN", _Evil(marker)))
        except Exception:  # noqa: BLE001
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.connected = connected
    thread.listener = listener
    thread.start()
    return thread


# -- the state dir ---------------------------------------------------------------------------------------


def test_a_state_dir_others_can_write_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    rm = roadmap_file(tmp_path, [("a", f"touch {marker}")])
    state = tmp_path / "shared"
    state.mkdir()
    os.chmod(state, 0o777)
    r = wvo(rm, "--state-dir", state)
    line = one_line_refusal(r, state)
    assert "chmod go-w" in line
    assert not marker.exists() and not (state / "ledger.sqlite").exists()


@as_root
def test_a_state_dir_of_another_user_is_refused(tmp_path):
    marker = tmp_path / "ran"
    rm = roadmap_file(tmp_path, [("a", f"touch {marker}")])
    state = tmp_path / "theirs"
    state.mkdir(mode=0o700)
    os.chown(state, nobody(), -1)
    line = one_line_refusal(wvo(rm, "--state-dir", state), state)
    assert "nobody" in line and "not by you" in line
    assert not marker.exists()


@as_root
def test_a_symlink_planted_at_the_state_dir_path_is_refused(tmp_path):
    marker = tmp_path / "ran"
    rm = roadmap_file(tmp_path, [("a", f"touch {marker}")])
    target = tmp_path / "attacker"
    target.mkdir(mode=0o700)
    os.chown(target, nobody(), -1)
    planted = tmp_path / "planted"
    planted.symlink_to(target)
    os.lchown(planted, nobody(), -1)
    line = one_line_refusal(wvo(rm, "--state-dir", planted), planted)
    assert "symlink" in line
    ours = tmp_path / "ours"  # a symlink of our own, to a dir that is not ours, is refused too
    ours.symlink_to(target)
    one_line_refusal(wvo(rm, "--state-dir", ours), ours)
    assert not marker.exists() and os.listdir(target) == []


def test_status_in_a_state_dir_others_can_write_never_connects(tmp_path):
    """The red team's exploit: a world-writable state dir, `latest` pointing at a folder serving a pickle."""
    marker = tmp_path / "pwned"
    rm = roadmap_file(tmp_path, [("a", "true")])
    state = tmp_path / "shared"
    state.mkdir()
    os.chmod(state, 0o777)
    evil = state / "runs" / "0001-x"
    evil.mkdir(parents=True)
    os.symlink("runs/0001-x", state / "latest")
    server = serve_pickle(evil, marker)
    fds = hold_locks(state, rm)
    try:
        r = wvo(rm, "--state-dir", state, "--status")
    finally:
        for fd in fds:
            os.close(fd)
        server.listener.close()
    assert not marker.exists(), "--status unpickled the attacker's reply"
    assert not server.connected.is_set()
    one_line_refusal(r, state)


def test_status_does_not_follow_latest_outside_the_state_dir(tmp_path):
    marker = tmp_path / "pwned"
    rm = roadmap_file(tmp_path, [("a", "true")])
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(str(outside), state / "latest")
    server = serve_pickle(outside, marker)
    fds = hold_locks(state, rm)
    try:
        r = wvo(rm, "--state-dir", state, "--status", timeout=30)
    finally:
        for fd in fds:
            os.close(fd)
        server.listener.close()
    assert not marker.exists() and not server.connected.is_set()
    assert r.returncode == 3 and "Traceback" not in r.stderr


def test_ledger_and_events_are_private_and_every_dir_is_0700(tmp_path):
    rm = roadmap_file(tmp_path, [("a", "true")])
    state = tmp_path / "state"
    r = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0o022); from runner.cli.command import main; main()",
         rm, "--state-dir", str(state), "-q"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    folder = os.path.realpath(state / "latest")

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    assert mode(state / "ledger.sqlite") == 0o600
    assert mode(os.path.join(folder, "events.jsonl")) == 0o600
    for d in (state, state / "runs", folder, os.path.join(folder, "logs")):
        assert mode(d) == 0o700, d


# -- the --status channel --------------------------------------------------------------------------------


@pytest.fixture
def live_run(tmp_path):
    fifo = Fifo(tmp_path / "ready")
    rm = roadmap_file(tmp_path, [("hold\x1b]0;PWNED\x07\u009b2J", f"echo go > {fifo.path}; sleep 60"), ("idle", "true")])
    state = tmp_path / "s"
    proc = start(rm, "--agents", "2", "--state-dir", state, "--grace", "1")
    try:
        fifo.wait_lines(1)
        wait_for_board(rm, state)
        yield rm, state, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        fifo.close()


def test_status_never_unpickles(live_run):
    rm, state, _ = live_run
    prelude = (
        "import pickle\n"
        "def boom(*a, **k): raise SystemExit('UNPICKLED')\n"
        "pickle.loads = pickle.load = pickle.Unpickler = boom\n"
        "from runner.cli.command import main; main()\n"
    )
    r = subprocess.run([sys.executable, "-c", prelude, rm, "--state-dir", str(state), "--status"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert "UNPICKLED" not in r.stderr
    assert r.returncode == 0 and "hold" in r.stdout


def test_status_refuses_a_server_that_cannot_prove_the_key(live_run):
    """An impostor at the socket's place, who cannot read board.key, gets no hearing."""
    rm, state, _ = live_run
    folder = os.path.realpath(state / "latest")
    sock_path = os.path.join(folder, "board.sock")
    os.rename(sock_path, sock_path + ".real")
    impostor = socket.socket(socket.AF_UNIX)
    impostor.bind(sock_path)
    impostor.listen()

    def serve():
        try:
            conn, _ = impostor.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"wvo-board 1 " + b"00" * 32 + b"\n")
            conn.recv(1000)
            conn.sendall(b"00" * 32 + b"\n" + json.dumps({"agents": [], "stats": {"total": 999}}).encode())

    threading.Thread(target=serve, daemon=True).start()
    try:
        r = wvo(rm, "--state-dir", state, "--status", timeout=30)
    finally:
        impostor.close()
        os.unlink(sock_path)
        os.rename(sock_path + ".real", sock_path)
    assert r.returncode == 2 and "did not prove" in r.stderr and "999" not in r.stdout
    assert "Traceback" not in r.stderr


def test_status_of_a_stopped_manager_times_out_with_a_message(live_run):
    rm, state, proc = live_run
    os.kill(proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    r = wvo(rm, "--state-dir", state, "--status", timeout=30)
    os.kill(proc.pid, signal.SIGCONT)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 1 and "did not answer" in r.stderr and "Traceback" not in r.stderr


def test_a_corrupted_board_key_is_one_line_and_a_missing_one_says_so(live_run):
    rm, state, _ = live_run
    key = os.path.join(os.path.realpath(state / "latest"), "board.key")
    with open(key, "w") as f:
        f.write("not hex at all")
    r = wvo(rm, "--state-dir", state, "--status", timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "board.key" in r.stderr and "corrupted" in r.stderr
    os.unlink(key)
    r = wvo(rm, "--state-dir", state, "--status", timeout=30)
    assert r.returncode == 3 and "Traceback" not in r.stderr and "board.key" in r.stderr


def test_the_status_board_spells_out_control_characters(live_run):
    rm, state, _ = live_run
    r = wvo(rm, "--state-dir", state, "--status", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x9b" not in r.stdout and "\x07" not in r.stdout
    assert "hold\\x1b]0;PWNED\\x07\\x9b2J" in r.stdout


# -- control characters on the terminal -------------------------------------------------------------------


def test_check_output_escapes_control_characters_visibly(tmp_path):
    rm = roadmap_file(tmp_path, [("a\x1b]52;c;SGVsbG8=\x07", "true"), ("b\u009b2J", "true")])
    r = wvo(rm, "--check", "--max-tasks", "5")  # the batch line lists every id
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for raw in ("\x1b", "\x07", "\x9b"):
        assert raw not in out
    assert "\\x1b]52" in out and "\\x9b2J" in out


def test_progress_lines_and_summary_escape_control_characters(tmp_path):
    rm = roadmap_file(tmp_path, [("x\x1b]0;PWNED\x07", "exit 3"), ("y\u009b2J", "true")])
    r = wvo(rm, "--state-dir", tmp_path / "s")
    assert r.returncode == 1
    out = r.stdout + r.stderr
    for raw in ("\x1b", "\x07", "\x9b"):
        assert raw not in out
    assert "FAIL  x\\x1b]0;PWNED\\x07" in out and "y\\x9b2J" in out


def test_errors_quoting_roadmap_text_escape_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('tasks:\n  - id: a\n    command: "true"\n    dependencies: ["z\\e]52;c;eA==\\a"]\n')
    r = wvo(path, "--check", "--strict")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "\x1b" not in out and "\x07" not in out
    assert "z\\x1b]52;c;eA==\\x07" in out, out


def test_board_lines_escape_c1_and_c0_visibly():
    from runner.cli.display import board_lines

    snap = {"agents": [{"id": "worker-0", "role": "worker", "state": "busy", "task": "t\u009b2J",
                        "task_title": "a\x1b]0;x\x07", "since": 990.0}], "stats": {"total": 1}, "time": 1000.0}
    text = "\n".join(board_lines(snap, width=120))
    assert "t\\x9b2J" in text and "a\\x1b]0;x\\x07" in text
